"""The guest interpreter on its own (bare mode): exceptions through the IDT, faults on
what the subset does not have, privilege checks, SYSCALL/SYSRET, MMIO exits and their
completion, the instruction budget, code that changes under the decode cache, and random
bytes that must never crash it.

Layout of every test: code at CODE, the IDT at IDT with one handler per vector at
HANDLER + 16 * vector (a HLT, so the exit says which vector ran), the TSS at TSS with
RSP0 = KSTACK, data at DATA, the CPL 0 stack below STACK."""
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Required by pykvm itself: a broken install fails here rather than skipping these tests.
import iced_x86 as iced  # noqa: E402
from iced_x86 import Code, MemoryOperand as M, Register as R  # noqa: E402

from exec_harness import (CR4_FSGSBASE, EFER_SCE, EXIT, GEXITS, MSR_EFER,  # noqa: E402
                          MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_STAR, MSR_SYSCALL_MASK,
                          MSR_TSC_AUX, Bare, asm, ffi, ins, lib)

CODE, IDT, HANDLER, TSS = 0x1000, 0x2000, 0x3000, 0x4000
USER, KENTRY, DATA, USTACK, KSTACK, STACK = 0x5000, 0x6000, 0x8000, 0xC000, 0xE000, 0xF000
MMIO = 0x100000                 # beyond RAM: every access there is MMIO
UD, DF, TS, NP, SS, GP, BP, DE = 6, 8, 10, 11, 12, 13, 3, 0
IF, TF, CF, ZF, IOPL3 = 0x200, 0x100, 0x1, 0x40, 0x3000
KERNEL_CS, KERNEL_SS, USER_CS, USER_SS = 0x10, 0x18, 0x33, 0x2B


def make_cpu(idt=True, **kw):
    cpu = Bare(size=0x20000, **kw)
    cpu.set_regs(rsp=STACK, rip=CODE, rflags=0x2)
    cpu.set_seg("cs", selector=KERNEL_CS)
    cpu.set_seg("ss", selector=KERNEL_SS)
    cpu.set_seg("tr", base=TSS)
    cpu.write(TSS + 4, KSTACK.to_bytes(8, "little"))
    if idt:
        cpu.set_idt(IDT, 256 * 16 - 1)
        for v in range(256):
            cpu.set_gate(IDT, v, HANDLER + 16 * v, selector=KERNEL_CS,
                         dpl=3 if v in (BP, 0x80) else 0)
            cpu.write(HANDLER + 16 * v, asm(HANDLER + 16 * v, ins(Code.HLT)))
    return cpu


@pytest.fixture
def cpu():
    return make_cpu()


def load(cpu, *instrs, at=CODE):
    cpu.write(at, asm(at, *instrs))


def vector_ran(cpu):
    """The vector whose handler stopped at its HLT."""
    rip = cpu["rip"]
    assert HANDLER <= rip < HANDLER + 16 * 256 and rip % 16 == 0, f"rip {rip:#x}"
    return (rip - HANDLER) // 16


def frame(cpu, error_code):
    """The exception frame at RSP: (error code or None, RIP, CS, RFLAGS, RSP, SS)."""
    rsp = cpu["rsp"]
    words = [cpu.u64(rsp + 8 * i) for i in range(6 if error_code else 5)]
    err = words.pop(0) if error_code else None
    return (err, *words)


def to_user(cpu, rip=USER, rflags=0x202):
    """Drop to CPL 3 the way a kernel does: IRETQ with a user frame."""
    load(cpu, ins(Code.PUSHQ_IMM32, USER_SS), ins(Code.PUSHQ_IMM32, USTACK),
         ins(Code.PUSHQ_IMM32, rflags), ins(Code.PUSHQ_IMM32, USER_CS),
         ins(Code.PUSHQ_IMM32, rip), ins(Code.IRETQ))


# ---- exceptions through the IDT ----

def test_ud2_goes_through_the_idt_with_a_fault_frame(cpu):
    cpu.set_regs(rflags=0x2 | IF | CF)
    load(cpu, ins(Code.NOPD), ins(Code.UD2))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == UD
    err, rip, cs, rflags, rsp, ss = frame(cpu, error_code=False)
    assert (rip, cs, rsp, ss) == (CODE + 1, KERNEL_CS, STACK, KERNEL_SS)
    assert rflags == 0x2 | IF | CF
    assert cpu["rsp"] == STACK - 40
    assert not cpu["rflags"] & IF, "an interrupt gate clears IF"
    assert cpu.retired() == 1, "the NOP retired, the UD2 did not"


def test_trap_gate_keeps_if_and_the_frame_is_16_byte_aligned(cpu):
    cpu.set_gate(IDT, UD, HANDLER + 16 * UD, selector=KERNEL_CS, type_=0xF)
    cpu.set_regs(rsp=STACK - 8, rflags=0x2 | IF)
    load(cpu, ins(Code.UD2))
    assert cpu.run() == "HLT"
    assert cpu["rflags"] & IF
    assert cpu["rsp"] == STACK - 16 - 40, "RSP aligned down to 16 before the pushes"
    assert frame(cpu, False)[4] == STACK - 8


def test_gp_pushes_an_error_code(cpu):
    load(cpu, ins(Code.MOV_R32_IMM32, R.ECX, 0x474F4F00), ins(Code.RDMSR))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == GP
    err, rip, cs, *_ = frame(cpu, error_code=True)
    assert (err, rip, cs) == (0, CODE + 5, KERNEL_CS)
    assert cpu["rsp"] == STACK - 48


def test_divide_error_is_a_fault_on_the_div(cpu):
    load(cpu, ins(Code.XOR_R32_RM32, R.ECX, R.ECX), ins(Code.DIV_RM32, R.ECX))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == DE
    assert frame(cpu, False)[1] == CODE + 2


@pytest.mark.parametrize("op,rdx,rax,rcx", [
    (Code.DIV_RM64, 1, 0, 1),                       # 2^64 / 1
    (Code.IDIV_RM64, -1, -(1 << 63), -1),           # INT64_MIN / -1
    (Code.IDIV_RM64, 0, 1 << 63, 1),                # +2^63 / 1
    (Code.IDIV_RM8, 0, 0x8000, 0xFF),               # AX = -32768 / -1
])
def test_quotient_overflow_is_a_divide_error(cpu, op, rdx, rax, rcx):
    load(cpu, ins(op, R.CL if op == Code.IDIV_RM8 else R.RCX))
    cpu.set_regs(rax=rax, rdx=rdx, rcx=rcx)
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == DE
    assert cpu["rax"] == rax & ((1 << 64) - 1), "nothing written"


def test_idiv_rounds_toward_zero(cpu):
    load(cpu, ins(Code.CQO), ins(Code.IDIV_RM64, R.RCX), ins(Code.HLT))
    cpu.set_regs(rax=-7, rcx=2)
    assert cpu.run() == "HLT"
    assert (cpu["rax"], cpu["rdx"]) == ((-3) & ((1 << 64) - 1), (-1) & ((1 << 64) - 1))


def test_int3_and_int_n_are_traps(cpu):
    load(cpu, ins(Code.INT3))
    assert cpu.run() == "HLT" and vector_ran(cpu) == BP
    assert frame(cpu, False)[1] == CODE + 1
    cpu2 = make_cpu()
    load(cpu2, ins(Code.INT_IMM8, 0x40))
    assert cpu2.run() == "HLT" and vector_ran(cpu2) == 0x40
    assert frame(cpu2, False)[1] == CODE + 2
    assert cpu2.retired() == 1


def test_iretq_returns_from_the_handler(cpu):
    cpu.write(HANDLER + 16 * BP, asm(HANDLER + 16 * BP, ins(Code.IRETQ)))
    load(cpu, ins(Code.INT3), ins(Code.MOV_R32_IMM32, R.EAX, 7), ins(Code.HLT))
    assert cpu.run() == "HLT"
    assert cpu["rip"] == CODE + 6 and cpu["rax"] == 7 and cpu["rsp"] == STACK


def test_no_idt_is_a_triple_fault(cpu):
    cpu.set_idt(0, 0)
    load(cpu, ins(Code.NOPD), ins(Code.UD2))
    assert cpu.run() == "TRIPLE_FAULT"
    assert cpu["rip"] == CODE + 1 and cpu["rsp"] == STACK


def test_fault_delivering_a_contributory_fault_is_a_double_fault(cpu):
    cpu.set_gate(IDT, GP, HANDLER, present=False)
    load(cpu, ins(Code.MOV_R32_IMM32, R.ECX, 0x474F4F00), ins(Code.WRMSR))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == DF
    assert frame(cpu, True)[0] == 0


def test_fault_delivering_a_benign_exception_is_delivered_after_it(cpu):
    """SDM vol. 3A table 6-5: #UD, then #NP on its gate -> #NP (not #DF)."""
    cpu.set_gate(IDT, UD, HANDLER, present=False)
    load(cpu, ins(Code.UD2))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == NP
    assert frame(cpu, True)[0] == UD * 8 + 2 + 1     # IDT, EXT


def test_fault_delivering_a_double_fault_is_a_triple_fault(cpu):
    cpu.set_gate(IDT, GP, HANDLER, present=False)
    cpu.set_gate(IDT, DF, HANDLER, present=False)
    load(cpu, ins(Code.MOV_R32_IMM32, R.ECX, 0x474F4F00), ins(Code.WRMSR))
    assert cpu.run() == "TRIPLE_FAULT"
    assert cpu["rip"] == CODE + 5


def test_idt_limit_and_gate_type_are_checked(cpu):
    cpu.set_idt(IDT, 16 * 0x40 + 14)    # vector 0x40 does not fit: #GP(0x40*8+2)
    load(cpu, ins(Code.INT_IMM8, 0x40))
    assert cpu.run() == "HLT" and vector_ran(cpu) == GP
    assert frame(cpu, True)[0] == 0x40 * 8 + 2
    cpu = make_cpu()
    cpu.set_gate(IDT, UD, HANDLER, type_=0x6)       # a 16-bit interrupt gate
    load(cpu, ins(Code.UD2))
    assert cpu.run() == "HLT" and vector_ran(cpu) == GP
    assert frame(cpu, True)[0] == UD * 8 + 3


def test_injected_exception_uses_the_same_path():
    cpu = make_cpu()
    assert cpu.deliver_exception(GP, error_code=0x18)
    assert cpu["rip"] == HANDLER + 16 * GP
    assert frame(cpu, True)[:2] == (0x18, CODE)
    cpu = make_cpu(idt=False)
    assert not cpu.deliver_exception(GP, error_code=0)
    assert cpu.event()["kind"] == EXIT["TRIPLE_FAULT"]


# ---- what the subset lacks, and invalid encodings ----

@pytest.mark.parametrize("code", [
    "06", "0f0b", "c4e17d58c0", "0f00d8", "d9e8", "6c", "ff18", "8ec0", "f001c0",
    "f03901", "f0f7d0", "0fae00", "c6f800", "62", "ce", "0f01d8", "0fc7f0",
])
def test_ud_on_what_is_not_there(cpu, code):
    cpu.write(CODE, bytes.fromhex(code) + b"\x90" * 16)
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == UD, code
    assert frame(cpu, False)[1] == CODE


def test_lock_on_a_memory_destination_is_fine(cpu):
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBX, DATA))
    cpu.write(CODE + 10, bytes.fromhex("f0ff03" "f0480103") + b"\xf4")   # lock inc; lock add
    cpu.set_regs(rax=5)
    assert cpu.run() == "HLT" and cpu["rip"] == CODE + 17
    assert cpu.u64(DATA) == 6


def test_instruction_longer_than_15_bytes_is_gp(cpu):
    cpu.write(CODE, b"\x66" * 14 + bytes.fromhex("0501000000"))
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == GP


# ---- privilege ----

PRIVILEGED = {
    "hlt": [ins(Code.HLT)],
    "rdmsr": [ins(Code.RDMSR)],
    "wrmsr": [ins(Code.WRMSR)],
    "cli": [ins(Code.CLI)],
    "sti": [ins(Code.STI)],
    "in": [ins(Code.IN_AL_IMM8, R.AL, 0x60)],
    "out": [ins(Code.OUT_DX_AL, R.DX, R.AL)],
    "lidt": [ins(Code.LIDT_M1664, M(R.RIP, displ=DATA))],
    "lgdt": [ins(Code.LGDT_M1664, M(R.RIP, displ=DATA))],
    "swapgs": [ins(Code.SWAPGS)],
    "sysret": [ins(Code.SYSRETQ)],
}


@pytest.mark.parametrize("name", sorted(PRIVILEGED))
def test_privileged_instructions_at_cpl3_are_gp(name):
    cpu = make_cpu()
    cpu.set_msr(MSR_EFER, cpu.msr(MSR_EFER) | EFER_SCE)
    to_user(cpu)
    load(cpu, *PRIVILEGED[name], at=USER)
    assert cpu.run() == "HLT"
    assert vector_ran(cpu) == GP, name
    err, rip, cs, _, rsp, ss = frame(cpu, True)
    assert (err, rip, cs, rsp, ss) == (0, USER, USER_CS, USTACK, USER_SS)
    assert cpu["rsp"] == KSTACK - 48, "CPL 3 -> 0 switches to TSS.RSP0"
    assert cpu.seg("cs")["selector"] == KERNEL_CS
    assert cpu.seg("ss")["selector"] == 0


def test_iopl3_lets_cpl3_do_cli_sti_and_io():
    cpu = make_cpu()
    to_user(cpu, rflags=0x202 | IOPL3)
    load(cpu, ins(Code.CLI), ins(Code.STI), ins(Code.OUT_IMM8_AL, 0x80, R.AL), at=USER)
    assert cpu.run() == "IO"
    assert cpu["rip"] == USER + 2
    assert cpu.event()["port"] == 0x80


def test_int_n_from_cpl3_needs_a_dpl3_gate():
    cpu = make_cpu()
    to_user(cpu)
    load(cpu, ins(Code.INT_IMM8, 0x80), at=USER)
    assert cpu.run() == "HLT" and vector_ran(cpu) == 0x80
    assert frame(cpu, False)[1:] == (USER + 2, USER_CS, 0x202, USTACK, USER_SS)
    cpu = make_cpu()
    to_user(cpu)
    load(cpu, ins(Code.INT_IMM8, 0x41), at=USER)
    assert cpu.run() == "HLT" and vector_ran(cpu) == GP
    assert frame(cpu, True)[0] == 0x41 * 8 + 2      # IDT, not EXT: software interrupt


def test_iretq_to_cpl3_and_back():
    cpu = make_cpu()
    to_user(cpu)
    cpu.write(HANDLER + 16 * 0x80, asm(HANDLER + 16 * 0x80, ins(Code.IRETQ)))
    load(cpu, ins(Code.INT_IMM8, 0x80), ins(Code.UD2), at=USER)
    assert cpu.run() == "HLT" and vector_ran(cpu) == UD
    assert frame(cpu, False)[1:] == (USER + 2, USER_CS, 0x202, USTACK, USER_SS)


# ---- SYSCALL / SYSRET, SWAPGS, FS/GS bases, MSRs ----

STAR = (0x23 << 48) | (KERNEL_CS << 32)     # SYSRET: CS 0x33, SS 0x2b; SYSCALL: CS 0x10


def syscall_cpu():
    cpu = make_cpu()
    cpu.set_msr(MSR_EFER, cpu.msr(MSR_EFER) | EFER_SCE)
    cpu.set_msr(MSR_STAR, STAR)
    cpu.set_msr(MSR_LSTAR, KENTRY)
    cpu.set_msr(MSR_SYSCALL_MASK, IF | 0x400)
    return cpu


def test_syscall_is_ud_without_efer_sce(cpu):
    load(cpu, ins(Code.SYSCALL))
    assert cpu.run() == "HLT" and vector_ran(cpu) == UD


def test_syscall_and_sysret_round_trip():
    cpu = syscall_cpu()
    # kernel entry: note RCX/R11, return
    load(cpu, ins(Code.MOV_R64_RM64, R.R12, R.RCX), ins(Code.MOV_R64_RM64, R.R13, R.R11),
         ins(Code.PUSHFQ), ins(Code.POP_R64, R.R14), ins(Code.SYSRETQ), at=KENTRY)
    to_user(cpu, rflags=0x202 | 0x400 | CF)
    load(cpu, ins(Code.SYSCALL), ins(Code.HLT), at=USER)
    assert cpu.run() == "HLT"               # back at CPL 3: HLT is #GP
    assert vector_ran(cpu) == GP
    regs = cpu.regs()
    assert regs["r12"] == USER + 2 and regs["r13"] == 0x202 | 0x400 | CF
    assert regs["r14"] & (IF | 0x400) == 0, "SYSCALL_MASK applied"
    assert frame(cpu, True)[1:3] == (USER + 2, 0x33)
    assert frame(cpu, True)[5] == 0x2B


def test_syscall_loads_the_star_selectors():
    cpu = syscall_cpu()
    load(cpu, ins(Code.HLT), at=KENTRY)
    load(cpu, ins(Code.SYSCALL))
    assert cpu.run() == "HLT" and cpu["rip"] == KENTRY
    assert cpu.seg("cs")["selector"] == KERNEL_CS and cpu.seg("ss")["selector"] == KERNEL_CS + 8
    assert cpu.seg("cs")["ar"] & 0x2000, "CS.L"


def test_sysret_with_a_non_canonical_rcx_is_gp_on_intel():
    cpu = syscall_cpu()
    load(cpu, ins(Code.MOV_R64_IMM64, R.RCX, 0x0000800000000000), ins(Code.SYSRETQ))
    assert cpu.run() == "HLT" and vector_ran(cpu) == GP
    assert frame(cpu, True)[2] == KERNEL_CS


def test_swapgs_exchanges_gs_base_and_kernel_gs_base(cpu):
    cpu.set_seg("gs", base=0x1111)
    cpu.set_msr(MSR_KERNEL_GS_BASE, 0x2222)
    load(cpu, ins(Code.SWAPGS), ins(Code.MOV_R64_RM64, R.RAX, M(R.NONE, displ=0x10,
                                                               displ_size=8, seg=R.GS)),
         ins(Code.HLT))
    cpu.write(0x2232, (0xABCD).to_bytes(8, "little"))
    assert cpu.run() == "HLT"
    assert cpu.seg("gs")["base"] == 0x2222 and cpu.msr(MSR_KERNEL_GS_BASE) == 0x1111
    assert cpu["rax"] == 0xABCD


def test_fsgsbase_needs_cr4(cpu):
    load(cpu, ins(Code.RDFSBASE_R64, R.RAX))
    assert cpu.run() == "HLT" and vector_ran(cpu) == UD
    cpu = make_cpu()
    cpu.set_regs(cr4=cpu.state().cr4 | CR4_FSGSBASE, rax=0x1234, rbx=0x8000_0000_0000)
    load(cpu, ins(Code.WRGSBASE_R64, R.RAX), ins(Code.RDGSBASE_R32, R.ECX), ins(Code.NOPD),
         ins(Code.WRFSBASE_R64, R.RBX))
    assert cpu.run() == "HLT" and vector_ran(cpu) == GP, "non-canonical base"
    assert cpu.seg("gs")["base"] == 0x1234 and cpu["rcx"] == 0x1234


def test_native_msrs_rdtscp_rdpid(cpu):
    cpu.set_regs(tsc=0x1122334455667788)
    load(cpu, ins(Code.MOV_R32_IMM32, R.ECX, MSR_TSC_AUX), ins(Code.MOV_R32_IMM32, R.EAX, 7),
         ins(Code.XOR_R32_RM32, R.EDX, R.EDX), ins(Code.WRMSR), ins(Code.RDTSCP),
         ins(Code.RDPID_R64, R.RBX), ins(Code.RDTSC), ins(Code.HLT))
    assert cpu.run() == "HLT"
    r = cpu.regs()
    assert (r["rcx"], r["rbx"]) == (7, 7)
    assert (r["rax"], r["rdx"]) == (0x55667788, 0x11223344)
    cpu = make_cpu(rdtscp=False, rdpid=False)
    load(cpu, ins(Code.RDTSCP))
    assert cpu.run() == "HLT" and vector_ran(cpu) == UD


@pytest.mark.parametrize("instr,kind,fields", [
    (ins(Code.OUT_IMM8_AL, 0x80, R.AL), "IO", {"port": 0x80, "size": 1, "in": False,
                                                 "data": 0x11, "insn_len": 2}),
    (ins(Code.IN_EAX_DX, R.EAX, R.DX), "IO", {"port": 0x3F8, "size": 4, "in": True}),
    (ins(Code.OUT_DX_AX, R.DX, R.AX), "IO", {"port": 0x3F8, "size": 2, "data": 0x2211}),
    (ins(Code.CPUID), "CPUID", {"insn_len": 2}),
    (ins(Code.HLT), "HLT", {"insn_len": 1}),
    (ins(Code.VMCALL), "VMCALL", {"insn_len": 3}),
    (ins(Code.VMMCALL), "VMMCALL", {"insn_len": 3}),
])
def test_exits_leave_rip_at_the_instruction(cpu, instr, kind, fields):
    cpu.set_regs(rax=0x44332211, rdx=0x3F8)
    load(cpu, ins(Code.NOPD), instr)
    assert cpu.run() == kind
    assert cpu["rip"] == CODE + 1
    ev = cpu.event()
    assert {k: ev[k] for k in fields} == fields
    assert cpu.retired() == 1


# ---- MMIO ----

def test_mmio_read_exits_then_completes(cpu):
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBX, MMIO), ins(Code.MOV_R32_RM32, R.EAX, M(R.RBX, displ=4, displ_size=1)),
         ins(Code.HLT))
    assert cpu.run() == "MMIO"
    ev = cpu.event()
    assert (ev["gpa"], ev["len"], ev["write"], ev["insn_len"]) == (MMIO + 4, 4, False, 3)
    assert cpu["rip"] == CODE + 10
    cpu.mmio_fill(MMIO + 4, 0xFFFFFFFF_DEADBEEF)
    assert cpu.run() == "HLT"
    assert cpu["rax"] == 0xDEADBEEF


def test_mmio_write_exits_once(cpu):
    cpu.set_regs(rax=0x1234_5678_9ABC)
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBX, MMIO), ins(Code.MOV_RM64_R64, M(R.RBX), R.RAX),
         ins(Code.HLT))
    assert cpu.run() == "MMIO"
    ev = cpu.event()
    assert (ev["gpa"], ev["len"], ev["write"], ev["data"]) == (MMIO, 8, True, 0x1234_5678_9ABC)
    rip = cpu["rip"]
    assert cpu.run() == "HLT", "re-executed, the reported write completes"
    assert cpu["rip"] == rip + 3
    # or the host skips it, as KVM does
    cpu.set_regs(rip=rip)
    assert cpu.run() == "MMIO"
    cpu.set_regs(rip=rip + ev["insn_len"])
    assert cpu.run() == "HLT"


def test_mmio_read_modify_write_completes_in_two_exits(cpu):
    cpu.set_regs(rax=1, rflags=0x2)
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBX, MMIO), ins(Code.ADD_RM32_R32, M(R.RBX), R.EAX),
         ins(Code.HLT))
    assert cpu.run() == "MMIO" and not cpu.event()["write"]
    cpu.mmio_fill(MMIO, 0xFFFFFFFF)
    assert cpu.run() == "MMIO"
    ev = cpu.event()
    assert ev["write"] and ev["data"] == 0 and ev["len"] == 4
    assert not cpu["rflags"] & CF, "flags not committed before the write completed"
    assert cpu.run() == "HLT"
    assert cpu["rflags"] & (CF | ZF) == CF | ZF


def test_access_across_two_slots_is_mmio():
    cpu = make_cpu()
    extra = ffi.new("uint8_t[]", 0x1000)
    cpu.map(0x20000, extra, 0x1000)         # adjacent to RAM
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBX, 0x1FFFC), ins(Code.MOV_R64_RM64, R.RAX, M(R.RBX)),
         ins(Code.HLT))
    assert cpu.run() == "MMIO"
    assert (cpu.event()["gpa"], cpu.event()["len"]) == (0x1FFFC, 8)


def test_code_across_two_slots_runs():
    cpu = make_cpu()
    extra = ffi.new("uint8_t[]", 0x1000)
    cpu.map(0x20000, extra, 0x1000)
    code = asm(0x1FFFD, ins(Code.MOV_R64_IMM64, R.RAX, 0x55), ins(Code.HLT))
    cpu.write(0x1FFFD, code[:3])
    ffi.memmove(extra, code[3:], len(code) - 3)
    cpu.set_regs(rip=0x1FFFD)
    assert cpu.run() == "HLT" and cpu["rax"] == 0x55 and cpu["rip"] == 0x20007


def test_fetch_from_mmio_exits_per_byte(cpu):
    cpu.set_regs(rip=MMIO)
    code = asm(MMIO, ins(Code.MOV_R32_IMM32, R.EAX, 0x77))
    for i, byte in enumerate(code):
        assert cpu.run() == "MMIO"
        assert (cpu.event()["gpa"], cpu.event()["len"]) == (MMIO + i, 1)
        cpu.mmio_fill(MMIO + i, byte)
    assert cpu.run() == "MMIO" and cpu.event()["gpa"] == MMIO + 5
    assert cpu["rax"] == 0x77


def test_non_canonical_access_is_gp_and_stack_is_ss(cpu):
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBX, 1 << 47), ins(Code.MOV_R64_RM64, R.RAX, M(R.RBX)))
    assert cpu.run() == "HLT" and vector_ran(cpu) == GP
    cpu = make_cpu()
    load(cpu, ins(Code.MOV_R64_IMM64, R.RBP, 1 << 47), ins(Code.MOV_R64_RM64, R.RAX, M(R.RBP)))
    assert cpu.run() == "HLT" and vector_ran(cpu) == SS


# ---- budget, accounting ----

def test_budget_stops_between_instructions(cpu):
    load(cpu, ins(Code.MOV_R32_IMM32, R.ECX, 100), ins(Code.DEC_RM64, R.RCX),
         (Code.JNE_REL8_64, ("@", 1)), ins(Code.HLT))
    assert cpu.run(budget=0) == "EXTINT" and cpu["rip"] == CODE
    assert cpu.run(budget=6) == "EXTINT"
    assert cpu["rcx"] == 97 and cpu["rip"] == CODE + 8
    assert cpu.retired() == 6
    assert cpu.run(budget=1000) == "HLT"
    assert cpu["rcx"] == 0 and cpu.retired() == 1 + 200
    assert cpu.state().insn_budget == 1000 - 195


def test_a_fault_loop_is_bounded_by_the_budget(cpu):
    cpu.write(HANDLER + 16 * UD, asm(HANDLER + 16 * UD, ins(Code.UD2)))
    load(cpu, ins(Code.UD2))
    cpu.set_regs(rsp=STACK)
    assert cpu.run(budget=50) == "EXTINT"


def test_tf_single_steps_with_db_traps(cpu):
    """POPF sets TF: the instruction after it runs, then #DB with the next RIP."""
    cpu.write(HANDLER + 16 * 1, asm(HANDLER + 16, ins(Code.INC_RM64, R.R8), ins(Code.IRETQ)))
    load(cpu, ins(Code.PUSHQ_IMM32, 0x102), ins(Code.POPFQ),
         ins(Code.NOPD), ins(Code.NOPD), ins(Code.PUSHQ_IMM32, 0x2), ins(Code.POPFQ),
         ins(Code.NOPD), ins(Code.HLT))
    assert cpu.run() == "HLT"
    # traps after: nop, nop, push, popf (TF still set when it started)
    assert cpu["r8"] == 4 and cpu["rip"] == CODE + 15


def test_loopcc_changes_no_flag(cpu):
    cpu.set_regs(rcx=1, rax=0x7FFF, rbx=1)
    load(cpu, ins(Code.ADD_RM16_R16, R.AX, R.BX), ins(Code.PUSHFQ),
         (Code.LOOPE_REL8_64_RCX, ("@", 3)), ins(Code.PUSHFQ), ins(Code.HLT))
    assert cpu.run() == "HLT"
    assert cpu.u64(STACK - 8) == cpu.u64(STACK - 16)


# ---- code that changes ----

def test_host_rewrites_code_between_runs(cpu):
    load(cpu, ins(Code.MOV_R32_IMM32, R.EAX, 1), ins(Code.HLT))
    assert cpu.run() == "HLT" and cpu["rax"] == 1
    load(cpu, ins(Code.MOV_R32_IMM32, R.EAX, 2), ins(Code.HLT))
    cpu.set_regs(rip=CODE)
    assert cpu.run() == "HLT" and cpu["rax"] == 2


@pytest.mark.parametrize("warm", [False, True], ids=["first-access", "fast-path"])
def test_guest_rewrites_the_next_instruction(cpu, warm):
    """A store into the running block: the next instruction is the new one (whether the
    store is the first access of the run or goes through the fast path)."""
    at = CODE + 17 + (7 if warm else 0)
    new = asm(at, ins(Code.MOV_R32_IMM32, R.EAX, 2), ins(Code.HLT)) + b"\x90\x90"
    load(cpu, *([ins(Code.MOV_R64_RM64, R.RCX, M(R.RIP, displ=CODE))] if warm else []),
         ins(Code.MOV_R64_IMM64, R.RBX, int.from_bytes(new, "little")),        # 10 bytes
         ins(Code.MOV_RM64_R64, M(R.RIP, displ=at), R.RBX),                     # 7 bytes
         ins(Code.MOV_R32_IMM32, R.EAX, 1), ins(Code.HLT))
    assert cpu.run() == "HLT"
    assert cpu["rax"] == 2 and cpu["rip"] == at + 5


def test_loop_with_a_32_bit_counter(cpu):
    """LOOP with 67h counts in ECX and zero-extends RCX."""
    cpu.set_regs(rcx=0x1_0000_0000)
    cpu.write(CODE, bytes.fromhex("67e200" "f4"))      # loop (ecx) to the next insn; hlt
    assert cpu.run() == "HLT"
    assert cpu["rcx"] == 0xFFFFFFFF


def test_pop_to_memory_addresses_with_the_incremented_rsp(cpu):
    """POP [RSP]: the address is computed after RSP is incremented (SDM, POP)."""
    load(cpu, ins(Code.PUSHQ_IMM32, 0x1111), ins(Code.PUSHQ_IMM32, 0x2222),
         ins(Code.POP_RM64, M(R.RSP)), ins(Code.HLT))
    assert cpu.run() == "HLT"
    assert cpu["rsp"] == STACK - 8 and cpu.u64(STACK - 8) == 0x2222


def test_32_bit_addressing_truncates_the_address(cpu):
    cpu.write(DATA, (0x5A5A).to_bytes(8, "little"))
    cpu.set_regs(rbx=0xDEAD_0000_0000_0000 | (DATA - 0x10))
    load(cpu, ins(Code.MOV_R64_RM64, R.RAX, M(R.EBX, displ=0x10, displ_size=4)), ins(Code.HLT))
    assert cpu.run() == "HLT" and cpu["rax"] == 0x5A5A


def test_popf_privilege_rules():
    """CPL 0 may change IF and IOPL; CPL 3 with IOPL 0 changes neither, silently."""
    cpu = make_cpu()
    load(cpu, ins(Code.PUSHQ_IMM32, 0x3202), ins(Code.POPFQ), ins(Code.HLT))
    assert cpu.run() == "HLT" and cpu["rflags"] == 0x3202
    cpu = make_cpu()
    to_user(cpu, rflags=0x2)
    load(cpu, ins(Code.PUSHQ_IMM32, 0x3203), ins(Code.POPFQ), ins(Code.UD2), at=USER)
    assert cpu.run() == "HLT" and vector_ran(cpu) == UD
    assert frame(cpu, False)[3] == 0x3, "only CF (and the fixed bit) changed"


def test_guest_rewrites_a_loop_body(cpu):
    """A loop that patches its own ADD immediate (1 -> 0x10) on the third pass."""
    load(cpu, ins(Code.MOV_R32_IMM32, R.ECX, 5),                        # +0
         ins(Code.XOR_R32_RM32, R.EAX, R.EAX),                          # +5
         ins(Code.ADD_RM32_IMM8, R.EAX, 1),                             # +7, imm at +9
         ins(Code.CMP_RM32_IMM8, R.ECX, 3), (Code.JNE_REL8_64, ("@", 6)),
         ins(Code.MOV_RM8_IMM8, M(R.RIP, displ=CODE + 9), 0x10),
         ins(Code.DEC_RM32, R.ECX), (Code.JNE_REL8_64, ("@", 2)), ins(Code.HLT))
    assert cpu.run() == "HLT"
    assert cpu["rax"] == 3 + 2 * 0x10


def test_decode_cache_survives_snapshot_restores(cpu):
    """A memcpy restore resets cpu->icache (to NULL, or to another machine's): the CPU
    finds its own cache again instead of allocating another."""
    load(cpu, ins(Code.MOV_R32_IMM32, R.EAX, 1), ins(Code.HLT))
    assert cpu.run() == "HLT"
    mine = lib.pk_bare_icache_ptr(cpu.m, 0)
    assert mine
    other = make_cpu()
    load(other, ins(Code.HLT))
    assert other.run() == "HLT"
    for restored in (0, lib.pk_bare_icache_ptr(other.m, 0)):
        lib.pk_bare_set_icache_ptr(cpu.m, 0, restored)
        cpu.set_regs(rip=CODE)
        assert cpu.run() == "HLT" and cpu["rax"] == 1
        assert lib.pk_bare_icache_ptr(cpu.m, 0) == mine
    assert other.run() == "HLT"


# ---- random bytes ----

@settings(max_examples=int(os.environ.get("PYKVM_FUZZ_EXAMPLES", "300")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(code=st.binary(min_size=1, max_size=64), regs=st.lists(st.integers(0, 2**64 - 1),
                                                             min_size=16, max_size=16),
       budget=st.integers(0, 300), idt=st.booleans(), user=st.booleans())
def test_random_bytes_never_crash(code, regs, budget, idt, user):
    cpu = make_cpu(idt=idt)
    cpu.write(CODE, code)
    names = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
    values = dict(zip(names, regs))
    if values["rsp"] % 3:
        values["rsp"] = STACK           # a usable stack most of the time
    cpu.set_regs(**values)
    cpu.set_msr(MSR_EFER, cpu.msr(MSR_EFER) | EFER_SCE)
    if user:
        cpu.set_seg("cs", selector=USER_CS)
        cpu.set_seg("ss", selector=USER_SS)
    kind = cpu.run(budget=budget)
    assert kind in GEXITS and kind != "NONE"
    assert cpu.retired() <= budget
    if kind == "EXTINT":
        assert cpu.state().insn_budget == 0


@settings(max_examples=int(os.environ.get("PYKVM_FUZZ_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(code=st.binary(min_size=1, max_size=48), seed=st.integers(0, 2**32),
       regs=st.lists(st.sampled_from([0, MMIO, MMIO + 8, DATA, 2**47 - 4, 2**64 - 1]),
                     min_size=16, max_size=16))
def test_random_bytes_with_a_host_that_completes_every_exit(code, seed, regs):
    """Exits answered the way a VMM does (MMIO reads filled, writes and I/O skipped or
    re-executed): the interpreter keeps making progress and never crashes."""
    import random
    rnd = random.Random(seed)
    cpu = make_cpu()
    cpu.write(CODE, code)
    names = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
    cpu.set_regs(**dict(zip(names, regs)))
    total = 0
    for _ in range(30):
        budget = rnd.randrange(1, 50)
        total += budget
        kind = cpu.run(budget=budget)
        assert kind in GEXITS and kind != "NONE"
        ev = cpu.event()
        if kind == "MMIO" and not ev["write"]:
            cpu.mmio_fill(ev["gpa"], rnd.getrandbits(64))
        elif kind in ("MMIO", "IO", "CPUID", "HLT", "VMCALL", "VMMCALL") and rnd.random() < 0.7:
            if ev["insn_len"]:
                cpu.set_regs(rip=cpu["rip"] + ev["insn_len"])
        elif kind == "TRIPLE_FAULT":
            break
    assert cpu.retired() <= total
