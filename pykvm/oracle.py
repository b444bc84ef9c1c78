"""What the oracle (csrc/check/oracle.c) reports: the first violation at an observation
point, named by register, place, expected and actual value, and whose value leaked."""
from dataclasses import dataclass

OBS = ("host user mode", "per-cpu access", "NMI/#MC handler", "first RET after VM-exit",
       "virtualization disabled", "guest read", "KVM_GET_MSRS", "host WARN",
       "unexpected exit", "host interrupt")

REG_NAMES = {
    0xC0000080: "EFER", 0xC0000081: "STAR", 0xC0000082: "LSTAR", 0xC0000083: "CSTAR",
    0xC0000084: "SYSCALL_MASK", 0xC0000100: "FS_BASE", 0xC0000101: "GS_BASE",
    0xC0000102: "KERNEL_GS_BASE", 0xC0000103: "TSC_AUX", 0x48: "SPEC_CTRL",
    0x122: "TSX_CTRL", 0x174: "SYSENTER_CS", 0x175: "SYSENTER_ESP", 0x176: "SYSENTER_EIP",
    0x10000001: "GDTR.base", 0x10000002: "GDTR.limit", 0x10000003: "TR.base",
    0x10000004: "FS selector", 0x10000005: "GS selector", 0x10000006: "CR3",
    0x10000007: "DS selector", 0x10000008: "ES selector", 0x10000009: "SS selector",
    0x1000000A: "CS selector", 0x1000000B: "LDTR selector", 0x1000000C: "IDTR.base",
    0x1000000D: "IDTR.limit", 0x1000000E: "TR.limit", 0x1000000F: "TR selector",
    0x10000010: "CR4", 0x10000011: "RIP after SYSCALL", 0x10000012: "EFER.SCE",
}


def reg_name(reg):
    return REG_NAMES.get(reg, f"MSR {reg:#x}")


_GUEST_ENTRIES = ("VMLAUNCH", "VMRESUME", "VMRUN")


def cause_text(rec):
    """The last write of a register as attribution recorded it (struct pk_attr_rec), in
    words; "" if attribution was off."""
    from ._lib import OPS, PATHS, ffi
    if rec.valid != 1:
        return "not written since the initial state" if rec.valid else ""
    fn = ffi.string(rec.fn).decode() if rec.fn != ffi.NULL else "?"
    op = OPS[rec.op] if rec.op < len(OPS) else None
    where = f"on CPU {rec.cpu}, step {rec.step + 1}"
    if op is None:
        return f"last written by {fn} {where}"
    if op in _GUEST_ENTRIES:
        return f"last written during {op} in {fn} (the guest or its exit) {where}"
    path = PATHS[rec.path] if rec.path < len(PATHS) else "?"
    return f"last written by {op} in {fn} ({path}) {where}"


@dataclass(frozen=True)
class Violation:
    obs: str
    cpu: int
    reg: str
    expected: int
    actual: int
    task: int
    count: int
    cause: str = ""             # the register's last write (attribution), if it was on

    @classmethod
    def from_c(cls, v, count, machine=None):
        return cls(OBS[v.obs] if v.obs < len(OBS) else str(v.obs), v.cpu, reg_name(v.reg),
                   v.expected, v.actual, v.task, count, cause_text(v.cause))

    def __str__(self):
        return (f"{self.reg} on CPU {self.cpu} at {self.obs} (task {self.task}): expected "
                f"{self.expected:#x}, found {self.actual:#x}"
                + (f"; {self.cause}" if self.cause else "")
                + (f"; {self.count} violations in all" if self.count > 1 else ""))
