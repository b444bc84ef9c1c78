"""The in-kernel LAPIC's TSC-deadline timer and the halted vCPU's MP state, as upstream's
lapic.c and x86.c have them: IA32_TSC_DEADLINE takes effect only in TSC-deadline mode,
the expiry wakes a halted vCPU only with the APIC and its LVT timer entry enabled, and a
vCPU that halted (or waits for INIT/SIPI) and was not woken says so in KVM_GET_MP_STATE."""
import errno

import pytest

import pykvm
from pykvm import exits as X
from pykvm.devkvm import uapi

MSR_APICBASE, APIC_EXTD = 0x1B, 1 << 10
TSC_DEADLINE = 0x6E0
X2APIC_SPIV, X2APIC_LVTT = 0x80F, 0x832
SPIV_ON = (1 << 8) | 0xFF
LVT_MASKED = 1 << 16
ONESHOT, TSCDEADLINE = 0 << 17, 2 << 17
VECTOR = 0xEC
PORT = 0xE1
HLT_OUT = bytes.fromhex("f4e6e1")        # HLT; OUT 0xe1, al
CPU = 1


def _vcpu(vendor, lvtt=None, code=HLT_OUT):
    """A vCPU with an in-kernel LAPIC on pCPU 1, in x2APIC mode with the APIC enabled
    and LVTT as given (None: left as reset has it, one-shot and masked)."""
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    vm.create_irqchip()
    vcpu = vm.create_vcpu(cpu=CPU)
    vcpu.load(code)
    base = vcpu.get_msr(MSR_APICBASE)
    assert vcpu.set_msrs({MSR_APICBASE: base | APIC_EXTD, X2APIC_SPIV: SPIV_ON}) == 2
    if lvtt is not None:
        assert vcpu.set_msrs({X2APIC_LVTT: lvtt}) == 1
    return m, vcpu


def test_tsc_deadline_needs_tsc_deadline_mode(vendor):
    m, vcpu = _vcpu(vendor)
    # One-shot mode (the reset value): the write is dropped, the MSR reads 0.
    assert vcpu.set_msrs({TSC_DEADLINE: 5000}) == 1
    assert vcpu.get_msr(TSC_DEADLINE) == 0
    vcpu.set_msrs({X2APIC_LVTT: TSCDEADLINE | VECTOR})
    vcpu.set_msrs({TSC_DEADLINE: 5000})
    assert vcpu.get_msr(TSC_DEADLINE) == 5000
    # Leaving TSC-deadline mode drops the deadline (apic_update_lvtt), coming back too.
    vcpu.set_msrs({X2APIC_LVTT: ONESHOT | VECTOR})
    vcpu.set_msrs({X2APIC_LVTT: TSCDEADLINE | VECTOR})
    assert vcpu.get_msr(TSC_DEADLINE) == 0
    # Only a CPUID with TSC_DEADLINE_TIMER lets the guest select the mode.
    cpuid = [e if e.function != 1 else
             type(e)(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx & ~(1 << 24), e.edx)
             for e in vcpu.get_cpuid()]
    vcpu.set_cpuid(cpuid)
    vcpu.set_msrs({X2APIC_LVTT: TSCDEADLINE | VECTOR})
    assert vcpu.get_msr(X2APIC_LVTT) & (3 << 17) == ONESHOT
    assert m.host_bugs == 0


def test_the_deadline_wakes_a_halted_vcpu_and_is_consumed(vendor):
    m, vcpu = _vcpu(vendor, TSCDEADLINE | VECTOR)
    deadline = m.cpu_tsc(CPU) + 2_100_000                 # 1 ms ahead
    vcpu.set_msrs({TSC_DEADLINE: deadline})
    ex = vcpu.run()
    assert isinstance(ex, X.Io) and ex.port == PORT       # past the HLT
    assert m.cpu_tsc(CPU) == deadline                      # the pCPU idled to it
    st = vcpu.stats()
    assert st["halt_exits"] == 1 and st["halt_wakeup"] == 1
    assert vcpu.get_mp_state() == uapi.KVM_MP_STATE_RUNNABLE
    # The expiry was injected: a TSC deadline fires once.
    assert vcpu.get_msr(TSC_DEADLINE) == 0
    assert m.host_bugs == 0 and m.check() is None


def test_a_deadline_already_past_does_not_halt_at_all(vendor):
    m, vcpu = _vcpu(vendor, TSCDEADLINE | VECTOR, HLT_OUT + bytes.fromhex("ebfb"))  # loop
    vcpu.set_msrs({TSC_DEADLINE: 21_000})
    assert isinstance(vcpu.run(), X.Io) and m.cpu_tsc(CPU) == 21_000
    vcpu.set_msrs({TSC_DEADLINE: 5})                      # the pCPU's clock is past it
    assert isinstance(vcpu.run(), X.Io)
    # It expired on the write: the HLT found the expiry pending and did not halt.
    assert vcpu.stats()["halt_wakeup"] == 1 and m.cpu_tsc(CPU) == 21_000
    assert vcpu.stats()["halt_exits"] == 2


def test_a_masked_timer_leaves_the_vcpu_halted(vendor):
    """The timer still expires, but a masked LVT entry raises nothing: the halt goes on
    until the run's alarm, and KVM_GET_MP_STATE says HALTED until userspace says
    otherwise (KVM_SET_MP_STATE RUNNABLE: the guest goes on after its HLT)."""
    m, vcpu = _vcpu(vendor, TSCDEADLINE | LVT_MASKED | VECTOR)
    deadline = m.cpu_tsc(CPU) + 21_000
    vcpu.set_msrs({TSC_DEADLINE: deadline})
    assert isinstance(vcpu.run(), X.Intr)
    assert m.cpu_tsc(CPU) == deadline
    assert vcpu.get_mp_state() == uapi.KVM_MP_STATE_HALTED
    assert vcpu.get_msr(TSC_DEADLINE) == deadline          # never injected
    assert isinstance(vcpu.run(), X.Intr)                  # still halted
    assert vcpu.stats()["halt_exits"] == 1
    vcpu.set_mp_state(uapi.KVM_MP_STATE_RUNNABLE)
    ex = vcpu.run()
    assert isinstance(ex, X.Io) and ex.port == PORT
    assert m.host_bugs == 0 and m.check() is None


def test_a_software_disabled_apic_does_not_wake_either(vendor):
    m, vcpu = _vcpu(vendor, TSCDEADLINE | VECTOR)
    vcpu.set_msrs({TSC_DEADLINE: m.cpu_tsc(CPU) + 21_000})
    vcpu.set_msrs({X2APIC_SPIV: 0xFF})                    # masks every LVT entry
    assert vcpu.get_msr(X2APIC_LVTT) & LVT_MASKED
    assert isinstance(vcpu.run(), X.Intr)
    assert vcpu.get_mp_state() == uapi.KVM_MP_STATE_HALTED


def test_an_ap_waits_for_init_sipi_in_the_kernel(vendor):
    """An AP of an in-kernel irqchip blocks in KVM_RUN (kvm_vcpu_block); nothing sends
    INIT/SIPI, so its pCPU idles and the run's alarm ends the wait (EINTR). A kick wakes
    it without a signal: KVM_RUN fails with EAGAIN and it still waits."""
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    vm.create_irqchip()
    vm.create_vcpu(cpu=0)
    ap = vm.create_vcpu(cpu=CPU)
    ap.load(HLT_OUT)
    assert isinstance(ap.run(), X.Intr)
    assert ap.get_mp_state() == uapi.KVM_MP_STATE_UNINITIALIZED
    assert ap.stats()["exits"] == 0
    ap.kick_after(10_000)
    with pytest.raises(pykvm.PykvmError) as e:
        ap.run()
    assert e.value.errno == errno.EAGAIN
    assert ap.get_mp_state() == uapi.KVM_MP_STATE_UNINITIALIZED
    assert m.host_bugs == 0


def test_init_received_stays_waiting_whatever_wakes_it(vendor):
    """KVM_SET_MP_STATE INIT_RECEIVED: the vCPU waits for a SIPI; a kick makes it
    runnable by events but not running, and the run ends on its alarm (no hang)."""
    m, vcpu = _vcpu(vendor)
    vcpu.set_mp_state(uapi.KVM_MP_STATE_INIT_RECEIVED)
    assert isinstance(vcpu.run(), X.Intr)
    vcpu.kick_after(10_000)
    assert isinstance(vcpu.run(), X.Intr)
    assert isinstance(vcpu.run(), X.Intr)
    assert vcpu.get_mp_state() == uapi.KVM_MP_STATE_INIT_RECEIVED
    assert vcpu.stats()["exits"] == 0


def test_the_timer_follows_a_migrated_vcpu(vendor):
    """SVM keeps the deadline on a host hrtimer while the guest runs; when the vCPU
    thread moves, KVM_REQ_MIGRATE_TIMER re-arms it on the new pCPU, whose idle loop then
    wakes the halt (VMX moves it there when the vCPU blocks)."""
    m, vcpu = _vcpu(vendor, TSCDEADLINE | VECTOR)
    vcpu.set_msrs({TSC_DEADLINE: 21_000})
    vcpu.migrate(0)
    ex = vcpu.run()
    assert isinstance(ex, X.Io) and ex.port == PORT
    assert m.cpu_tsc(0) == 21_000 and m.cpu_tsc(CPU) == 0
    assert m.host_bugs == 0
