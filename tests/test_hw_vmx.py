"""VMX hardware of the simulated CPU (csrc/arch/vmx_hw.c): the VMCS and its instructions,
VM-entry checks, VM-exit side effects, exit information and the MSR bitmap.

Driven through the test-only entry points of include/pykvm/hwtest.h; guests are raw
64-bit machine code in one small memory slot.
"""
import struct

import pytest
from hypothesis import given, settings, strategies as st

from hwtest import ffi, lib

A64 = 0x0000123456789ABC
NC = 0xAAAAAAAAAAAAAAAA
MSR_IA32_SPEC_CTRL = 0x48
MSR_IA32_TSX_CTRL = 0x122
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103

EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = 1, 1 << 8, 1 << 10, 1 << 11
RFLAGS_CF, RFLAGS_ZF = 1, 1 << 6
AR_UNUSABLE = 1 << 16

# Controls (asm/vmx.h)
HLT_EXITING, RDTSC_EXITING, UNCOND_IO_EXITING = 1 << 7, 1 << 12, 1 << 24
USE_MSR_BITMAPS, ACTIVATE_SECONDARY = 1 << 28, 1 << 31
ENABLE_EPT, ENABLE_RDTSCP = 1 << 1, 1 << 3
EXIT_HOST_ADDR_SPACE_SIZE, EXIT_SAVE_PAT, EXIT_LOAD_PAT = 1 << 9, 1 << 18, 1 << 19
EXIT_SAVE_EFER, EXIT_LOAD_EFER = 1 << 20, 1 << 21
ENTRY_IA32E_MODE, ENTRY_LOAD_PAT, ENTRY_LOAD_EFER = 1 << 9, 1 << 14, 1 << 15
FAILED_VMENTRY = 0x80000000

INTEL = dict(vendor=0, has_rdtscp=True, has_rdpid=True, has_ibrs=True, has_stibp=True,
             has_ssbd=True, has_ibpb=True, has_rtm=True, has_fsgsbase=True)

CODE = 0x1000
STACK = 0x8000
MEM = 0x10000

HOST = dict(
    HOST_CR0=0x80050033, HOST_CR3=0x7000, HOST_CR4=0x3706F0,
    HOST_CS_SELECTOR=0x10, HOST_SS_SELECTOR=0x18, HOST_DS_SELECTOR=0, HOST_ES_SELECTOR=0,
    HOST_FS_SELECTOR=0, HOST_GS_SELECTOR=0, HOST_TR_SELECTOR=0x40,
    HOST_FS_BASE=0x7F0000000740, HOST_GS_BASE=0xFFFF88807FC00000,
    HOST_TR_BASE=0xFFFFFE0000002000, HOST_GDTR_BASE=0xFFFFFE0000001000,
    HOST_IDTR_BASE=0xFFFFFE0000000000, HOST_IA32_SYSENTER_CS=0x10,
    HOST_IA32_SYSENTER_ESP=0xFFFFFE000000A000, HOST_IA32_SYSENTER_EIP=0xFFFFFFFF81E01B20,
    HOST_RSP=0xFFFFC90000004000, HOST_RIP=0xFFFFFFFF81040000,
    HOST_IA32_PAT=0x0407050600070106, HOST_IA32_EFER=EFER_SCE | EFER_LME | EFER_LMA | EFER_NX,
)

GUEST = dict(
    GUEST_CR0=0x80050033, GUEST_CR3=0, GUEST_CR4=0x20,
    GUEST_CS_SELECTOR=0x08, GUEST_CS_BASE=0, GUEST_CS_LIMIT=0xFFFFFFFF, GUEST_CS_AR_BYTES=0xA09B,
    GUEST_FS_SELECTOR=0, GUEST_FS_BASE=0x5000, GUEST_FS_LIMIT=0, GUEST_FS_AR_BYTES=0x1C000,
    GUEST_GS_SELECTOR=0, GUEST_GS_BASE=0x6000, GUEST_GS_LIMIT=0, GUEST_GS_AR_BYTES=0x1C000,
    GUEST_TR_SELECTOR=0x18, GUEST_TR_BASE=0x2000, GUEST_TR_LIMIT=0x67, GUEST_TR_AR_BYTES=0x8B,
    GUEST_LDTR_SELECTOR=0, GUEST_LDTR_BASE=0, GUEST_LDTR_LIMIT=0, GUEST_LDTR_AR_BYTES=0x10000,
    GUEST_GDTR_BASE=0x3000, GUEST_GDTR_LIMIT=0x1F, GUEST_IDTR_BASE=0, GUEST_IDTR_LIMIT=0,
    GUEST_RIP=CODE, GUEST_RSP=STACK, GUEST_RFLAGS=0x2,
    GUEST_SYSENTER_CS=0x8, GUEST_SYSENTER_ESP=0x7000, GUEST_SYSENTER_EIP=0x1800,
    GUEST_IA32_DEBUGCTL=0, GUEST_IA32_PAT=0x0007040600070406,
    GUEST_IA32_EFER=EFER_SCE | EFER_LME | EFER_LMA, VMCS_LINK_POINTER=2**64 - 1,
    GUEST_ACTIVITY_STATE=0, GUEST_INTERRUPTIBILITY_INFO=0,
)
for _s in ("ES", "SS", "DS"):
    GUEST.update({f"GUEST_{_s}_SELECTOR": 0x10, f"GUEST_{_s}_BASE": 0,
                  f"GUEST_{_s}_LIMIT": 0xFFFFFFFF, f"GUEST_{_s}_AR_BYTES": 0xC093})

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
    """mov ecx, index; mov eax, lo; mov edx, hi; wrmsr"""
    return (mov_ecx(index) + b"\xb8" + struct.pack("<I", value & 0xFFFFFFFF) +
            b"\xba" + struct.pack("<I", value >> 32) + b"\x0f\x30")


HLT = b"\xf4"


class Vmx:
    """An Intel machine in VMX operation on CPU 0 with one VMCS current, set up for a
    64-bit guest at CODE in a 64 KiB slot at GPA 0; all MSRs pass through."""

    def __init__(self, load_efer=False, **features):
        model = ffi.new("struct pk_cpu_model *", {**INTEL, "has_load_efer": load_efer,
                                                 **features})
        m = lib.pk_machine_create(2, model)
        assert m != ffi.NULL
        self.m = ffi.gc(m, lib.pk_machine_destroy)
        self.mem = ffi.new("uint8_t[]", MEM)
        self.slots = lib.pk_hwtest_memslot(self.m, 0, self.mem, MEM)
        self.bitmap = self.alloc(4096)
        s = self.state()
        s.msr[C("SLOT_EFER")] = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX
        s.insn_budget = 10000
        self.set_state(s)
        assert self.insn("VMXON") == 0
        self.vmcs = self.new_vmcs()
        assert self.insn("VMPTRLD", self.vmcs) == 0
        exit_ctl = EXIT_HOST_ADDR_SPACE_SIZE | EXIT_SAVE_PAT | EXIT_LOAD_PAT
        entry_ctl = ENTRY_IA32E_MODE | ENTRY_LOAD_PAT
        if load_efer:
            exit_ctl |= EXIT_SAVE_EFER | EXIT_LOAD_EFER
            entry_ctl |= ENTRY_LOAD_EFER
        self.vmwrite_all(dict(
            PIN_BASED_VM_EXEC_CONTROL=0,
            CPU_BASED_VM_EXEC_CONTROL=HLT_EXITING | UNCOND_IO_EXITING | USE_MSR_BITMAPS |
            ACTIVATE_SECONDARY,
            SECONDARY_VM_EXEC_CONTROL=ENABLE_EPT | ENABLE_RDTSCP,
            VM_EXIT_CONTROLS=exit_ctl, VM_ENTRY_CONTROLS=entry_ctl,
            MSR_BITMAP=self.bitmap, EPT_POINTER=self.slots, **HOST, **GUEST))

    # -- plumbing --
    def alloc(self, size, align=4096):
        pa = lib.pk_hwtest_alloc(self.m, size, align)
        assert pa
        return pa

    def new_vmcs(self):
        pa = self.alloc(4096)
        self.phys_write(pa, struct.pack("<I", C("PK_VMCS_REVISION")))
        assert self.insn("VMCLEAR", pa) == 0
        return pa

    def phys_write(self, pa, data):
        assert lib.pk_hwtest_phys_write(self.m, pa, data, len(data)) == 0

    def phys_read(self, pa, n):
        buf = ffi.new("uint8_t[]", n)
        assert lib.pk_hwtest_phys_read(self.m, pa, buf, n) == 0
        return bytes(buf)

    def state(self, cpu=0):
        s = ffi.new("struct pk_hwtest_cpu *")
        assert lib.pk_hwtest_get_cpu(self.m, cpu, s) == 0
        return s

    def set_state(self, s, cpu=0):
        assert lib.pk_hwtest_set_cpu(self.m, cpu, s) == 0

    def insn(self, name, a=0, b=0, cpu=0, out=None):
        o = out if out is not None else ffi.new("uint64_t *")
        return lib.pk_hwtest_insn(self.m, cpu, C("INSN_" + name), a, b, o)

    def vmwrite(self, field, value, cpu=0):
        enc = C(field) if isinstance(field, str) else field
        return self.insn("VMWRITE", enc, value, cpu)

    def vmwrite_all(self, fields):
        for name, value in fields.items():
            assert self.vmwrite(name, value) == 0, name

    def vmread(self, field, cpu=0):
        enc = C(field) if isinstance(field, str) else field
        out = ffi.new("uint64_t *")
        r = self.insn("VMREAD", enc, cpu=cpu, out=out)
        return out[0] if r == 0 else None

    def error(self):
        return self.vmread("VM_INSTRUCTION_ERROR")

    def code(self, code, at=CODE):
        self.mem[at:at + len(code)] = code

    def set_bits(self, name, bits):
        self.vmwrite(name, self.vmread(name) | bits)

    def clear_bits(self, name, bits):
        self.vmwrite(name, self.vmread(name) & ~bits)

    def launch(self):
        return self.insn("VMLAUNCH")

    def run(self, code):
        self.code(code)
        assert self.launch() == 0
        return self.vmread("VM_EXIT_REASON")

    @property
    def bugs(self):
        return lib.pk_hwtest_host_bugs(self.m)

    def msr_slot(self, name, cpu=0):
        return self.state(cpu).msr[C("SLOT_" + name)]


@pytest.fixture
def vmx():
    return Vmx()


# ---- VM-exit: host state and its side effects ----

UNTOUCHED = {"KERNEL_GS_BASE": 0x7E0000100000, "STAR": 0x0023001000000000,
             "LSTAR": 0xFFFFFFFF81E00080, "CSTAR": 0xFFFFFFFF81E01C40,
             "SYSCALL_MASK": 0x47700, "TSC_AUX": 1, "SPEC_CTRL": 1, "TSX_CTRL": 1}


def test_vmexit_loads_host_state_with_its_side_effects(vmx):
    s = vmx.state()
    s.gdtr.limit, s.idtr.limit = 0x7F, 0xFFF
    tr, ldtr = s.seg[C("SREG_TR")], s.seg[C("SREG_LDTR")]
    tr.limit, ldtr.selector, ldtr.ar = 0x4087, 0x50, 0x82
    s.msr[C("SLOT_DEBUGCTL")] = 1
    for name, value in UNTOUCHED.items():
        s.msr[C("SLOT_" + name)] = value
    vmx.set_state(s)
    vmx.vmwrite("GUEST_IA32_DEBUGCTL", 3)
    assert vmx.run(HLT) == 12

    s = vmx.state()
    assert s.mode == C("MODE_HOST")
    assert (s.gdtr.base, s.gdtr.limit) == (HOST["HOST_GDTR_BASE"], 0xFFFF)
    assert (s.idtr.base, s.idtr.limit) == (HOST["HOST_IDTR_BASE"], 0xFFFF)
    tr = s.seg[C("SREG_TR")]
    assert (tr.selector, tr.base, tr.limit, tr.ar & 0xF) == (0x40, HOST["HOST_TR_BASE"], 0x67, 0xB)
    ldtr = s.seg[C("SREG_LDTR")]
    assert ldtr.selector == 0 and ldtr.ar & AR_UNUSABLE
    assert s.msr[C("SLOT_DEBUGCTL")] == 0
    assert s.rflags == 0x2
    assert s.regs[4] == HOST["HOST_RSP"] and s.rip == HOST["HOST_RIP"]
    assert (s.cr0, s.cr3, s.cr4) == (HOST["HOST_CR0"], HOST["HOST_CR3"], HOST["HOST_CR4"])
    assert s.seg[C("SREG_CS")].selector == 0x10 and s.seg[C("SREG_SS")].selector == 0x18
    assert s.seg[C("SREG_FS")].base == HOST["HOST_FS_BASE"]
    assert s.seg[C("SREG_GS")].base == HOST["HOST_GS_BASE"]
    for sreg in ("DS", "ES"):
        seg = s.seg[C("SREG_" + sreg)]
        assert seg.selector == 0 and seg.base == 0 and seg.ar & AR_UNUSABLE
    assert s.msr[C("SLOT_SYSENTER_CS")] == 0x10
    assert s.msr[C("SLOT_SYSENTER_ESP")] == HOST["HOST_IA32_SYSENTER_ESP"]
    assert s.msr[C("SLOT_SYSENTER_EIP")] == HOST["HOST_IA32_SYSENTER_EIP"]
    assert s.msr[C("SLOT_PAT")] == HOST["HOST_IA32_PAT"]
    for name, value in UNTOUCHED.items():
        assert s.msr[C("SLOT_" + name)] == value, name
    assert vmx.vmread("GUEST_IA32_DEBUGCTL") == 3


def test_guest_msr_writes_stay_in_hardware(vmx):
    """The MSRs VM-exit does not switch keep the guest's values: software must restore them."""
    guest = {MSR_KERNEL_GS_BASE: 0x4000, MSR_STAR: 0x11, MSR_LSTAR: 0x4100,
             MSR_CSTAR: 0x4200, MSR_SYSCALL_MASK: 0x300, MSR_TSC_AUX: 99,
             MSR_IA32_SPEC_CTRL: 4, MSR_IA32_TSX_CTRL: 2}
    assert vmx.run(b"".join(wrmsr(i, v) for i, v in guest.items()) + HLT) == 12
    slots = dict(zip(guest, ["KERNEL_GS_BASE", "STAR", "LSTAR", "CSTAR", "SYSCALL_MASK",
                             "TSC_AUX", "SPEC_CTRL", "TSX_CTRL"]))
    for index, value in guest.items():
        assert vmx.msr_slot(slots[index]) == value


def test_guest_state_saved_host_fs_gs_restored(vmx):
    vmx.vmwrite("GUEST_RSP", 0x7FF0)
    code = wrmsr(MSR_FS_BASE, 0x1234) + HLT
    assert vmx.run(code) == 12
    assert vmx.vmread("GUEST_RIP") == CODE + len(code) - 1       # at the HLT
    assert vmx.vmread("VM_EXIT_INSTRUCTION_LEN") == 1
    assert vmx.vmread("GUEST_RSP") == 0x7FF0
    assert vmx.vmread("GUEST_FS_BASE") == 0x1234 and vmx.vmread("GUEST_GS_BASE") == 0x6000
    assert vmx.vmread("GUEST_CS_AR_BYTES") == 0xA09B and vmx.vmread("GUEST_TR_BASE") == 0x2000
    assert vmx.vmread("GUEST_IA32_PAT") == GUEST["GUEST_IA32_PAT"]
    assert vmx.state().seg[C("SREG_FS")].base == HOST["HOST_FS_BASE"]


def test_vmresume_continues_the_guest(vmx):
    assert vmx.run(HLT + HLT) == 12
    vmx.vmwrite("GUEST_RIP", vmx.vmread("GUEST_RIP") + 1)
    assert vmx.insn("VMRESUME") == 0
    assert vmx.vmread("VM_EXIT_REASON") == 12 and vmx.vmread("GUEST_RIP") == CODE + 1


# ---- Exit reasons and exit information ----

EXITS = [
    ("hlt", HLT, 12, 0, 1),
    ("cpuid", b"\x0f\xa2", 10, 0, 2),
    ("out8", b"\xe6\x80", 30, 0x80 << 16, 2),
    ("in32", b"\xe5\x71", 30, 3 | 8 | 0x71 << 16, 2),
    ("vmcall", b"\x0f\x01\xc1", 18, 0, 3),
    ("ud2", b"\x0f\x0b", 2, 0, None),                        # no guest IDT: triple fault
    ("vmmcall", b"\x0f\x01\xd9", 2, 0, None),                # #UD on Intel
]


@pytest.mark.parametrize("name,code,reason,qual,length", EXITS, ids=[e[0] for e in EXITS])
def test_exit_reasons(vmx, name, code, reason, qual, length):
    assert vmx.run(code) == reason
    assert vmx.vmread("EXIT_QUALIFICATION") == qual
    if length is not None:
        assert vmx.vmread("VM_EXIT_INSTRUCTION_LEN") == length
        assert vmx.vmread("GUEST_RIP") == CODE


def test_mmio_is_an_ept_misconfig_with_the_gpa(vmx):
    assert vmx.run(b"\x8b\x04\x25\x00\x00\x10\x00") == 49      # mov eax, [0x100000]
    assert vmx.vmread("GUEST_PHYSICAL_ADDRESS") == 0x100000
    ev = ffi.new("struct pk_hwtest_event *")
    lib.pk_hwtest_last_event(vmx.m, 0, ev)
    assert ev.kind == C("GEXIT_MMIO") and ev.gpa == 0x100000 and not ev.write


def test_budget_end_is_an_external_interrupt(vmx):
    s = vmx.state()
    s.insn_budget = 50
    vmx.set_state(s)
    assert vmx.run(b"\xeb\xfe") == 1                              # jmp $
    assert vmx.vmread("VM_EXIT_INTR_INFO") == 0x80000000 | 0xEC


def test_msr_exits_follow_the_bitmap(vmx):
    vmx.phys_write(vmx.bitmap + 0x400 + (MSR_LSTAR - 0xC0000000) // 8, bytes([1 << 2]))
    vmx.phys_write(vmx.bitmap + 0xC00 + (MSR_STAR - 0xC0000000) // 8, bytes([1 << 1]))
    assert vmx.run(mov_ecx(MSR_LSTAR) + b"\x0f\x32") == 31          # rdmsr LSTAR: exits
    assert vmx.state().regs[1] == MSR_LSTAR
    assert vmx.insn("VMCLEAR", vmx.vmcs) == 0 and vmx.insn("VMPTRLD", vmx.vmcs) == 0
    assert vmx.run(wrmsr(MSR_LSTAR, 0x1000) + wrmsr(MSR_STAR, 5)) == 32
    assert vmx.msr_slot("LSTAR") == 0x1000                          # write went through
    assert vmx.vmread("VM_EXIT_INSTRUCTION_LEN") == 2


def test_rdtscp_exit(vmx):
    vmx.set_bits("CPU_BASED_VM_EXEC_CONTROL", RDTSC_EXITING)
    assert vmx.run(b"\x0f\x01\xf9") == 51
    assert vmx.vmread("VM_EXIT_INSTRUCTION_LEN") == 3


def test_efer_without_load_controls_keeps_host_bits(vmx):
    """Without "load IA32_EFER" only LMA/LME follow the entry control: the guest runs with
    the host's SCE and NX (why KVM switches EFER as a user-return MSR)."""
    code = mov_ecx(MSR_EFER) + b"\x0f\x32" + b"\xe7\x80"           # rdmsr; out 0x80, eax
    assert vmx.run(code) == 30
    assert vmx.state().regs[0] == EFER_SCE | EFER_LME | EFER_LMA | EFER_NX
    assert vmx.msr_slot("EFER") == EFER_SCE | EFER_LME | EFER_LMA | EFER_NX


def test_efer_with_load_controls():
    vmx = Vmx(load_efer=True)
    vmx.vmwrite("GUEST_IA32_EFER", EFER_LME | EFER_LMA)
    code = mov_ecx(MSR_EFER) + b"\x0f\x32" + b"\xe7\x80"
    assert vmx.run(code) == 30
    assert vmx.state().regs[0] == EFER_LME | EFER_LMA
    assert vmx.vmread("GUEST_IA32_EFER") == EFER_LME | EFER_LMA
    assert vmx.msr_slot("EFER") == HOST["HOST_IA32_EFER"]


def test_event_injection_through_guest_idt(vmx):
    idt, handler = 0x4000, 0x1100
    gate = (handler & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | ((handler >> 16) << 48)
    vmx.mem[idt + 6 * 16:idt + 7 * 16] = struct.pack("<QQ", gate, 0)
    vmx.vmwrite_all(dict(GUEST_IDTR_BASE=idt, GUEST_IDTR_LIMIT=0xFFF,
                         VM_ENTRY_INTR_INFO_FIELD=0x80000000 | (3 << 8) | 6))
    vmx.code(HLT, handler)
    assert vmx.run(b"\x90") == 12
    assert vmx.vmread("GUEST_RIP") == handler
    assert vmx.vmread("GUEST_RSP") == STACK - 5 * 8
    assert vmx.vmread("VM_ENTRY_INTR_INFO_FIELD") & 0x80000000 == 0


# ---- VM-entry MSR lists and VM-entry failures ----

def msr_list(entries):
    return b"".join(struct.pack("<IIQ", i, 0, v) for i, v in entries)


def test_msr_load_and_store_lists(vmx):
    entry = vmx.alloc(64, 16)
    exit_load = vmx.alloc(64, 16)
    store = vmx.alloc(64, 16)
    vmx.phys_write(entry, msr_list([(MSR_STAR, 0x1111), (MSR_TSC_AUX, 5)]))
    vmx.phys_write(exit_load, msr_list([(MSR_STAR, 0x2222)]))
    vmx.phys_write(store, msr_list([(MSR_TSC_AUX, 0), (MSR_STAR, 0)]))
    vmx.vmwrite_all(dict(VM_ENTRY_MSR_LOAD_ADDR=entry, VM_ENTRY_MSR_LOAD_COUNT=2,
                         VM_EXIT_MSR_LOAD_ADDR=exit_load, VM_EXIT_MSR_LOAD_COUNT=1,
                         VM_EXIT_MSR_STORE_ADDR=store, VM_EXIT_MSR_STORE_COUNT=2))
    code = mov_ecx(MSR_STAR) + b"\x0f\x32" + b"\xe7\x80"           # the guest sees 0x1111
    assert vmx.run(wrmsr(MSR_TSC_AUX, 77) + code) == 30
    assert vmx.state().regs[0] == 0x1111
    assert vmx.msr_slot("STAR") == 0x2222 and vmx.msr_slot("TSC_AUX") == 77
    stored = struct.unpack("<IIQIIQ", vmx.phys_read(store, 32))
    assert (stored[2], stored[5]) == (77, 0x1111)


def test_msr_load_failure_is_a_vmentry_failure(vmx):
    entry = vmx.alloc(64, 16)
    vmx.phys_write(entry, msr_list([(MSR_LSTAR, A64), (MSR_KERNEL_GS_BASE, NC)]))
    vmx.vmwrite_all(dict(VM_ENTRY_MSR_LOAD_ADDR=entry, VM_ENTRY_MSR_LOAD_COUNT=2))
    assert vmx.run(HLT) == FAILED_VMENTRY | 34
    assert vmx.vmread("EXIT_QUALIFICATION") == 2
    s = vmx.state()
    assert s.mode == C("MODE_HOST") and s.gdtr.limit == 0xFFFF
    assert s.msr[C("SLOT_LSTAR")] == A64                            # not undone
    assert vmx.insn("VMRESUME") == 1 and vmx.error() == 5          # still not launched


@pytest.mark.parametrize("index", [MSR_FS_BASE, 0x800])
def test_msr_load_list_refuses_fs_base_and_x2apic(vmx, index):
    entry = vmx.alloc(16, 16)
    vmx.phys_write(entry, msr_list([(index, 0)]))
    vmx.vmwrite_all(dict(VM_ENTRY_MSR_LOAD_ADDR=entry, VM_ENTRY_MSR_LOAD_COUNT=1))
    assert vmx.run(HLT) == FAILED_VMENTRY | 34


def test_exit_msr_load_failure_is_a_vmx_abort(vmx):
    exit_load = vmx.alloc(16, 16)
    vmx.phys_write(exit_load, msr_list([(0x474F4F00, 0)]))
    vmx.vmwrite_all(dict(VM_EXIT_MSR_LOAD_ADDR=exit_load, VM_EXIT_MSR_LOAD_COUNT=1))
    assert vmx.run(HLT) == 12
    assert vmx.bugs == 1
    assert struct.unpack("<I", vmx.phys_read(vmx.vmcs + 4, 4))[0] == 4


@pytest.mark.parametrize("field,value", [
    ("GUEST_RFLAGS", 0x0), ("GUEST_RFLAGS", 0x8002), ("GUEST_CR4", 0),
    ("GUEST_FS_BASE", NC), ("GUEST_IA32_PAT", 0x02), ("GUEST_IA32_DEBUGCTL", 4)])
def test_invalid_guest_state(vmx, field, value):
    vmx.vmwrite(field, value)
    assert vmx.run(HLT) == FAILED_VMENTRY | 33
    assert vmx.state().mode == C("MODE_HOST")
    assert vmx.insn("VMRESUME") == 1 and vmx.error() == 5


# ---- VMfail checks of VMLAUNCH/VMRESUME ----

def test_launch_state(vmx):
    assert vmx.insn("VMRESUME") == 1 and vmx.error() == 5
    assert vmx.run(HLT) == 12
    assert vmx.launch() == 1 and vmx.state().rflags & RFLAGS_ZF     # VMfailValid
    assert vmx.error() == 4
    assert vmx.insn("VMCLEAR", vmx.vmcs) == 0 and vmx.insn("VMPTRLD", vmx.vmcs) == 0
    assert vmx.run(HLT) == 12                                       # clear again: launchable


VMENTRY_CHECKS = [
    ("MSR_BITMAP", 0x10, 7),                                        # outside the machine
    ("VM_ENTRY_MSR_LOAD_COUNT", 513, 7),
    ("VM_EXIT_MSR_STORE_COUNT", 1, 7),                              # address 0: outside
    ("EPT_POINTER", 0x1234, 7),
    ("VM_ENTRY_INTR_INFO_FIELD", 0x80000000 | (3 << 8) | 40, 7),    # exception vector > 31
    ("HOST_CS_SELECTOR", 0x13, 8), ("HOST_TR_SELECTOR", 0, 8),
    ("HOST_FS_SELECTOR", 0x4, 8), ("HOST_FS_BASE", NC, 8), ("HOST_RIP", NC, 8),
    ("HOST_GDTR_BASE", NC, 8), ("HOST_CR0", 0x80000001, 8), ("HOST_CR4", 0, 8),
    ("HOST_IA32_PAT", 0x3, 8), ("VM_EXIT_CONTROLS", EXIT_SAVE_PAT | EXIT_LOAD_PAT, 8),
]


@pytest.mark.parametrize("field,value,err", VMENTRY_CHECKS)
def test_vmentry_checks(vmx, field, value, err):
    vmx.vmwrite(field, value)
    assert vmx.launch() == 1 and vmx.error() == err
    assert vmx.state().mode == C("MODE_HOST")


@pytest.mark.parametrize("field,value,err", VMENTRY_CHECKS)
def test_vmentry_checks_a_field_written_after_a_successful_entry(vmx, field, value, err):
    """The hardware skips the checks of unchanged control and host-state fields after a
    VM-entry that passed them (vmx_hw.c: entry_checked); a VMWRITE in between must
    bring them back, on VMRESUME as on VMLAUNCH."""
    assert vmx.run(HLT) == 12
    assert vmx.insn("VMRESUME") == 0                   # checked once, then cached
    vmx.vmwrite(field, value)
    assert vmx.insn("VMRESUME") == 1 and vmx.error() == err
    assert vmx.state().mode == C("MODE_HOST")


def test_vmentry_checks_cpu_state_on_every_entry(vmx):
    """EFER.LMA at VM-entry is CPU state, not a VMCS field: changed without any VMWRITE
    after a successful entry, it is still checked against a 32-bit host (27.2.4)."""
    vmx.clear_bits("VM_EXIT_CONTROLS", EXIT_HOST_ADDR_SPACE_SIZE)
    assert vmx.launch() == 1 and vmx.error() == 8     # entered from IA-32e mode
    s = vmx.state()
    s.msr[C("SLOT_EFER")] &= ~(EFER_LMA | EFER_LME)
    vmx.set_state(s)
    assert vmx.run(HLT) == 12                          # VM-exit to a 32-bit host: LMA clear
    assert vmx.msr_slot("EFER") & EFER_LMA == 0
    assert vmx.insn("VMRESUME") == 0
    s = vmx.state()
    s.msr[C("SLOT_EFER")] |= EFER_LMA | EFER_LME
    vmx.set_state(s)
    assert vmx.insn("VMRESUME") == 1 and vmx.error() == 8


def test_vmentry_checks_after_vmptrld_of_another_vmcs(vmx):
    """The skipped checks belong to one VMCS: switching to another (VMPTRLD) and back
    checks each one's own fields."""
    assert vmx.run(HLT) == 12
    good = vmx.vmcs
    bad = vmx.new_vmcs()
    assert vmx.insn("VMPTRLD", bad) == 0
    assert vmx.launch() == 1 and vmx.error() == 7       # a fresh VMCS: no EPT pointer
    assert vmx.insn("VMPTRLD", good) == 0
    assert vmx.insn("VMRESUME") == 0


def test_misaligned_lists_and_bitmap(vmx):
    good = vmx.alloc(64, 16)
    for field, count, value in [("VM_ENTRY_MSR_LOAD_ADDR", "VM_ENTRY_MSR_LOAD_COUNT", good + 8),
                                ("MSR_BITMAP", None, vmx.bitmap + 8)]:
        v = Vmx()
        if count:
            v.vmwrite(count, 1)
        v.vmwrite(field, value)
        assert v.launch() == 1 and v.error() == 7


def test_efer_controls_need_the_feature(vmx):
    vmx.set_bits("VM_ENTRY_CONTROLS", ENTRY_LOAD_EFER)
    assert vmx.launch() == 1 and vmx.error() == 7


# ---- VMREAD / VMWRITE ----

_shared = {}


def shared(purpose):
    """One machine per property test, reused across its hypothesis examples."""
    if purpose not in _shared:
        _shared[purpose] = Vmx()
    return _shared[purpose]


ALL_FIELDS = None


def all_fields():
    global ALL_FIELDS
    if ALL_FIELDS is None:
        import re
        import pathlib
        hdr = pathlib.Path(__file__).resolve().parent.parent / "include/asm/vmx.h"
        ALL_FIELDS = re.findall(r"F\((\w+),\s*(0x[0-9a-fA-F]+)\)", hdr.read_text())
        ALL_FIELDS = [(n, int(e, 16)) for n, e in ALL_FIELDS]
    return ALL_FIELDS


def width_mask(enc):
    return {0: 0xFFFF, 1: 2**64 - 1, 2: 0xFFFFFFFF, 3: 2**64 - 1}[(enc >> 13) & 3]


def read_only(enc):
    return (enc >> 10) & 3 == 1


def test_every_field_has_its_own_storage(vmx):
    fields = [(n, e) for n, e in all_fields() if not read_only(e)]
    assert len(fields) > 90
    for i, (_, enc) in enumerate(fields):
        assert vmx.vmwrite(enc, 0x0101010101010101 * (i + 1)) == 0
    for i, (name, enc) in enumerate(fields):
        assert vmx.vmread(enc) == (0x0101010101010101 * (i + 1)) & width_mask(enc), name


@settings(max_examples=100, deadline=None)
@given(i=st.integers(min_value=0, max_value=200), value=st.integers(0, 2**64 - 1))
def test_vmwrite_truncates_to_the_field_width(i, value):
    vmx = shared("widths")
    name, enc = all_fields()[i % len(all_fields())]
    if read_only(enc):
        assert vmx.vmwrite(enc, value) == 1 and vmx.error() == 13
        return
    assert vmx.vmwrite(enc, value) == 0
    assert vmx.vmread(enc) == value & width_mask(enc)


@pytest.mark.parametrize("enc", [0x0000_2032, 0x1234_5678, 0x0000_6801, 0x0000_4001,
                                 0x0000_1800, 0x0000_0001])
def test_unsupported_encodings(vmx, enc):
    assert vmx.vmread(enc) is None
    assert vmx.state().rflags & (RFLAGS_ZF | RFLAGS_CF) == RFLAGS_ZF  # VMfailValid
    assert vmx.error() == 12
    assert vmx.vmwrite(enc, 1) == 1 and vmx.error() == 12


def test_high_access_of_64bit_fields(vmx):
    vmx.vmwrite("TSC_OFFSET", 0x1111222233334444)
    assert vmx.vmread(C("TSC_OFFSET") | 1) == 0x11112222
    assert vmx.vmwrite(C("TSC_OFFSET") | 1, 0xAAAABBBBCCCC) == 0
    assert vmx.vmread("TSC_OFFSET") == 0xBBBBCCCC33334444


def test_read_only_fields(vmx):
    for field in ("VM_EXIT_REASON", "VM_INSTRUCTION_ERROR", "EXIT_QUALIFICATION",
                  "GUEST_PHYSICAL_ADDRESS"):
        assert vmx.vmwrite(field, 1) == 1 and vmx.error() == 13


def test_no_current_vmcs_is_vmfail_invalid(vmx):
    vmx.vmwrite("GUEST_RIP", 5)
    assert vmx.insn("VMCLEAR", vmx.vmcs) == 0
    assert vmx.state().current_vmcs == 2**64 - 1
    for r in (vmx.insn("VMWRITE", C("GUEST_RIP"), 1), vmx.insn("VMREAD", C("GUEST_RIP")),
              vmx.launch(), vmx.insn("VMRESUME")):
        assert r == 1 and vmx.state().rflags & RFLAGS_CF
    assert vmx.insn("VMPTRLD", vmx.vmcs) == 0
    assert vmx.vmread("GUEST_RIP") == 5                              # VMCLEAR kept the data
    assert vmx.state().rflags & (RFLAGS_CF | RFLAGS_ZF) == 0


# ---- VMXON, VMPTRLD, VMCLEAR ----

def test_vmxon_rules(vmx):
    assert vmx.insn("VMXON") == 1 and vmx.error() == 15
    assert vmx.insn("VMXOFF") == 0
    assert vmx.state().current_vmcs == 2**64 - 1 and not vmx.state().vmxon
    assert vmx.insn("VMPTRLD", vmx.vmcs) == 1 and vmx.bugs == 1     # #UD outside VMX
    model = ffi.new("struct pk_cpu_model *", dict(vendor=1))
    amd = ffi.gc(lib.pk_machine_create(1, model), lib.pk_machine_destroy)
    assert lib.pk_hwtest_insn(amd, 0, C("INSN_VMXON"), 0, 0, ffi.NULL) == 1
    assert lib.pk_hwtest_host_bugs(amd) == 1


def test_vmptrld_address_and_revision(vmx):
    assert vmx.insn("VMPTRLD", vmx.vmcs + 8) == 1 and vmx.error() == 9
    assert vmx.insn("VMPTRLD", 0x1000) == 1 and vmx.error() == 9
    assert vmx.insn("VMCLEAR", vmx.vmcs + 8) == 1 and vmx.error() == 2
    bad = vmx.alloc(4096)
    vmx.phys_write(bad, struct.pack("<I", 0x13))
    assert vmx.insn("VMPTRLD", bad) == 1 and vmx.error() == 11
    assert vmx.state().current_vmcs == vmx.vmcs


def test_vmcs_active_on_another_cpu(vmx):
    """A VMCS must be VMCLEARed on the CPU it is active on before another loads it."""
    s = vmx.state(1)
    s.msr[C("SLOT_EFER")] = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX
    vmx.set_state(s, 1)
    assert vmx.insn("VMXON", cpu=1) == 0
    assert vmx.insn("VMPTRLD", vmx.vmcs, cpu=1) == 1 and vmx.bugs == 1
    assert vmx.state(1).current_vmcs == 2**64 - 1
    other = vmx.new_vmcs()                          # leaves vmcs active but not current
    assert vmx.insn("VMPTRLD", other) == 0
    assert vmx.insn("VMPTRLD", vmx.vmcs, cpu=1) == 1 and vmx.bugs == 2
    assert vmx.insn("VMCLEAR", vmx.vmcs) == 0       # on its CPU
    assert vmx.insn("VMPTRLD", vmx.vmcs, cpu=1) == 0 and vmx.bugs == 2
    assert vmx.vmread("GUEST_RIP", cpu=1) == CODE
    assert vmx.insn("VMCLEAR", vmx.vmcs) == 0 and vmx.bugs == 3     # current on CPU 1


def test_vmclear_resets_launch_state(vmx):
    assert vmx.run(HLT) == 12
    assert struct.unpack("<III", vmx.phys_read(vmx.vmcs, 12))[2] == 1
    assert vmx.insn("VMCLEAR", vmx.vmcs) == 0
    assert struct.unpack("<IIII", vmx.phys_read(vmx.vmcs, 16))[2:] == (0, 0xFFFFFFFF)


# ---- Intercepts ----

def intercept(vmx, kind, msr=0):
    ev = ffi.new("struct pk_hwtest_event *", dict(kind=C("GEXIT_" + kind), msr=msr))
    r = lib.pk_hwtest_intercept(vmx.m, 0, 0, ev)
    return {C("ICPT_NATIVE"): "native", C("ICPT_EXIT"): "exit", C("ICPT_UD"): "ud"}[r]


MSR_RANGES = st.one_of(st.integers(0, 0x1FFF), st.integers(0xC0000000, 0xC0001FFF))


@settings(max_examples=150, deadline=None)
@given(msr=MSR_RANGES, write=st.booleans())
def test_msr_bitmap_bit_positions(msr, write):
    """Exactly the one bit set in the bitmap (SDM 25.6.9 layout) exits."""
    vmx = shared("bitmap")
    vmx.phys_write(vmx.bitmap, bytes(4096))
    base = (0x800 if write else 0) + (0x400 if msr >= 0xC0000000 else 0)
    bit = msr & 0x1FFF
    vmx.phys_write(vmx.bitmap + base + bit // 8, bytes([1 << (bit % 8)]))
    kind, other = ("WRMSR", "RDMSR") if write else ("RDMSR", "WRMSR")
    assert intercept(vmx, kind, msr) == "exit"
    assert intercept(vmx, other, msr) == "native"
    for neighbour in (msr - 1, msr + 1):
        if (neighbour & ~0x1FFF) == (msr & ~0x1FFF):
            assert intercept(vmx, kind, neighbour) == "native"


@settings(max_examples=50, deadline=None)
@given(msr=st.integers(0, 2**32 - 1).filter(
    lambda m: not (m <= 0x1FFF or 0xC0000000 <= m <= 0xC0001FFF)))
def test_msrs_outside_the_bitmap_always_exit(msr):
    vmx = shared("bitmap")
    vmx.phys_write(vmx.bitmap, bytes(4096))
    assert intercept(vmx, "RDMSR", msr) == "exit" and intercept(vmx, "WRMSR", msr) == "exit"


def test_without_msr_bitmaps_everything_exits(vmx):
    vmx.clear_bits("CPU_BASED_VM_EXEC_CONTROL", USE_MSR_BITMAPS)
    assert intercept(vmx, "RDMSR", MSR_STAR) == "exit" and intercept(vmx, "WRMSR", 0) == "exit"


def test_instruction_intercepts(vmx):
    assert intercept(vmx, "HLT") == "exit"
    vmx.clear_bits("CPU_BASED_VM_EXEC_CONTROL", HLT_EXITING | UNCOND_IO_EXITING)
    assert intercept(vmx, "HLT") == "native"
    assert intercept(vmx, "IO") == "exit"              # no native devices
    assert intercept(vmx, "CPUID") == "exit"
    assert intercept(vmx, "VMCALL") == "exit"
    assert intercept(vmx, "VMMCALL") == "ud"


@pytest.mark.parametrize("secondary,rdtscp,rdpid,exiting,want_rdtscp,want_rdpid", [
    (True, True, True, False, "native", "native"),
    (True, True, True, True, "exit", "native"),
    (True, True, False, False, "native", "ud"),
    (False, True, True, False, "ud", "ud"),
])
def test_rdtscp_rdpid_intercepts(secondary, rdtscp, rdpid, exiting, want_rdtscp, want_rdpid):
    vmx = Vmx(has_rdtscp=rdtscp, has_rdpid=rdpid)
    if not secondary:
        vmx.clear_bits("SECONDARY_VM_EXEC_CONTROL", ENABLE_RDTSCP)
    if exiting:
        vmx.set_bits("CPU_BASED_VM_EXEC_CONTROL", RDTSC_EXITING)
    assert intercept(vmx, "RDTSCP") == want_rdtscp
    assert intercept(vmx, "RDPID") == want_rdpid


def test_rdtscp_reads_tsc_aux_natively(vmx):
    s = vmx.state()
    s.msr[C("SLOT_TSC_AUX")] = 0x42
    vmx.set_state(s)
    assert vmx.run(b"\x0f\x01\xf9" + b"\x89\xc8" + b"\xe7\x80") == 30   # rdtscp; mov eax, ecx
    assert vmx.state().regs[0] == 0x42


# ---- Cost accounting ----

def test_vmx_instructions_are_counted(vmx):
    lib.pk_hwtest_reset_costs(vmx.m)
    lib.pk_hwtest_set_path(vmx.m, C("PATH_VCPU_RUN"))
    vmx.vmread("GUEST_RIP")
    vmx.vmwrite("GUEST_RIP", CODE)
    vmx.run(HLT)
    vmx.insn("VMCLEAR", vmx.vmcs)
    vmx.insn("VMPTRLD", vmx.vmcs)
    ops = {op: lib.pk_hwtest_ops(vmx.m, C("PATH_VCPU_RUN"), C("OP_" + op))
           for op in ("VMREAD", "VMWRITE", "VMLAUNCH", "VMRESUME", "VMEXIT", "VMCLEAR",
                      "VMPTRLD")}
    assert ops == dict(VMREAD=2, VMWRITE=1, VMLAUNCH=1, VMRESUME=0, VMEXIT=1, VMCLEAR=1,
                       VMPTRLD=1)
    assert lib.pk_hwtest_ops(vmx.m, C("PATH_VCPU_RUN"), C("OP_GUEST_INSN")) == 0
