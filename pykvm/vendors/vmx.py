"""The VMX vendor module (kvm_intel): csrc/kvm/vmx/."""
from . import ModuleVendor, CpuModel


# What the 2.6-era presets lack besides their own commits: the 2018+ host mitigations
# (legacy kernel IBRS, PTI, the MDS VERW, the L1TF flush), PML (4.2), the VMX
# preemption timer (4.10); and the guest FPU was loaded lazily (eager since 4.6/4.14).
_PRE_2018 = {"kernel_ibrs": False, "pti": False, "mds": False, "vmentry_l1d_flush": 0,
             "enable_pml": False, "enable_preemption_timer": False, "lazy_fpu": True}


class VmxVendor(ModuleVendor):
    name = "vmx"
    kernel_module = "kvm_intel"
    cpu_vendor = "intel"
    cpu_models = {
        # Skylake-SP: legacy IBRS/STIBP/SSBD, TSX with TSX_CTRL (after microcode);
        # affected by Meltdown, MDS and L1TF (the kernel's cpu_vuln_blacklist).
        "skylake": CpuModel("intel", has_rtm=True, has_pml=True, bug_meltdown=True,
                            bug_mds=True, bug_l1tf=True),
        # Ice Lake server: enhanced IBRS, the host keeps SPEC_CTRL.IBRS set; not affected
        # by Meltdown, MDS or L1TF (RDCL_NO, MDS_NO).
        "icelake": CpuModel("intel", has_rtm=False, has_eibrs=True, has_pml=True),
        # No "load IA32_EFER" controls: EFER goes through user-return MSRs.
        "skylake-noloadefer": CpuModel("intel", has_rtm=True, has_load_efer=False,
                                       has_pml=True, bug_meltdown=True, bug_mds=True,
                                       bug_l1tf=True),
    }

    # Kernel eras as parameter sets (approximate releases; the commits are the point).
    presets = {
        # Every parameter at its default: torvalds/linux arch/x86/kvm at 8ecb10bcbfa3
        # (docs/costs.md), each default citing its commit in the C parameter table; the
        # exception, kvm.uret_irqs_off, is in docs/simplifications.md.
        "upstream": {},
        # Before fc02735b14ff (2022): host SPEC_CTRL restored in C after the vmenter RET;
        # and before legacy kernel IBRS (5.19, retbleed: X86_FEATURE_KERNEL_IBRS).
        "v5.18": {"spec_ctrl_in_vmenter": False, "kernel_ibrs": False},
        # Before 678e315e78a7 and 2342080cd675 (2018): KERNEL_GS_BASE accesses reload the
        # whole host state; HOST_IDTR_BASE read per vCPU. PTI (4.15) is there; the L1TF
        # flush (4.19, Aug 2018) and the MDS VERW (5.2, May 2019) are not yet.
        "v4.18": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                  "global_host_idt": False, "kernel_ibrs": False, "mds": False,
                  "vmentry_l1d_flush": 0},
        # Before the user-return MSR infrastructure (26bb0981b3ff, 2.6.32): every guest
        # MSR value written on each load, read back and replaced by the host's on each
        # put (vmx_save_host_state / vmx_load_host_state of 2.6.31); EFER by hand.
        # No Spectre/Meltdown-era mitigations, no PML (4.2), no preemption timer (4.10),
        # the guest FPU loaded lazily.
        "v2.6.31": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False, **_PRE_2018},
        # drivers/kvm/vmx.c as of 2.6.23 (torvalds/linux 002c7f7c32a6): no MSR bitmaps,
        # so every guest RDMSR/WRMSR exits, KERNEL_GS_BASE included.
        "v2.6.23": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False, "msr_bitmaps": False, **_PRE_2018},
        # The first release (2.6.20, Feb 2007): host state saved before every VM-entry and
        # restored after every VM-exit (before e6adf28365b2), every host MSR value read
        # on every entry (before 2345df8c555e: "~900 cycles (10%) on x86_64").
        "v2.6.20": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False, "msr_bitmaps": False,
                    "lightweight_exit": False, "host_msrs_snapshot": False, **_PRE_2018},
    }


VENDOR = VmxVendor()
