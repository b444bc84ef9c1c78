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
        # Before the user-return MSR infrastructure (2009): host MSRs back on every put.
        "v2.6.31": {"spec_ctrl_in_vmenter": False, "lazy_kernel_gs_base": False,
                    "global_host_idt": False, "user_return_msrs": False,
                    "efer_load_controls": False},
    }


VENDOR = VmxVendor()
