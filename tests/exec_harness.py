"""A bare CPU (PK_MODE_BARE) around the guest interpreter, for tests/test_exec*.py and
benchmarks/bench_exec.py: guest memory, registers, MSRs, a run, the exit.

The C module is pykvm._pykvm; PYKVM_EXEC_EXT names another build of the same sources
(for working on the interpreter alone while the rest of csrc/ is in flux)."""
import importlib
import mmap
import os

_ext = importlib.import_module(os.environ.get("PYKVM_EXEC_EXT", "pykvm._pykvm"))
ffi, lib = _ext.ffi, _ext.lib

# enum pk_gexit (include/pykvm/machine.h)
GEXITS = ("NONE", "HLT", "CPUID", "IO", "RDMSR", "WRMSR", "VMCALL", "VMMCALL", "RDTSCP",
          "RDPID", "MMIO", "TRIPLE_FAULT", "EXTINT")
EXIT = {name: i for i, name in enumerate(GEXITS)}

GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
SREGS = ("es", "cs", "ss", "ds", "fs", "gs", "tr", "ldtr")

MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103
EFER_SCE = 1 << 0
CR4_FSGSBASE = 1 << 16


class Bare:
    """One CPU of a fresh machine in flat 64-bit mode at CPL 0, with RAM at [base, base+size)."""

    def __init__(self, size=0x20000, base=0, vendor=0, rdtscp=True, rdpid=True):
        model = ffi.new("struct pk_cpu_model *", {
            "vendor": vendor, "has_rdtscp": rdtscp, "has_rdpid": rdpid,
            "has_fsgsbase": True})
        m = lib.pk_machine_create(1, model)
        if m == ffi.NULL:
            raise MemoryError("pk_machine_create failed")
        self.m = ffi.gc(m, lib.pk_machine_destroy)
        self.base, self.size = base, size
        # private, page-aligned memory, as a VMM's guest memory is (pykvm.machine)
        self._mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self.mem = ffi.from_buffer("uint8_t[]", self._mapping)
        self.buf = ffi.buffer(self.mem)
        self.map(base, self.mem, size)
        lib.pk_bare_long_mode(self.m, 0)

    def map(self, gpa, cdata, size):
        if lib.pk_bare_map(self.m, 0, gpa, size, cdata) < 0:
            raise ValueError(f"cannot map {size:#x} bytes at {gpa:#x}")

    def write(self, gpa, data):
        off = gpa - self.base
        self.buf[off:off + len(data)] = bytes(data)

    def read(self, gpa, n):
        off = gpa - self.base
        return bytes(self.buf[off:off + n])

    def u64(self, gpa):
        return int.from_bytes(self.read(gpa, 8), "little")

    def icache_stats(self):
        """The decode cache's counters (struct pk_icache_stats)."""
        st = ffi.new("struct pk_icache_stats *")
        lib.pk_bare_icache_stats(self.m, 0, st)
        return st

    # registers
    def state(self):
        st = ffi.new("struct pk_bare_state *")
        lib.pk_bare_get_state(self.m, 0, st)
        return st

    def set_state(self, st):
        lib.pk_bare_set_state(self.m, 0, st)

    def regs(self):
        st = self.state()
        r = {name: st.regs[i] for i, name in enumerate(GPRS)}
        r["rip"], r["rflags"] = st.rip, st.rflags
        return r

    def set_regs(self, **kw):
        st = self.state()
        for name, value in kw.items():
            value &= (1 << 64) - 1
            if name in GPRS:
                st.regs[GPRS.index(name)] = value
            else:
                setattr(st, name, value)
        self.set_state(st)

    def __getitem__(self, name):
        return self.regs()[name]

    def set_seg(self, name, selector=None, base=None, ar=None, limit=None):
        st = self.state()
        i = SREGS.index(name)
        if selector is not None:
            st.seg_sel[i] = selector
        if base is not None:
            st.seg_base[i] = base
        if ar is not None:
            st.seg_ar[i] = ar
        if limit is not None:
            st.seg_limit[i] = limit
        self.set_state(st)

    def seg(self, name):
        st = self.state()
        i = SREGS.index(name)
        return {"selector": st.seg_sel[i], "base": st.seg_base[i], "ar": st.seg_ar[i],
                "limit": st.seg_limit[i]}

    def msr(self, index):
        val = ffi.new("uint64_t *")
        if lib.pk_bare_get_msr(self.m, 0, index, val):
            raise KeyError(hex(index))
        return val[0]

    def set_msr(self, index, value):
        if lib.pk_bare_set_msr(self.m, 0, index, value & ((1 << 64) - 1)):
            raise KeyError(hex(index))

    # running
    def run(self, budget=100_000):
        return GEXITS[lib.pk_bare_run(self.m, 0, budget)]

    def event(self):
        ev = ffi.new("struct pk_bare_event *")
        lib.pk_bare_event(self.m, 0, ev)
        return {f: getattr(ev, f) for f in ("kind", "insn_len", "port", "size", "in", "msr",
                                            "gpa", "len", "write", "data")}

    def mmio_fill(self, gpa, data):
        lib.pk_bare_mmio_fill(self.m, 0, gpa, data)

    def deliver_exception(self, vector, error_code=None):
        """Inject an exception (pk_guest_deliver_exception): False on a triple fault."""
        return lib.pk_bare_deliver_exception(self.m, 0, vector, error_code is not None,
                                             error_code or 0)

    def retired(self):
        return lib.pk_bare_retired(self.m)

    # descriptor tables
    def set_idt(self, base, limit):
        self.set_regs(idt_base=base, idt_limit=limit)

    def set_gate(self, idt_base, vector, target, selector=0x08, type_=0xE, dpl=0,
                 present=True):
        """A 64-bit interrupt (0xE) or trap (0xF) gate (SDM vol. 3A figure 6-8)."""
        lo = ((target & 0xFFFF) | (selector << 16) | (type_ << 40) | (dpl << 45)
              | (int(present) << 47) | (((target >> 16) & 0xFFFF) << 48))
        hi = target >> 32
        self.write(idt_base + 16 * vector, lo.to_bytes(8, "little") + hi.to_bytes(8, "little"))


# ---- guest code, encoded by iced-x86 ----

def _operand_kinds(code):
    from iced_x86 import OpCodeInfo, OpCodeOperandKind
    names = {getattr(OpCodeOperandKind, n): n for n in dir(OpCodeOperandKind) if n.isupper()}
    oi = OpCodeInfo(code)
    return [names[oi.op_kind(i)] for i in range(oi.op_count)]


def ins(code, *ops):
    """An iced Instruction from a Code and its operands (Register, MemoryOperand, int)."""
    from iced_x86 import Instruction, MemoryOperand
    kinds = []
    for kind, op in zip(_operand_kinds(code), ops):
        if isinstance(op, MemoryOperand):
            kinds.append("mem")
        elif kind.startswith("IMM"):
            kinds.append("imm")
        else:
            kinds.append("reg")
    if kinds == ["imm", "reg"]:                 # OUT imm8, AL
        return Instruction.create_i32_reg(code, *ops)
    if kinds and kinds[-1] == "imm":
        head, imm = "_".join(kinds[:-1]), ops[-1]
        if imm >= 1 << 32 or imm < -(1 << 31):
            suffix, imm = "u64", imm & ((1 << 64) - 1)
        else:
            suffix = "u32" if imm >= 1 << 31 else "i32"
        name = f"create_{head}_{suffix}" if head else f"create_{suffix}"
        return getattr(Instruction, name)(code, *ops[:-1], imm)
    return getattr(Instruction, "create_" + "_".join(kinds) if kinds else "create")(code, *ops)


def asm(base, *instrs):
    """Encode instrs at base; a branch target may be the index of an instruction,
    written as ("@", i)."""
    from iced_x86 import BlockEncoder, Instruction
    label = 1 << 40
    out = []
    for i, x in enumerate(instrs):
        if isinstance(x, tuple):            # (branch Code, ("@", index))
            code, (_, target) = x
            x = Instruction.create_branch(code, label + 16 * target)
        x.ip = label + 16 * i
        out.append(x)
    enc = BlockEncoder(64)
    enc.add_many(out)
    return enc.encode(base)
