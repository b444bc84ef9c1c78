"""The VMX vendor module (kvm_intel): csrc/kvm/vmx/."""
from . import ModuleVendor, CpuModel


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
        # Before the user-return MSR infrastructure (2009): host MSRs back on every put.
        # No Spectre/Meltdown-era mitigations, no PML (4.2), no preemption timer (4.10),
        # the guest FPU loaded lazily.
        "v2.6.31": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False, "kernel_ibrs": False, "pti": False,
                    "mds": False, "vmentry_l1d_flush": 0, "enable_pml": False,
                    "enable_preemption_timer": False, "lazy_fpu": True},
    }


VENDOR = VmxVendor()
