"""The guest interpreter against unicorn on random programs of the shared instruction subset.

Programs are drawn by hypothesis and encoded by iced-x86; both CPUs start from the same
registers, flags and memory, run to the final HLT (bare mode), and must agree on every
GPR, RIP, RFLAGS (the flags the SDM leaves undefined masked out) and memory.

What the generator guarantees so that both runs are architecturally defined:
- memory operands land in the data area or on the stack ([r15 + r14*s + d], [rsp + d],
  RIP-relative, absolute, FS/GS-relative, 32-bit addressing); r14, r15 and rsp are never
  explicit destinations;
- control flow only goes forward, so every program ends at its HLT;
- an instruction that reads a flag some earlier instruction left undefined is preceded by
  a CMP that defines all six;
- DIV/IDIV get a dividend and a divisor that cannot fault, POPF a value without TF.
"""
import contextlib
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Required: iced-x86 by pykvm, unicorn by its test extra. A broken install fails here
# (a collection error), never skips the differential tests silently.
import iced_x86 as iced  # noqa: E402
import unicorn  # noqa: E402
from iced_x86 import (BlockEncoder, Code, Encoder, Instruction, MemoryOperand,  # noqa: E402
                      OpCodeInfo, OpCodeOperandKind as K, Register as R, RflagsBits)
from unicorn import UC_ARCH_X86, UC_MODE_64, Uc  # noqa: E402
from unicorn import x86_const as U  # noqa: E402

from exec_harness import GPRS, Bare, lib  # noqa: E402

CODE, DATA, DATA_SIZE = 0x1000, 0x8000, 0x1000
STACK_LO, STACK_TOP, MEM_SIZE = 0xC000, 0xF000, 0x10000
FS_BASE, GS_BASE = 0x40, 0x80
LABEL0 = 1 << 40            # iced label ids: the ip of each instruction before encoding

CF, PF, AF, ZF, SF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x400, 0x800
ARITH = CF | PF | AF | ZF | SF | OF
_ICED_FLAGS = ((RflagsBits.OF, OF), (RflagsBits.SF, SF), (RflagsBits.ZF, ZF),
               (RflagsBits.AF, AF), (RflagsBits.CF, CF), (RflagsBits.PF, PF))

# Registers the programs may write, by operand size.
W64 = [R.RAX, R.RBX, R.RCX, R.RDX, R.RSI, R.RDI, R.RBP, R.R8, R.R9, R.R10, R.R11, R.R12, R.R13]
W32 = [R.EAX, R.EBX, R.ECX, R.EDX, R.ESI, R.EDI, R.EBP, R.R8D, R.R9D, R.R10D, R.R11D,
       R.R12D, R.R13D]
W16 = [R.AX, R.BX, R.CX, R.DX, R.SI, R.DI, R.BP, R.R8W, R.R9W, R.R10W, R.R11W, R.R12W, R.R13W]
W8 = [R.AL, R.BL, R.CL, R.DL, R.SIL, R.DIL, R.BPL, R.R8L, R.R9L, R.R10L, R.R11L, R.R12L,
      R.R13L, R.AH, R.BH, R.CH, R.DH]
REGS = {1: W8, 2: W16, 4: W32, 8: W64}

MNEMONICS = {"ADD", "OR", "ADC", "SBB", "AND", "SUB", "XOR", "CMP", "TEST", "INC", "DEC",
             "NEG", "NOT", "MOV", "MOVZX", "MOVSX", "MOVSXD", "LEA", "PUSH", "POP", "XCHG",
             "SHL", "SAL", "SHR", "SAR", "ROL", "ROR", "RCL", "RCR", "IMUL", "MUL", "NOP", "PAUSE",
             "LFENCE", "MFENCE", "SFENCE", "CBW", "CWDE", "CDQE", "CWD", "CDQ", "CQO",
             "CLC", "STC", "CMC", "CLD", "STD", "CLI", "STI", "SAHF", "LAHF",
             "SETO", "SETNO", "SETB", "SETAE", "SETE", "SETNE", "SETBE", "SETA", "SETS",
             "SETNS", "SETP", "SETNP", "SETL", "SETGE", "SETLE", "SETG",
             "CMOVO", "CMOVNO", "CMOVB", "CMOVAE", "CMOVE", "CMOVNE", "CMOVBE", "CMOVA",
             "CMOVS", "CMOVNS", "CMOVP", "CMOVNP", "CMOVL", "CMOVGE", "CMOVLE", "CMOVG"}
SHIFTS = {"SHL", "SAL", "SHR", "SAR", "ROL", "ROR", "RCL", "RCR"}

_REG_KINDS = {K.R8_REG: 1, K.R8_OPCODE: 1, K.R16_REG: 2, K.R16_OPCODE: 2, K.R32_REG: 4,
              K.R32_OPCODE: 4, K.R64_REG: 8, K.R64_OPCODE: 8}
_RM_KINDS = {K.R8_OR_MEM: 1, K.R16_OR_MEM: 2, K.R32_OR_MEM: 4, K.R64_OR_MEM: 8}
_IMM_KINDS = {K.IMM8: (0, 0xFF), K.IMM8SEX16: (-128, 127), K.IMM8SEX32: (-128, 127),
              K.IMM8SEX64: (-128, 127), K.IMM16: (0, 0xFFFF), K.IMM32: (0, 0xFFFFFFFF),
              K.IMM32SEX64: (-(1 << 31), (1 << 31) - 1), K.IMM64: (0, (1 << 64) - 1),
              K.IMM8_CONST_1: (1, 1)}
# Values where carries, overflows and signs change, for immediates and registers.
EDGES = [0, 1, 2, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000,
         0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
_FIXED = {K.AL: R.AL, K.AX: R.AX, K.EAX: R.EAX, K.RAX: R.RAX, K.CL: R.CL}


def _mnemonic_names():
    from iced_x86 import Mnemonic
    return {getattr(Mnemonic, n): n for n in dir(Mnemonic) if n.isupper()}


def _plain_codes():
    """Codes of the subset whose operands are registers, r/m, memory and immediates."""
    names = _mnemonic_names()
    out = []
    for name in dir(Code):
        if not name.isupper():
            continue
        code = getattr(Code, name)
        try:
            oi = OpCodeInfo(code)
        except Exception:
            continue
        if not oi.mode64 or names.get(oi.mnemonic) not in MNEMONICS or oi.encoding != 0:
            continue
        if name.endswith(("_F6R1", "_F7R1")):
            continue            # TEST's /1 alias: unicorn raises #UD, hardware runs it
        kinds = [oi.op_kind(i) for i in range(oi.op_count)]
        if all(k in _REG_KINDS or k in _RM_KINDS or k in _IMM_KINDS or k in _FIXED
               or k in (K.MEM, K.MEM_OFFS) for k in kinds):
            out.append((code, names[oi.mnemonic], kinds))
    return out


PLAIN = _plain_codes()


def _flags(bits):
    return sum(x86 for iced_bit, x86 in _ICED_FLAGS if bits & iced_bit)


# ---- program generation ----

@st.composite
def mem_operand(draw, size):
    """A memory operand of `size` bytes inside the data area or the stack."""
    form = draw(st.sampled_from(["base", "sib", "rip", "abs", "abs32", "fs", "gs", "a32",
                                 "stack"]))
    disp = draw(st.integers(0, DATA_SIZE - 0x100))
    if form == "base":
        return MemoryOperand(R.R15, displ=disp, displ_size=draw(st.sampled_from([0, 8])))
    if form == "sib":
        return MemoryOperand(R.R15, R.R14, draw(st.sampled_from([1, 2, 4, 8])), disp,
                             draw(st.sampled_from([1, 8])) if disp < 128 else 8)
    if form == "rip":
        return MemoryOperand(R.RIP, displ=DATA + disp)
    if form == "abs":
        return MemoryOperand(displ=DATA + disp, displ_size=8)
    if form == "abs32":
        return MemoryOperand(displ=DATA + disp, displ_size=4)
    if form in ("fs", "gs"):
        return MemoryOperand(R.R15, displ=disp, displ_size=8,
                             seg=R.FS if form == "fs" else R.GS)
    if form == "a32":
        return MemoryOperand(R.R15D, R.R14D, draw(st.sampled_from([1, 2, 4, 8])), disp, 4)
    return MemoryOperand(R.RSP, displ=draw(st.integers(0, 0x80)), displ_size=1)


# Register-only instructions (LEA computes an address, touches nothing): what native runs
# execute (exec_native.c), plus the few the interpreter keeps (CLD, STI ...).
PLAIN_REGS = [(c, m, k) for c, m, k in PLAIN
              if m not in ("PUSH", "POP") and K.MEM_OFFS not in k
              and (K.MEM not in k or m == "LEA")]


@st.composite
def plain_insn(draw, memory=True):
    code, mnem, kinds = draw(st.sampled_from(PLAIN if memory else PLAIN_REGS))
    args, size = [], None
    for k in kinds:
        if k in _FIXED:
            args.append(("reg", _FIXED[k]))
        elif k in _REG_KINDS:
            args.append(("reg", draw(st.sampled_from(REGS[_REG_KINDS[k]]))))
        elif k in _RM_KINDS:
            size = _RM_KINDS[k]
            if memory and draw(st.booleans()):
                args.append(("mem", draw(mem_operand(size))))
            else:
                args.append(("reg", draw(st.sampled_from(REGS[size]))))
        elif k == K.MEM:
            args.append(("mem", draw(mem_operand(8))))
        elif k == K.MEM_OFFS:           # MOV A0-A3: a 64-bit absolute address
            seg = draw(st.sampled_from([R.NONE, R.FS, R.GS]))
            args.append(("mem", MemoryOperand(displ=DATA + draw(st.integers(0, 0xF00)),
                                              displ_size=8, seg=seg)))
        else:
            lo, hi = _IMM_KINDS[k]
            edges = [e for e in EDGES + [-e for e in EDGES] if lo <= e <= hi]
            args.append(("imm", draw(st.one_of(st.sampled_from(edges), st.integers(lo, hi)))))
    return code, mnem, args


def _create(code, args):
    shape = "_".join(a[0] for a in args)
    vals = [a[1] for a in args]
    plain = {"": Instruction.create, "reg": Instruction.create_reg,
             "mem": Instruction.create_mem, "reg_reg": Instruction.create_reg_reg,
             "reg_mem": Instruction.create_reg_mem, "mem_reg": Instruction.create_mem_reg}
    if shape in plain:
        return plain[shape](code, *vals)
    imm = vals[-1]
    if shape == "imm":
        return (Instruction.create_u32 if imm > 0x7FFFFFFF else Instruction.create_i32)(code, imm)
    if shape == "reg_imm":
        if imm > 0xFFFFFFFF or imm < -(1 << 31):
            return Instruction.create_reg_u64(code, vals[0], imm & ((1 << 64) - 1))
        if imm > 0x7FFFFFFF:
            return Instruction.create_reg_u32(code, vals[0], imm)
        return Instruction.create_reg_i32(code, vals[0], imm)
    if shape == "mem_imm":
        return (Instruction.create_mem_u32 if imm > 0x7FFFFFFF else
                Instruction.create_mem_i32)(code, vals[0], imm)
    if shape == "reg_reg_imm":
        return (Instruction.create_reg_reg_u32 if imm > 0x7FFFFFFF else
                Instruction.create_reg_reg_i32)(code, vals[0], vals[1], imm)
    if shape == "reg_mem_imm":
        return (Instruction.create_reg_mem_u32 if imm > 0x7FFFFFFF else
                Instruction.create_reg_mem_i32)(code, vals[0], vals[1], imm)
    raise ValueError(shape)


def _shift_undef(mnem, kinds, args, size, undef, modified):
    """Flags undefined after a shift/rotate (SDM: count 0 changes nothing; OF only for
    count 1; AF always for shifts; CF of SHL/SHR when count >= operand bits)."""
    bits = size * 8
    if kinds[-1] == K.CL:
        count = None
    else:
        count = args[-1][1] & (0x3F if size == 8 else 0x1F)
    if count == 0:
        return undef
    shift = mnem in ("SHL", "SAL", "SHR", "SAR")
    new = OF | (AF if shift else 0)
    if mnem in ("SHL", "SAL", "SHR") and size < 4 and (count is None or count >= bits):
        new |= CF
    if count is None:
        return undef | new
    if count == 1:
        new &= ~OF
    return (undef & ~modified) | new


class Program:
    """Items of iced instructions; item i's label is LABEL0 + 16 * i."""

    def __init__(self):
        self.items = []
        self.undef = 0           # flags undefined at the current end of the program
        self.joins = {}          # item index -> undefined flags of branches landing there

    def label(self, i):
        return LABEL0 + 16 * i

    def merge(self):
        """Join the branches landing on the next item into the flags state."""
        self.undef |= self.joins.pop(len(self.items), 0)

    def add(self, *instrs, undef=None):
        i = len(self.items)
        self.merge()
        for n, ins in enumerate(instrs):
            ins.ip = self.label(i) + n
        self.items.append(list(instrs))
        if undef is not None:
            self.undef = undef

    def need_flags(self, read):
        """Define the flags an instruction is about to read, if any is undefined."""
        self.merge()
        # Each CMP added is an item of its own, so a branch can land on the item after it
        # (the reader's) with undefined flags again: define them until none can.
        while read & self.undef:
            self.add(Instruction.create_reg_reg(Code.CMP_RM64_R64, R.RAX, R.RBX), undef=0)
            self.merge()

    def branch_to(self, skip):
        """The label `skip` items after the next one; branches there carry self.undef."""
        target = len(self.items) + 1 + skip
        self.joins[target] = self.joins.get(target, 0) | self.undef
        return self.label(target)

    def finish(self):
        self.add(Instruction.create(Code.HLT))
        self.undef |= self.joins.pop(len(self.items) - 1, 0)
        # branches past the end land on the HLT too (their targets are clamped)
        for t in list(self.joins):
            self.undef |= self.joins.pop(t)

    def encode(self, base=CODE):
        flat = [ins for item in self.items for ins in item]
        last = self.label(len(self.items) - 1)
        for ins in flat:        # clamp branch targets past the end to the HLT
            if ins.op_count and ins.op0_kind in (iced.OpKind.NEAR_BRANCH64,):
                if ins.near_branch64 > last:
                    ins.near_branch64 = last
        enc = BlockEncoder(64)
        enc.add_many(flat)
        return enc.encode(base)


def _plain(draw, prog, memory=True):
    for _ in range(20):
        code, mnem, args = draw(plain_insn(memory))
        kinds = [OpCodeInfo(code).op_kind(i) for i in range(OpCodeInfo(code).op_count)]
        try:
            ins = _create(code, args)
            Encoder(64).encode(ins, CODE)   # AH..BH with a REX prefix is no instruction
        except ValueError:
            continue
        read, modified = _flags(ins.rflags_read), _flags(ins.rflags_modified)
        prog.need_flags(read)       # also joins the branches landing here
        if mnem in SHIFTS:
            size = {1: 1, 2: 2, 4: 4, 8: 8}[_RM_KINDS.get(kinds[0], 8)]
            undef = _shift_undef(mnem, kinds, args, size, prog.undef, modified)
        else:
            undef = (prog.undef & ~modified) | _flags(ins.rflags_undefined)
        prog.add(ins, undef=undef)
        return


def _div(draw, prog):
    prog.merge()
    size = draw(st.sampled_from([1, 2, 4, 8]))
    signed = draw(st.booleans())
    divreg = draw(st.sampled_from([1, 2, 4, 5, 7, 8, 9]))  # not rAX/rDX, and not AH..BH
    dreg = REGS[size][divreg]
    divisor = draw(st.integers(1, (1 << (size * 8 - 1)) - 1))
    if signed and draw(st.booleans()):
        divisor = -divisor if divisor > 1 else 2
    setup = {
        (1, False): Instruction.create_reg_reg(Code.MOVZX_R16_RM8, R.AX, R.AL),
        (1, True): Instruction.create(Code.CBW),
        (2, False): Instruction.create_reg_reg(Code.XOR_R32_RM32, R.EDX, R.EDX),
        (2, True): Instruction.create(Code.CWD),
        (4, False): Instruction.create_reg_reg(Code.XOR_R32_RM32, R.EDX, R.EDX),
        (4, True): Instruction.create(Code.CDQ),
        (8, False): Instruction.create_reg_reg(Code.XOR_R32_RM32, R.EDX, R.EDX),
        (8, True): Instruction.create(Code.CQO),
    }[(size, signed)]
    mov = {1: Code.MOV_R8_IMM8, 2: Code.MOV_R16_IMM16, 4: Code.MOV_R32_IMM32,
           8: Code.MOV_R64_IMM64}[size]
    imm = divisor & ((1 << (size * 8)) - 1)
    movi = (Instruction.create_reg_u64(mov, dreg, imm) if size == 8
            else Instruction.create_reg_u32(mov, dreg, imm))
    op = {(1, False): Code.DIV_RM8, (1, True): Code.IDIV_RM8, (2, False): Code.DIV_RM16,
          (2, True): Code.IDIV_RM16, (4, False): Code.DIV_RM32, (4, True): Code.IDIV_RM32,
          (8, False): Code.DIV_RM64, (8, True): Code.IDIV_RM64}[(size, signed)]
    if draw(st.booleans()):
        div = Instruction.create_reg(op, dreg)
        prog.add(setup, movi, div, undef=prog.undef | ARITH)
    else:
        mem = MemoryOperand(R.R15, displ=draw(st.integers(0, 0x800)), displ_size=8)
        store = Instruction.create_mem_reg(
            {1: Code.MOV_RM8_R8, 2: Code.MOV_RM16_R16, 4: Code.MOV_RM32_R32,
             8: Code.MOV_RM64_R64}[size], mem, dreg)
        prog.add(setup, movi, store, Instruction.create_mem(op, mem),
                 undef=prog.undef | ARITH)


CC_JCC = [Code.JO_REL8_64, Code.JNO_REL8_64, Code.JB_REL8_64, Code.JAE_REL8_64,
          Code.JE_REL8_64, Code.JNE_REL8_64, Code.JBE_REL8_64, Code.JA_REL8_64,
          Code.JS_REL8_64, Code.JNS_REL8_64, Code.JP_REL8_64, Code.JNP_REL8_64,
          Code.JL_REL8_64, Code.JGE_REL8_64, Code.JLE_REL8_64, Code.JG_REL8_64,
          Code.JO_REL32_64, Code.JNE_REL32_64, Code.JL_REL32_64, Code.JBE_REL32_64]
# unicorn (its QEMU) leaves CF, AF and OF wrong after LOOPE/LOOPNE; the SDM says LOOPcc
# changes no flag, which is what the interpreter does (tests/test_exec.py checks it).
UNICORN_LOOPCC_CLOBBERS = CF | AF | OF
LOOPS = [Code.LOOP_REL8_64_RCX, Code.LOOPE_REL8_64_RCX, Code.LOOPNE_REL8_64_RCX,
         Code.JRCXZ_REL8_64, Code.LOOP_REL8_64_ECX, Code.JECXZ_REL8_64]


def _branch(draw, prog):
    kind = draw(st.sampled_from(["jcc", "jmp", "loop", "call", "ret", "jmpind", "callind",
                                 "popf", "pushf"]))
    skip = draw(st.integers(0, 3))

    def ud2():
        return Instruction.create(Code.UD2)

    if kind in ("jcc", "jmp", "loop"):
        code = draw(st.sampled_from({"jcc": CC_JCC, "loop": LOOPS,
                                     "jmp": [Code.JMP_REL8_64, Code.JMP_REL32_64]}[kind]))
        probe = Instruction.create_branch(code, 0)
        prog.need_flags(_flags(probe.rflags_read))
        if code in (Code.LOOPE_REL8_64_RCX, Code.LOOPNE_REL8_64_RCX):
            prog.undef |= UNICORN_LOOPCC_CLOBBERS
        ins = Instruction.create_branch(code, prog.branch_to(skip))
        prog.add(ins)
    elif kind == "call":        # call over a UD2, then drop the return address
        reg = draw(st.sampled_from(W64))
        call = Instruction.create_branch(Code.CALL_REL32_64, prog.label(len(prog.items)) + 2)
        pop = Instruction.create_reg(Code.POP_R64, reg)
        prog.add(call, ud2(), pop)
    elif kind in ("ret", "jmpind", "callind"):
        reg = draw(st.sampled_from(W64))
        here = prog.label(len(prog.items))
        target = here + 5
        lea = Instruction.create_reg_mem(Code.LEA_R64_M, reg, MemoryOperand(R.RIP, displ=target))
        pop = Instruction.create_reg(Code.POP_R64, draw(st.sampled_from(W64)))
        nop = Instruction.create(Code.NOPD)
        if kind == "ret":
            imm = draw(st.sampled_from([None, 0, 8, 16]))
            ret = (Instruction.create(Code.RETNQ) if imm is None
                   else Instruction.create_i32(Code.RETNQ_IMM16, imm))
            prog.add(lea, Instruction.create_reg(Code.PUSH_R64, reg), ret, ud2(), ud2(), nop)
        elif kind == "jmpind":
            if draw(st.booleans()):
                prog.add(lea, Instruction.create_reg(Code.JMP_RM64, reg), ud2(), ud2(), ud2(), nop)
            else:
                mem = MemoryOperand(R.R15, displ=draw(st.integers(0, 0x800)), displ_size=8)
                prog.add(lea, Instruction.create_mem_reg(Code.MOV_RM64_R64, mem, reg),
                         Instruction.create_mem(Code.JMP_RM64, mem), ud2(), ud2(), nop)
        else:
            prog.add(lea, Instruction.create_reg(Code.CALL_RM64, reg), ud2(), ud2(), ud2(), pop)
    elif kind == "popf":        # POPF of a value without TF: arithmetic flags, DF
        value = draw(st.integers(0, 0xFFFF)) & (ARITH | DF)
        prog.add(Instruction.create_i32(Code.PUSHQ_IMM32, value), Instruction.create(Code.POPFQ),
                 undef=0)
    else:
        prog.need_flags(ARITH)
        prog.add(Instruction.create(Code.PUSHFQ),
                 Instruction.create_reg(Code.POP_R64, draw(st.sampled_from(W64))))


STRING_OPS = {
    "movs": ("movsb", "movsw", "movsd", "movsq"),
    "stos": ("stosb", "stosw", "stosd", "stosq"),
    "lods": ("lodsb", "lodsw", "lodsd", "lodsq"),
    "cmps": ("cmpsb", "cmpsw", "cmpsd", "cmpsq"),
    "scas": ("scasb", "scasw", "scasd", "scasq"),
}


def _string(draw, prog):
    """A string instruction on the data area: RSI, RDI and RCX set just before, in
    either direction, with or without REP/REPE/REPNE, 32-bit addressing or FS/GS on the
    source sometimes. Sources and destinations may overlap."""
    from iced_x86 import RepPrefixKind
    prog.merge()
    kind = draw(st.sampled_from(sorted(STRING_OPS)))
    size = draw(st.sampled_from([0, 1, 2, 3]))
    rep = draw(st.sampled_from([RepPrefixKind.NONE, RepPrefixKind.REPE, RepPrefixKind.REPNE]))
    a32 = draw(st.booleans())
    seg = R.NONE
    if kind in ("movs", "lods", "cmps") and draw(st.booleans()):
        seg = draw(st.sampled_from([R.FS, R.GS]))
    count = draw(st.sampled_from([0, 1, 2, 3, 7, 16, 40]))
    src, dst = (draw(st.integers(0x200, 0xC00)) for _ in range(2))
    if seg == R.FS:
        src -= FS_BASE
    elif seg == R.GS:
        src -= GS_BASE
    setup = [Instruction.create_reg_mem(Code.LEA_R64_M, R.RSI, MemoryOperand(R.R15, displ=src,
                                                                            displ_size=8)),
             Instruction.create_reg_mem(Code.LEA_R64_M, R.RDI, MemoryOperand(R.R15, displ=dst,
                                                                            displ_size=8)),
             Instruction.create_reg_u32(Code.MOV_R32_IMM32, R.ECX, count),
             Instruction.create(draw(st.sampled_from([Code.CLD, Code.STD])))]
    name = STRING_OPS[kind][size]
    args = {"address_size": 32 if a32 else 64, "rep_prefix": rep}
    if kind in ("movs", "lods", "cmps"):
        args["segment_prefix"] = seg
    ins = getattr(Instruction, "create_" + name)(**args)
    undef = prog.undef
    if kind in ("cmps", "scas"):
        undef = prog.undef & ~ARITH if rep == RepPrefixKind.NONE or count else prog.undef
    prog.add(*setup, ins, Instruction.create(Code.CLD), undef=undef)


@st.composite
def programs(draw):
    prog = Program()
    for _ in range(draw(st.integers(1, 30))):
        what = draw(st.sampled_from(["plain"] * 8 + ["div", "branch", "branch", "string"]))
        {"plain": _plain, "div": _div, "branch": _branch, "string": _string}[what](draw, prog)
    prog.finish()
    return prog


# ---- running both ----

_UC_GPRS = {name: getattr(U, "UC_X86_REG_" + name.upper()) for name in GPRS}


def run_unicorn(code, regs, rflags, data, stack):
    mu = Uc(UC_ARCH_X86, UC_MODE_64)
    mu.mem_map(0, MEM_SIZE)
    mu.mem_write(CODE, code)
    mu.mem_write(DATA, data)
    mu.mem_write(STACK_LO, stack)
    for name, value in regs.items():
        mu.reg_write(_UC_GPRS[name], value)
    mu.reg_write(U.UC_X86_REG_RFLAGS, rflags)
    mu.reg_write(U.UC_X86_REG_FS_BASE, FS_BASE)
    mu.reg_write(U.UC_X86_REG_GS_BASE, GS_BASE)
    end = CODE + len(code) - 1     # the HLT
    mu.emu_start(CODE, end, count=10_000)
    out = {name: mu.reg_read(_UC_GPRS[name]) for name in GPRS}
    out["rip"] = mu.reg_read(U.UC_X86_REG_RIP)
    out["rflags"] = mu.reg_read(U.UC_X86_REG_RFLAGS)
    return out, bytes(mu.mem_read(DATA, DATA_SIZE)), bytes(mu.mem_read(STACK_LO, MEM_SIZE - STACK_LO))


@contextlib.contextmanager
def native_runs(on):
    """Native runs (exec_native.c) on or off for the CPUs created inside."""
    lib.pk_exec_set_native_runs(on)
    try:
        yield
    finally:
        lib.pk_exec_set_native_runs(True)


def budget_traces(code, init, budgets):
    """Run code from init in runs of these budgets (to its HLT, or as many runs as there
    are budgets), with native runs on and off: ({on: [(exit, registers, retired, budget
    left) after each run]}, {on: the CPU})."""
    traces, cpus = {}, {}
    for on in (True, False):
        with native_runs(on):
            cpu = pykvm_cpu(code, *init)
            out = []
            for budget in budgets:
                kind = cpu.run(budget=budget)
                out.append((kind, cpu.regs(), cpu.retired(), cpu.state().insn_budget))
                if kind == "HLT":
                    break
            traces[on], cpus[on] = out, cpu
    return traces, cpus


def pykvm_cpu(code, regs, rflags, data, stack):
    cpu = Bare(size=MEM_SIZE)
    cpu.write(CODE, code)
    cpu.write(DATA, data)
    cpu.write(STACK_LO, stack)
    cpu.set_regs(rip=CODE, rflags=rflags, **regs)
    cpu.set_seg("fs", base=FS_BASE)
    cpu.set_seg("gs", base=GS_BASE)
    return cpu


def run_pykvm(code, regs, rflags, data, stack):
    cpu = pykvm_cpu(code, regs, rflags, data, stack)
    exit_ = cpu.run(budget=10_000)
    assert exit_ == "HLT", f"wanted exit HLT, got {exit_} at {cpu['rip']:#x}"
    return cpu.regs(), cpu.read(DATA, DATA_SIZE), cpu.read(STACK_LO, MEM_SIZE - STACK_LO)


def initial_state(seed):
    rnd = random.Random(seed)
    regs = {name: rnd.getrandbits(64) for name in GPRS}
    for name in regs:           # edge values half of the time
        if rnd.random() < 0.5:
            regs[name] = rnd.choice(EDGES + [rnd.getrandbits(8), rnd.getrandbits(16)])
    regs.update(rsp=STACK_TOP, r15=DATA, r14=rnd.randrange(8))
    rflags = 0x202 | (rnd.getrandbits(12) & (ARITH | DF))
    return regs, rflags, rnd.randbytes(DATA_SIZE), rnd.randbytes(MEM_SIZE - STACK_LO)


def check(prog, seed):
    code = prog.encode()
    regs, rflags, data, stack = initial_state(seed)
    want, want_data, want_stack = run_unicorn(code, regs, rflags, data, stack)
    got, got_data, got_stack = run_pykvm(code, regs, rflags, data, stack)
    mask = ~prog.undef & ((1 << 22) - 1)
    listing = "\n".join(f"  {ins}" for item in prog.items for ins in item)
    for name in GPRS + ("rip",):
        assert got[name] == want[name], (
            f"{name}: wanted {want[name]:#x} (unicorn), got {got[name]:#x}\n{listing}")
    assert got["rflags"] & mask == want["rflags"] & mask, (
        f"rflags (mask {mask:#x}): wanted {want['rflags']:#x} (unicorn), "
        f"got {got['rflags']:#x}\n{listing}")
    assert got_data == want_data, f"data area differs\n{listing}"
    assert got_stack == want_stack, f"stack differs\n{listing}"


@settings(max_examples=int(os.environ.get("PYKVM_DIFF_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(prog=programs(), seed=st.integers(0, 2**32))
def test_random_programs_match_unicorn(prog, seed):
    check(prog, seed)


@pytest.mark.parametrize("mnem", sorted({m for _, m, _ in PLAIN}))
def test_each_mnemonic_once(mnem):
    """Every mnemonic of the subset at least once per run, whatever hypothesis draws."""
    rnd = random.Random(mnem)
    codes = [c for c, m, _ in PLAIN if m == mnem]
    for code in codes:
        for trial in range(4):
            oi = OpCodeInfo(code)
            args = []
            for i in range(oi.op_count):
                k = oi.op_kind(i)
                if k in _FIXED:
                    args.append(("reg", _FIXED[k]))
                elif k in _REG_KINDS:
                    args.append(("reg", rnd.choice(REGS[_REG_KINDS[k]][:13])))
                elif k == K.MEM_OFFS:
                    args.append(("mem", MemoryOperand(displ=DATA + rnd.randrange(0x100),
                                                      displ_size=8)))
                elif k in _RM_KINDS or k == K.MEM:
                    size = _RM_KINDS.get(k, 8)
                    if k == K.MEM or trial % 2:
                        args.append(("mem", MemoryOperand(R.R15, displ=rnd.randrange(0x100),
                                                          displ_size=8)))
                    else:
                        args.append(("reg", rnd.choice(REGS[size][:13])))
                else:
                    lo, hi = _IMM_KINDS[k]
                    args.append(("imm", rnd.randint(lo, hi)))
            prog = Program()
            ins = _create(code, args)
            prog.add(Instruction.create_reg_reg(Code.CMP_RM64_R64, R.RCX, R.RDX), undef=0)
            kinds = [oi.op_kind(i) for i in range(oi.op_count)]
            if mnem in SHIFTS:
                undef = _shift_undef(mnem, kinds, args, _RM_KINDS.get(kinds[0], 8), 0,
                                     _flags(ins.rflags_modified))
            else:
                undef = _flags(ins.rflags_undefined)
            prog.add(ins, undef=undef)
            prog.finish()
            check(prog, rnd.getrandbits(32))


# ---- native runs: register-only loops, against the interpreter alone and unicorn ----

@st.composite
def register_loops(draw):
    """mov r14d, n; cmp rax, rbx; <register-only body>; dec r14; jnz <the cmp>; hlt.
    Run twice, the loop block is a native loop (exec_native.c) from its second pass on;
    the body's own blocks are native runs. The CMP defines every flag at the top.
    Or a short loop with no CMP: at most one body instruction, then DEC (which keeps CF,
    so the loop's flags come in from before it) and JNZ; each iteration's CF is then the
    body's or the one before the loop, never an undefined one."""
    prog = Program()
    prog.add(Instruction.create_reg_u32(Code.MOV_R32_IMM32, R.R14D, draw(st.integers(1, 12))))
    top = len(prog.items)
    short = draw(st.booleans())
    if not short:
        prog.add(Instruction.create_reg_reg(Code.CMP_RM64_R64, R.RAX, R.RBX), undef=0)
    for _ in range(draw(st.integers(0, 1) if short else st.integers(1, 24))):
        _plain(draw, prog, memory=False)
    prog.add(Instruction.create_reg(Code.DEC_RM64, R.R14),
             Instruction.create_branch(Code.JNE_REL32_64, prog.label(top)))
    prog.undef &= ~(ZF | SF | OF | PF | AF)     # DEC wrote them; CF comes from the body
    prog.finish()
    return prog


def _state(cpu):
    return cpu.regs(), cpu.read(DATA, DATA_SIZE), cpu.read(STACK_LO, MEM_SIZE - STACK_LO)


def _listing(prog):
    return "\n".join(f"  {ins}" for item in prog.items for ins in item)


@settings(max_examples=int(os.environ.get("PYKVM_DIFF_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(prog=register_loops(), seed=st.integers(0, 2**32))
def test_native_runs_match_the_interpreter_exactly(prog, seed):
    """Register-only loops with native runs on and off end in the same state, every flag
    included (a native run never ends with flags the SDM leaves undefined), and agree
    with unicorn on what is defined."""
    check(prog, seed)
    code = prog.encode()
    init = initial_state(seed)
    states = []
    for on in (True, False):
        with native_runs(on):
            cpu = pykvm_cpu(code, *init)
            assert cpu.run(budget=10_000) == "HLT"
            states.append(_state(cpu))
    assert states[0] == states[1], f"native {states[0][0]} != interpreted {states[1][0]}\n" \
        + _listing(prog)


@settings(max_examples=int(os.environ.get("PYKVM_DIFF_EXAMPLES", "300")) // 3, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(prog=register_loops(), seed=st.integers(0, 2**32),
       budgets=st.lists(st.integers(1, 40), min_size=1, max_size=60))
def test_native_runs_stop_where_the_budget_says(prog, seed, budgets):
    """Cut into runs by budgets (the host's timer), native and interpreted execution stop
    at the same instruction with the same state at every exit, and retire as many."""
    trace, _ = budget_traces(prog.encode(), initial_state(seed), budgets * 20)
    assert trace[True] == trace[False], _listing(prog)
