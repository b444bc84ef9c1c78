"""The VMX vendor module (kvm_intel): csrc/kvm/vmx/."""
from . import ModuleVendor, CpuModel


class VmxVendor(ModuleVendor):
    name = "vmx"
    kernel_module = "kvm_intel"
    cpu_vendor = "intel"
    cpu_models = {
        # Skylake-SP: legacy IBRS/STIBP/SSBD, TSX with TSX_CTRL (after microcode).
        "skylake": CpuModel("intel", has_rtm=True),
        # Ice Lake server: enhanced IBRS, the host keeps SPEC_CTRL.IBRS set.
        "icelake": CpuModel("intel", has_rtm=False, has_eibrs=True),
        # No "load IA32_EFER" controls: EFER goes through user-return MSRs.
        "skylake-noloadefer": CpuModel("intel", has_rtm=True, has_load_efer=False),
    }

    # Kernel eras as parameter sets (approximate releases; the commits are the point).
    presets = {
        "upstream": {},
        # Before fc02735b14ff (2022): host SPEC_CTRL restored in C after the vmenter RET.
        "v5.18": {"spec_ctrl_in_vmenter": False},
        # Before 678e315e78a7 and 2342080cd675 (2018): KERNEL_GS_BASE accesses reload the
        # whole host state; HOST_IDTR_BASE read per vCPU.
        "v4.18": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                  "global_host_idt": False},
        # Before the user-return MSR infrastructure (26bb0981b3ff, 2.6.32): every guest
        # MSR value written on each load, read back and replaced by the host's on each
        # put (vmx_save_host_state / vmx_load_host_state of 2.6.31); EFER by hand.
        "v2.6.31": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False},
        # drivers/kvm/vmx.c as of 2.6.23 (torvalds/linux 002c7f7c32a6): no MSR bitmaps,
        # so every guest RDMSR/WRMSR exits, KERNEL_GS_BASE included.
        "v2.6.23": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False, "msr_bitmaps": False},
        # The first release (2.6.20, Feb 2007): host state saved before every VM-entry and
        # restored after every VM-exit (before e6adf28365b2), every host MSR value read
        # on every entry (before 2345df8c555e: "~900 cycles (10%) on x86_64").
        "v2.6.20": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False, "msr_bitmaps": False,
                    "lightweight_exit": False, "host_msrs_snapshot": False},
    }


VENDOR = VmxVendor()
