"""A simulated Machine driven as a VMM drives KVM: one thread per vCPU, two of them on
one pCPU, while other threads migrate vCPUs, schedule other tasks, read MSRs and costs,
and create and destroy VMs. Every guest must read back what it wrote, KVM_GET_MSRS must
agree, the oracle must stay clean and no host WARN may fire (Machine's docstring has the
rule: a pCPU runs one thing at a time; calls meant for one pCPU are serialized in
arrival order, vCPUs on different pCPUs run in parallel). tests/test_sanitizers.py runs
this file under AddressSanitizer and UBSan as well."""
import threading

import pytest

import pykvm
from pykvm import exits, guest
from pykvm.devkvm.uapi import KVM_MP_STATE_RUNNABLE
from pykvm.guest import UcallCmd
from pykvm.guest.layout import STACK_TOP

KERNEL_GS_BASE = 0xC0000102
TSC_AUX = 0xC0000103
MARK = 0x7800                  # in the standard image's data page


@guest.program
def WRITE_READ(a):
    """Loop: write this vCPU's KERNEL_GS_BASE (R13) and TSC_AUX (R14), spin, read both
    back and report them with what they should be."""
    top = a.here("top")
    a.wrmsr_safe(KERNEL_GS_BASE, "r13")
    a.wrmsr_safe(TSC_AUX, "r14")
    a.mov("ecx", 3000)
    spin = a.here("spin")
    a.dec("ecx")
    a.jnz(spin)
    a.rdmsr_safe(KERNEL_GS_BASE)
    a.mov("rbx", "rax")
    a.rdmsr_safe(TSC_AUX)
    a.sync("rbx", "rax", "r13")
    a.jmp(top)


def _own_stack(v, i):
    """vCPUs of one VM share its memory: each needs a stack of its own, or one's ucall
    pushes land where another pops its arguments (a guest race, not a leak)."""
    r = v.get_regs()
    r.rsp = STACK_TOP - i * 0x1000
    v.set_regs(r)


def _vcpu(vm, cpu, i):
    v = vm.create_vcpu(cpu=cpu)
    v.load(WRITE_READ)
    _own_stack(v, i)
    r = v.get_regs()
    r.r13, r.r14 = 0xFFFF900000000000 + (i << 24), 0x100 + i
    v.set_regs(r)
    return v, r.r13, r.r14


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_stress_threads_and_vcpus(vendor):
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    pins = [0, 0, 0, 1, 1]          # three vCPU threads meant for pCPU 0, two for pCPU 1
    vcpus = [_vcpu(vm, cpu, i) for i, cpu in enumerate(pins)]
    errors, rounds = [], [0] * len(vcpus)
    stop = threading.Event()

    def vcpu_thread(i):
        v, kgs, aux = vcpus[i]
        try:
            for n in range(150):
                uc = guest.run_ucall(v, WRITE_READ, UcallCmd.SYNC)
                if tuple(uc.args) != (kgs, aux, kgs):
                    errors.append(f"vcpu{i} run {n}: guest read {[hex(x) for x in uc.args]}")
                if n % 10 == 0:
                    n_read, got = v.get_msrs([KERNEL_GS_BASE, TSC_AUX])
                    if (n_read, got.get(KERNEL_GS_BASE), got.get(TSC_AUX)) != (2, kgs, aux):
                        errors.append(f"vcpu{i} run {n}: KVM_GET_MSRS gave {got}")
                if i == 4 and n % 40 == 20:
                    v.migrate(1 - v.cpu)        # a thread moving between pCPUs
                rounds[i] += 1
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(f"vcpu{i}: {e!r}")

    def host_noise():
        try:
            while not stop.is_set():
                m.run_other_task(0)
                m.run_other_task(1)
                m.read_cpu_msr(0, KERNEL_GS_BASE)
                m.costs()
                with m.create_vm() as other:        # creation, memslots, destruction
                    other.add_memory(0, 0x10000)
                    other.create_vcpu(cpu=0)
        except Exception as e:  # noqa: BLE001
            errors.append(f"host: {e!r}")

    threads = [threading.Thread(target=vcpu_thread, args=(i,)) for i in range(len(vcpus))]
    noise = threading.Thread(target=host_noise)
    noise.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    stop.set()
    noise.join(timeout=300)
    assert not any(t.is_alive() for t in threads + [noise]), "a thread hung"
    assert errors == []
    assert rounds == [150] * len(vcpus)
    assert m.check() is None
    assert m.host_bugs == 0


@guest.program
def HALT_SYNC(a):
    """Loop: HLT (in KVM: the VM has an in-kernel LAPIC), then report."""
    top = a.here("top")
    a.hlt()
    a.sync()
    a.jmp(top)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_stress_halting_vcpus_with_timers_and_kernel_threads(vendor):
    """vCPUs that halt in KVM and are woken by kick timers on their pCPU (halt polling,
    the idle task, wake-ups), two on pCPU 0, one moving between pCPUs with its timer
    armed, while another thread runs kernel threads and user tasks on both pCPUs and
    reads their clocks. Every halt must end in the guest's SYNC, nothing may fire on a
    freed or foreign timer, no WARN, a clean oracle."""
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    vm.create_irqchip()
    vcpus = []
    for cpu in (0, 0, 1):
        v = vm.create_vcpu(cpu=cpu)
        v.load(HALT_SYNC)
        _own_stack(v, len(vcpus))
        if vcpus:                       # with the in-kernel LAPIC, APs wait for INIT/SIPI
            v.set_mp_state(KVM_MP_STATE_RUNNABLE)
        v.kick_every(20_000 + 5_000 * len(vcpus))
        vcpus.append(v)
    errors, rounds = [], [0] * len(vcpus)
    stop = threading.Event()

    def vcpu_thread(i):
        v = vcpus[i]
        try:
            for n in range(120):
                if n % 15 == 7:
                    ex, _ = v.run_rescheduled(by="kthread" if n % 2 else "task")
                    uc = guest.get_ucall(v, ex, HALT_SYNC)
                else:
                    uc = guest.run_ucall(v, HALT_SYNC)
                if uc.cmd != UcallCmd.SYNC:
                    errors.append(f"vcpu{i} run {n}: {uc.cmd}")
                if i == 2 and n % 30 == 10:
                    v.migrate(1 - v.cpu)        # its kick timer goes with it
                rounds[i] += 1
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            errors.append(f"vcpu{i}: {e!r}")

    def host_noise():
        try:
            while not stop.is_set():
                for cpu in (0, 1):
                    m.run_kthread(cpu)
                    m.run_other_task(cpu)
                    m.cpu_tsc(cpu)
        except Exception as e:  # noqa: BLE001
            errors.append(f"host: {e!r}")

    threads = [threading.Thread(target=vcpu_thread, args=(i,)) for i in range(len(vcpus))]
    noise = threading.Thread(target=host_noise)
    noise.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    stop.set()
    noise.join(timeout=300)
    assert not any(t.is_alive() for t in threads + [noise]), "a thread hung"
    assert errors == []
    assert rounds == [120] * len(vcpus)
    assert all(v.stats()["halt_wakeup"] + v.stats()["halt_successful_poll"] > 0
               for v in vcpus)
    vm.close()                      # frees vCPUs whose kick timers are still armed
    idle = m.create_vm()
    idle.create_irqchip()
    for cpu in (0, 1):              # a halt nothing wakes: the idle loop walks the CPU's
        v = idle.create_vcpu(cpu=cpu)   # timers, where a freed one would be found
        v.load(HALT_SYNC)
        assert isinstance(v.run(), exits.Intr)
    assert m.check() is None
    assert m.host_bugs == 0


@guest.program
def MARK_THEN_SPIN(a):
    """Store 1 at MARK, then spin forever: a run that only a signal ends."""
    a.mov("eax", 1)
    a.mov(pykvm.guest.asm.qword(MARK), "rax")
    a.jmp(a.here("spin"))


def test_one_pcpu_serializes_and_other_pcpus_run_in_parallel():
    """vCPU A spins with no instruction bound on pCPU 0. A vCPU meant for pCPU 0 waits for
    it (the pCPU runs one thing at a time); a vCPU on pCPU 1 runs meanwhile (no global
    lock, no GIL held in C). A's run ends only when it is kicked, with Intr."""
    m = pykvm.Machine(cpus=2, vendor="vmx")
    spin_vm, vm = m.create_vm(), m.create_vm()
    a = spin_vm.create_vcpu(cpu=0)
    a.load(MARK_THEN_SPIN)
    b, _, _ = _vcpu(vm, 0, 1)
    c, _, _ = _vcpu(vm, 1, 2)
    b_regs, c_regs = b.get_regs(), c.get_regs()
    order, done = [], {}

    def run_a():
        done["a"] = a.run(max_insns=0)
        order.append("a")

    def run_b():
        b.set_regs(b_regs)
        done["b"] = guest.run_ucall(b, WRITE_READ, UcallCmd.SYNC)
        order.append("b")

    def run_c():
        c.set_regs(c_regs)
        done["c"] = [guest.run_ucall(c, WRITE_READ, UcallCmd.SYNC) for _ in range(20)]
        order.append("c")

    ta = threading.Thread(target=run_a)
    ta.start()
    for _ in range(100000):                  # A is in the guest once it has stored MARK
        if spin_vm.memory.read_u64(MARK) == 1:
            break
        threading.Event().wait(0.001)
    assert spin_vm.memory.read_u64(MARK) == 1
    tb, tc = threading.Thread(target=run_b), threading.Thread(target=run_c)
    tb.start()
    tc.start()
    tc.join(timeout=120)
    assert order == ["c"] and len(done["c"]) == 20      # pCPU 1 ran while A held pCPU 0
    tb.join(timeout=0.5)
    assert "b" not in done                              # B waits for pCPU 0
    a.kick()
    ta.join(timeout=120)
    tb.join(timeout=120)
    assert isinstance(done["a"], exits.Intr)
    assert order[0] == "c" and sorted(order[1:]) == ["a", "b"]   # B ran once A let go
    assert m.check() is None and m.host_bugs == 0


def test_close_stops_a_running_vcpu():
    """Closing a VM whose vCPU runs unbounded on another thread kicks it and waits for the
    run to end before freeing anything; the vCPU is unusable afterwards."""
    m = pykvm.Machine(cpus=1, vendor="svm")
    vm = m.create_vm()
    v = vm.create_vcpu()
    v.load(MARK_THEN_SPIN)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("exit", v.run(max_insns=0)))
    t.start()
    while vm.memory.read_u64(MARK) != 1:
        threading.Event().wait(0.001)
    vm.close()
    t.join(timeout=120)
    assert isinstance(out["exit"], exits.Intr)
    with pytest.raises(pykvm.PykvmError, match="closed"):
        v.run()
