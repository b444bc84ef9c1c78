"""A thin x86-64 assembler over iced-x86: labels, operand matching, BlockEncoder.

Every instruction is `emit(mnemonic_or_code, *operands)`; `a.add("rax", 1)` is sugar for
`a.emit("add", "rax", 1)`, so any instruction iced knows in 64-bit legacy encoding is
available (names that are Python keywords take a trailing underscore: `a.and_`, `a.or_`,
`a.in_`, `a.not_`). Operands:

- a register name: ``"rax"``, ``"eax"``, ``"al"``, ``"dx"``, ``"cr0"``, ``"fs"``
- an ``int``: an immediate (checked against the encoding's width and sign extension)
- a `Label`: a branch target, or the label's address as an immediate or displacement
- a `Mem`: ``mem("rsp", 8)``, ``qword(0x7000)`` (absolute), ``mem(label)`` (RIP-relative)

Among the encodings that accept the operands, the shortest is chosen; branches start
short and BlockEncoder widens them when the target is far. An unsized memory operand
whose size nothing else fixes is an error (say ``qword(...)``). 16-bit forms are chosen
only when a 16-bit operand asks for them (`push 1` is PUSHQ, never PUSHW).

Labels use the iced BlockEncoder convention: a labelled instruction's `ip` is the label's
id and branches target that id. Label addresses used as immediates need a second pass:
such instructions use a fixed-width immediate, so the layout of pass 1 holds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from iced_x86 import (BlockEncoder, Code, Decoder, EncodingKind, Encoder, Instruction,
                      Mnemonic, OpCodeInfo, OpCodeOperandKind as K, OpKind,
                      Register, RegisterExt)

from pykvm.errors import PykvmError

__all__ = ["Asm", "AsmError", "Assembled", "Label", "Mem", "mem", "byte", "word", "dword",
           "qword"]

# Label ids live far above any guest address so that a branch to a plain integer address
# is never mistaken for a label (BlockEncoder looks targets up among instruction ips).
_LABEL_ID_BASE = 0xF00D_0000_0000_0000


class AsmError(ValueError, PykvmError):
    """An instruction that cannot be encoded as written; the message says why."""


class Label:
    """A position in an `Asm`'s code. Bind it with `Asm.bind`; after `Asm.assemble`,
    `address` holds its guest address."""

    __slots__ = ("name", "owner", "index", "address")

    def __init__(self, owner, name=None):
        self.name = name
        self.owner = owner
        self.index = None      # the item this label is bound to (len(items) = end of code)
        self.address = None

    def __repr__(self):
        where = "unbound" if self.index is None else (
            f"{self.address:#x}" if self.address is not None else f"item {self.index}")
        return f"Label({self.name or '?'} @ {where})"


@dataclass(frozen=True)
class Mem:
    """A memory operand [base + index*scale + disp]; `size` in bits or None (implied).
    A `Label` disp with no base is RIP-relative; an int disp with no base is absolute."""
    base: str | None = None
    index: str | None = None
    scale: int = 1
    disp: int | Label = 0
    size: int | None = None


def mem(base_or_disp=None, disp=0, *, index=None, scale=1, size=None):
    """``mem("rsp", 8)`` = [rsp+8]; ``mem(0x7000)`` = [0x7000]; ``mem(label)`` =
    [rip+label]."""
    if isinstance(base_or_disp, (int, Label)) and not isinstance(base_or_disp, bool):
        if disp:
            raise AsmError("mem(disp, disp): give a base register first")
        return Mem(None, index, scale, base_or_disp, size)
    return Mem(base_or_disp, index, scale, disp, size)


def byte(*args, **kw):
    """A byte memory operand; arguments as for `mem`."""
    return _sized(8, args, kw)


def word(*args, **kw):
    """A word (16-bit) memory operand."""
    return _sized(16, args, kw)


def dword(*args, **kw):
    """A dword (32-bit) memory operand."""
    return _sized(32, args, kw)


def qword(*args, **kw):
    """A qword (64-bit) memory operand."""
    return _sized(64, args, kw)


def _sized(size, args, kw):
    if len(args) == 1 and isinstance(args[0], Mem) and not kw:
        m = args[0]
        return Mem(m.base, m.index, m.scale, m.disp, size)
    return mem(*args, size=size, **kw)


@dataclass(frozen=True)
class Assembled:
    """The result of `Asm.assemble`: code bytes at `base`, and label addresses."""
    base: int
    code: bytes
    symbols: dict

    @property
    def end(self):
        return self.base + len(self.code)


# ---- operand classification -------------------------------------------------------

_GPR_KINDS = {
    K.R8_OR_MEM: 8, K.R8_REG: 8, K.R8_OPCODE: 8,
    K.R16_OR_MEM: 16, K.R16_REG: 16, K.R16_OPCODE: 16, K.R16_RM: 16,
    K.R32_OR_MEM: 32, K.R32_REG: 32, K.R32_OPCODE: 32, K.R32_RM: 32,
    K.R64_OR_MEM: 64, K.R64_REG: 64, K.R64_OPCODE: 64, K.R64_RM: 64,
}
_MEM_KINDS = {K.R8_OR_MEM: 8, K.R16_OR_MEM: 16, K.R32_OR_MEM: 32, K.R64_OR_MEM: 64,
              K.MEM: None}
_FIXED_REG_KINDS = {K.AL: Register.AL, K.AX: Register.AX, K.EAX: Register.EAX,
                    K.RAX: Register.RAX, K.CL: Register.CL, K.DX: Register.DX,
                    K.ES: Register.ES, K.CS: Register.CS, K.SS: Register.SS,
                    K.DS: Register.DS, K.FS: Register.FS, K.GS: Register.GS}
# immediate kind -> (OpKind, accepted range, function giving the stored value or None)
_IMM_KINDS = {
    K.IMM8: OpKind.IMMEDIATE8, K.IMM8_CONST_1: OpKind.IMMEDIATE8,
    K.IMM8SEX16: OpKind.IMMEDIATE8TO16, K.IMM8SEX32: OpKind.IMMEDIATE8TO32,
    K.IMM8SEX64: OpKind.IMMEDIATE8TO64, K.IMM16: OpKind.IMMEDIATE16,
    K.IMM32: OpKind.IMMEDIATE32, K.IMM32SEX64: OpKind.IMMEDIATE32TO64,
    K.IMM64: OpKind.IMMEDIATE64,
}
# Only fixed-width immediates can hold a label address (known only after pass 1).
_LABEL_IMM_KINDS = {K.IMM32, K.IMM32SEX64, K.IMM64}
_BRANCH_KINDS = {K.BR64_1, K.BR64_4}
_MNEMONIC_ALIASES = {"jz": "je", "jnz": "jne", "jc": "jb", "jnc": "jae", "jnae": "jb",
                     "jnb": "jae", "jna": "jbe", "jnbe": "ja", "jnge": "jl", "jnl": "jge",
                     "jng": "jle", "jnle": "jg", "sal": "shl", "iret": "iretq",
                     "sysret": "sysretq", "pushf": "pushfq", "popf": "popfq"}


def _sext(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _imm_fits(kind, value):
    """The value as the encoding stores it, or None if `kind` cannot represent `value`."""
    if kind == K.IMM8_CONST_1:
        return 1 if value == 1 else None
    if kind in (K.IMM8, K.IMM16, K.IMM32, K.IMM64):
        bits = {K.IMM8: 8, K.IMM16: 16, K.IMM32: 32, K.IMM64: 64}[kind]
        return value & ((1 << bits) - 1) if -(1 << (bits - 1)) <= value < (1 << bits) else None
    width, src = {K.IMM8SEX16: (16, 8), K.IMM8SEX32: (32, 8), K.IMM8SEX64: (64, 8),
                  K.IMM32SEX64: (64, 32)}[kind]
    if not -(1 << (width - 1)) <= value < (1 << width):
        return None
    return _sext(value, src) if _sext(value, src) == _sext(value, width) else None


@functools.cache
def _register(name):
    reg = getattr(Register, name.upper(), None) if isinstance(name, str) else None
    if reg is None or name.upper() in ("NONE", "DONTUSE0", "DONTUSEFA", "DONTUSEFB",
                                       "DONTUSEFC", "DONTUSEFD", "DONTUSEFE", "DONTUSEFF"):
        raise AsmError(f"unknown register {name!r}")
    return reg


@functools.cache
def _codes_by_mnemonic():
    """Mnemonic -> Codes usable in 64-bit mode, legacy encoding, with operand kinds this
    module knows (far branches and moffs forms left out: never what a guest program
    means by `jmp [mem]` or `mov rax, [abs]`)."""
    table = {}
    known = (set(_GPR_KINDS) | set(_MEM_KINDS) | set(_FIXED_REG_KINDS) | set(_IMM_KINDS)
             | _BRANCH_KINDS | {K.SEG_REG, K.CR_REG, K.DR_REG})
    for name, code in vars(Code).items():
        if not isinstance(code, int) or name.startswith("_"):
            continue
        info = OpCodeInfo(code)
        if (not info.is_instruction or not info.mode64
                or info.encoding != EncodingKind.LEGACY):
            continue
        kinds = tuple(info.op_kinds())
        if not all(k in known for k in kinds):
            continue
        if name.startswith(("JMP_M16", "CALL_M16")):  # far indirect
            continue
        table.setdefault(info.mnemonic, []).append((code, kinds, info.operand_size))
    return table


def _mnemonic(name):
    key = name.lower().rstrip("_")
    key = _MNEMONIC_ALIASES.get(key, key)
    mn = getattr(Mnemonic, key.upper(), None)
    if not isinstance(mn, int) or mn not in _codes_by_mnemonic():
        raise AsmError(f"unknown or unsupported mnemonic {name!r}")
    return mn


class _Item:
    """One instruction or data directive, with what pass 2 must patch."""
    __slots__ = ("instr", "imm_label", "disp_label", "branch_label", "labels", "text")

    def __init__(self, instr, text):
        self.instr = instr
        self.imm_label = None      # (operand index, Label)
        self.disp_label = None     # Label (RIP-relative or absolute displacement)
        self.branch_label = None   # Label
        self.labels = []
        self.text = text


class Asm:
    """x86-64 code at a fixed guest address `base`.

    >>> a = Asm(0x10000)
    >>> top = a.here("top")
    >>> _ = a.out(0xE1, "al"), a.jmp(top)
    >>> a.assemble().code.hex()
    'e6e1ebfc'
    """

    def __init__(self, base):
        if not isinstance(base, int) or base < 0:
            raise AsmError(f"base must be a non-negative int, got {base!r}")
        self.base = base
        self._items = []
        self._labels = []
        self._named = {}
        self._assembled = None

    # ---- labels ----------------------------------------------------------------------
    def label(self, name=None):
        """A new unbound label; `bind` it where it belongs (forward references are
        fine)."""
        if name is not None and name in self._named:
            raise AsmError(f"label {name!r} already exists")
        lab = Label(self, name)
        self._labels.append(lab)
        if name is not None:
            self._named[name] = lab
        return lab

    def bind(self, label):
        """Bind `label` to the next instruction or data emitted."""
        self._check_label(label)
        if label.index is not None:
            raise AsmError(f"{label!r} is already bound")
        label.index = len(self._items)
        self._assembled = None
        return label

    def here(self, name=None):
        """A new label bound to the next instruction: ``top = a.here()``."""
        return self.bind(self.label(name))

    def __getitem__(self, name):
        """The label called `name`."""
        return self._named[name]

    def _check_label(self, label):
        if not isinstance(label, Label) or label.owner is not self:
            raise AsmError(f"{label!r} does not belong to this Asm")

    # ---- emitting --------------------------------------------------------------------
    def emit(self, code, *operands):
        """Emit one instruction: `code` is a mnemonic ("mov") or an iced `Code`
        (exact encoding); operands as described in the module docstring."""
        if isinstance(code, str):
            candidates = _codes_by_mnemonic()[_mnemonic(code)]
        elif isinstance(code, int) and not isinstance(code, bool):
            info = OpCodeInfo(code)
            candidates = [(code, tuple(info.op_kinds()), info.operand_size)]
        else:
            raise AsmError(f"emit: expected a mnemonic or iced Code, got {code!r}")
        ops = tuple(self._operand(o) for o in operands)
        text = f"{code if isinstance(code, str) else code} " + ", ".join(map(repr, operands))
        matches = [m for m in (self._match(c, ops) for c in candidates) if m is not None]
        if not matches:
            raise AsmError(f"no encoding of {text.strip()}")
        item = self._choose(matches, ops, text.strip())
        self._items.append(item)
        self._assembled = None
        return item.instr

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            _mnemonic(name)
        except AsmError:
            raise AttributeError(f"{type(self).__name__} has no instruction {name!r}") from None
        return functools.partial(self.emit, name.rstrip("_"))

    def db(self, data):
        """Raw bytes (data, or an encoding iced should not choose)."""
        data = bytes(data)
        for i in range(0, len(data), 16):
            chunk = data[i:i + 16]
            self._items.append(_Item(Instruction.create_declare_byte(chunk), f"db {chunk.hex()}"))
        self._assembled = None

    def dq(self, *values):
        """64-bit little-endian values."""
        self.db(b"".join((v & (2**64 - 1)).to_bytes(8, "little") for v in values))

    def instruction(self, instr):
        """Append a ready-made iced `Instruction` (escape hatch)."""
        if not isinstance(instr, Instruction):
            raise AsmError(f"expected an iced Instruction, got {instr!r}")
        self._items.append(_Item(instr, str(instr)))
        self._assembled = None

    # ---- operand matching ------------------------------------------------------------
    def _operand(self, op):
        if isinstance(op, bool):
            raise AsmError(f"bad operand {op!r}")
        if isinstance(op, str):
            return ("reg", _register(op))
        if isinstance(op, int):
            if not -(1 << 63) <= op < (1 << 64):
                raise AsmError(f"immediate {op:#x} does not fit 64 bits")
            return ("imm", op)
        if isinstance(op, Label):
            self._check_label(op)
            return ("label", op)
        if isinstance(op, Mem):
            if isinstance(op.disp, Label):
                self._check_label(op.disp)
                if op.base is not None or op.index is not None:
                    raise AsmError("a label displacement cannot have base/index registers")
            elif not isinstance(op.disp, int):
                raise AsmError(f"bad displacement {op.disp!r}")
            if op.size not in (None, 8, 16, 32, 64, 80, 128):
                raise AsmError(f"bad memory size {op.size!r}")
            if op.scale not in (1, 2, 4, 8):
                raise AsmError(f"bad scale {op.scale!r}")
            return ("mem", op)
        raise AsmError(f"bad operand {op!r}: use a register name, int, Label or Mem")

    @staticmethod
    def _reg_fits(kind, reg):
        if kind in _FIXED_REG_KINDS:
            return _FIXED_REG_KINDS[kind] == reg
        if kind in _GPR_KINDS:
            return RegisterExt.is_gpr(reg) and RegisterExt.size(reg) * 8 == _GPR_KINDS[kind]
        if kind == K.SEG_REG:
            return RegisterExt.is_segment_register(reg)
        if kind == K.CR_REG:
            return RegisterExt.is_cr(reg)
        if kind == K.DR_REG:
            return RegisterExt.is_dr(reg)
        return False

    def _match(self, candidate, ops):
        """(code, kinds, opsize, per-operand plan) if the operands fit, else None."""
        code, kinds, opsize = candidate
        if len(kinds) != len(ops):
            return None
        plan = []
        for kind, (what, val) in zip(kinds, ops):
            if what == "reg":
                if not self._reg_fits(kind, val):
                    return None
                plan.append(("reg", val))
            elif what == "mem":
                if kind not in _MEM_KINDS:
                    return None
                size = _MEM_KINDS[kind]
                if size is not None and val.size is not None and val.size != size:
                    return None
                plan.append(("mem", val))
            elif what == "imm":
                if kind in _IMM_KINDS:
                    stored = _imm_fits(kind, val)
                    if stored is None:
                        return None
                    plan.append(("imm", _IMM_KINDS[kind], stored))
                elif kind in _BRANCH_KINDS:
                    plan.append(("branch", val))
                else:
                    return None
            elif what == "label":
                if kind in _BRANCH_KINDS:
                    plan.append(("branch", val))
                elif kind in _LABEL_IMM_KINDS:
                    plan.append(("imm", _IMM_KINDS[kind], val))
                else:
                    return None
        return code, kinds, opsize, plan

    def _build(self, match):
        code, _kinds, _opsize, plan = match
        instr = Instruction.create(code)
        item = _Item(instr, "")
        for i, step in enumerate(plan):
            if step[0] == "reg":
                instr.set_op_kind(i, OpKind.REGISTER)
                instr.set_op_register(i, step[1])
            elif step[0] == "mem":
                m = step[1]
                instr.set_op_kind(i, OpKind.MEMORY)
                if isinstance(m.disp, Label):
                    # RIP-relative: BlockEncoder resolves a label id in the displacement.
                    item.disp_label = m.disp
                    instr.memory_base = Register.RIP
                    instr.memory_displacement = self.base
                    instr.memory_displ_size = 8
                else:
                    instr.memory_base = _register(m.base) if m.base else Register.NONE
                    instr.memory_index = _register(m.index) if m.index else Register.NONE
                    instr.memory_index_scale = m.scale
                    instr.memory_displacement = m.disp & (2**64 - 1)
                    # 8 = 64-bit addressing (1 would also allow a 0x67 prefix); no base:
                    # an absolute disp32 via SIB.
                    instr.memory_displ_size = (8 if m.base is None and m.index is None
                                               else (1 if m.disp else 0))
            elif step[0] == "imm":
                _, opkind, value = step
                instr.set_op_kind(i, opkind)
                if isinstance(value, Label):
                    item.imm_label = (i, value)
                    value = 0
                instr.set_immediate_u64(i, value & (2**64 - 1)) if value >= 0 else \
                    instr.set_immediate_i64(i, value)
            elif step[0] == "branch":
                instr.set_op_kind(i, OpKind.NEAR_BRANCH64)
                target = step[1]
                if isinstance(target, Label):
                    item.branch_label = target
                    instr.near_branch64 = self.base
                elif target == 0:
                    # BlockEncoder would take 0 for an unlabelled instruction's ip
                    raise AsmError("a branch to absolute address 0 is not supported")
                else:
                    instr.near_branch64 = target & (2**64 - 1)
        return item

    def _choose(self, matches, ops, text):
        # Unsized memory with nothing else fixing the size: refuse rather than guess.
        if any(w == "mem" and v.size is None for w, v in ops):
            sizes = {m[2] for m in matches
                     if any(k in _MEM_KINDS and _MEM_KINDS[k] for k in m[1])}
            if len(sizes) > 1:
                raise AsmError(f"{text}: operand size is ambiguous; use byte/word/dword/"
                               f"qword(...)")
        # No register or memory operand fixes the size: never pick a 16-bit form.
        if not any(w in ("reg", "mem") for w, _ in ops):
            wide = [m for m in matches if m[2] != 16]
            matches = wide or matches
        best = None
        for m in matches:
            item = self._build(m)
            try:
                length = Encoder(64).encode(item.instr, self.base)
            except ValueError:
                continue
            if best is None or length < best[0]:
                best = (length, item)
        if best is None:
            raise AsmError(f"no encoding of {text}")
        best[1].text = text
        return best[1]

    # ---- assembling ------------------------------------------------------------------
    def assemble(self):
        """Encode everything at `base`; returns `Assembled` and sets `Label.address`."""
        if self._assembled is not None:
            return self._assembled
        for lab in self._labels:
            if lab.index is None and self._referenced(lab):
                raise AsmError(f"{lab!r} is used but never bound")
        code = self._encode()
        addrs = self._item_addresses(code)
        for lab in self._labels:
            if lab.index is not None:
                lab.address = addrs[lab.index]
        if any(it.imm_label for it in self._items):
            for it in self._items:
                if it.imm_label:
                    op, lab = it.imm_label
                    if lab.address is None:
                        raise AsmError(f"{lab!r} is used but never bound")
                    if OpCodeInfo(it.instr.code).op_kind(op) == K.IMM32SEX64 and \
                            lab.address >= 0x8000_0000:
                        raise AsmError(f"{it.text}: {lab!r} is above 2 GiB; use a 64-bit "
                                       f"register move")
                    it.instr.set_immediate_u64(op, lab.address)
            code2 = self._encode()
            if len(code2) != len(code):
                raise AsmError("internal: layout changed between passes")
            code = code2
        symbols = {lab.name: lab.address for lab in self._labels if lab.name is not None
                   and lab.address is not None}
        self._assembled = Assembled(self.base, bytes(code), symbols)
        return self._assembled

    def _referenced(self, lab):
        return any(lab in (it.branch_label, it.disp_label) or
                   (it.imm_label and it.imm_label[1] is lab) for it in self._items)

    def _encode(self):
        anchored = {lab.index for lab in self._labels if lab.index is not None}
        end = len(self._items)
        for i, it in enumerate(self._items):
            # Unlabelled instructions keep ip 0, the one value BlockEncoder lets repeat.
            it.instr.ip = _LABEL_ID_BASE + i if i in anchored else 0
        for it in self._items:
            for lab in (it.branch_label, it.disp_label):
                if lab is not None and lab.index == end:
                    raise AsmError(f"{lab!r} is bound at the end of the code; emit an "
                                   f"instruction after it")
            if it.branch_label is not None:
                it.instr.near_branch64 = _LABEL_ID_BASE + it.branch_label.index
            if it.disp_label is not None:
                it.instr.memory_displacement = _LABEL_ID_BASE + it.disp_label.index
        enc = BlockEncoder(64)
        enc.add_many([it.instr for it in self._items])
        try:
            return enc.encode(self.base)
        except ValueError as e:
            raise AsmError(f"encoding at {self.base:#x} failed: {e}") from None

    def _item_addresses(self, code):
        """Each item's address, found by walking the encoded bytes (BlockEncoder keeps
        the order; a too-far LOOP/JRCXZ becomes three instructions)."""
        addrs, off = [], 0
        for it in self._items:
            addrs.append(self.base + off)
            if it.instr.code == Code.DECLAREBYTE:
                off += it.instr.declare_data_len
                continue
            dec = Decoder(64, code[off:off + 15], ip=self.base + off)
            ins = dec.decode()
            off += ins.len
            if (ins.is_loop or ins.is_loopcc or ins.is_jcx_short) and \
                    ins.near_branch_target == ins.next_ip + 2:
                for _ in range(2):  # the "jmp short over; jmp near target" pair
                    off += Decoder(64, code[off:off + 15], ip=self.base + off).decode().len
        addrs.append(self.base + off)
        if off != len(code):
            raise AsmError("internal: could not walk the encoded code")
        return addrs

    def address_of(self, label):
        """A label's address (assembles if needed)."""
        self._check_label(label)
        self.assemble()
        if label.address is None:
            raise AsmError(f"{label!r} is not bound")
        return label.address

    def listing(self):
        """The assembled code as 'address: bytes  instruction' lines (for humans)."""
        asm = self.assemble()
        out = []
        for ins in Decoder(64, asm.code, ip=asm.base):
            raw = asm.code[ins.ip - asm.base: ins.ip - asm.base + ins.len]
            out.append(f"{ins.ip:#010x}: {raw.hex():<24} {ins}")
        return "\n".join(out)

    def __len__(self):
        return len(self._items)
