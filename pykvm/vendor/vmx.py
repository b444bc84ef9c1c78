"""The VMX vendor module (kvm_intel): csrc/kvm/vmx/."""
from . import CpuModel


class VmxVendor:
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

    def load(self, machine):
        from .._lib import ensure, lib
        ensure(lib.pk_kvm_load(machine._m, b"vmx"), "loading kvm_intel")


VENDOR = VmxVendor()
