"""Vendor modules as plugins, found through the entry-point group `pykvm.vendors`.

A vendor plugin is an object with:
  name          the module name users pass (``"vmx"``, ``"svm"``)
  kernel_module the Linux module it mirrors (``"kvm_intel"``)
  cpu_vendor    "intel" or "amd": the simulated CPU it needs
  cpu_models    {name: CpuModel}: CPU presets, first is the default
  params        {name: pykvm.params.Param}: its module parameters plus kvm.* and
                kernel.* ones
  presets       {era: {param: value}}: kernel eras, upstream first
  load(machine, params) loads the vendor's ops into a machine (C) with parameters
                already parsed by pykvm.params.resolve, raising on failure
"""
from dataclasses import dataclass, fields
from importlib.metadata import entry_points

from ..errors import UnknownVendor

GROUP = "pykvm.vendors"


@dataclass(frozen=True)
class CpuModel:
    """What a simulated CPU has (struct pk_cpu_model)."""
    vendor: str
    has_rdtscp: bool = True
    has_rdpid: bool = True
    has_ibrs: bool = True
    has_stibp: bool = True
    has_ssbd: bool = True
    has_ibpb: bool = True
    has_rtm: bool = False
    has_fsgsbase: bool = True
    has_virt_ssbd: bool = False
    has_v_spec_ctrl: bool = False
    has_load_efer: bool = True
    has_eibrs: bool = False
    has_pml: bool = False           # VMX page-modification logging (KVM's enable_pml)
    # Hardware bugs whose host-kernel mitigations cost operations (kernel: X86_BUG_*).
    bug_meltdown: bool = False      # page-table isolation on every kernel entry/exit
    bug_mds: bool = False           # VERW before returning to user mode / entering a guest
    bug_l1tf: bool = False          # L1D flush (FLUSH_CMD) before VM-entry

    def to_c(self, ffi):
        c = ffi.new("struct pk_cpu_model *")
        c.vendor = 0 if self.vendor == "intel" else 1
        for f in fields(self):
            if f.name != "vendor":
                setattr(c, f.name, getattr(self, f.name))
        return c


class ModuleVendor:
    """A vendor whose C module registers itself with pykvm's module loader (module_init,
    include/pykvm/module.h) under `kernel_module`, with `name` as its alias: the built-in
    kvm_intel (csrc/kvm/vmx/main.c) and kvm_amd (csrc/kvm/svm/svm.c), or a plugin's own C
    extension, imported before the plugin object is used (tests/plugins/leaky_vmx)."""
    name = kernel_module = cpu_vendor = None
    cpu_models = {}
    presets = {}

    @property
    def params(self):
        """{name: Param} of kernel.*, kvm.* and this module's own."""
        from ..params import module_params
        return {p.name: p for m in ("kernel", "kvm", self.name) for p in module_params(m)}

    def load(self, machine, params=None):
        from .._lib import ensure, lib
        from ..errors import InvalidConfiguration
        from ..params import to_c
        s = to_c(self, params or {}).encode()
        ensure(lib.pk_kvm_load(machine._m, self.name.encode(), s),
               f"loading {self.kernel_module}", InvalidConfiguration)


_cache = None


def vendors():
    """{name: plugin} of every installed vendor; built-ins first."""
    global _cache
    if _cache is None:
        found = {}
        for ep in entry_points(group=GROUP):
            if ep.name in found:
                continue
            found[ep.name] = ep.load()
        if not found:  # running from a source tree without an install
            from . import svm, vmx
            found = {"vmx": vmx.VENDOR, "svm": svm.VENDOR}
        _cache = found
    return _cache


def get_vendor(name):
    v = vendors()
    if name not in v:
        raise UnknownVendor(f"unknown vendor {name!r}; installed: {', '.join(sorted(v))}")
    return v[name]
