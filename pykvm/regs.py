"""Register state shared by every backend, shaped like struct kvm_regs / kvm_sregs, and
the one check of register and MSR values both backends apply before anything reaches C
or an ioctl: a value that does not fit its field is refused, never truncated."""
from dataclasses import dataclass, field, fields

from .errors import InvalidConfiguration, InvalidMsr

U64_MAX = 2**64 - 1


def u64(value, what):
    """`value` as the u64 KVM stores: an int from -2**63 to 2**64 - 1 (negative numbers in
    two's complement); anything else raises InvalidConfiguration naming `what`."""
    if not isinstance(value, int) or isinstance(value, bool) or not -(1 << 63) <= value <= U64_MAX:
        raise InvalidConfiguration(f"{what} must be a 64-bit integer, got {value!r}")
    return value & U64_MAX


def msr_index(index):
    """An MSR index: a u32, or InvalidMsr."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= 0xFFFFFFFF:
        raise InvalidMsr(index if isinstance(index, int) else -1,
                         f"an MSR index is an integer 0..0xffffffff, got {index!r}")
    return index


def msr_value(index, value):
    """A value for MSR `index`: 64 bits (as u64()), or InvalidMsr naming the MSR."""
    try:
        return u64(value, f"the value of MSR {index:#x}")
    except InvalidConfiguration as e:
        raise InvalidMsr(index, str(e)) from None


def uint(value, bits, what):
    """An unsigned field of `bits` bits (a segment limit, selector, flag byte...)."""
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise InvalidConfiguration(f"{what} must be an integer 0..{(1 << bits) - 1:#x}, "
                                   f"got {value!r}")
    return int(value)

GPR_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


@dataclass
class Regs:
    """struct kvm_regs."""
    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x2


@dataclass
class Segment:
    """struct kvm_segment."""
    base: int = 0
    limit: int = 0xFFFFFFFF
    selector: int = 0
    type: int = 0
    present: int = 0
    dpl: int = 0
    db: int = 0
    s: int = 0
    l: int = 0  # noqa: E741 (kernel's name)
    g: int = 0
    avl: int = 0
    unusable: int = 0


@dataclass
class DTable:
    """struct kvm_dtable."""
    base: int = 0
    limit: int = 0


@dataclass
class Sregs:
    """struct kvm_sregs (without the interrupt bitmap)."""
    cs: Segment = field(default_factory=Segment)
    ds: Segment = field(default_factory=Segment)
    es: Segment = field(default_factory=Segment)
    fs: Segment = field(default_factory=Segment)
    gs: Segment = field(default_factory=Segment)
    ss: Segment = field(default_factory=Segment)
    tr: Segment = field(default_factory=Segment)
    ldt: Segment = field(default_factory=Segment)
    gdt: DTable = field(default_factory=DTable)
    idt: DTable = field(default_factory=DTable)
    cr0: int = 0
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    apic_base: int = 0


SEGMENT_NAMES = tuple(f.name for f in fields(Sregs) if f.type in (Segment, "Segment"))
REGS_NAMES = tuple(f.name for f in fields(Regs))
# Field widths of struct kvm_segment / kvm_dtable (bits); 64-bit fields take u64().
SEGMENT_BITS = {"limit": 32, "selector": 16, "type": 8, "present": 8, "dpl": 8, "db": 8,
                "s": 8, "l": 8, "g": 8, "avl": 8, "unusable": 8}
SREGS_U64 = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")


def checked_regs(regs):
    """{name: u64} of a Regs, every field checked."""
    if not isinstance(regs, Regs):
        raise TypeError(f"expected Regs, got {type(regs).__name__}")
    return {n: u64(getattr(regs, n), f"register {n}") for n in REGS_NAMES}


def checked_sregs(sregs):
    """A copy of `sregs` with every field checked against its C width."""
    if not isinstance(sregs, Sregs):
        raise TypeError(f"expected Sregs, got {type(sregs).__name__}")
    segs = {}
    for name in SEGMENT_NAMES:
        seg = getattr(sregs, name)
        if not isinstance(seg, Segment):
            raise TypeError(f"sregs.{name} must be a Segment, got {type(seg).__name__}")
        vals = {"base": u64(seg.base, f"{name}.base")}
        vals.update({f: uint(getattr(seg, f), bits, f"{name}.{f}")
                     for f, bits in SEGMENT_BITS.items()})
        segs[name] = Segment(**vals)
    tables = {}
    for name in ("gdt", "idt"):
        t = getattr(sregs, name)
        if not isinstance(t, DTable):
            raise TypeError(f"sregs.{name} must be a DTable, got {type(t).__name__}")
        tables[name] = DTable(u64(t.base, f"{name}.base"), uint(t.limit, 16, f"{name}.limit"))
    return Sregs(**segs, **tables, **{n: u64(getattr(sregs, n), n) for n in SREGS_U64})
