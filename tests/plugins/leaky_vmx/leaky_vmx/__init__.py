"""The `leaky` vendor: kvm_intel whose vcpu_put forgets the host state (see leaky.c)."""
import pykvm  # noqa: F401  (pykvm's C module first: ours links against it)
from pykvm.vendors import ModuleVendor
from pykvm.vendors.vmx import VENDOR as VMX

from . import _leaky

assert _leaky.lib.leaky_vmx_registered(), "kvm_leaky did not register with pykvm"


class LeakyVendor(ModuleVendor):
    name = "leaky"
    kernel_module = "kvm_leaky"
    cpu_vendor = "intel"
    cpu_models = VMX.cpu_models
    presets = {"upstream": {}}


VENDOR = LeakyVendor()
