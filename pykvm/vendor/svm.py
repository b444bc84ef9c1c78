"""The SVM vendor module (kvm_amd): csrc/kvm/svm/."""
from . import CpuModel


class SvmVendor:
    name = "svm"
    kernel_module = "kvm_amd"
    cpu_vendor = "amd"
    cpu_models = {
        # Zen 3 (EPYC Milan): SPEC_CTRL switched by software around VMRUN.
        "zen3": CpuModel("amd", has_virt_ssbd=True, has_load_efer=False),
        # Zen 4 (Genoa): V_SPEC_CTRL, the VMCB carries the guest's SPEC_CTRL.
        "zen4": CpuModel("amd", has_virt_ssbd=True, has_v_spec_ctrl=True,
                         has_load_efer=False),
    }

    def load(self, machine):
        from .._lib import ensure, lib
        ensure(lib.pk_kvm_load(machine._m, b"svm"), "loading kvm_amd")


VENDOR = SvmVendor()
