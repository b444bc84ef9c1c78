"""The KVM APIs the MSR suites rely on, with upstream's rules, on both simulated vendors
and the host's /dev/kvm through the same calls: capabilities, machine-check banks
(KVM_X86_SETUP_MCE), the MSR index lists, ONE_REG / REG_LIST, MP state, KVM_SET_CPUID2
after the first run, the in-kernel LAPIC's x2APIC MSRs, userspace MSR exits and their
reasons, and MSR filters."""
import errno

import pytest

import pykvm
from pykvm import exits as X
from pykvm import guest
from pykvm.conform.host_findings import HOST_API_FINDINGS
from pykvm.devkvm import KvmMachine, MsrFilterRange, uapi, vendor_modules
from pykvm.errors import InvalidMsr
from pykvm.guest import NO_VECTOR

MCG_CAP, MCG_STATUS, MCG_CTL = 0x179, 0x17A, 0x17B
MCG_CTL_P = 1 << 8
MSR_EFER, MSR_FS_BASE = 0xC0000080, 0xC0000100
MSR_SYSENTER_CS = 0x174
MSR_APICBASE = 0x1B
X2APIC_ID, X2APIC_LVR = 0x802, 0x803
MSR_ABSENT = 0x474F4F00
APIC_EN, APIC_EXTD = 1 << 11, 1 << 10


def mc(bank, reg):
    return 0x400 + 4 * bank + reg


@pytest.fixture(params=["vmx", "svm", "kvm"])
def system(request):
    if request.param == "kvm":
        ok, why = KvmMachine.available()
        if not ok:
            pytest.skip(f"no host KVM: {why}")
        m = KvmMachine()
        yield m
        m.close()
    else:
        yield pykvm.Machine(cpus=2, vendor=request.param)


def host_deviation(system, name):
    """The recorded finding `name` of the host module behind `system` (None for the
    model, or a module without it): the test then asserts that instead of upstream's
    behaviour, so a change of the module is noticed."""
    if not isinstance(system, KvmMachine):
        return None
    mods = vendor_modules()
    return HOST_API_FINDINGS.get(mods[0] if mods else "", {}).get(name)


def _errno(call, *args, **kw):
    """The errno a call fails with (None if it succeeds)."""
    try:
        call(*args, **kw)
    except Exception as e:  # noqa: BLE001 - both backends' errors carry .errno
        assert getattr(e, "errno", None) is not None, e
        return e.errno
    return None


def _run_done(vcpu, body, **options):
    """Load the program built from body(a) and run it to DONE (a guest assertion raises)."""
    image = guest.program(body, **options)
    vcpu.load(image)
    guest.run_ucall(vcpu, image, guest.UcallCmd.DONE)


def test_capabilities_the_suites_query(system):
    for cap in (uapi.KVM_CAP_IRQCHIP, uapi.KVM_CAP_MP_STATE, uapi.KVM_CAP_ONE_REG,
                uapi.KVM_CAP_X86_USER_SPACE_MSR, uapi.KVM_CAP_X86_MSR_FILTER):
        assert system.check_extension(cap), cap
    assert system.check_extension(uapi.KVM_CAP_MCE) == 32          # KVM_MAX_MCE_BANKS
    assert system.check_extension(0x7FFF) == 0
    vm = system.create_vm()
    assert vm.check_extension(uapi.KVM_CAP_X86_USER_SPACE_MSR)


def test_setup_mce_rules_and_bank_registers(system):
    """kvm_vcpu_ioctl_x86_setup_mce and set_msr_mce/get_msr_mce (arch/x86/kvm/x86.c)."""
    vcpu = system.create_vm().create_vcpu()
    assert system.get_mce_cap_supported() & MCG_CTL_P
    assert _errno(vcpu.setup_mce, 0) == errno.EINVAL                 # no banks
    assert _errno(vcpu.setup_mce, 33) == errno.EINVAL                # > KVM_MAX_MCE_BANKS
    assert _errno(vcpu.setup_mce, (1 << 62) | 4) == errno.EINVAL     # unsupported bit
    vcpu.setup_mce(MCG_CTL_P | 4)
    assert vcpu.get_msr(MCG_CAP) == MCG_CTL_P | 4
    assert vcpu.get_msr(MCG_CTL) == 2**64 - 1
    for bank in range(4):
        assert vcpu.get_msr(mc(bank, 0)) == 2**64 - 1               # MCi_CTL all ones
        assert vcpu.get_msr(mc(bank, 1)) == 0
    with pytest.raises(InvalidMsr):
        vcpu.get_msr(mc(4, 0))                                      # past the bank count
    # MCi_CTL: 0 or all ones (bits 10 and 0 may be clear: AMD's GART/K8 quirk).
    assert vcpu.set_msrs({mc(0, 0): 5}) == 0
    vcpu.set_msr(mc(0, 0), (2**64 - 1) & ~((1 << 10) | 1))
    vcpu.set_msr(mc(1, 0), 0)
    # MCi_STATUS: anything from the host (guests may only write 0).
    vcpu.set_msr(mc(2, 1), 0x8000000000000001)
    assert vcpu.get_msr(mc(2, 1)) == 0x8000000000000001
    # MCG_STATUS is writable; MCG_CTL only 0 or all ones.
    vcpu.set_msr(MCG_STATUS, 1)
    assert vcpu.set_msrs({MCG_CTL: 5}) == 0


def test_msr_index_lists(system):
    save = system.get_msr_index_list()
    assert len(save) == len(set(save))
    # EFER is not listed: it travels in SREGS.
    for msr in (MSR_SYSENTER_CS, 0x175, 0x176, 0xC0000082, MCG_STATUS, MCG_CTL, 0x1A0):
        assert msr in save, hex(msr)
    feats = system.get_msr_feature_index_list()
    n, values = system.get_feature_msrs(feats)
    assert n == len(feats) and set(values) == set(feats)
    # Not a feature MSR: KVM stops at it.
    stops = not host_deviation(system, "feature_msr_non_feature")
    assert system.get_feature_msrs([MSR_SYSENTER_CS])[0] == (0 if stops else 1)


def test_one_reg_reaches_msrs_and_refuses_bad_ids(system):
    vcpu = system.create_vm().create_vcpu()
    reg = uapi.KVM_X86_REG_MSR(MSR_SYSENTER_CS)
    vcpu.set_one_reg(reg, 0x1234)
    assert vcpu.get_msr(MSR_SYSENTER_CS) == 0x1234
    vcpu.set_msr(MSR_SYSENTER_CS, 0x10)
    assert vcpu.get_one_reg(reg) == 0x10
    bad = [uapi.KVM_X86_REG_MSR(MSR_ABSENT),                        # no such MSR
           reg & ~uapi.KVM_REG_X86 | 0x6000000000000000,            # not an x86 id
           reg & ~uapi.KVM_REG_SIZE_U64 | 0x0020000000000000,       # a u32 MSR
           reg | (7 << 32),                                         # unknown type
           reg | (1 << 40),                                         # reserved bits
           uapi.KVM_X86_REG_KVM(uapi.KVM_REG_GUEST_SSP)]            # no SHSTK here
    for reg_id in bad:
        assert _errno(vcpu.get_one_reg, reg_id) == errno.EINVAL, hex(reg_id)
    assert vcpu.get_reg_list() == []                                # GUEST_SSP needs SHSTK


def test_mp_state_with_and_without_an_in_kernel_lapic(system):
    vm = system.create_vm()
    v = vm.create_vcpu()
    assert v.get_mp_state() == uapi.KVM_MP_STATE_RUNNABLE
    # Without a LAPIC in KVM only RUNNABLE can be set (kvm_arch_vcpu_ioctl_set_mpstate).
    assert _errno(v.set_mp_state, uapi.KVM_MP_STATE_HALTED) == errno.EINVAL
    vm = system.create_vm()
    vm.create_irqchip()
    bsp, ap = vm.create_vcpu(), vm.create_vcpu()
    assert bsp.get_mp_state() == uapi.KVM_MP_STATE_RUNNABLE
    assert ap.get_mp_state() == uapi.KVM_MP_STATE_UNINITIALIZED     # waits for INIT/SIPI
    ap.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
    assert ap.get_mp_state() == uapi.KVM_MP_STATE_RUNNABLE
    ap.set_mp_state(uapi.KVM_MP_STATE_HALTED)
    assert ap.get_mp_state() == uapi.KVM_MP_STATE_HALTED
    assert _errno(ap.set_mp_state, 99) == errno.EINVAL


def test_cpuid_is_frozen_after_the_first_run(system):
    """kvm_set_cpuid: after KVM_RUN, only an identical CPUID is accepted (EINVAL else)."""
    vcpu = system.create_vm().create_vcpu()
    entries = system.get_supported_cpuid()
    vcpu.set_cpuid(entries)
    # KVM_GET_CPUID2 gives the same leaves back (some bits KVM keeps up to date itself).
    assert {(e.function, e.index) for e in vcpu.get_cpuid()} == \
        {(e.function, e.index) for e in entries}
    _run_done(vcpu, lambda a: a.done())
    if host_deviation(system, "cpuid_rewritten"):
        assert _errno(vcpu.set_cpuid, entries) == errno.EINVAL
        entries = vcpu.get_cpuid()
    vcpu.set_cpuid(entries)
    changed = [e if e.function != 1 else
               type(e)(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx ^ (1 << 31), e.edx)
               for e in entries]
    assert _errno(vcpu.set_cpuid, changed) == errno.EINVAL
    assert _errno(vcpu.set_cpuid, entries * 300) == errno.E2BIG     # > KVM_MAX_CPUID_ENTRIES


def test_x2apic_msrs_need_an_in_kernel_lapic_in_x2apic_mode(system):
    def probe(a):
        a.rdmsr_safe(X2APIC_ID)
        a.sync("r9", "rax")
        a.rdmsr_safe(MSR_APICBASE)
        a.or_("rax", APIC_EXTD)
        a.wrmsr_safe(MSR_APICBASE, "rax")
        a.sync("r9")
        a.rdmsr_safe(X2APIC_ID)
        a.sync("r9", "rax")
        a.rdmsr_safe(X2APIC_LVR)
        a.sync("r9", "rax")
        # x2APIC -> xAPIC directly is an invalid transition (kvm_apic_set_base): #GP.
        a.rdmsr_safe(MSR_APICBASE)
        a.mov("r13", ~APIC_EXTD & (2**64 - 1))
        a.and_("rax", "r13")
        a.wrmsr_safe(MSR_APICBASE, "rax")
        a.sync("r9")
        a.done()

    def run(vcpu):
        image = guest.program(probe)
        vcpu.load(image)
        return [guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args for _ in range(5)]

    # No LAPIC in KVM: every x2APIC MSR is #GP, and so is setting EXTD.
    out = run(system.create_vm().create_vcpu())
    assert out[0][0] == 13 and out[2][0] == 13
    vm = system.create_vm()
    vm.create_irqchip()
    out = run(vm.create_vcpu())
    assert out[0][0] == 13                            # xAPIC mode: x2APIC MSRs #GP
    assert out[1][0] == NO_VECTOR                     # EXTD set
    assert out[2][:2] == (NO_VECTOR, 0)               # x2APIC ID = vCPU id 0
    assert out[3][0] == NO_VECTOR and out[3][1] & 0xFF == 0x14     # LVR: version 0x14
    assert out[4][0] == 13


def test_user_msr_exit_reasons_and_answers(system):
    """kvm_msr_user_space: an invalid write exits with KVM_MSR_EXIT_REASON_INVAL only if
    that reason is enabled; an unknown MSR with _UNKNOWN; error=1 is a #GP for the guest,
    data the value it reads."""
    def body(a):
        a.rdmsr_safe(MSR_EFER)
        a.or_("rax", 1 << 20)                         # a reserved EFER bit
        a.wrmsr_safe(MSR_EFER, "rax")
        a.sync("r9")
        a.rdmsr_safe(MSR_ABSENT)
        a.sync("r9", "rax")
        a.done()

    vm = system.create_vm()
    vm.enable_user_msr_exits(X.KVM_MSR_EXIT_REASON_INVAL)
    vcpu = vm.create_vcpu()
    image = guest.program(body)
    vcpu.load(image)
    ex = vcpu.run()
    assert isinstance(ex, X.WrMsr) and ex.index == MSR_EFER
    assert ex.msr_reason == X.KVM_MSR_EXIT_REASON_INVAL and ex.data >> 20 & 1
    ex.error = 1
    assert guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args[0] == 13
    # UNKNOWN is not enabled: the absent MSR is KVM's #GP, no exit.
    assert guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args[0] == 13

    vm = system.create_vm()
    vm.enable_user_msr_exits(X.KVM_MSR_EXIT_REASON_UNKNOWN)
    vcpu = vm.create_vcpu()
    vcpu.load(image)
    assert guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args[0] == 13   # INVAL: #GP
    ex = vcpu.run()
    assert isinstance(ex, X.RdMsr) and ex.index == MSR_ABSENT
    assert ex.msr_reason == X.KVM_MSR_EXIT_REASON_UNKNOWN
    ex.data = 0x55AA
    assert guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args[:2] == (NO_VECTOR, 0x55AA)


def test_msr_filter_validation_and_default_deny(system):
    """kvm_vm_ioctl_set_msr_filter / kvm_add_msr_filter / kvm_msr_allowed."""
    vm = system.create_vm()
    R = uapi.KVM_MSR_FILTER_READ
    assert _errno(vm.set_msr_filter, [MsrFilterRange(0, 0, 1, b"\0")]) == errno.EINVAL
    too_big = uapi.KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8 + 64
    assert _errno(vm.set_msr_filter,
                  [MsrFilterRange(R, 0, too_big, bytes(too_big // 8))]) == errno.EINVAL
    vm.set_msr_filter([MsrFilterRange(R, 0, 0, b"")])                # empty: ignored
    # Default deny needs a range (else EINVAL). Denied: guest accesses #GP (pass-through
    # MSRs too); the host's KVM_GET_MSRS is not filtered.
    assert _errno(vm.set_msr_filter, [], default_allow=False) == errno.EINVAL
    vm.set_msr_filter([MsrFilterRange(R, 0x10, 1, b"\1")], default_allow=False)
    vcpu = vm.create_vcpu()

    def body(a):
        for msr in (MSR_SYSENTER_CS, MSR_FS_BASE):
            a.rdmsr_safe(msr)
            a.sync("r9")
        a.done()
    image = guest.program(body)
    vcpu.load(image)
    vcpu.set_msr(MSR_FS_BASE, 0x1000)               # after load: SREGS set FS.base
    for _ in range(2):
        assert guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC).args[0] == 13
    assert vcpu.get_msr(MSR_FS_BASE) == 0x1000


def test_every_x86_exit_reason_has_its_type():
    """One typed exit per KVM_EXIT_* an x86 KVM gives, decoded from struct kvm_run's
    union as the kernel lays it out (the /dev/kvm decoder; the model shares the types)."""
    import struct

    from pykvm.devkvm.vcpu import _decode_other_exit
    base = uapi.KVM_RUN_EXIT
    run = bytearray(base + 256)

    def decode(reason, fmt="", *vals):
        run[base:] = bytes(256)
        if fmt:
            struct.pack_into(fmt, run, base, *vals)
        return _decode_other_exit(reason, run, base)

    assert decode(X.KVM_EXIT_UNKNOWN, "<Q", 0x30) == X.UnknownExit(0x30)
    assert decode(X.KVM_EXIT_EXCEPTION, "<II", 13, 4) == X.GuestException(13, 4)
    assert decode(X.KVM_EXIT_DEBUG, "<IIQQQ", 1, 0, 0x1000, 0xFFFF0FF0, 0x400) == \
        X.Debug(1, 0x1000, 0xFFFF0FF0, 0x400)
    ev = decode(X.KVM_EXIT_SYSTEM_EVENT, "<IIQQ", 2, 2, 7, 9)
    assert ev == X.SystemEvent(2, (7, 9)) and ev.reason == X.KVM_EXIT_SYSTEM_EVENT
    assert decode(X.KVM_EXIT_IOAPIC_EOI, "<B", 0x31) == X.IoapicEoi(0x31)
    assert decode(X.KVM_EXIT_NOTIFY, "<I", 1) == X.Notify(1)
    assert decode(X.KVM_EXIT_MEMORY_FAULT, "<QQQ", 8, 0x5000, 0x1000) == \
        X.MemoryFault(8, 0x5000, 0x1000)
    assert decode(X.KVM_EXIT_HYPERV, "<I", 1).type == 1
    assert decode(X.KVM_EXIT_XEN, "<I", 1).type == 1
    assert isinstance(decode(X.KVM_EXIT_TDX), X.Tdx)
    for reason, cls in ((7, X.IrqWindowOpen), (11, X.SetTpr), (12, X.TprAccess),
                        (16, X.Nmi), (31, X.DirtyRingFull), (32, X.ApResetHold),
                        (33, X.X86BusLock)):
        ex = decode(reason)
        assert isinstance(ex, cls) and ex.reason == reason
        assert X.exit_name(reason).split()[0] != "UNKNOWN"
    assert decode(0x1234) == X.Unsupported(0x1234)          # another architecture's
