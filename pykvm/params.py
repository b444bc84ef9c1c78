"""Module parameters, parsed one way everywhere.

A strategy or a historical bug is a module parameter, as on a real host:
``kvm.forget_lstar``, ``kvm_intel.lazy_kernel_gs_base``, ``kvm_amd.vmsave_host_state``,
and ``kernel.*`` for the host kernel around KVM. Values are parsed by the C loader's own
parser (pk_param_parse, the kernel's kstrtobool and kstrtouint), so the command line, the
API and the C side agree on every spelling::

    from pykvm import params
    params.resolve("vmx", {"kvm_intel.spec_ctrl_in_vmenter": "off", "forget_lstar": "y"})
    # -> {"spec_ctrl_in_vmenter": False, "forget_lstar": True}

A bool takes y/n, 1/0, true/false, on/off (the kernel looks at the first character, or
two for on/off); a bare name (value None) means true. An unsigned int takes decimal, 0x
hex or 0-prefixed octal. A module prefix must be one the vendor loads: ``kvm``,
``kernel``, or the vendor's own module (``kvm_intel`` for vmx, ``kvm_amd`` for svm).
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidConfiguration

__all__ = ["Param", "module_params", "resolve", "to_c", "format_value", "COMMON_MODULES"]

COMMON_MODULES = ("kernel", "kvm")
_TYPES = {0: "bool", 1: "uint"}
_UINT_MAX = 0xFFFF_FFFF


@dataclass(frozen=True)
class Param:
    """One module parameter: the kernel module that owns it, its name, type ("bool" or
    "uint"), the value upstream Linux has today, and its meaning."""
    module: str
    name: str
    type: str
    upstream: bool | int
    doc: str

    @property
    def qualified(self):
        return f"{self.module}.{self.name}"

    def parse(self, value):
        """The value this parameter takes for `value` (str from a command line, bool or
        int from Python, None for a bare name); InvalidConfiguration if it takes none."""
        if isinstance(value, str) or value is None:
            from ._lib import ffi, lib
            out = ffi.new("uint64_t *")
            raw = None if value is None else value.encode()
            if lib.pk_param_parse(_code(self.type), raw if raw is not None else ffi.NULL,
                                  out) < 0:
                why = ffi.string(lib.pk_last_error()).decode()
                raise InvalidConfiguration(f"{self.qualified}: {why}")
            v = out[0]
            return bool(v) if self.type == "bool" else int(v)
        if self.type == "bool":
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return bool(value)
            raise InvalidConfiguration(f"{self.qualified}: {value!r} is not a bool")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _UINT_MAX:
            return value
        raise InvalidConfiguration(
            f"{self.qualified}: {value!r} is not an unsigned int (0..{_UINT_MAX})")


def _code(type_name):
    return {v: k for k, v in _TYPES.items()}[type_name]


def module_params(module):
    """[Param] of a C module: "kernel", "kvm", or a built-in vendor ("vmx", "svm")."""
    from ._lib import ffi, lib
    out, i = [], 0
    owner, name, doc = ffi.new("char **"), ffi.new("char **"), ffi.new("char **")
    typ, up = ffi.new("uint32_t *"), ffi.new("uint64_t *")
    while lib.pk_param_info(module.encode(), i, owner, name, typ, up, doc) == 0:
        t = _TYPES[typ[0]]
        out.append(Param(ffi.string(owner[0]).decode(), ffi.string(name[0]).decode(), t,
                         bool(up[0]) if t == "bool" else int(up[0]),
                         ffi.string(doc[0]).decode()))
        i += 1
    return out


def _split(key, vendor):
    """(module or None, name) of "module.name" or "name", the module checked."""
    if "." not in key:
        return None, key
    module, name = key.split(".", 1)
    loaded = (*COMMON_MODULES, vendor.kernel_module)
    if module not in loaded:
        hint = ""
        if module in ("kvm_intel", "kvm_amd"):
            hint = f" ({module} is another vendor's module)"
        raise InvalidConfiguration(
            f"parameter {key!r}: vendor {vendor.name} loads {', '.join(loaded)}, not "
            f"{module!r}{hint}")
    return module, name


def resolve(vendor, values):
    """{name: parsed value} for `values` ({"[module.]name": value}) on `vendor` (a name
    or a plugin): every name checked against the modules the vendor loads, every value
    parsed. Names come back unqualified (they are unique across a vendor's modules)."""
    from .vendors import get_vendor
    if isinstance(vendor, str):
        vendor = get_vendor(vendor)
    known = vendor.params
    out = {}
    for key, value in dict(values or {}).items():
        if not isinstance(key, str) or not key:
            raise InvalidConfiguration(f"parameter name {key!r}: say module.name or name")
        module, name = _split(key, vendor)
        p = known.get(name)
        if p is None or (module is not None and p.module != module):
            where = module or ", ".join((*COMMON_MODULES, vendor.kernel_module))
            raise InvalidConfiguration(
                f"no parameter {key!r} in {where}; `pykvm list params --vendor "
                f"{vendor.name}` lists them")
        out[name] = p.parse(value)
    return out


def format_value(value):
    """How a parsed value is echoed: 1/0 for bools, decimal for ints."""
    return str(int(value))


def to_c(vendor, resolved):
    """The string the C loader takes: "module.name=value,..." (values already parsed)."""
    known = vendor.params
    return ",".join(f"{known[k].qualified}={format_value(v)}" for k, v in resolved.items())
