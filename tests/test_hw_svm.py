"""SVM hardware of the simulated CPU (csrc/arch/svm_hw.c): VMRUN and #VMEXIT with the host
save area, exit codes, the MSR permission map, VMLOAD/VMSAVE, and GIF holding NMIs.

Driven through the test-only entry points of include/pykvm/hwtest.h; guests are raw
64-bit machine code in one small memory slot.
"""
import random
import struct

import pytest
from hypothesis import given, settings, strategies as st

from hwtest import ffi, lib

A64 = 0x0000123456789ABC
MSR_IA32_SPEC_CTRL = 0x48
MSR_IA32_CR_PAT = 0x277
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_VM_HSAVE_PA = 0xC0010117

EFER_SCE, EFER_LME, EFER_LMA, EFER_NX, EFER_SVME = 1, 1 << 8, 1 << 10, 1 << 11, 1 << 12
HOST_EFER = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX | EFER_SVME
AR_UNUSABLE = 1 << 16

# Intercept bits (asm/svm.h)
I_NMI, I_CPUID, I_HLT, I_IOIO, I_MSR = 3 * 32 + 1, 3 * 32 + 18, 3 * 32 + 24, 3 * 32 + 27, 3 * 32 + 28
I_SHUTDOWN, I_VMRUN, I_VMMCALL, I_RDTSCP = 3 * 32 + 31, 4 * 32, 4 * 32 + 1, 4 * 32 + 7

SVM_EXIT_INTR, SVM_EXIT_NMI, SVM_EXIT_CPUID, SVM_EXIT_HLT = 0x60, 0x61, 0x72, 0x78
SVM_EXIT_IOIO, SVM_EXIT_MSR, SVM_EXIT_SHUTDOWN, SVM_EXIT_VMMCALL = 0x7B, 0x7C, 0x7F, 0x81
SVM_EXIT_RDTSCP, SVM_EXIT_NPF, SVM_EXIT_ERR = 0x87, 0x400, 0xFFFFFFFF

AMD = dict(vendor=1, has_rdtscp=True, has_rdpid=True, has_ibrs=True, has_stibp=True,
           has_ssbd=True, has_ibpb=True, has_fsgsbase=True, has_virt_ssbd=True)

CODE, STACK, MEM = 0x1000, 0x8000, 0x10000

_consts = {}


def C(name):
    if name not in _consts:
        v = ffi.new("int64_t *")
        assert lib.pk_hwtest_const(name.encode(), v) == 0, f"no constant {name}"
        _consts[name] = v[0]
    return _consts[name]


def mov_ecx(v):
    return b"\xb9" + struct.pack("<I", v)


def wrmsr(index, value):
    return (mov_ecx(index) + b"\xb8" + struct.pack("<I", value & 0xFFFFFFFF) +
            b"\xba" + struct.pack("<I", value >> 32) + b"\x0f\x30")


def rdmsr_out(index):
    """mov ecx, index; rdmsr; out 0x80, eax"""
    return mov_ecx(index) + b"\x0f\x32" + b"\xe7\x80"


HLT = b"\xf4"

# struct vmcb_seg: selector, attrib, limit, base
SEG = struct.Struct("<HHIQ")


class Svm:
    """An AMD machine with EFER.SVME and a host save area on CPU 0, and a VMCB for a
    64-bit guest at CODE in a 64 KiB slot at GPA 0; MSRs pass through (empty MSRPM)."""

    def __init__(self, **features):
        model = ffi.new("struct pk_cpu_model *", {**AMD, **features})
        m = lib.pk_machine_create(2, model)
        assert m != ffi.NULL
        self.m = ffi.gc(m, lib.pk_machine_destroy)
        self.mem = ffi.new("uint8_t[]", MEM)
        self.slots = lib.pk_hwtest_memslot(self.m, 0, self.mem, MEM)
        self.hsave = self.alloc(4096)
        self.vmcb = self.alloc(4096)
        self.msrpm = self.alloc(8192)
        s = self.state()
        s.msr[C("SLOT_EFER")] = HOST_EFER
        s.msr[C("SLOT_VM_HSAVE_PA")] = self.hsave
        s.insn_budget = 10000
        self.set_state(s)
        self.intercept(I_VMRUN, I_HLT, I_IOIO, I_MSR, I_SHUTDOWN, I_VMMCALL)
        self.w("control.asid", 1, 4)
        self.w("control.msrpm_base_pa", self.msrpm)
        self.w("control.nested_cr3", self.slots)
        for name, sel, attrib in (("es", 0x10, 0xC93), ("cs", 0x08, 0xA9B), ("ss", 0x10, 0xC93),
                                  ("ds", 0x10, 0xC93)):
            self.seg(name, sel, attrib, 0xFFFFFFFF, 0)
        self.seg("gdtr", 0, 0, 0x1F, 0x3000)
        self.seg("idtr", 0, 0, 0, 0)
        for name, v in dict(efer=EFER_LMA | EFER_LME | EFER_SCE | EFER_SVME, cr0=0x80050033,
                            cr3=0, cr4=0x20, rflags=0x2, rip=CODE, rsp=STACK, rax=0,
                            g_pat=0x0007040600070406).items():
            self.w("save." + name, v)

    # -- plumbing --
    def alloc(self, size, align=4096):
        pa = lib.pk_hwtest_alloc(self.m, size, align)
        assert pa
        return pa

    def phys_write(self, pa, data):
        assert lib.pk_hwtest_phys_write(self.m, pa, data, len(data)) == 0

    def phys_read(self, pa, n):
        buf = ffi.new("uint8_t[]", n)
        assert lib.pk_hwtest_phys_read(self.m, pa, buf, n) == 0
        return bytes(buf)

    def w(self, field, value, size=8, vmcb=None):
        self.phys_write((vmcb or self.vmcb) + C("VMCB_" + field),
                        value.to_bytes(size, "little"))

    def r(self, field, size=8, vmcb=None):
        return int.from_bytes(self.phys_read((vmcb or self.vmcb) + C("VMCB_" + field), size),
                              "little")

    def seg(self, name, sel, attrib, limit, base, vmcb=None):
        self.phys_write((vmcb or self.vmcb) + C("VMCB_save." + name),
                        SEG.pack(sel, attrib, limit, base))

    def read_seg(self, name, vmcb=None):
        return SEG.unpack(self.phys_read((vmcb or self.vmcb) + C("VMCB_save." + name), 16))

    def intercept(self, *bits, on=True):
        for bit in bits:
            off = C("VMCB_control.intercepts") + 4 * (bit // 32)
            word = int.from_bytes(self.phys_read(self.vmcb + off, 4), "little")
            word = word | (1 << bit % 32) if on else word & ~(1 << bit % 32)
            self.phys_write(self.vmcb + off, word.to_bytes(4, "little"))

    def state(self, cpu=0):
        s = ffi.new("struct pk_hwtest_cpu *")
        assert lib.pk_hwtest_get_cpu(self.m, cpu, s) == 0
        return s

    def set_state(self, s, cpu=0):
        assert lib.pk_hwtest_set_cpu(self.m, cpu, s) == 0

    def insn(self, name, a=0, b=0, cpu=0):
        return lib.pk_hwtest_insn(self.m, cpu, C("INSN_" + name), a, b, ffi.NULL)

    def code(self, code, at=CODE):
        self.mem[at:at + len(code)] = code

    def vmrun(self):
        return self.insn("VMRUN", self.vmcb)

    def run(self, code):
        self.code(code)
        assert self.vmrun() == 0
        return self.r("control.exit_code", 4)

    @property
    def bugs(self):
        return lib.pk_hwtest_host_bugs(self.m)

    def msr_slot(self, name):
        return self.state().msr[C("SLOT_" + name)]

    def set_msr_slot(self, name, value):
        s = self.state()
        s.msr[C("SLOT_" + name)] = value
        self.set_state(s)


@pytest.fixture
def svm():
    return Svm()


def snapshot(s):
    """Everything architectural in a CPU state, as plain values."""
    segs = [(g.selector, g.base, g.limit, g.ar) for g in s.seg]
    return dict(regs=list(s.regs), rip=s.rip, rflags=s.rflags, cr0=s.cr0, cr2=s.cr2,
                cr3=s.cr3, cr4=s.cr4, seg=segs, gdtr=(s.gdtr.base, s.gdtr.limit),
                idtr=(s.idtr.base, s.idtr.limit), msr=list(s.msr))


def host_state(svm):
    """A recognisable host: every register distinct from the guest's."""
    s = svm.state()
    s.cr0, s.cr3, s.cr4, s.cr2 = 0x80050033, 0x7000, 0x3706F0, 0x2222
    s.rflags, s.rip = 0x46, 0xFFFFFFFF81040000
    s.regs[0], s.regs[4] = svm.vmcb, 0xFFFFC90000004000
    for i, (sel, ar, base) in enumerate([(0, 0x10000, 0), (0x10, 0xA09B, 0), (0x18, 0xC093, 0),
                                         (0x2B, 0xC0F3, 0), (0, 0x1C000, 0x7F0000000740),
                                         (0, 0x1C000, 0xFFFF88807FC00000),
                                         (0x40, 0x8B, 0xFFFFFE0000002000), (0, 0x10000, 0)]):
        s.seg[i].selector, s.seg[i].ar, s.seg[i].base = sel, ar, base
        s.seg[i].limit = 0x4087 if i == C("SREG_TR") else 0xFFFFFFFF
    s.gdtr.base, s.gdtr.limit = 0xFFFFFE0000001000, 0x7F
    s.idtr.base, s.idtr.limit = 0xFFFFFE0000000000, 0xFFF
    for name, v in dict(KERNEL_GS_BASE=0x7E0000100000, STAR=0x0023001000000000,
                        LSTAR=0xFFFFFFFF81E00080, CSTAR=0xFFFFFFFF81E01C40, SYSCALL_MASK=0x47700,
                        SYSENTER_CS=0x10, SYSENTER_ESP=0xA000, SYSENTER_EIP=0x81E01B20,
                        PAT=0x0407050600070106, TSC_AUX=1, SPEC_CTRL=1).items():
        s.msr[C("SLOT_" + name)] = v
    svm.set_state(s)
    return snapshot(svm.state())


# ---- VMRUN / #VMEXIT ----

def test_vmexit_restores_host_state_and_clears_gif(svm):
    before = host_state(svm)
    assert svm.run(HLT) == SVM_EXIT_HLT
    s = svm.state()
    after = snapshot(s)
    assert s.gif == 0 and s.mode == C("MODE_HOST")
    assert after["cr2"] == 0                # guest CR2: #VMEXIT does not restore CR2
    for key in ("rip", "rflags", "cr0", "cr3", "cr4", "seg", "gdtr", "idtr", "msr"):
        assert after[key] == before[key], key
    assert after["regs"][0] == before["regs"][0] and after["regs"][4] == before["regs"][4]


def test_host_save_area_is_in_vm_hsave_pa(svm):
    assert svm.phys_read(svm.hsave, 4096) == bytes(4096)
    host_state(svm)
    svm.run(HLT)
    assert svm.phys_read(svm.hsave, 4096) != bytes(4096)


def test_vmrun_leaves_vmload_state_to_the_host(svm):
    """FS/GS/TR/LDTR, KERNEL_GS_BASE and the SYSCALL MSRs are VMLOAD's job: without it the
    guest runs with the host's."""
    host_state(svm)
    assert svm.run(rdmsr_out(MSR_LSTAR)) == SVM_EXIT_IOIO
    assert svm.r("save.rax") == 0x81E00080                      # guest RAX lives in the VMCB
    svm.w("save.rip", CODE)
    assert svm.run(rdmsr_out(MSR_KERNEL_GS_BASE)) == SVM_EXIT_IOIO
    assert svm.r("save.rax") == 0x00100000


def test_guest_state_saved_to_vmcb(svm):
    host_state(svm)
    code = wrmsr(MSR_IA32_CR_PAT, 0x0606060606060606) + b"\xb8\x44\x33\x22\x11" + HLT
    assert svm.run(code) == SVM_EXIT_HLT
    assert svm.r("save.rip") == CODE + len(code) - 1
    assert svm.r("control.next_rip") == CODE + len(code)
    assert svm.r("save.rax") == 0x11223344 and svm.r("save.rsp") == STACK
    assert svm.r("save.efer") == EFER_LMA | EFER_LME | EFER_SCE | EFER_SVME
    assert svm.r("save.cr0") == 0x80050033 and svm.r("save.cr4") == 0x20
    assert svm.r("save.cpl", 1) == 0
    assert svm.read_seg("cs") == (0x08, 0xA9B, 0xFFFFFFFF, 0)
    assert svm.r("save.g_pat") == 0x0606060606060606
    assert svm.msr_slot("PAT") == 0x0407050600070106          # host PAT back


# ---- Exit codes and exit information ----

EXITS = [
    ("hlt", HLT, SVM_EXIT_HLT, 0, 0, 1),
    ("in8", b"\xe4\x70", SVM_EXIT_IOIO, 0x70 << 16 | 1 << 4 | 1, CODE + 2, 2),
    ("out32", b"\xe7\x80", SVM_EXIT_IOIO, 0x80 << 16 | 1 << 6, CODE + 2, 2),
    ("out16", b"\x66\xe7\x80", SVM_EXIT_IOIO, 0x80 << 16 | 1 << 5, CODE + 3, 3),
    ("vmmcall", b"\x0f\x01\xd9", SVM_EXIT_VMMCALL, 0, 0, 3),
    ("ud2", b"\x0f\x0b", SVM_EXIT_SHUTDOWN, 0, 0, None),
    ("vmcall", b"\x0f\x01\xc1", SVM_EXIT_SHUTDOWN, 0, 0, None),    # #UD on AMD
    ("mmio_write", b"\x89\x04\x25\x00\x00\x10\x00", SVM_EXIT_NPF, (1 << 32) | 2, 0x100000, 7),
]


@pytest.mark.parametrize("name,code,exit_code,info1,info2,length", EXITS,
                         ids=[e[0] for e in EXITS])
def test_exit_codes(svm, name, code, exit_code, info1, info2, length):
    assert svm.run(code) == exit_code
    assert svm.r("control.exit_code_hi", 4) == 0
    assert (svm.r("control.exit_info_1"), svm.r("control.exit_info_2")) == (info1, info2)
    if length is not None:
        assert svm.r("save.rip") == CODE
        assert svm.r("control.next_rip") == CODE + length


def test_intercepted_cpuid_rdtscp_msr(svm):
    svm.intercept(I_CPUID, I_RDTSCP)
    assert svm.run(b"\x0f\xa2") == SVM_EXIT_CPUID
    assert svm.run(b"\x0f\x01\xf9") == SVM_EXIT_RDTSCP
    assert svm.r("control.next_rip") == CODE + 3
    msr_bit(svm, MSR_STAR, write=False)
    msr_bit(svm, MSR_STAR, write=True)
    assert svm.run(mov_ecx(MSR_STAR) + b"\x0f\x32") == SVM_EXIT_MSR
    assert svm.r("control.exit_info_1") == 0
    svm.w("save.rip", CODE)
    assert svm.run(wrmsr(MSR_STAR, 1)) == SVM_EXIT_MSR
    assert svm.r("control.exit_info_1") == 1


def test_budget_end_is_intr(svm):
    s = svm.state()
    s.insn_budget = 30
    svm.set_state(s)
    assert svm.run(b"\xeb\xfe") == SVM_EXIT_INTR


@pytest.mark.parametrize("field,value", [
    ("control.asid", 0), ("save.efer", EFER_LMA | EFER_LME), ("save.g_pat", 0x02),
    ("control.nested_cr3", 0x1234), ("save.efer", EFER_SVME | 1 << 14)])
def test_vmexit_invalid(svm, field, value):
    before = host_state(svm)
    svm.w(field, value, 4 if field == "control.asid" else 8)
    assert svm.run(HLT) == SVM_EXIT_ERR
    assert svm.r("control.exit_code_hi", 4) == 0xFFFFFFFF
    after = snapshot(svm.state())
    assert after["seg"] == before["seg"] and after["msr"] == before["msr"]
    assert svm.state().gif == 0


def test_vmexit_invalid_without_vmrun_intercept(svm):
    svm.intercept(I_VMRUN, on=False)
    assert svm.run(HLT) == SVM_EXIT_ERR


def test_vmrun_faults(svm):
    assert svm.insn("VMRUN", svm.vmcb + 0x10) == 1
    assert svm.insn("VMRUN", 0x1000) == 1
    svm.set_msr_slot("VM_HSAVE_PA", 0)
    assert svm.vmrun() == 1
    svm.set_msr_slot("VM_HSAVE_PA", svm.hsave)
    svm.set_msr_slot("EFER", HOST_EFER & ~EFER_SVME)
    assert svm.vmrun() == 1 and svm.insn("VMLOAD", svm.vmcb) == 1
    assert svm.bugs == 0
    svm.insn("CLGI")                                           # #UD in the kernel
    assert svm.bugs == 1 and svm.state().gif == 1
    model = ffi.new("struct pk_cpu_model *", dict(vendor=0))
    intel = ffi.gc(lib.pk_machine_create(1, model), lib.pk_machine_destroy)
    for insn in ("VMRUN", "VMSAVE", "STGI"):
        lib.pk_hwtest_insn(intel, 0, C("INSN_" + insn), 0x100000000, 0, ffi.NULL)
    assert lib.pk_hwtest_host_bugs(intel) == 3


def test_event_injection(svm):
    idt, handler = 0x4000, 0x1100
    gate = (handler & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | ((handler >> 16) << 48)
    svm.mem[idt + 13 * 16:idt + 14 * 16] = struct.pack("<QQ", gate, 0)
    svm.seg("idtr", 0, 0, 0xFFF, idt)
    svm.w("control.event_inj", 0x80000000 | 1 << 11 | 3 << 8 | 13, 4)
    svm.w("control.event_inj_err", 0x18, 4)
    svm.code(HLT, handler)
    assert svm.run(b"\x90") == SVM_EXIT_HLT
    assert svm.r("save.rip") == handler and svm.r("save.rsp") == STACK - 6 * 8
    assert svm.r("control.event_inj", 4) & 0x80000000 == 0
    assert struct.unpack("<Q", bytes(svm.mem[STACK - 48:STACK - 40]))[0] == 0x18


# ---- V_SPEC_CTRL ----

def test_v_spec_ctrl_switches_spec_ctrl():
    svm = Svm(has_v_spec_ctrl=True)
    svm.set_msr_slot("SPEC_CTRL", 1)
    svm.w("save.spec_ctrl", 4)
    code = rdmsr_out(MSR_IA32_SPEC_CTRL)
    assert svm.run(code) == SVM_EXIT_IOIO and svm.r("save.rax") == 4
    svm.w("save.rip", CODE)
    assert svm.run(wrmsr(MSR_IA32_SPEC_CTRL, 2) + HLT) == SVM_EXIT_HLT
    assert svm.r("save.spec_ctrl") == 2 and svm.msr_slot("SPEC_CTRL") == 1


def test_without_v_spec_ctrl_the_guest_value_stays(svm):
    svm.set_msr_slot("SPEC_CTRL", 1)
    svm.w("save.spec_ctrl", 4)
    assert svm.run(rdmsr_out(MSR_IA32_SPEC_CTRL)) == SVM_EXIT_IOIO
    assert svm.r("save.rax") == 1
    svm.w("save.rip", CODE)
    assert svm.run(wrmsr(MSR_IA32_SPEC_CTRL, 2) + HLT) == SVM_EXIT_HLT
    assert svm.msr_slot("SPEC_CTRL") == 2 and svm.r("save.spec_ctrl") == 4


# ---- The MSR permission map ----

RANGES = (0, 0xC0000000, 0xC0010000)


def msr_bit(svm, msr, write, clear=False):
    """Set the MSRPM bit the way the kernel addresses it (svm_msrpm_offset): u32 index
    ((msr - base) / 4 + range * 2048) / 4, bit 2 * (msr & 0xf) (+1 for write)."""
    r = next(i for i, b in enumerate(RANGES) if 0 <= msr - b < 0x2000)
    offset = ((msr - RANGES[r]) // 4 + r * 2048) // 4
    if clear:
        svm.phys_write(svm.msrpm, bytes(8192))
    word = struct.unpack("<I", svm.phys_read(svm.msrpm + 4 * offset, 4))[0]
    word |= 1 << (2 * (msr & 0xF) + write)
    svm.phys_write(svm.msrpm + 4 * offset, struct.pack("<I", word))


def intercept(svm, kind, msr=0, vmcb=None):
    ev = ffi.new("struct pk_hwtest_event *", dict(kind=C("GEXIT_" + kind), msr=msr))
    r = lib.pk_hwtest_intercept(svm.m, 0, vmcb or svm.vmcb, ev)
    return {C("ICPT_NATIVE"): "native", C("ICPT_EXIT"): "exit", C("ICPT_UD"): "ud"}[r]


_shared = {}


def shared():
    if "svm" not in _shared:
        _shared["svm"] = Svm()
    return _shared["svm"]


MSRPM_MSRS = st.one_of(*(st.integers(b, b + 0x1FFF) for b in RANGES))


@settings(max_examples=150, deadline=None)
@given(msr=MSRPM_MSRS, write=st.booleans())
def test_msrpm_bit_positions(msr, write):
    """Exactly the one MSRPM bit set exits: that MSR, that direction."""
    svm = shared()
    msr_bit(svm, msr, write, clear=True)
    kind, other = ("WRMSR", "RDMSR") if write else ("RDMSR", "WRMSR")
    assert intercept(svm, kind, msr) == "exit"
    assert intercept(svm, other, msr) == "native"
    for neighbour in (msr - 1, msr + 1):
        if neighbour >> 13 == msr >> 13:
            assert intercept(svm, kind, neighbour) == "native"


@settings(max_examples=50, deadline=None)
@given(msr=st.integers(0, 2**32 - 1).filter(
    lambda m: not any(0 <= m - b < 0x2000 for b in RANGES)))
def test_msrs_outside_the_msrpm_always_exit(msr):
    svm = shared()
    svm.phys_write(svm.msrpm, bytes(8192))
    assert intercept(svm, "RDMSR", msr) == "exit" and intercept(svm, "WRMSR", msr) == "exit"


def test_msr_prot_off_means_native(svm):
    svm.phys_write(svm.msrpm, b"\xff" * 8192)
    assert intercept(svm, "RDMSR", MSR_STAR) == "exit"
    svm.intercept(I_MSR, on=False)
    assert intercept(svm, "RDMSR", MSR_STAR) == "native"
    assert intercept(svm, "WRMSR", 0x474F4F00) == "native"


def test_instruction_intercepts(svm):
    assert intercept(svm, "HLT") == "exit" and intercept(svm, "CPUID") == "native"
    svm.intercept(I_HLT, I_IOIO, I_VMMCALL, on=False)
    svm.intercept(I_CPUID)
    assert intercept(svm, "HLT") == "native" and intercept(svm, "CPUID") == "exit"
    assert intercept(svm, "IO") == "exit"                      # no native devices
    assert intercept(svm, "VMMCALL") == "ud" and intercept(svm, "VMCALL") == "ud"


@pytest.mark.parametrize("rdtscp,rdpid,icpt,want_rdtscp,want_rdpid", [
    (True, True, False, "native", "native"), (True, True, True, "exit", "native"),
    (False, False, True, "ud", "ud"), (True, False, False, "native", "ud")])
def test_rdtscp_rdpid_intercepts(rdtscp, rdpid, icpt, want_rdtscp, want_rdpid):
    svm = Svm(has_rdtscp=rdtscp, has_rdpid=rdpid)
    svm.intercept(I_RDTSCP, on=icpt)
    assert intercept(svm, "RDTSCP") == want_rdtscp and intercept(svm, "RDPID") == want_rdpid


# ---- VMLOAD / VMSAVE: exactly their set ----

VMLOAD_SEGS = ("fs", "gs", "tr", "ldtr")
VMLOAD_MSRS = ("kernel_gs_base", "star", "lstar", "cstar", "sfmask", "sysenter_cs",
               "sysenter_esp", "sysenter_eip")
MSR_SLOTS = dict(kernel_gs_base="KERNEL_GS_BASE", star="STAR", lstar="LSTAR", cstar="CSTAR",
                 sfmask="SYSCALL_MASK", sysenter_cs="SYSENTER_CS",
                 sysenter_esp="SYSENTER_ESP", sysenter_eip="SYSENTER_EIP")
TRUNCATED = ("sfmask", "sysenter_cs", "sysenter_esp", "sysenter_eip")   # 32-bit on AMD


def attrib_to_ar(attrib):
    ar = (attrib & 0xFF) | (attrib & 0xF00) << 4
    return ar if attrib & 0x80 else ar | AR_UNUSABLE


def randomize(svm, data):
    """A CPU state of random values (architectural fields only)."""
    s = svm.state()
    rnd = data.draw(st.lists(st.integers(0, 2**64 - 1), min_size=64, max_size=64))
    it = iter(rnd)
    for i in range(8):
        g = s.seg[i]
        g.base, g.limit, g.ar, g.selector = next(it), next(it) & 0xFFFFFFFF, \
            next(it) & 0x1F0FF, next(it) & 0xFFFF
    for i in range(C("NR_MSRS")):
        s.msr[i] = next(it)
    s.msr[C("SLOT_EFER")] = HOST_EFER
    s.msr[C("SLOT_VM_HSAVE_PA")] = svm.hsave
    s.gdtr.base, s.cr3 = next(it), next(it)
    svm.set_state(s)
    return snapshot(svm.state())


def random_page(seed):
    return random.Random(seed).randbytes(4096)


@settings(max_examples=30, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_vmload_loads_exactly_its_set(data, seed):
    svm = shared()
    blob = random_page(seed)
    vmcb = _shared.setdefault("vmload_vmcb", svm.alloc(4096))
    svm.phys_write(vmcb, blob)
    before = randomize(svm, data)
    assert svm.insn("VMLOAD", vmcb) == 0
    after = snapshot(svm.state())
    for name in VMLOAD_SEGS:
        sel, attrib, limit, base = svm.read_seg(name, vmcb=vmcb)
        i = C("SREG_" + name.upper())
        assert after["seg"][i] == (sel, base, limit, attrib_to_ar(attrib)), name
        before["seg"][i] = after["seg"][i]
    for name in VMLOAD_MSRS:
        v = svm.r("save." + name, vmcb=vmcb)
        slot = C("SLOT_" + MSR_SLOTS[name])
        assert after["msr"][slot] == (v & 0xFFFFFFFF if name in TRUNCATED else v), name
        before["msr"][slot] = after["msr"][slot]
    assert after == before


@settings(max_examples=30, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_vmsave_stores_exactly_its_set(data, seed):
    svm = shared()
    blob = random_page(seed)
    vmcb = _shared.setdefault("vmsave_vmcb", svm.alloc(4096))
    svm.phys_write(vmcb, blob)
    before = randomize(svm, data)
    assert svm.insn("VMSAVE", vmcb) == 0
    assert snapshot(svm.state()) == before
    saved = bytearray(svm.phys_read(vmcb, 4096))
    expect = bytearray(blob)
    for name in VMLOAD_SEGS:
        sel, base, limit, ar = before["seg"][C("SREG_" + name.upper())]
        attrib = (ar & 0xFF) | (ar >> 4) & 0xF00
        if ar & AR_UNUSABLE:
            attrib &= ~0x80
        off = C("VMCB_save." + name)
        expect[off:off + 16] = SEG.pack(sel, attrib, limit, base)
    for name in VMLOAD_MSRS:
        off = C("VMCB_save." + name)
        expect[off:off + 8] = before["msr"][C("SLOT_" + MSR_SLOTS[name])].to_bytes(8, "little")
    assert saved == expect


def test_vmsave_vmload_round_trip(svm):
    host = host_state(svm)
    area = svm.alloc(4096)
    assert svm.insn("VMSAVE", area) == 0
    s = svm.state()
    for i in (C("SREG_FS"), C("SREG_GS"), C("SREG_TR"), C("SREG_LDTR")):
        s.seg[i].base, s.seg[i].selector = 0x1000 + i, 0x8 * i
    for name in MSR_SLOTS.values():
        s.msr[C("SLOT_" + name)] = 0x4242
    svm.set_state(s)
    assert svm.insn("VMLOAD", area) == 0
    assert snapshot(svm.state()) == host


def test_host_save_area_shared_with_vmsave_like_kvm(svm):
    """KVM VMSAVEs the host's FS/GS/... into the VM_HSAVE_PA page itself, runs the guest
    (VMLOAD guest VMCB, VMRUN, VMSAVE guest VMCB) and VMLOADs that page back."""
    host = host_state(svm)
    assert svm.insn("VMSAVE", svm.hsave) == 0
    guest_fs = (0, 0x0C93, 0xFFFFFFFF, 0x5000)
    svm.seg("fs", *guest_fs)
    svm.w("save.lstar", 0x4100)
    assert svm.insn("VMLOAD", svm.vmcb) == 0
    svm.code(HLT)
    assert svm.vmrun() == 0 and svm.r("control.exit_code", 4) == SVM_EXIT_HLT
    assert svm.insn("VMSAVE", svm.vmcb) == 0
    assert svm.insn("VMLOAD", svm.hsave) == 0
    after = snapshot(svm.state())
    for key in ("rip", "rflags", "cr0", "cr3", "cr4", "seg", "gdtr", "idtr", "msr"):
        assert after[key] == host[key], key
    assert svm.read_seg("fs") == guest_fs and svm.r("save.lstar") == 0x4100


def test_vmload_vmsave_faults(svm):
    assert svm.insn("VMLOAD", svm.vmcb + 8) == 1 and svm.insn("VMSAVE", 0x2000) == 1
    assert svm.bugs == 0


# ---- GIF and NMIs ----

def test_gif_holds_nmi_until_stgi(svm):
    lib.pk_hwtest_count_nmis(svm.m)
    lib.pk_hwtest_nmi(svm.m, 0)
    assert lib.pk_hwtest_nmis(0) == 1                           # GIF = 1: taken now
    svm.insn("CLGI")
    lib.pk_hwtest_nmi(svm.m, 0)
    lib.pk_hwtest_nmi(svm.m, 0)                                 # collapses into one
    s = svm.state()
    assert s.gif == 0 and s.nmi_held and lib.pk_hwtest_nmis(0) == 1
    s.seg[C("SREG_GS")].base = 0xFFFF88807FC00000
    svm.set_state(s)
    svm.insn("STGI")
    assert lib.pk_hwtest_nmis(0) == 2 and not svm.state().nmi_held
    assert lib.pk_hwtest_nmi_gsbase(0) == 0xFFFF88807FC00000
    svm.insn("STGI")
    assert lib.pk_hwtest_nmis(0) == 2


def test_nmi_after_vmexit_waits_for_stgi(svm):
    """#VMEXIT leaves GIF = 0: an NMI right after it is held until KVM's STGI."""
    lib.pk_hwtest_count_nmis(svm.m)
    svm.insn("CLGI")
    assert svm.run(HLT) == SVM_EXIT_HLT
    lib.pk_hwtest_nmi(svm.m, 0)
    assert lib.pk_hwtest_nmis(0) == 0
    svm.insn("STGI")
    assert lib.pk_hwtest_nmis(0) == 1


def test_held_nmi_exits_at_vmrun_when_intercepted(svm):
    lib.pk_hwtest_count_nmis(svm.m)
    svm.insn("CLGI")
    lib.pk_hwtest_nmi(svm.m, 0)
    svm.intercept(I_NMI)
    assert svm.run(HLT) == SVM_EXIT_NMI
    assert svm.r("save.rip") == CODE                            # the guest did not run
    assert lib.pk_hwtest_nmis(0) == 0 and svm.state().nmi_held
    svm.insn("STGI")
    assert lib.pk_hwtest_nmis(0) == 1


# ---- Cost accounting ----

def test_svm_instructions_are_counted(svm):
    lib.pk_hwtest_reset_costs(svm.m)
    lib.pk_hwtest_set_path(svm.m, C("PATH_VCPU_RUN"))
    svm.insn("CLGI")
    svm.insn("VMLOAD", svm.vmcb)
    svm.run(HLT)
    svm.insn("VMSAVE", svm.vmcb)
    svm.insn("STGI")
    ops = {op: lib.pk_hwtest_ops(svm.m, C("PATH_VCPU_RUN"), C("OP_" + op))
           for op in ("CLGI", "STGI", "VMRUN", "VMEXIT", "VMLOAD", "VMSAVE")}
    assert ops == dict(CLGI=1, STGI=1, VMRUN=1, VMEXIT=1, VMLOAD=1, VMSAVE=1)
