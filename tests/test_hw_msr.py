"""The simulated CPU's MSR file and host-side instructions (csrc/arch/cpu.c).

Driven through the test-only entry points of include/pykvm/hwtest.h. Each MSR rule is the
architectural one (Intel SDM vol. 4, AMD APM vol. 2) that KVM's own tests observe
(CONFORMANCE.md cases in brackets).
"""
import pytest
from hypothesis import given, settings, strategies as st

from hwtest import ffi, lib

GP = 13
NC = 0xAAAAAAAAAAAAAAAA          # non-canonical
A64 = 0x0000123456789ABC
U64 = st.integers(min_value=0, max_value=2**64 - 1)

MSR_IA32_TSC = 0x10
MSR_IA32_SPEC_CTRL = 0x48
MSR_IA32_PRED_CMD = 0x49
MSR_IA32_TSX_CTRL = 0x122
MSR_IA32_SYSENTER_CS = 0x174
MSR_IA32_SYSENTER_ESP = 0x175
MSR_IA32_SYSENTER_EIP = 0x176
MSR_IA32_MISC_ENABLE = 0x1A0
MSR_IA32_DEBUGCTLMSR = 0x1D9
MSR_IA32_CR_PAT = 0x277
MSR_EFER = 0xC0000080
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
MSR_TSC_AUX = 0xC0000103
MSR_VM_HSAVE_PA = 0xC0010117
MSR_AMD64_VIRT_SPEC_CTRL = 0xC001011F
MSR_ABSENT = 0x474F4F00

EFER_SCE, EFER_LME, EFER_LMA, EFER_NX, EFER_SVME = 1, 1 << 8, 1 << 10, 1 << 11, 1 << 12
CR4_FSGSBASE = 1 << 16
AR_UNUSABLE = 1 << 16


def C(name):
    """A constant of the C side by name (pk_hwtest_const)."""
    v = ffi.new("int64_t *")
    assert lib.pk_hwtest_const(name.encode(), v) == 0, f"no constant {name}"
    return v[0]


def canonical(v):
    top = v >> 47
    return top == 0 or top == (1 << 17) - 1


class Hw:
    """One simulated machine; runs host instructions on a chosen CPU."""

    def __init__(self, vendor="intel", cpus=2, **features):
        model = ffi.new("struct pk_cpu_model *", dict(vendor=0 if vendor == "intel" else 1,
                                                     **features))
        m = lib.pk_machine_create(cpus, model)
        assert m != ffi.NULL
        self.m = ffi.gc(m, lib.pk_machine_destroy)
        self.amd = vendor == "amd"

    def state(self, cpu=0):
        s = ffi.new("struct pk_hwtest_cpu *")
        assert lib.pk_hwtest_get_cpu(self.m, cpu, s) == 0
        return s

    def set_state(self, s, cpu=0):
        assert lib.pk_hwtest_set_cpu(self.m, cpu, s) == 0

    def msr(self, slot, cpu=0):
        return self.state(cpu).msr[C("SLOT_" + slot)]

    def rd(self, index, cpu=0):
        """Architectural RDMSR: the value, or 'GP'."""
        v = ffi.new("uint64_t *")
        r = lib.pk_hwtest_msr_read(self.m, cpu, index, v)
        return "GP" if r == GP else v[0]

    def wr(self, index, value, cpu=0):
        """Architectural WRMSR: 0, or 'GP'."""
        r = lib.pk_hwtest_msr_write(self.m, cpu, index, value)
        return "GP" if r == GP else r

    def insn(self, name, a=0, b=0, cpu=0):
        """Run a host instruction; (its result, what it read)."""
        out = ffi.new("uint64_t *")
        r = lib.pk_hwtest_insn(self.m, cpu, C("INSN_" + name), a, b, out)
        assert r != -1 or name in ("SGDT", "SIDT"), name
        return r, out[0]

    @property
    def bugs(self):
        return lib.pk_hwtest_host_bugs(self.m)

    def ops(self, op, path="OTHER"):
        return lib.pk_hwtest_ops(self.m, C("PATH_" + path), C("OP_" + op))


INTEL_FULL = dict(has_rdtscp=True, has_rdpid=True, has_ibrs=True, has_stibp=True,
                  has_ssbd=True, has_ibpb=True, has_rtm=True, has_fsgsbase=True)
AMD_FULL = dict(has_rdtscp=True, has_rdpid=True, has_ibrs=True, has_stibp=True,
                has_ssbd=True, has_ibpb=True, has_fsgsbase=True, has_virt_ssbd=True)


@pytest.fixture(params=["intel", "amd"])
def hw(request):
    return Hw(request.param, **(INTEL_FULL if request.param == "intel" else AMD_FULL))


# ---- The MSR file: presence and slots ----

SLOTTED = {
    "EFER": MSR_EFER, "STAR": MSR_STAR, "LSTAR": MSR_LSTAR, "CSTAR": MSR_CSTAR,
    "SYSCALL_MASK": MSR_SYSCALL_MASK, "KERNEL_GS_BASE": MSR_KERNEL_GS_BASE,
    "TSC_AUX": MSR_TSC_AUX, "SPEC_CTRL": MSR_IA32_SPEC_CTRL,
    "SYSENTER_CS": MSR_IA32_SYSENTER_CS, "SYSENTER_ESP": MSR_IA32_SYSENTER_ESP,
    "SYSENTER_EIP": MSR_IA32_SYSENTER_EIP, "PAT": MSR_IA32_CR_PAT,
    "DEBUGCTL": MSR_IA32_DEBUGCTLMSR,
}


@pytest.mark.parametrize("slot", sorted(SLOTTED))
def test_value_lands_in_its_slot(hw, slot):
    s = hw.state()
    value = {"EFER": EFER_SCE | EFER_NX, "PAT": 0x0606060606060606, "DEBUGCTL": 1,
             "SPEC_CTRL": 1}.get(slot, 0x1234)
    assert hw.wr(SLOTTED[slot], value) == 0
    assert hw.msr(slot) == value | (s.msr[C("SLOT_EFER")] & EFER_LMA if slot == "EFER" else 0)
    assert hw.rd(SLOTTED[slot]) == hw.msr(slot)


def test_fs_gs_base_are_the_segment_bases(hw):
    assert hw.wr(MSR_FS_BASE, A64) == 0
    assert hw.wr(MSR_GS_BASE, A64 + 8) == 0
    s = hw.state()
    assert s.seg[C("SREG_FS")].base == A64 and s.seg[C("SREG_GS")].base == A64 + 8
    s.seg[C("SREG_FS")].base = 0x1000
    hw.set_state(s)
    assert hw.rd(MSR_FS_BASE) == 0x1000


def test_tsc_is_cpu_tsc(hw):
    assert hw.wr(MSR_IA32_TSC, 12345) == 0
    assert hw.state().tsc == 12345 and hw.rd(MSR_IA32_TSC) == 12345


def test_absent_msr_faults(hw):
    """[15] An MSR the CPU lacks: #GP both ways, from the guest and from the host."""
    assert hw.rd(MSR_ABSENT) == "GP" and hw.wr(MSR_ABSENT, 0) == "GP"
    assert hw.insn("RDMSRL_SAFE", MSR_ABSENT) == (1, 0)
    assert hw.insn("WRMSRL_SAFE", MSR_ABSENT, 0)[0] == 1
    assert hw.bugs == 0


# Indices the model has no MSR at, at the edges of the ranges its MSR lookup tables
# cover (cpu.c: 0-0x7ff, 0xc0000000-0xc00001ff, 0xc0010000-0xc00101ff) and next to
# MSRs it has.
ABSENT_AROUND_LOOKUP = [0x0, 0x7FF, 0x800, 0x6DF, 0x6E1, 0xBFFFFFFF, 0xC0000000,
                        0xC0000085, 0xC00001FF, 0xC0000200, 0xC0010000, 0xC0010118,
                        0xC00101FF, 0xC0010200, 0xC0011000, 0xFFFFFFFF]


@pytest.mark.parametrize("index", ABSENT_AROUND_LOOKUP)
def test_absent_msrs_around_the_lookup_ranges_fault(hw, index):
    assert hw.rd(index) == "GP" and hw.wr(index, 0) == "GP"
    assert hw.insn("RDMSRL_SAFE", index) == (1, 0)
    assert hw.insn("WRMSRL_SAFE", index, 0)[0] == 1


@pytest.mark.parametrize("index", [MSR_VM_HSAVE_PA, MSR_IA32_MISC_ENABLE])
def test_vendor_specific_msrs(hw, index):
    present = (index == MSR_VM_HSAVE_PA) == hw.amd
    assert (hw.rd(index) != "GP") == present
    assert (hw.wr(index, 0) == 0) == present


# ---- Canonical checks ----

CANONICAL_BOTH = [MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_LSTAR, MSR_CSTAR]


@settings(max_examples=60, deadline=None)
@given(index=st.sampled_from(CANONICAL_BOTH), value=U64 | st.sampled_from([NC, A64, 1 << 47]))
def test_canonical_msrs(index, value):
    """[5, 7] Non-canonical writes #GP; canonical ones read back."""
    for vendor in ("intel", "amd"):
        hw = Hw(vendor)
        before = hw.rd(index)
        r = hw.wr(index, value)
        if canonical(value):
            assert r == 0 and hw.rd(index) == value
        else:
            assert r == "GP" and hw.rd(index) == before


@settings(max_examples=60, deadline=None)
@given(index=st.sampled_from([MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP]), value=U64)
def test_sysenter_esp_eip(index, value):
    """[2] Intel: canonical check; AMD: only the low 32 bits are kept."""
    intel = Hw("intel")
    r = intel.wr(index, value)
    if canonical(value):
        assert r == 0 and intel.rd(index) == value
    else:
        assert r == "GP"
    amd = Hw("amd")
    assert amd.wr(index, value) == 0 and amd.rd(index) == value & 0xFFFFFFFF


def test_sysenter_cs(hw):
    """[1]"""
    assert hw.wr(MSR_IA32_SYSENTER_CS, 0x1234) == 0 and hw.rd(MSR_IA32_SYSENTER_CS) == 0x1234


# ---- Per-MSR rules ----

@pytest.mark.parametrize("features,present", [
    (dict(has_rdtscp=True), True), (dict(has_rdpid=True), True), ({}, False)])
@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_tsc_aux_presence(vendor, features, present):
    hw = Hw(vendor, **features)
    assert (hw.wr(MSR_TSC_AUX, 10) == 0) == present
    assert hw.rd(MSR_TSC_AUX) == (10 if present else "GP")


@settings(max_examples=40, deadline=None)
@given(value=U64)
def test_tsc_aux_upper_bits(value):
    """[12] Intel: bits 63:32 set is #GP; AMD: truncated to 32 bits."""
    intel, amd = Hw("intel", has_rdtscp=True), Hw("amd", has_rdtscp=True)
    if value >> 32:
        assert intel.wr(MSR_TSC_AUX, value) == "GP"
    else:
        assert intel.wr(MSR_TSC_AUX, value) == 0 and intel.rd(MSR_TSC_AUX) == value
    assert amd.wr(MSR_TSC_AUX, value) == 0 and amd.rd(MSR_TSC_AUX) == value & 0xFFFFFFFF


def test_syscall_mask_and_star(hw):
    """[8, 9]"""
    assert hw.wr(MSR_SYSCALL_MASK, 0xFFFFFFFF) == 0 and hw.rd(MSR_SYSCALL_MASK) == 0xFFFFFFFF
    assert hw.wr(MSR_SYSCALL_MASK, 0x1234_0004_7700) == 0
    assert hw.rd(MSR_SYSCALL_MASK) == 0x0004_7700
    assert hw.wr(MSR_STAR, 0x0023001000000000) == 0 and hw.rd(MSR_STAR) == 0x0023001000000000


@settings(max_examples=64, deadline=None)
@given(bit=st.integers(min_value=0, max_value=63))
def test_efer_reserved_bits(bit):
    """[6] EFER: SCE, LME, LMA, NX writable (SVME on AMD only); anything else #GP."""
    for vendor in ("intel", "amd"):
        hw = Hw(vendor)
        allowed = {0, 8, 10, 11} | ({12} if vendor == "amd" else set())
        assert (hw.wr(MSR_EFER, 1 << bit) == 0) == (bit in allowed)


def test_efer_lma_read_only(hw):
    s = hw.state()
    s.msr[C("SLOT_EFER")] = EFER_LME | EFER_LMA
    hw.set_state(s)
    assert hw.wr(MSR_EFER, EFER_SCE | EFER_LME) == 0
    assert hw.rd(MSR_EFER) == EFER_SCE | EFER_LME | EFER_LMA      # LMA kept
    s.msr[C("SLOT_EFER")] = 0
    hw.set_state(s)
    assert hw.wr(MSR_EFER, EFER_LMA | EFER_NX) == 0
    assert hw.rd(MSR_EFER) == EFER_NX                             # LMA not set by WRMSR


@settings(max_examples=80, deadline=None)
@given(types=st.lists(st.integers(min_value=0, max_value=255), min_size=8, max_size=8))
def test_pat_memory_types(types):
    """[4] Every PAT byte must be a valid memory type (0, 1, 4, 5, 6, 7)."""
    hw = Hw("intel")
    value = int.from_bytes(bytes(types), "little")
    valid = all(t in (0, 1, 4, 5, 6, 7) for t in types)
    assert (hw.wr(MSR_IA32_CR_PAT, value) == 0) == valid
    if valid:
        assert hw.rd(MSR_IA32_CR_PAT) == value


def test_pat_case_4(hw):
    assert hw.wr(MSR_IA32_CR_PAT, 0x07070707) == 0 and hw.rd(MSR_IA32_CR_PAT) == 0x07070707


@pytest.mark.parametrize("bit", range(64))
def test_debugctl_bits(bit):
    hw = Hw("intel")
    assert (hw.wr(MSR_IA32_DEBUGCTLMSR, 1 << bit) == 0) == (bit < 2)


def test_pred_cmd_is_write_only():
    """[14] RDMSR always #GP; WRMSR 0 fine; IBPB only with the feature; other bits #GP."""
    for ibpb in (False, True):
        hw = Hw("intel", has_ibpb=ibpb)
        assert hw.rd(MSR_IA32_PRED_CMD) == "GP"
        assert hw.wr(MSR_IA32_PRED_CMD, 0) == 0
        assert (hw.wr(MSR_IA32_PRED_CMD, 1) == 0) == ibpb
        assert hw.wr(MSR_IA32_PRED_CMD, 2) == "GP"


SPEC_FEATURES = [("has_ibrs", 1), ("has_stibp", 2), ("has_ssbd", 4)]


@pytest.mark.parametrize("mask", range(8))
def test_spec_ctrl_bits_per_model(mask):
    """[13] Each supported subset reads back; a bit the model lacks is #GP; no bits, no MSR."""
    features = {name: bool(mask & bit) for name, bit in SPEC_FEATURES}
    hw = Hw("intel", **features)
    if mask == 0:
        assert hw.rd(MSR_IA32_SPEC_CTRL) == "GP" and hw.wr(MSR_IA32_SPEC_CTRL, 0) == "GP"
        return
    for value in range(16):
        r = hw.wr(MSR_IA32_SPEC_CTRL, value)
        if value & ~mask:
            assert r == "GP"
        else:
            assert r == 0 and hw.rd(MSR_IA32_SPEC_CTRL) == value


def test_tsx_ctrl():
    assert Hw("intel").rd(MSR_IA32_TSX_CTRL) == "GP"
    hw = Hw("intel", has_rtm=True)
    for value in range(4):
        assert hw.wr(MSR_IA32_TSX_CTRL, value) == 0 and hw.rd(MSR_IA32_TSX_CTRL) == value
    assert hw.wr(MSR_IA32_TSX_CTRL, 4) == "GP"


def test_virt_spec_ctrl():
    assert Hw("amd").rd(MSR_AMD64_VIRT_SPEC_CTRL) == "GP"
    hw = Hw("amd", has_virt_ssbd=True)
    assert hw.wr(MSR_AMD64_VIRT_SPEC_CTRL, 4) == 0 and hw.rd(MSR_AMD64_VIRT_SPEC_CTRL) == 4
    assert hw.wr(MSR_AMD64_VIRT_SPEC_CTRL, 1) == "GP"


def test_vm_hsave_pa_page_aligned():
    hw = Hw("amd")
    assert hw.wr(MSR_VM_HSAVE_PA, 0x1_0000_2000) == 0 and hw.rd(MSR_VM_HSAVE_PA) == 0x1_0000_2000
    assert hw.wr(MSR_VM_HSAVE_PA, 0x1_0000_2008) == "GP"


def test_misc_enable_read_only_bits():
    """[3] Bits 7, 11, 12 keep their value whatever is written."""
    hw = Hw("intel")
    orig = hw.rd(MSR_IA32_MISC_ENABLE)
    v = 0x400C50809
    assert hw.wr(MSR_IA32_MISC_ENABLE, v) == 0
    assert hw.rd(MSR_IA32_MISC_ENABLE) == (v & ~0x1880) | (orig & 0x1880)
    assert hw.wr(MSR_IA32_MISC_ENABLE, 0) == 0
    assert hw.rd(MSR_IA32_MISC_ENABLE) == orig & 0x1880


def test_reset_state():
    hw = Hw("amd")
    for cpu in range(2):
        s = hw.state(cpu)
        assert s.current_vmcs == 2**64 - 1 and s.gif == 1 and s.mode == C("MODE_HOST")
        assert not s.vmxon and not s.nmi_held


# ---- Host-side wrappers: results, host bugs, accounting ----

def test_safe_and_unsafe_accessors(hw):
    assert hw.insn("WRMSRL_SAFE", MSR_LSTAR, A64) == (0, 0)
    assert hw.insn("RDMSRL_SAFE", MSR_LSTAR) == (0, A64)
    assert hw.insn("WRMSRL_SAFE", MSR_LSTAR, NC)[0] == 1
    assert hw.bugs == 0
    hw.insn("WRMSRL", MSR_LSTAR, NC)            # a kernel WARN
    assert hw.bugs == 1 and hw.rd(MSR_LSTAR) == A64
    assert hw.insn("RDMSRL", MSR_IA32_PRED_CMD) == (0, 0)
    assert hw.bugs == 2


def test_msr_accounting_per_slot_and_profile():
    hw = Hw("intel", **INTEL_FULL)
    lib.pk_hwtest_reset_costs(hw.m)
    lib.pk_hwtest_set_path(hw.m, C("PATH_VCPU_RUN"))
    lib.pk_hwtest_set_op_cost(hw.m, C("OP_RDMSR"), 100)
    lib.pk_hwtest_set_op_cost(hw.m, C("OP_WRMSR"), 200)
    lib.pk_hwtest_set_msr_cost(hw.m, 1, C("SLOT_PRED_CMD"), 1500)
    lib.pk_hwtest_set_msr_cost(hw.m, 1, C("SLOT_SPEC_CTRL"), 495)
    lib.pk_hwtest_set_msr_cost(hw.m, 0, C("SLOT_GS_BASE"), 40)
    path = C("PATH_VCPU_RUN")
    hw.insn("WRMSRL_SAFE", MSR_IA32_SPEC_CTRL, 1)      # per-MSR figure
    hw.insn("WRMSRL_SAFE", MSR_LSTAR, A64)             # op figure
    hw.insn("RDMSRL_SAFE", MSR_GS_BASE)                # no MSR-file slot, priced on its own
    hw.insn("RDMSRL_SAFE", MSR_ABSENT)                 # faults, still executed: "other"
    hw.insn("WRMSRL_SAFE", MSR_IA32_PRED_CMD, 1)       # IBPB: a WRMSR priced per MSR
    assert hw.ops("WRMSR", "VCPU_RUN") == 3 and hw.ops("RDMSR", "VCPU_RUN") == 2
    nr = C("NR_PRICED_MSRS")                           # the "other" bucket
    assert lib.pk_hwtest_msr_ops(hw.m, path, 1, C("SLOT_SPEC_CTRL")) == 1
    assert lib.pk_hwtest_msr_ops(hw.m, path, 1, C("SLOT_LSTAR")) == 1
    assert lib.pk_hwtest_msr_ops(hw.m, path, 1, C("SLOT_PRED_CMD")) == 1
    assert lib.pk_hwtest_msr_ops(hw.m, path, 0, C("SLOT_GS_BASE")) == 1
    assert lib.pk_hwtest_msr_ops(hw.m, path, 0, nr) == 1
    assert lib.pk_hwtest_msr_ops(hw.m, path, 1, nr) == 0
    assert lib.pk_hwtest_cycles(hw.m, path) == 495 + 200 + 40 + 100 + 1500
    assert lib.pk_hwtest_cycles(hw.m, C("PATH_OTHER")) == 0


# Each wrapper is one operation of its kind (load_gs_index: the three it executes).
WRAPPERS = [
    ("RDFSBASE", 0, 0, {"RDFSBASE": 1}), ("RDGSBASE", 0, 0, {"RDGSBASE": 1}),
    ("WRFSBASE", 0x1000, 0, {"WRFSBASE": 1}), ("WRGSBASE", 0x1000, 0, {"WRGSBASE": 1}),
    ("SWAPGS", 0, 0, {"SWAPGS": 1}), ("SAVESEGMENT", 3, 0, {"MOV_SREG": 1}),
    ("LOADSEGMENT", 3, 0x18, {"MOV_SREG": 1}),
    ("LOAD_GS_INDEX", 0, 0, {"SWAPGS": 2, "MOV_SREG": 1}),
    ("LLDT", 0, 0, {"LLDT": 1}), ("LTR", 0x40, 0, {"LTR": 1}),
    ("LGDT", 0xFFFFFE0000001000, 0x7F, {"LGDT": 1}), ("SGDT", 0, 0, {"SIDT": 1}),
    ("LIDT", 0xFFFFFE0000000000, 0xFFF, {"LIDT": 1}), ("SIDT", 0, 0, {"SIDT": 1}),
    ("READ_CR0", 0, 0, {"MOV_FROM_CR": 1}), ("READ_CR3", 0, 0, {"MOV_FROM_CR": 1}),
    ("READ_CR4", 0, 0, {"MOV_FROM_CR": 1}), ("WRITE_CR3", 0x5000, 0, {"MOV_TO_CR": 1}),
    ("LFENCE", 0, 0, {"LFENCE": 1}), ("FILL_RSB", 0, 0, {"RSB_FILL": 1}),
    ("RDMSRL_SAFE", MSR_STAR, 0, {"RDMSR": 1}), ("WRMSRL_SAFE", MSR_STAR, 0, {"WRMSR": 1}),
]
ALL_OPS = ["RDMSR", "WRMSR", "SWAPGS", "RDFSBASE", "RDGSBASE", "WRFSBASE", "WRGSBASE",
           "LIDT", "SIDT", "LGDT", "LLDT", "LTR", "MOV_SREG", "MOV_FROM_CR", "MOV_TO_CR",
           "LFENCE", "RSB_FILL"]


@pytest.mark.parametrize("name,a,b,expect", WRAPPERS, ids=[w[0] for w in WRAPPERS])
def test_each_wrapper_counted_once(name, a, b, expect):
    hw = Hw("intel", **INTEL_FULL)
    s = hw.state()
    s.cr4 |= CR4_FSGSBASE
    hw.set_state(s)
    lib.pk_hwtest_reset_costs(hw.m)
    lib.pk_hwtest_set_path(hw.m, C("PATH_PREPARE_SWITCH"))
    hw.insn(name, a, b)
    got = {op: hw.ops(op, "PREPARE_SWITCH") for op in ALL_OPS if hw.ops(op, "PREPARE_SWITCH")}
    assert got == expect


# ---- Segments, SWAPGS, FS/GS base instructions ----

def fsgs_cpu(hw, gs=0xFFFF88807FC00000, kgs=0x7E0000100000):
    s = hw.state()
    s.cr4 |= CR4_FSGSBASE
    s.seg[C("SREG_GS")].base = gs
    s.msr[C("SLOT_KERNEL_GS_BASE")] = kgs
    hw.set_state(s)


def test_swapgs_exchanges(hw):
    """[16] SWAPGS exchanges GS base and KERNEL_GS_BASE."""
    fsgs_cpu(hw, gs=0x1111000, kgs=A64)
    hw.insn("SWAPGS")
    assert hw.rd(MSR_GS_BASE) == A64 and hw.rd(MSR_KERNEL_GS_BASE) == 0x1111000
    hw.insn("SWAPGS")
    assert hw.rd(MSR_GS_BASE) == 0x1111000 and hw.rd(MSR_KERNEL_GS_BASE) == A64


def test_rd_wr_fs_gs_base(hw):
    fsgs_cpu(hw)
    hw.insn("WRFSBASE", A64)
    hw.insn("WRGSBASE", A64 + 0x10)
    assert hw.insn("RDFSBASE")[1] == A64 and hw.insn("RDGSBASE")[1] == A64 + 0x10
    assert hw.rd(MSR_FS_BASE) == A64 and hw.bugs == 0
    hw.insn("WRGSBASE", NC)                     # #GP in the kernel
    assert hw.bugs == 1 and hw.rd(MSR_GS_BASE) == A64 + 0x10


def test_fsgsbase_needs_cr4(hw):
    s = hw.state()
    s.cr4 &= ~CR4_FSGSBASE
    hw.set_state(s)
    hw.insn("RDGSBASE")
    assert hw.bugs == 1                         # #UD in the kernel


@pytest.mark.parametrize("sreg", ["ES", "SS", "DS", "FS"])
def test_loadsegment_flat(hw, sreg):
    i = C("SREG_" + sreg)
    s = hw.state()
    s.seg[i].base = 0x5000
    hw.set_state(s)
    hw.insn("LOADSEGMENT", i, 0x2B)
    seg = hw.state().seg[i]
    assert (seg.selector, seg.base, seg.limit, seg.ar & AR_UNUSABLE) == (0x2B, 0, 0xFFFFFFFF, 0)
    assert hw.insn("SAVESEGMENT", i)[1] == 0x2B
    hw.insn("LOADSEGMENT", i, 0)                # null selector: allowed, unusable
    seg = hw.state().seg[i]
    assert seg.selector == 0 and seg.base == 0 and seg.ar & AR_UNUSABLE
    assert hw.bugs == 0


def test_loadsegment_gs_wipes_the_active_base(hw):
    """A raw MOV GS in kernel mode loses the per-cpu base: why load_gs_index exists."""
    fsgs_cpu(hw, gs=0xFFFF88807FC00000, kgs=0x7E0000100000)
    hw.insn("LOADSEGMENT", C("SREG_GS"), 0)
    assert hw.rd(MSR_GS_BASE) == 0 and hw.rd(MSR_KERNEL_GS_BASE) == 0x7E0000100000


def test_load_gs_index_zeroes_user_base(hw):
    """SWAPGS; MOV GS; SWAPGS: kernel GS base kept, user GS base (in KERNEL_GS_BASE) zeroed."""
    fsgs_cpu(hw, gs=0xFFFF88807FC00000, kgs=0x7E0000100000)
    hw.insn("LOAD_GS_INDEX", 0x2B)
    s = hw.state()
    assert s.seg[C("SREG_GS")].selector == 0x2B
    assert hw.rd(MSR_GS_BASE) == 0xFFFF88807FC00000 and hw.rd(MSR_KERNEL_GS_BASE) == 0


@pytest.mark.parametrize("sreg", ["CS", "TR", "LDTR"])
def test_loadsegment_not_movable(hw, sreg):
    before = hw.state().seg[C("SREG_" + sreg)].selector
    hw.insn("LOADSEGMENT", C("SREG_" + sreg), 0x10)
    assert hw.bugs == 1 and hw.state().seg[C("SREG_" + sreg)].selector == before


def test_lldt_null_makes_ldtr_unusable(hw):
    hw.insn("LLDT", 0)
    ldtr = hw.state().seg[C("SREG_LDTR")]
    assert ldtr.selector == 0 and ldtr.ar & AR_UNUSABLE


def tss_descriptor(base, limit, busy=False):
    lo = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | ((0x8B if busy else 0x89) << 40) \
        | (((limit >> 16) & 0xF) << 48) | (((base >> 24) & 0xFF) << 56)
    return lo.to_bytes(8, "little") + (base >> 32).to_bytes(8, "little")


def test_ltr_marks_busy_and_faults_on_busy(hw):
    """LTR loads TR from the GDT in memory and marks the TSS busy; LTR of a busy TSS #GPs."""
    gdt = lib.pk_hwtest_alloc(hw.m, 4096, 4096)
    desc = tss_descriptor(0xFFFFFE0000002000, 0x4087)
    assert lib.pk_hwtest_phys_write(hw.m, gdt + 0x40, desc, 16) == 0
    hw.insn("LGDT", gdt, 0x7F)
    hw.insn("LTR", 0x40)
    tr = hw.state().seg[C("SREG_TR")]
    assert (tr.selector, tr.base, tr.limit, tr.ar & 0x1F) == (0x40, 0xFFFFFE0000002000, 0x4087, 0xB)
    buf = ffi.new("uint8_t[16]")
    lib.pk_hwtest_phys_read(hw.m, gdt + 0x40, buf, 16)
    assert buf[5] & 0xF == 0xB and hw.bugs == 0
    hw.insn("LTR", 0x40)                        # still busy: force_reload_TR clears it first
    assert hw.bugs == 1
    buf[5] = (buf[5] & ~0x2) & 0xFF
    lib.pk_hwtest_phys_write(hw.m, gdt + 0x40, buf, 16)
    hw.insn("LTR", 0x40)
    assert hw.bugs == 1
    hw.insn("LTR", 0)                           # null selector
    assert hw.bugs == 2


def test_descriptor_tables_round_trip(hw):
    hw.insn("LGDT", 0xFFFFFE0000001000, 0x7F)
    hw.insn("LIDT", 0xFFFFFE0000000000, 0xFFF)
    assert hw.insn("SGDT") == (0x7F, 0xFFFFFE0000001000)
    assert hw.insn("SIDT") == (0xFFF, 0xFFFFFE0000000000)
    hw.insn("LIDT", NC, 0xFFF)                  # non-canonical base: #GP
    assert hw.bugs == 1 and hw.insn("SIDT")[1] == 0xFFFFFE0000000000


def test_control_registers(hw):
    s = hw.state()
    s.cr0, s.cr4 = 0x80050033, 0x3706F0
    hw.set_state(s)
    hw.insn("WRITE_CR3", 0x1234000)
    assert hw.insn("READ_CR0")[1] == 0x80050033 and hw.insn("READ_CR4")[1] == 0x3706F0
    assert hw.insn("READ_CR3")[1] == 0x1234000
