"""Bad register, MSR and CPUID input refused as upstream KVM refuses it, one test per rule,
on both simulated vendors and on the host's /dev/kvm.

The rules are upstream's (torvalds/linux): KVM_SET_SREGS by kvm_is_valid_sregs() with
kvm_is_valid_cr0/cr4() and kvm_valid_efer() (x86.c) and kvm_apic_set_base() (lapic.c),
all EINVAL; KVM_SET_MSRS by __kvm_set_msr() (canonical addresses, TSC_AUX), set_efer(),
kvm_pat_valid(), kvm_apic_set_base() and the vendors' set_msr (SPEC_CTRL), counting the
entries it took, and msr_io() (E2BIG from MAX_IO_MSRS entries on); KVM_SET_REGS takes any
64-bit value and sets RFLAGS bit 1 (__set_regs); KVM_SET_CPUID2 by
kvm_vcpu_ioctl_set_cpuid2() (E2BIG past KVM_MAX_CPUID_ENTRIES), kvm_check_cpuid()
(virtual-address width) and kvm_cpuid_check_equal() after KVM_RUN (EINVAL). A value that
does not fit its field (a Python int of more than 64 bits) is refused before any of it
reaches KVM, on both backends, never truncated.

The host's KVM may differ from upstream: where it does, the test asserts what it does
instead and records it as a finding (HOST_DEVIATIONS), as test_conform.py does for guest
behaviour; any other difference fails.
"""
import dataclasses
import errno

import pytest

import pykvm
from pykvm import guest
from pykvm.devkvm import CpuidEntry, KvmMachine
from pykvm.errors import InvalidConfiguration, InvalidMsr, PykvmError

AVAILABLE, REASON = KvmMachine.available()
HOST_VENDOR = REASON if AVAILABLE else None

FS_BASE, GS_BASE, KERNEL_GS_BASE = 0xC0000100, 0xC0000101, 0xC0000102
LSTAR, CSTAR, EFER, TSC_AUX = 0xC0000082, 0xC0000083, 0xC0000080, 0xC0000103
PAT, APIC_BASE, SPEC_CTRL = 0x277, 0x1B, 0x48
NONCANONICAL = 0xAAAAAAAAAAAAAAAA

# What the host's KVM does where it is not upstream's rule: (rule, module) -> outcome.
# kvm_pvm (PVM on a 6.18 base) is measured here; each entry is a finding about it.
HOST_DEVIATIONS = {
    ("sregs: EFER reserved bit", "kvm_pvm"):
        "accepted",   # kvm_valid_efer() in kvm_is_valid_sregs() is newer than its base
    ("msrs: PAT with a reserved memory type", "kvm_pvm"): "accepted",  # no kvm_pat_valid()
    ("msrs: PAT memory type with bit 3 set", "kvm_pvm"): "accepted",
    ("msrs: SPEC_CTRL bit the guest lacks", "kvm_pvm"): "accepted",    # reads back 0
    ("msrs: TSC_AUX bits 63:32 on an Intel guest", "kvm_pvm"): "accepted",  # reads back 0
    # PVM gives the guest the host's FSGSBASE whatever KVM_SET_CPUID2 said
    ("sregs: CR4 bit the guest's CPUID lacks", "kvm_pvm"): "accepted",
}


@guest.program
def IMAGE(a):
    a.sync(1)
    a.done()


def _machine(backend):
    if backend == "kvm":
        if not AVAILABLE:
            pytest.skip(f"needs /dev/kvm: {REASON}")
        return KvmMachine()
    return pykvm.Machine(cpus=1, vendor=backend)


@pytest.fixture(params=["vmx", "svm", "kvm"])
def backend(request):
    return request.param


@pytest.fixture
def vcpu(backend):
    m = _machine(backend)
    v = m.create_vm().create_vcpu()
    v.load(IMAGE)
    v._machine = m
    yield v
    m.close()


def _expect(backend, rule, outcome, upstream, record_property):
    """The outcome must be upstream's, or on the host its recorded deviation (a finding)."""
    if backend == "kvm" and (rule, HOST_VENDOR) in HOST_DEVIATIONS:
        deviation = HOST_DEVIATIONS[(rule, HOST_VENDOR)]
        record_property("finding", f"{HOST_VENDOR}: {rule}: {deviation}, upstream {upstream}")
        assert outcome == deviation, f"{rule}: the host now gives {outcome}, was {deviation}"
        return
    assert outcome == upstream, f"{rule} on {backend}: {outcome}, upstream {upstream}"


def _outcome(fn):
    try:
        fn()
    except PykvmError as e:
        return errno.errorcode.get(getattr(e, "errno", None), type(e).__name__)
    return "accepted"


# ---- KVM_SET_SREGS ---------------------------------------------------------------------

def _seg(s, **kw):
    return dataclasses.replace(s, **kw)


SREGS_RULES = {
    # kvm_is_valid_sregs(): outside 64-bit mode LMA is clear and CS is not 64-bit
    "sregs: CS.L with EFER.LMA clear":
        lambda s: dataclasses.replace(s, efer=0, cr0=0x11, cs=_seg(s.cs, l=1)),
    "sregs: EFER.LMA without EFER.LME":
        lambda s: dataclasses.replace(s, efer=0x401, cs=_seg(s.cs, l=0)),
    # ... in 64-bit mode (LME and PG) PAE and LMA are required, CR3 within MAXPHYADDR
    "sregs: EFER.LME with paging but no CR4.PAE": lambda s: dataclasses.replace(s, cr4=s.cr4 & ~0x20),
    "sregs: EFER.LME with paging but no EFER.LMA": lambda s: dataclasses.replace(s, efer=s.efer & ~0x400),
    "sregs: CR3 above MAXPHYADDR in 64-bit mode": lambda s: dataclasses.replace(s, cr3=1 << 52),
    # kvm_is_valid_cr0()
    "sregs: CR0 bits 63:32": lambda s: dataclasses.replace(s, cr0=s.cr0 | 1 << 32),
    "sregs: CR0.NW without CR0.CD": lambda s: dataclasses.replace(s, cr0=s.cr0 | 1 << 29),
    "sregs: CR0.PG without CR0.PE":
        lambda s: dataclasses.replace(s, efer=0, cr0=0x80000010, cs=_seg(s.cs, l=0)),
    # kvm_is_valid_cr4(): CR4_RESERVED_BITS
    "sregs: CR4 reserved bit 15": lambda s: dataclasses.replace(s, cr4=s.cr4 | 1 << 15),
    "sregs: CR4 bit 63": lambda s: dataclasses.replace(s, cr4=s.cr4 | 1 << 63),
    # kvm_valid_efer()
    "sregs: EFER reserved bit": lambda s: dataclasses.replace(s, efer=s.efer | 1 << 20),
    # kvm_apic_set_base(): reserved bits, x2APIC enable without xAPIC enable
    "sregs: APIC base all ones": lambda s: dataclasses.replace(s, apic_base=2**64 - 1),
    "sregs: APIC base reserved bit 0": lambda s: dataclasses.replace(s, apic_base=s.apic_base | 1),
    "sregs: APIC base x2APIC without enable":
        lambda s: dataclasses.replace(s, apic_base=(s.apic_base & ~(1 << 11)) | 1 << 10),
}


@pytest.mark.parametrize("rule", SREGS_RULES)
def test_set_sregs_refused_whole(vcpu, backend, rule, record_property):
    before = vcpu.get_sregs()
    bad = SREGS_RULES[rule](before)
    outcome = _outcome(lambda: vcpu.set_sregs(bad))
    _expect(backend, rule, outcome, "EINVAL", record_property)
    if outcome != "accepted":
        assert vcpu.get_sregs() == before            # nothing of it was applied


def test_set_sregs_accepts_valid_state(vcpu):
    s = vcpu.get_sregs()
    vcpu.set_sregs(s)
    assert vcpu.get_sregs() == s


def test_cr4_bit_the_guest_cpuid_lacks(vcpu, backend, record_property):
    """__cr4_reserved_bits(guest_cpu_cap_has): without FSGSBASE in the guest's CPUID,
    CR4.FSGSBASE (which the standard image sets) is refused."""
    cpuid = vcpu.get_cpuid()
    no_fsgsbase = [dataclasses.replace(e, ebx=e.ebx & ~1) if (e.function, e.index) == (7, 0)
                   else e for e in cpuid]
    s = vcpu.get_sregs()
    assert s.cr4 & 1 << 16
    vcpu.set_cpuid(no_fsgsbase)
    _expect(backend, "sregs: CR4 bit the guest's CPUID lacks",
            _outcome(lambda: vcpu.set_sregs(s)), "EINVAL", record_property)
    vcpu.set_cpuid(cpuid)
    vcpu.set_sregs(s)


# ---- KVM_SET_MSRS ----------------------------------------------------------------------

MSR_RULES = {
    # __kvm_set_msr(): canonical addresses
    "msrs: FS_BASE non-canonical": (FS_BASE, NONCANONICAL),
    "msrs: GS_BASE non-canonical": (GS_BASE, NONCANONICAL),
    "msrs: KERNEL_GS_BASE non-canonical": (KERNEL_GS_BASE, 1 << 47),
    "msrs: LSTAR non-canonical": (LSTAR, NONCANONICAL),
    "msrs: CSTAR non-canonical": (CSTAR, 0x0000800000000000),
    # set_efer(): efer_reserved_bits, even host-initiated
    "msrs: EFER reserved bit": (EFER, lambda cur: cur | 1 << 20),
    # kvm_pat_valid(): memory types 0, 1, 4, 5, 6, 7 only
    "msrs: PAT with a reserved memory type": (PAT, 0x0007040600070402),
    "msrs: PAT memory type with bit 3 set": (PAT, 0x0007040600070408),
    # kvm_apic_set_base()
    "msrs: APIC_BASE all ones": (APIC_BASE, 2**64 - 1),
    "msrs: APIC_BASE reserved bit 0": (APIC_BASE, lambda cur: cur | 1),
    "msrs: APIC_BASE above MAXPHYADDR": (APIC_BASE, lambda cur: cur | 1 << 60),
    # the vendor's set_msr: kvm_spec_ctrl_test_value()
    "msrs: SPEC_CTRL bit the guest lacks": (SPEC_CTRL, 1 << 5),
    # ignore_msrs=0: an MSR KVM does not know
    "msrs: an unknown MSR": (0x474F4F00, 0),
}


@pytest.mark.parametrize("rule", MSR_RULES)
def test_set_msrs_refuses_and_counts(vcpu, backend, rule, record_property):
    index, value = MSR_RULES[rule]
    n, before = vcpu.get_msrs([index])
    if callable(value):
        value = value(before[index])
    count = vcpu.set_msrs({index: value})
    _expect(backend, rule, "accepted" if count == 1 else "refused", "refused", record_property)
    if count == 0 and n == 1:
        assert vcpu.get_msrs([index]) == (1, before)     # the old value stays


def test_tsc_aux_high_bits(vcpu, backend, record_property):
    """__kvm_set_msr(): bits 63:32 of TSC_AUX are reserved for an Intel-compatible guest
    and dropped for an AMD one."""
    rule = "msrs: TSC_AUX bits 63:32 on an Intel guest"
    count = vcpu.set_msrs({TSC_AUX: 1 << 40 | 5})
    if backend == "svm":
        assert count == 1 and vcpu.get_msr(TSC_AUX) == 5
    else:
        _expect(backend, rule, "accepted" if count == 1 else "refused", "refused",
                record_property)


def test_set_msrs_stops_at_the_first_refusal(vcpu):
    count = vcpu.set_msrs({LSTAR: 0xFFFF800000001000, CSTAR: NONCANONICAL,
                           KERNEL_GS_BASE: 0x1234})
    assert count == 1
    assert vcpu.get_msr(LSTAR) == 0xFFFF800000001000
    assert vcpu.get_msr(KERNEL_GS_BASE) != 0x1234


@pytest.mark.parametrize("value", [2**64 + 5, 2**64, -(2**63) - 1, 2**100, 1.0, "0", None])
def test_msr_value_beyond_64_bits_refused_before_kvm(vcpu, value):
    before = vcpu.get_msr(KERNEL_GS_BASE)
    with pytest.raises(InvalidMsr, match="0xc0000102") as e:
        vcpu.set_msrs({KERNEL_GS_BASE: value})
    assert e.value.index == KERNEL_GS_BASE
    assert vcpu.get_msr(KERNEL_GS_BASE) == before           # never truncated to 5


def test_negative_msr_value_is_twos_complement(vcpu):
    assert vcpu.set_msrs({KERNEL_GS_BASE: -4096}) == 1
    assert vcpu.get_msr(KERNEL_GS_BASE) == 2**64 - 4096


@pytest.mark.parametrize("index", [-1, 2**32, "0x10"])
def test_msr_index_beyond_32_bits_refused(vcpu, index):
    with pytest.raises(InvalidMsr):
        vcpu.set_msrs({index: 0})
    with pytest.raises(InvalidMsr):
        vcpu.get_msrs([index])


def test_max_io_msrs(vcpu):
    """msr_io(): MAX_IO_MSRS (256) entries or more are refused whole with E2BIG."""
    many = {0x474F0000 + i: 0 for i in range(256)}
    with pytest.raises(PykvmError) as e:
        vcpu.set_msrs(many)
    assert e.value.errno == errno.E2BIG
    with pytest.raises(PykvmError) as e:
        vcpu.get_msrs(list(many))
    assert e.value.errno == errno.E2BIG
    assert vcpu.set_msrs(dict(list(many.items())[:255])) == 0     # taken, refused per entry


# ---- KVM_SET_REGS ----------------------------------------------------------------------

@pytest.mark.parametrize("field", ["rax", "r15", "rip", "rflags"])
@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**70 + 1, 1.5, True])
def test_register_value_beyond_64_bits_refused_before_kvm(vcpu, field, value):
    before = vcpu.get_regs()
    with pytest.raises(InvalidConfiguration, match=field):
        vcpu.set_regs(dataclasses.replace(before, **{field: value}))
    assert vcpu.get_regs() == before


def test_set_regs_takes_any_64_bit_value_and_fixes_rflags(vcpu):
    """__set_regs(): no value is refused; RFLAGS gets its always-one bit 1."""
    r = vcpu.get_regs()
    vcpu.set_regs(dataclasses.replace(r, rax=2**64 - 1, rbx=-1, rflags=0))
    got = vcpu.get_regs()
    assert (got.rax, got.rbx, got.rflags & 0x2) == (2**64 - 1, 2**64 - 1, 0x2)


@pytest.mark.parametrize("field,value", [("cr0", 2**64), ("efer", -(2**63) - 1)])
def test_sregs_value_beyond_64_bits_refused_before_kvm(vcpu, field, value):
    s = vcpu.get_sregs()
    with pytest.raises(InvalidConfiguration, match=field):
        vcpu.set_sregs(dataclasses.replace(s, **{field: value}))


@pytest.mark.parametrize("field,value", [("limit", 2**32), ("selector", 2**16), ("type", 256),
                                         ("present", -1)])
def test_segment_field_beyond_its_width_refused(vcpu, field, value):
    s = vcpu.get_sregs()
    with pytest.raises(InvalidConfiguration, match=f"cs.{field}"):
        vcpu.set_sregs(dataclasses.replace(s, cs=_seg(s.cs, **{field: value})))


# ---- KVM_SET_CPUID2 --------------------------------------------------------------------

def test_cpuid_more_than_max_entries(vcpu):
    """kvm_vcpu_ioctl_set_cpuid2(): more than KVM_MAX_CPUID_ENTRIES (256) is E2BIG."""
    with pytest.raises(PykvmError) as e:
        vcpu.set_cpuid([CpuidEntry(0x40000000 + i) for i in range(257)])
    assert e.value.errno == errno.E2BIG


def test_cpuid_virtual_address_width(vcpu):
    """kvm_check_cpuid(): leaf 0x80000008 may say 48 or 57 bits of virtual address."""
    cpuid = vcpu._machine.get_supported_cpuid()
    bad = [dataclasses.replace(e, eax=(e.eax & ~0xFF00) | 40 << 8) if e.function == 0x80000008
           else e for e in cpuid]
    with pytest.raises(PykvmError) as e:
        vcpu.set_cpuid(bad)
    assert e.value.errno == errno.EINVAL


def test_cpuid_after_run_only_the_same(vcpu):
    """kvm_cpuid_check_equal(): after KVM_RUN, KVM_SET_CPUID2 may only repeat the table."""
    guest.run_ucall(vcpu, IMAGE)
    current = vcpu.get_cpuid()
    vcpu.set_cpuid(current)
    with pytest.raises(PykvmError) as e:
        vcpu.set_cpuid(current[:-1])
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("field,value", [("eax", 2**32), ("function", -1)])
def test_cpuid_field_beyond_32_bits_refused(vcpu, field, value):
    with pytest.raises(InvalidConfiguration, match=field):
        vcpu.set_cpuid([CpuidEntry(**{"function": 0, field: value})])


# ---- machine-level arguments ------------------------------------------------------------

def test_bad_cpu_and_msr_arguments_are_named():
    m = pykvm.Machine(cpus=2, vendor="vmx")
    with pytest.raises(InvalidConfiguration, match="cpu must be 0..1, got 99"):
        m.per_cpu_offset(99)
    with pytest.raises(InvalidConfiguration, match="cpu must be 0..1, got -1"):
        m.read_cpu_msr(-1, KERNEL_GS_BASE)
    with pytest.raises(InvalidMsr, match="MSR index"):
        m.read_cpu_msr(0, -1)
    with pytest.raises(InvalidMsr, match="0x474f4f00"):
        m.read_cpu_msr(0, 0x474F4F00)
    with pytest.raises(InvalidConfiguration, match="cpu"):
        m.run_other_task(2)
    assert m.per_cpu_offset(1) != m.per_cpu_offset(0)


def test_running_before_load_is_refused(backend):
    """A vCPU whose VM has no memory has nothing to run: refused alike on both backends
    (the hardware would otherwise fetch from the reset vector: an MMIO exit on one, ENOSPC
    or an internal error on another)."""
    m = _machine(backend)
    v = m.create_vm().create_vcpu()
    with pytest.raises(InvalidConfiguration, match="load"):
        v.run()
    v.load(IMAGE)
    assert guest.run_ucall(v, IMAGE).args[0] == 1
    m.close()


def test_raw_code_larger_than_the_image_is_refused_before_assembling(vcpu):
    from pykvm.vcpu_base import MAX_RAW_CODE
    with pytest.raises(InvalidConfiguration, match=str(MAX_RAW_CODE)):
        vcpu.load(bytes(MAX_RAW_CODE + 1))
