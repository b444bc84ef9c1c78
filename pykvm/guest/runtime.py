"""The guest runtime and the program builder: `GuestAsm`, `Program`, `program()`.

A `Program` lays out memory (layout.py), assembles the runtime's exception stubs at
RUNTIME_CODE and the user's code at CODE_START, and builds a `GuestImage` that any
backend can load. The runtime uses only plain instructions (MOV, PUSH/POP, CMP/Jcc,
OUT imm8, IRETQ, HLT), so the simulated machine and the host KVM run the same bytes.

Exceptions: every vector 0-31 enters a stub that pushes the vector (and a 0 error code
when the CPU pushes none) and jumps to one handler. If RUNTIME_FIXUP is armed, the handler
records vector, error code and faulting RIP in the runtime data page, disarms, and IRETQs
to the fix-up address; if not, it ucalls UNHANDLED_EXCEPTION(vector, rip, error code) and
halts.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from iced_x86 import Register, RegisterExt

from pykvm.guest import layout as L
from pykvm.guest.asm import Asm, AsmError, Label, Mem, qword
from pykvm.guest.ucall import (NO_VECTOR, SAFE_ERROR_CODE_REG, SAFE_VECTOR_REG, UCALL_PORT,
                               AssertSite, UcallCmd)
from pykvm.regs import Regs, Sregs

__all__ = ["GuestAsm", "GuestImage", "Program", "program"]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass
class GuestImage:
    """What a backend needs to start a guest: memory from GPA 0, registers, MSRs.
    `symbols` maps named labels (and layout names) to addresses; `asserts` maps assertion
    ids to their sites, for host-side messages."""
    memory: bytearray
    regs: Regs
    sregs: Sregs
    msrs: dict = field(default_factory=dict)
    symbols: dict = field(default_factory=dict)
    asserts: dict = field(default_factory=dict)


def _caller_site():
    """(filename, lineno) of the first frame outside pykvm.guest: the test's line."""
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(
            frame.f_code.co_filename)) == _PKG_DIR:
        frame = frame.f_back
    if frame is None:
        return "?", 0
    return os.path.basename(frame.f_code.co_filename), frame.f_lineno


def _gpr64(op, what):
    reg = Register.__dict__.get(op.upper()) if isinstance(op, str) else None
    if reg is None or not RegisterExt.is_gpr64(reg):
        raise AsmError(f"{what}: {op!r} must be a 64-bit general-purpose register")
    return reg


def _fits_simm32(value):
    v = value & (2**64 - 1)
    return v < 0x8000_0000 or v >= 0xFFFF_FFFF_8000_0000


class GuestAsm(Asm):
    """`Asm` plus the guest runtime: ucalls, assertions, and fault-catching accesses.

    Register use (documented contract):
    - ucall/sync/done/assert_*: preserve every register except RFLAGS.
    - rdmsr_safe: RCX = index; EDX:EAX = value and RAX = the 64-bit value (0 if it faulted).
    - wrmsr_safe: RCX = index, EDX:EAX = value.
    - every *_safe: R9 = vector (NO_VECTOR = 0x100 if nothing faulted), R10 = error code.
    Needs a valid stack (RSP). At CPL3 a ucall needs RFLAGS.IOPL = 3 (USER_RFLAGS), which
    kvm_pvm does not honour: there, report from CPL3 through an exception or return to
    CPL0 first.
    """

    def __init__(self, base, program=None):
        super().__init__(base)
        self.program = program

    # ---- values ------------------------------------------------------------------------
    def _push_value(self, op, depth):
        """Push a 64-bit value; `depth` = qwords pushed since the caller's RSP (an
        RSP-based memory operand is corrected for them)."""
        if isinstance(op, str):
            reg = _gpr64(op, "ucall argument")
            if reg == Register.RSP:
                raise AsmError("RSP cannot be a ucall argument")
            self.push(op)
        elif isinstance(op, Label):
            self.push(op)
        elif isinstance(op, int) and not isinstance(op, bool):
            if _fits_simm32(op):
                self.push(op if op < 2**63 else op - 2**64)
            else:
                # Low half sign-extended, then the high half over it: no scratch register.
                self.push((op & 0xFFFF_FFFF) - (2**32 if op & 0x8000_0000 else 0))
                self.mov(Mem("rsp", None, 1, 4, 32), (op >> 32) & 0xFFFF_FFFF)
        elif isinstance(op, Mem):
            if op.size not in (None, 64):
                raise AsmError("a memory ucall argument must be a qword")
            if op.base == "rsp" or op.index == "rsp":
                op = Mem(op.base, op.index, op.scale, op.disp + 8 * depth, 64)
            self.push(qword(op))
        else:
            raise AsmError(f"bad ucall argument {op!r}")

    # ---- ucall -------------------------------------------------------------------------
    def ucall(self, cmd, *args, preserve=True):
        """OUT UCALL_PORT with EAX = cmd and RDI, RSI, RDX = args (up to three: registers,
        ints, labels or qword memory). Registers are saved and restored unless
        `preserve` is False (for ucalls that never return)."""
        cmd = UcallCmd(cmd)
        if len(args) > 3:
            raise AsmError(f"a ucall takes at most 3 arguments, got {len(args)}")
        saved = ("rax", "rdi", "rsi", "rdx") if preserve else ()
        for r in saved:
            self.push(r)
        depth = len(saved)
        for arg in reversed(args):
            self._push_value(arg, depth)
            depth += 1
        for r in ("rdi", "rsi", "rdx")[:len(args)]:
            self.pop(r)
        self.mov("eax", int(cmd))
        self.out(UCALL_PORT, "eax")
        for r in reversed(saved):
            self.pop(r)

    def sync(self, *args):
        """GUEST_SYNC(args): the host sees UcallCmd.SYNC with up to three values."""
        self.ucall(UcallCmd.SYNC, *args)

    def done(self):
        """GUEST_DONE(): the host sees UcallCmd.DONE; the guest then halts for good."""
        self.ucall(UcallCmd.DONE, preserve=False)
        self.halt_forever()

    def halt_forever(self):
        """HLT in a loop (each further run() gives a HLT exit)."""
        top = self.here()
        self.hlt()
        self.jmp(top)

    # ---- assertions --------------------------------------------------------------------
    def _register_assert(self, message):
        if self.program is None:
            raise AsmError("assertions need a Program (they are named in its image)")
        filename, lineno = _caller_site()
        aid = len(self.program.asserts) + 1
        self.program.asserts[aid] = AssertSite(aid, message, filename, lineno)
        return aid

    def _cmp(self, actual, expected):
        """CMP actual, expected; a 64-bit immediate goes through a scratch register."""
        if isinstance(expected, int) and not isinstance(expected, bool) \
                and not _fits_simm32(expected):
            used = {actual} if isinstance(actual, str) else {actual.base, actual.index}
            used = {_full_name(Register.__dict__[u.upper()]) for u in used if u}
            scratch = next(r for r in ("r11", "r10", "r9") if r not in used)
            if isinstance(actual, Mem) and (actual.base == "rsp" or actual.index == "rsp"):
                actual = Mem(actual.base, actual.index, actual.scale, actual.disp + 8,
                             actual.size)
            self.push(scratch)
            self.mov(scratch, expected)
            self.cmp(actual, scratch)
            self.pop(scratch)   # POP leaves RFLAGS alone
        else:
            if isinstance(expected, int) and expected >= 2**63:
                expected -= 2**64
            self.cmp(actual, expected)

    def _assert(self, jump_if_ok, actual, expected, message):
        if isinstance(actual, int):
            raise AsmError("the first operand of an assertion is what the guest computed: "
                           "a register or memory")
        if isinstance(actual, str):
            reg = Register.__dict__.get(actual.upper())
            if reg is None or not RegisterExt.is_gpr(reg):
                raise AsmError(f"assertion operand {actual!r} is not a register")
            report = _full_name(reg)
        elif isinstance(actual, Mem):
            if actual.size not in (None, 64):
                raise AsmError("a memory assertion operand must be a qword")
            actual = qword(actual)
            report = actual
        else:
            raise AsmError(f"bad assertion operand {actual!r}")
        aid = self._register_assert(message)
        ok = self.label()
        self._cmp(actual, expected)
        self.emit(jump_if_ok, ok)
        self.ucall(UcallCmd.ASSERT, aid, expected, report, preserve=False)
        self.halt_forever()
        self.bind(ok)

    def assert_eq(self, actual, expected, message=None):
        """GUEST_ASSERT_EQ: if actual != expected, the host sees ASSERT(id, expected,
        actual) and the guest halts. `actual`: register or qword memory; `expected`:
        register or int. A narrower register is reported as its 64-bit register."""
        self._assert("je", actual, expected, message or f"{_show(actual)} == {_show(expected)}")

    def assert_ne(self, actual, expected, message=None):
        """GUEST_ASSERT_NE: as assert_eq, failing when the two are equal."""
        self._assert("jne", actual, expected, message or f"{_show(actual)} != {_show(expected)}")

    # ---- fault-catching accesses -------------------------------------------------------
    def safe(self, mnemonic, *operands):
        """Run one instruction with the exception fix-up armed: afterwards R9 = the
        vector it raised or NO_VECTOR, R10 = the error code."""
        fixup = self.label()
        self.mov(qword(L.RUNTIME_VECTOR), NO_VECTOR)
        self.mov(qword(L.RUNTIME_ERROR_CODE), 0)
        self.mov(qword(L.RUNTIME_FIXUP), fixup)
        self.emit(mnemonic, *operands)
        self.bind(fixup)
        self.mov(qword(L.RUNTIME_FIXUP), 0)
        self.mov(SAFE_VECTOR_REG, qword(L.RUNTIME_VECTOR))
        self.mov(SAFE_ERROR_CODE_REG, qword(L.RUNTIME_ERROR_CODE))

    def rdmsr_safe(self, index=None):
        """RDMSR of `index` (int; None = ECX already set). EDX:EAX = value, RAX = the
        64-bit value (0 after a fault), R9 = vector or NO_VECTOR, R10 = error code."""
        if index is not None:
            self.mov("ecx", _u32(index, "MSR index"))
        self.xor("eax", "eax")
        self.xor("edx", "edx")
        self.safe("rdmsr")
        self.shl("rdx", 32)
        self.or_("rax", "rdx")
        self.shr("rdx", 32)

    def wrmsr_safe(self, index=None, value=None):
        """WRMSR of `value` (int or 64-bit register; None = EDX:EAX already set) to
        `index` (int; None = ECX already set). R9 = vector or NO_VECTOR, R10 = error
        code."""
        if value is not None:
            if isinstance(value, str):
                _gpr64(value, "wrmsr value")
                if value != "rax":
                    self.mov("rax", value)
                self.mov("rdx", "rax")
                self.shr("rdx", 32)
            else:
                self.mov("eax", value & 0xFFFF_FFFF)
                self.mov("edx", (value >> 32) & 0xFFFF_FFFF)
        if index is not None:
            self.mov("ecx", _u32(index, "MSR index"))
        self.safe("wrmsr")

    def assert_no_fault(self, message=None):
        """Assert that the last *_safe instruction did not fault (R9 == NO_VECTOR)."""
        self.assert_eq(SAFE_VECTOR_REG, NO_VECTOR, message or "no exception")

    def assert_fault(self, vector, message=None):
        """Assert that the last *_safe instruction raised `vector`."""
        self.assert_eq(SAFE_VECTOR_REG, vector, message or f"exception vector == {vector}")


def _u32(value, what):
    if not isinstance(value, int) or not 0 <= value < 2**32:
        raise AsmError(f"{what} must be a 32-bit unsigned int, got {value!r}")
    return value


def _full_name(reg):
    full = RegisterExt.full_register(reg)
    return next(n.lower() for n, v in vars(Register).items() if v == full and n.isupper())


def _show(op):
    if isinstance(op, int):
        return hex(op)
    if isinstance(op, Mem):
        disp = op.disp.name if isinstance(op.disp, Label) else hex(op.disp)
        return f"[{op.base}+{disp}]" if op.base else f"[{disp}]"
    return str(op)


def _runtime_code():
    """The exception stubs and their handler, at RUNTIME_CODE. Returns (code, stubs)."""
    a = GuestAsm(L.RUNTIME_CODE)
    common = a.label("exception_common")
    stubs = []
    for vec in range(L.IDT_VECTORS):
        stubs.append(a.here(f"exception_{vec}"))
        if vec not in L.VECTORS_WITH_ERROR_CODE:
            a.push(0)
        a.push(vec)
        a.jmp(common)
    # Stack here: [rsp] vector, +8 error code, +16 RIP, +24 CS, +32 RFLAGS, +40 RSP, +48 SS
    unhandled = a.label("exception_unhandled")
    a.bind(common)
    a.push("rax")                                 # ... everything 8 further from now on
    a.mov("rax", qword(L.RUNTIME_FIXUP))
    a.test("rax", "rax")
    a.jz(unhandled)
    a.mov("rax", qword("rsp", 8))
    a.mov(qword(L.RUNTIME_VECTOR), "rax")
    a.mov("rax", qword("rsp", 16))
    a.mov(qword(L.RUNTIME_ERROR_CODE), "rax")
    a.mov("rax", qword("rsp", 24))
    a.mov(qword(L.RUNTIME_FAULT_RIP), "rax")
    a.mov("rax", qword(L.RUNTIME_FIXUP))
    a.mov(qword("rsp", 24), "rax")                # IRETQ resumes at the fix-up
    a.mov(qword(L.RUNTIME_FIXUP), 0)              # one catch per arming
    a.pop("rax")
    a.add("rsp", 16)                              # vector and error code
    a.iretq()
    a.bind(unhandled)
    a.pop("rax")
    a.ucall(UcallCmd.UNHANDLED_EXCEPTION, qword("rsp", 0), qword("rsp", 16),
            qword("rsp", 8), preserve=False)
    a.halt_forever()
    asm = a.assemble()
    if asm.end > L.RUNTIME_CODE_END:
        raise AsmError("internal: runtime code overflows its area")
    return asm, [s.address for s in stubs]


class Program:
    """A guest program under construction: `asm` is its `GuestAsm` at CODE_START.

    >>> p = Program()
    >>> p.asm.sync(1, 2)
    >>> p.asm.done()
    >>> image = p.build()

    `msrs` are set by the backend when it loads the image (KVM_SET_MSRS), after the
    registers.
    """

    def __init__(self, *, memory_size=L.MEMORY_SIZE, user_pages=True, msrs=None,
                 apic_page=False):
        L.check_memory_size(memory_size)
        self.memory_size = memory_size
        self.user_pages = bool(user_pages)
        self.apic_page = bool(apic_page)
        self.msrs = dict(msrs or {})
        self.asserts = {}
        self.asm = GuestAsm(L.CODE_START, self)

    def build(self):
        """Assemble and lay out everything; returns a fresh `GuestImage`."""
        a = self.asm
        end = a.label("end_of_code")
        a.bind(end)
        try:
            a.ud2()   # falling off the end is reported as #UD at end_of_code
            body = a.assemble()
        finally:
            # Leave the Asm as the user wrote it so build() can be called again.
            a._items.pop()
            a._labels.remove(end)
            del a._named["end_of_code"]
            a._assembled = None
        if body.end > L.USER_DATA:
            raise AsmError(f"program code ends at {body.end:#x}, past USER_DATA "
                           f"({L.USER_DATA:#x})")
        runtime, stubs = _runtime_code()
        mem = bytearray(self.memory_size)
        pml4, pdpt, pd, apic_pd = L.page_tables(self.memory_size, self.user_pages,
                                                self.apic_page)
        if apic_pd:
            mem[L.APIC_PD_ADDR:L.APIC_PD_ADDR + len(apic_pd)] = apic_pd
        for addr, data in ((L.PML4_ADDR, pml4), (L.PDPT_ADDR, pdpt), (L.PD_ADDR, pd),
                           (L.GDT_ADDR, L.gdt_bytes()), (L.IDT_ADDR, L.idt_bytes(stubs)),
                           (L.TSS_ADDR, L.tss_bytes()), (L.RUNTIME_CODE, runtime.code),
                           (L.CODE_START, body.code)):
            mem[addr:addr + len(data)] = data
        symbols = {name: getattr(L, name) for name in (
            "PML4_ADDR", "PDPT_ADDR", "PD_ADDR", "GDT_ADDR", "IDT_ADDR", "TSS_ADDR",
            "DATA_ADDR", "RUNTIME_CODE", "CODE_START", "USER_DATA", "USER_STACK_TOP",
            "RSP0_TOP", "STACK_TOP")}
        symbols.update(runtime.symbols)
        symbols.update(body.symbols)
        symbols["end_of_code"] = body.end - 2     # the UD2
        return GuestImage(memory=mem, regs=L.initial_regs(), sregs=L.initial_sregs(),
                          msrs=dict(self.msrs), symbols=symbols, asserts=dict(self.asserts))


def program(body=None, /, **options):
    """Build a GuestImage from `body(a)`, which emits guest code with `a` (a GuestAsm).
    Options are Program's (memory_size, user_pages, msrs, apic_page). Works as a decorator
    too::

        @program
        def guest(a):
            a.rdmsr_safe(0x474f4f00)
            a.assert_fault(13)
            a.done()
    """
    def build(fn):
        if not callable(fn):
            raise TypeError(f"program body must be callable, got {fn!r}")
        p = Program(**options)
        fn(p.asm)
        return p.build()
    return build if body is None else build(body)
