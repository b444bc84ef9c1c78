"""The SVM vendor module (kvm_amd): csrc/kvm/svm/."""
from . import ModuleVendor, CpuModel


class SvmVendor(ModuleVendor):
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


    # Kernel eras as parameter sets (approximate releases; the commits are the point).
    presets = {
        # Every parameter at its default: torvalds/linux arch/x86/kvm at 8ecb10bcbfa3
        # (docs/costs.md), each default citing its commit in the C parameter table; the
        # exception, kvm.uret_irqs_off, is in docs/simplifications.md.
        "upstream": {},
        # Between e79b91bb3c91 (Dec 2020) and the Nov 2022 vmenter series (e287bd005ad9,
        # 9f2febf3f04d): host VMLOAD and SPEC_CTRL in C after __svm_vcpu_run, on kernels
        # whose RETs did not use per-cpu data.
        "v5.15": {"host_vmload_in_vmenter": False, "spec_ctrl_in_vmenter": False,
                  "ret_uses_percpu": False},
        # Before e79b91bb3c91 and before TSC_AUX moved to user return (844d69c26d83, Apr
        # 2021).
        "v5.10": {"vmsave_host_state": False, "tsc_aux_user_return": False,
                  "host_vmload_in_vmenter": False, "spec_ctrl_in_vmenter": False,
                  "ret_uses_percpu": False},
    }


VENDOR = SvmVendor()
