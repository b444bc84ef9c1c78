"""The /dev/kvm userspace ABI pykvm uses, taken from the system's <linux/kvm.h> (and the
<asm/kvm.h> it includes) through cffi: pykvm._kvm_uapi, built by pykvm/_build_uapi.py.
The compiler gives every ioctl number, constant, struct size and field offset; this module
only turns the layouts into `struct.Struct` formats for the code that packs ioctl buffers
(_struct_of below). x86-64 only.

Without the header at build time the module is absent: the ABI names below then raise
KvmUnavailable with the reason (the one-reg id helpers at the end are not from the header
and stay usable by the simulated machine).
"""
import struct

from pykvm.errors import KvmUnavailable
from pykvm.exits import KVM_MSR_EXIT_REASON_VALID_MASK  # noqa: F401  (not a header macro)

try:
    from pykvm._kvm_uapi import ffi, lib
except ImportError as e:
    ffi = lib = None
    _MISSING = (f"pykvm._kvm_uapi is not built ({e}): the /dev/kvm structures and ioctl "
                f"numbers come from the system's <linux/kvm.h>, which was not found when "
                f"pykvm was built; install the kernel's userspace headers (linux-libc-dev "
                f"on Debian/Ubuntu, kernel-headers on Fedora) and reinstall pykvm")

    def __getattr__(name):
        if name.startswith(("KVM_", "kvm_")) or name in ("CAPS", "u64"):
            raise KvmUnavailable(_MISSING)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _field_format(t):
    """struct-module format of one C field type (x86-64, little-endian)."""
    if t.kind == "primitive":
        code = _CODES[ffi.sizeof(t)]
        return code.lower() if t.cname.startswith("int") else code
    if t.kind == "pointer":
        return _CODES[ffi.sizeof(t)]
    if t.kind == "array":
        if t.item.kind == "primitive" and ffi.sizeof(t.item) == 1:
            return f"{t.length}s"               # byte arrays as bytes (mmio.data)
        if t.item.kind == "primitive":
            return f"{t.length}{_field_format(t.item)}"
        return _layout(t.item) * t.length
    if t.kind == "struct":
        return _layout(t)
    raise TypeError(f"no struct format for {t.cname}")


def _layout(t, names=None):
    """Format of struct type `t`: the fields `names` (all declared ones by default) at
    the header's offsets, the rest as padding. With all fields, the format spans
    sizeof(t); with `names`, it ends after the last one named."""
    out, pos = [], 0
    if names is not None:   # the format starts at the first field named
        pos = min(f.offset for name, f in t.fields if name in names)
    for name, f in t.fields:
        if names is not None and name not in names:
            continue
        if f.offset > pos:
            out.append(f"{f.offset - pos}x")
        out.append(_field_format(f.type))
        pos = f.offset + ffi.sizeof(f.type)
    if names is None and ffi.sizeof(t) > pos:
        out.append(f"{ffi.sizeof(t) - pos}x")
    return "".join(out)


def _struct_of(cname, names=None):
    return struct.Struct("<" + _layout(ffi.typeof(cname), names))


if lib is not None:
    # every `#define NAME ...` of the cdef, under its header name
    globals().update({name: getattr(lib, name) for name in dir(lib)
                      if name.startswith("KVM")})
    CAPS = {name: getattr(lib, name) for name in dir(lib) if name.startswith("KVM_CAP_")}
    # the header has no name for KVM_GET_MSRS issued on /dev/kvm (feature MSRs)
    KVM_GET_FEATURE_MSRS = KVM_GET_MSRS  # noqa: F821
    KVM_MSR_FILTER_VALID_MASK = KVM_MSR_FILTER_DEFAULT_DENY  # noqa: F821
    KVM_MSR_FILTER_RANGE_VALID_MASK = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE  # noqa: F821

    # struct layouts, named after the C structs
    kvm_regs = _struct_of("struct kvm_regs")
    kvm_segment = _struct_of("struct kvm_segment")
    kvm_dtable = _struct_of("struct kvm_dtable")
    KVM_SREGS_SIZE = ffi.sizeof("struct kvm_sregs")
    kvm_sregs_tail = _struct_of("struct kvm_sregs", (      # cr0..apic_base, interrupt_bitmap
        "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base", "interrupt_bitmap"))
    # where each member of struct kvm_sregs starts (segments, tables, then the tail at cr0)
    KVM_SREGS_OFFSETS = {name: f.offset for name, f in ffi.typeof("struct kvm_sregs").fields}
    kvm_msrs = _struct_of("struct kvm_msrs")                # then entries[nmsrs]
    kvm_msr_entry = _struct_of("struct kvm_msr_entry")
    kvm_msr_list = _struct_of("struct kvm_msr_list")        # then indices[nmsrs]
    kvm_cpuid2 = _struct_of("struct kvm_cpuid2")            # then entries[nent]
    kvm_cpuid_entry2 = _struct_of("struct kvm_cpuid_entry2")
    kvm_userspace_memory_region = _struct_of("struct kvm_userspace_memory_region")
    kvm_enable_cap = _struct_of("struct kvm_enable_cap")
    kvm_msr_filter_range = _struct_of("struct kvm_msr_filter_range")
    kvm_msr_filter = _struct_of("struct kvm_msr_filter")
    kvm_one_reg = _struct_of("struct kvm_one_reg")
    kvm_reg_list = _struct_of("struct kvm_reg_list")        # then reg[n]
    kvm_mp_state = _struct_of("struct kvm_mp_state")
    u64 = struct.Struct("<Q")

    # struct kvm_run: offsets from the start of the vCPU's mapping
    KVM_RUN_IMMEDIATE_EXIT = ffi.offsetof("struct kvm_run", "immediate_exit")
    KVM_RUN_EXIT_REASON = ffi.offsetof("struct kvm_run", "exit_reason")
    KVM_RUN_EXIT = ffi.offsetof("struct kvm_run", "io")    # the exit union
    kvm_run_io = _struct_of("pk_kvm_run_io")
    kvm_run_mmio = _struct_of("pk_kvm_run_mmio")
    KVM_RUN_MMIO_DATA = KVM_RUN_EXIT + ffi.offsetof("pk_kvm_run_mmio", "data")
    kvm_run_fail_entry = _struct_of("pk_kvm_run_fail_entry")
    kvm_run_internal = _struct_of("pk_kvm_run_internal", ("suberror", "ndata"))
    KVM_RUN_INTERNAL_DATA = KVM_RUN_EXIT + ffi.offsetof("pk_kvm_run_internal", "data")
    KVM_INTERNAL_ERROR_MAX_DATA = ffi.typeof("pk_kvm_run_internal").fields[2][1].type.length
    kvm_run_msr = _struct_of("pk_kvm_run_msr")
    KVM_RUN_MSR_ERROR = KVM_RUN_EXIT + ffi.offsetof("pk_kvm_run_msr", "error")
    KVM_RUN_MSR_DATA = KVM_RUN_EXIT + ffi.offsetof("pk_kvm_run_msr", "data")
    kvm_run_hypercall = _struct_of("pk_kvm_run_hypercall")

# KVM_GET/SET_ONE_REG ids for x86 MSRs and KVM registers. Not from the system header: they
# are newer than it (Linux 6.1's <asm/kvm.h> has no KVM_X86_REG_TYPE_MSR); written after
# upstream arch/x86/include/uapi/asm/kvm.h, where they came with the CET/shadow-stack
# ONE_REG support, and used by the simulated machine as well.
if lib is None:         # the header's values (linux/kvm.h), for the simulated machine
    KVM_REG_X86 = 0x2000000000000000
    KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_X86_REG_TYPE_MSR = 2
KVM_X86_REG_TYPE_KVM = 3
KVM_REG_GUEST_SSP = 0


def KVM_X86_REG_MSR(index):
    """The ONE_REG id of MSR `index`."""
    return KVM_REG_X86 | (KVM_X86_REG_TYPE_MSR << 32) | KVM_REG_SIZE_U64 | index


def KVM_X86_REG_KVM(index):
    """The ONE_REG id of KVM-defined register `index` (KVM_REG_GUEST_SSP)."""
    size = KVM_REG_SIZE_U64 if index == KVM_REG_GUEST_SSP else 0
    return KVM_REG_X86 | (KVM_X86_REG_TYPE_KVM << 32) | size | index
