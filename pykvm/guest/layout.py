"""The fixed guest-physical layout of a pykvm long-mode guest, and the bytes that set it up.

Guest memory starts at GPA 0 and is identity mapped (linear = physical) with 2 MiB pages.
The set-up is the one CONFORMANCE.md ("Facts for driving the host's KVM") measured on the
host KVM, plus a TSS and user segments so that CPL3 code, SYSCALL/SYSRET and exceptions
from CPL3 work::

    0x000000  unused (left zero: a stray jump to 0 hits zeros, not code)
    0x001000  PML4_ADDR     PML4[0]  -> PDPT  (P|RW|US)
    0x002000  PDPT_ADDR     PDPT[0]  -> PD    (P|RW|US)
    0x003000  PD_ADDR       PD[i]    = i*2MiB | PS|RW|P (|US with user_pages)
    0x004000  GDT_ADDR      selectors below
    0x005000  IDT_ADDR      vectors 0-31: 64-bit interrupt gates to the runtime stubs
    0x006000  TSS_ADDR      64-bit TSS, RSP0 = RSP0_TOP
    0x007000  DATA_ADDR     runtime data page: exception fix-up slots (RUNTIME_* below)
    0x008000  RUNTIME_CODE  exception stubs and their common handler
    0x00F000  APIC_PD_ADDR  with apic_page: PD for 3-4 GiB, mapping the xAPIC page
    0x010000  CODE_START    the program's code (entry point, RIP at start)
    0x100000  USER_DATA     free for programs (up to USER_STACK_TOP - 64 KiB)
    0x1E0000  USER_STACK_TOP  a stack for CPL3 code (a convention, not loaded anywhere)
    0x1F0000  RSP0_TOP      TSS.RSP0: stack for exceptions and interrupts from CPL3
    0x200000  STACK_TOP     RSP at start (CPL0)

GDT selectors (laid out so one STAR value serves SYSCALL and SYSRETQ)::

    0x08 KERNEL_CS  64-bit code, DPL0          SYSCALL: CS = STAR[47:32]      = 0x08
    0x10 KERNEL_DS  data, DPL0                          SS = STAR[47:32] + 8  = 0x10
    0x18 USER32_CS  32-bit code, DPL3 (unused; keeps the SYSRET order)
    0x20 USER_DS    data, DPL3   (0x23 with RPL3) SYSRETQ: SS = STAR[63:48] + 8  = 0x23
    0x28 USER_CS    64-bit code, DPL3 (0x2B)             CS = STAR[63:48] + 16 = 0x2B
    0x30 TSS_SEL    64-bit TSS (16 bytes)

so GUEST_STAR = 0x001B000800000000 (the kernel's 0x0023001000000000 for this GDT).
"""
from __future__ import annotations

import struct

from pykvm.regs import DTable, Regs, Segment, Sregs

MIB = 1 << 20
PAGE_SIZE = 0x1000
LARGE_PAGE_SIZE = 2 * MIB

MEMORY_SIZE = 2 * MIB          # default guest memory
MAX_MEMORY_SIZE = 512 * 2 * MIB  # one PD: 512 large pages = 1 GiB

PML4_ADDR = 0x1000
PDPT_ADDR = 0x2000
PD_ADDR = 0x3000
GDT_ADDR = 0x4000
IDT_ADDR = 0x5000
TSS_ADDR = 0x6000
DATA_ADDR = 0x7000
RUNTIME_CODE = 0x8000
RUNTIME_CODE_END = 0xF000
APIC_PD_ADDR = 0xF000
APIC_BASE_ADDR = 0xFEE00000    # the local APIC's registers (xAPIC MMIO) after RESET
CODE_START = 0x10000
USER_DATA = 0x100000
USER_STACK_TOP = 0x1E0000
RSP0_TOP = 0x1F0000
STACK_TOP = 0x200000

# Runtime data page: slots the exception stubs and rdmsr_safe & co. share.
RUNTIME_FIXUP = DATA_ADDR + 0x00      # u64: fix-up RIP; 0 = not armed
RUNTIME_VECTOR = DATA_ADDR + 0x08     # u64: vector of the last caught exception
RUNTIME_ERROR_CODE = DATA_ADDR + 0x10  # u64: its error code (0 if the vector has none)
RUNTIME_FAULT_RIP = DATA_ADDR + 0x18  # u64: the RIP that faulted

# Selectors
KERNEL_CS = 0x08
KERNEL_DS = 0x10
USER32_CS = 0x18
USER_DS = 0x20
USER_CS = 0x28
TSS_SEL = 0x30
GDT_ENTRIES = 8                    # null, 5 segments, TSS (2 slots)
GDT_LIMIT = GDT_ENTRIES * 8 - 1
GUEST_STAR = ((USER32_CS | 3) << 48) | (KERNEL_CS << 32)

# IDT: 32 gates (the architectural exceptions); vectors above fault with #GP.
IDT_VECTORS = 32
IDT_LIMIT = IDT_VECTORS * 16 - 1
VECTORS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

# Control registers, as measured on the host KVM (CONFORMANCE.md).
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_PG = (1 << 0, 1 << 1, 1 << 4, 1 << 5,
                                                          1 << 16, 1 << 18, 1 << 31)
CR4_PAE, CR4_FSGSBASE = 1 << 5, 1 << 16
EFER_SCE, EFER_LME, EFER_LMA = 1 << 0, 1 << 8, 1 << 10
GUEST_CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG   # 0x80050033
GUEST_CR4 = CR4_PAE | CR4_FSGSBASE                                         # 0x10020
GUEST_EFER = EFER_SCE | EFER_LME | EFER_LMA                                # 0x501

# Page-table entry bits
PTE_P, PTE_RW, PTE_US, PTE_PS = 1 << 0, 1 << 1, 1 << 2, 1 << 7
PTE_PWT, PTE_PCD = 1 << 3, 1 << 4

RFLAGS_FIXED = 1 << 1
RFLAGS_IOPL3 = 3 << 12
# RFLAGS for CPL3 code that wants to ucall: IOPL=3 lets it execute OUT (use it as R11 for
# SYSRETQ or in the IRETQ frame).
USER_RFLAGS = RFLAGS_FIXED | RFLAGS_IOPL3


def _descriptor(access, flags, base=0, limit=0xFFFFF):
    """An 8-byte code/data descriptor: access byte (P|DPL|S|type), flags nibble (G|DB|L)."""
    return ((limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (access << 40) |
            (((limit >> 16) & 0xF) << 48) | (flags << 52) | (((base >> 24) & 0xFF) << 56))


def gdt_bytes():
    """The GDT: see the module docstring for the selectors."""
    code64, data = 0xA, 0xC    # flags: G|L, G|DB
    entries = [
        0,
        _descriptor(0x9B, code64),   # KERNEL_CS: P, DPL0, S, type 11 (code, RX, accessed)
        _descriptor(0x93, data),     # KERNEL_DS: P, DPL0, S, type 3 (data, RW, accessed)
        _descriptor(0xFB, data),     # USER32_CS: P, DPL3, S, type 11, DB
        _descriptor(0xF3, data),     # USER_DS: P, DPL3, S, type 3
        _descriptor(0xFB, code64),   # USER_CS: P, DPL3, S, type 11, L
    ]
    # 64-bit TSS, type 11 (busy): TR is loaded with it from the start, as after LTR.
    limit = 0x67
    low = (limit | ((TSS_ADDR & 0xFFFFFF) << 16) | (0x8B << 40) |
           (((TSS_ADDR >> 24) & 0xFF) << 56))
    entries += [low, TSS_ADDR >> 32]
    assert len(entries) == GDT_ENTRIES
    return struct.pack(f"<{GDT_ENTRIES}Q", *entries)


def idt_gate(handler, selector=KERNEL_CS, dpl=0, ist=0):
    """A 16-byte 64-bit interrupt gate (type 0xE)."""
    attr = 0x80 | (dpl << 5) | 0xE
    return struct.pack("<HHBBHII", handler & 0xFFFF, selector, ist, attr,
                       (handler >> 16) & 0xFFFF, handler >> 32, 0)


def idt_bytes(stubs):
    """IDT gates for vectors 0..len(stubs)-1. #BP (3) has DPL3 so INT3 works at CPL3."""
    return b"".join(idt_gate(addr, dpl=3 if vec == 3 else 0) for vec, addr in enumerate(stubs))


def tss_bytes(rsp0=RSP0_TOP):
    """A 104-byte 64-bit TSS; the I/O bitmap base points past the limit (no bitmap)."""
    tss = bytearray(0x68)
    struct.pack_into("<Q", tss, 4, rsp0)
    struct.pack_into("<H", tss, 0x66, 0x68)
    return bytes(tss)


def page_tables(memory_size, user_pages=True, apic_page=False):
    """PML4, PDPT, PD (one page each) identity mapping `memory_size` with 2 MiB pages,
    and with `apic_page` a second PD (else None) that identity maps the 2 MiB around
    APIC_BASE_ADDR uncached, so the guest can reach the xAPIC registers (KVM's LAPIC
    claims the page whatever backs it)."""
    upper = PTE_P | PTE_RW | PTE_US     # permissive upper levels: the leaf decides
    leaf = PTE_P | PTE_RW | PTE_PS | (PTE_US if user_pages else 0)   # 0x87 / 0x83
    pml4 = struct.pack("<Q", PDPT_ADDR | upper).ljust(PAGE_SIZE, b"\0")
    pdpt = bytearray(PAGE_SIZE)
    struct.pack_into("<Q", pdpt, 0, PD_ADDR | upper)
    n = memory_size // LARGE_PAGE_SIZE
    pd = struct.pack(f"<{n}Q", *(i * LARGE_PAGE_SIZE | leaf for i in range(n)))
    apic_pd = None
    if apic_page:
        gib = APIC_BASE_ADDR >> 30
        if gib == 0:
            raise ValueError("APIC_BASE_ADDR below 1 GiB would collide with memory")
        struct.pack_into("<Q", pdpt, 8 * gib, APIC_PD_ADDR | upper)
        apic_pd = bytearray(PAGE_SIZE)
        large = APIC_BASE_ADDR & ~(LARGE_PAGE_SIZE - 1)
        struct.pack_into("<Q", apic_pd, 8 * ((APIC_BASE_ADDR >> 21) & 511),
                         large | PTE_P | PTE_RW | PTE_PS | PTE_PWT | PTE_PCD)
        apic_pd = bytes(apic_pd)
    return pml4, bytes(pdpt), pd.ljust(PAGE_SIZE, b"\0"), apic_pd


def check_memory_size(memory_size):
    if (not isinstance(memory_size, int) or memory_size < MEMORY_SIZE
            or memory_size % LARGE_PAGE_SIZE or memory_size > MAX_MEMORY_SIZE):
        raise ValueError(f"memory_size must be a multiple of 2 MiB in [2 MiB, 1 GiB], "
                         f"got {memory_size!r}")


def initial_regs():
    """RIP at CODE_START, RSP at STACK_TOP, interrupts off."""
    return Regs(rip=CODE_START, rsp=STACK_TOP, rflags=RFLAGS_FIXED)


def _code64(selector, dpl):
    return Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=11, present=1, dpl=dpl,
                   db=0, s=1, l=1, g=1)


def _data(selector, dpl):
    return Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=3, present=1, dpl=dpl,
                   db=1, s=1, l=0, g=1)


def initial_sregs():
    """Long mode, CPL0: segments as in the GDT, TR = the TSS, LDTR unusable."""
    return Sregs(
        cs=_code64(KERNEL_CS, 0),
        ds=_data(KERNEL_DS, 0), es=_data(KERNEL_DS, 0), fs=_data(KERNEL_DS, 0),
        gs=_data(KERNEL_DS, 0), ss=_data(KERNEL_DS, 0),
        tr=Segment(base=TSS_ADDR, limit=0x67, selector=TSS_SEL, type=11, present=1),
        ldt=Segment(base=0, limit=0, selector=0, type=0, present=0, unusable=1),
        gdt=DTable(base=GDT_ADDR, limit=GDT_LIMIT),
        idt=DTable(base=IDT_ADDR, limit=IDT_LIMIT),
        cr0=GUEST_CR0, cr3=PML4_ADDR, cr4=GUEST_CR4, efer=GUEST_EFER,
    )


def user_segments():
    """(cs, ss) Segments for CPL3 64-bit code, as SYSRETQ loads them."""
    return _code64(USER_CS | 3, 3), _data(USER_DS | 3, 3)
