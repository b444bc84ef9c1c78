"""Workloads produce the events they promise, in the numbers asked for, on both vendors,
without host bugs; the guests check their own state as they go (guest-ctxsw)."""
import pytest

import pykvm
from pykvm import workloads as W
from pykvm.errors import InvalidConfiguration


def _start(vendor, name):
    m = pykvm.Machine(cpus=2, vendor=vendor)
    if vendor == "svm" and name == "fastpath":
        # No hypervisor timer on SVM: the TSC-deadline WRMSR is an ordinary in-kernel
        # exit upstream (handle_fastpath_set_tscdeadline), so the workload refuses to run.
        with pytest.raises(InvalidConfiguration, match="no hypervisor timer"):
            W.get(name).start(m)
        return m, None
    return m, W.get(name).start(m)


@pytest.mark.parametrize("name", W.names())
def test_workload_produces_its_events(vendor, name):
    w = W.get(name)
    m, s = _start(vendor, name)
    if s is None:
        return
    n = 6
    ev = s.run(n)
    assert ev["iterations"] == n
    for event in w.promises:
        assert ev[event] > 0, f"{name} promised {event}: {ev}"
    # One iteration is one primary event (migrations: one per iteration, too).
    assert ev[w.primary] == n, ev
    assert m.host_bugs == 0


@pytest.mark.parametrize("name, expect", [
    # Each HLT, OUT or MMIO store is one exit to userspace and nothing else.
    ("hlt", {"userspace_exits": 5}),
    ("pio", {"userspace_exits": 5}),
    ("mmio", {"userspace_exits": 5}),
    # A batch of n in-kernel exits (or fast-path exits, or guest task switches) comes back
    # with one OUT: one exit to userspace per batch.
    ("cpuid", {"kernel_exits": 5, "userspace_exits": 1}),
    ("vmcall", {"kernel_exits": 5, "userspace_exits": 1}),
    ("fastpath", {"fastpath_exits": 5, "userspace_exits": 1}),
    ("guest-ctxsw", {"guest_switches": 5, "userspace_exits": 1}),
    # Every exit to userspace is followed by another task on the pCPU; KVM does not see
    # it (the vCPU was put before the thread left KVM_RUN).
    # Preempted inside KVM_RUN (after the in-kernel CPUID exit): KVM sees each one.
    ("overcommit", {"preemptions": 5, "userspace_exits": 5, "kernel_exits": 5,
                    "kvm_preemptions": 5}),
    # Every iteration moves the thread, then makes 4 exits to userspace.
    ("migrate", {"migrations": 5, "userspace_exits": 5 * W.EXITS_PER_MIGRATION}),
    # A kernel thread instead of another process: KVM sees each one the same way.
    ("kthread", {"preemptions": 5, "userspace_exits": 5, "kernel_exits": 5,
                 "kvm_preemptions": 5}),
    # Each halt follows the timer's WRMSR and is one in-kernel exit; the vCPU blocks (not
    # a preemption: the thread sleeps), nothing polls it to its end. The WRMSR is a
    # fast-path exit on VMX and an in-kernel one on SVM (no hypervisor timer:
    # handle_fastpath_set_tscdeadline's kvm_can_use_hv_timer).
    ("halt-idle", {"vmx": {"halts": 5, "kernel_exits": 5, "fastpath_exits": 5,
                           "userspace_exits": 1},
                   "svm": {"halts": 5, "kernel_exits": 10, "userspace_exits": 1}}),
    # Every halt of a settled window ends while polling.
    ("halt-kick", {"halts": 5, "halt_polls": 5, "kernel_exits": 5, "userspace_exits": 1}),
    ("efer", {"userspace_exits": 5, "kernel_exits": 5}),
    ("msr-ioctl", {"msr_ioctls": 5, "userspace_exits": 5}),
    # The new vCPUs' own exits are theirs: the session's vCPU sees none.
    ("vcpu-hotplug", {"vcpu_creations": 5}),
])
def test_exact_event_counts(vendor, name, expect):
    m, s = _start(vendor, name)
    if s is None:
        return
    ev = s.run(5)
    expect = expect.get(vendor, expect)         # per vendor where they differ
    for k in W.EVENTS:
        assert ev[k] == expect.get(k, 5 if k == "iterations" else 0), (k, ev)


def test_extra_false_leaves_out_the_host_behaviour(vendor):
    for name, event in (("overcommit", "preemptions"), ("migrate", "migrations")):
        m, s = _start(vendor, name)
        cpu = s.vcpu.cpu
        ev = s.run(4, extra=False)
        assert ev[event] == 0 and ev["userspace_exits"] > 0
        assert s.vcpu.cpu == cpu


def test_migrate_alternates_between_two_pcpus(vendor):
    m, s = _start(vendor, "migrate")
    seen = set()
    for _ in range(4):
        s.run(1)
        seen.add(s.vcpu.cpu)
    assert seen == {0, 1}


def test_guest_state_survives_the_workloads(vendor):
    """The guest's TSC_AUX and SYSCALL MSRs are still its own after many switches, and the
    pCPUs hold the host's values once the vCPU thread is back in user mode."""
    m, s = _start(vendor, "migrate")
    s.run(6)
    for msr, value in W.GUEST_MSRS.items():
        if msr != W.MSR_LSTAR:
            assert s.vcpu.get_msr(msr) == value, hex(msr)
    for cpu in range(m.nr_cpus):
        assert m.read_cpu_msr(cpu, W.MSR_TSC_AUX) == cpu
        assert m.read_cpu_msr(cpu, W.MSR_KERNEL_GS_BASE) == m.per_cpu_offset(cpu)


def test_guest_ctxsw_guest_checks_its_bases(vendor):
    """The guest asserts its user and kernel GS bases on every switch: a leak would come
    back as a GuestAssertion."""
    m, s = _start(vendor, "guest-ctxsw")
    s.run(50)
    assert s.vcpu.get_msr(W.MSR_LSTAR) == s.image.symbols["syscall_entry"]
    # The last task (49 switches after task 0: task 1) left its user GS base inactive.
    assert s.vcpu.get_msr(W.MSR_KERNEL_GS_BASE) == W.GUEST_TASK_GS + 0x1000


def test_vmcall_uses_the_vendors_instruction():
    vmx = W.get("vmcall").image("vmx").memory
    svm = W.get("vmcall").image("svm").memory
    assert bytes.fromhex("0f01c1") in vmx and bytes.fromhex("0f01c1") not in svm
    assert bytes.fromhex("0f01d9") in svm


def test_unknown_workload_and_bad_iterations():
    with pytest.raises(pykvm.InvalidConfiguration, match="no workload 'spin'; known: hlt"):
        W.get("spin")
    m, s = _start("vmx", "pio")
    with pytest.raises(pykvm.InvalidConfiguration, match="iterations"):
        s.run(0)


def test_unexpected_exit_is_reported():
    m, s = _start("vmx", "hlt")
    s.workload = W.get("mmio")        # the host now expects MMIO exits from an HLT guest
    with pytest.raises(W.WorkloadError, match="wanted Mmio, got HLT"):
        s.run(1)


@pytest.mark.parametrize("name", W.names())
def test_upstream_leaks_nothing_in_any_workload(vendor, name):
    """The oracle (Machine.check) sees no host or guest state out of place while the
    upstream switch runs the workload, with and without its host behaviour."""
    m, s = _start(vendor, name)
    if s is None:
        return
    s.run(4)
    if W.get(name).method == "extra":
        s.run(4, extra=False)
    assert m.check() is None


def test_every_workload_says_what_it_models_and_is_reportable():
    from pykvm import study
    for name, w in W.WORKLOADS.items():
        assert len(w.doc) > 80, name
        assert w.primary in study.METRICS and w.primary in study.EVENT_NAMES, name
    assert W.describe()["halt-kick"] == W.get("halt-kick").doc


def _halt_kick_session(vendor, **params):
    m = pykvm.Machine(cpus=2, vendor=vendor, params=params)
    return m, W.Session(W.get("halt-kick"), m, 1)      # no settling, no warm-up


def test_halt_polling_window_grows_as_upstream(vendor):
    """kvm_main.c: a vCPU's window starts at 0, grows to 10 us (grow_start) and doubles
    after each halt it missed; a 25 us wait is first caught by the 40 us window."""
    m, s = _halt_kick_session(vendor)
    seen = []
    for _ in range(5):
        ev = s.run(1)
        seen.append((s.vcpu.halt_poll_ns, ev["halt_polls"]))
    assert seen == [(10000, 0), (20000, 0), (40000, 0), (40000, 1), (40000, 1)]
    st = s.vcpu.stats()
    assert st["halt_attempted_poll"] == 4 and st["halt_successful_poll"] == 2
    # Three halts blocked and were woken by the kick (the 1st had no window at all).
    assert st["halt_wakeup"] == 3


def test_halt_polling_off_blocks_every_halt(vendor):
    m, s = _halt_kick_session(vendor, halt_poll_ns=0)
    for _ in range(4):
        assert s.run(1)["halt_polls"] == 0
    st = s.vcpu.stats()
    assert s.vcpu.halt_poll_ns == 0 and st["halt_attempted_poll"] == 0
    assert st["halt_wakeup"] == 4 and st["preemptions"] == 0
    assert m.check() is None


def test_halt_wakes_on_the_guests_timer_and_the_clock_moves(vendor):
    """halt-idle: the pCPU's clock advances by the guest's 1 ms to its timer's expiry."""
    m = pykvm.Machine(cpus=2, vendor=vendor)
    s = W.get("halt-idle").start(m)
    t0 = m.cpu_tsc(1)
    s.run(3)
    assert m.cpu_tsc(1) - t0 == 3 * W.HALT_IDLE_TSC
    assert m.cpu_tsc(0) == 0                    # the other pCPU never waited


def test_a_halt_nothing_wakes_ends_the_run_with_intr(vendor):
    """No timer, no kick: the idle loop has nothing to wait for, so the run ends as a
    VMM's alarm signal would end it."""
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    vm.create_irqchip()
    vcpu = vm.create_vcpu(cpu=1)
    vcpu.load(bytes.fromhex("f4"))              # HLT
    assert isinstance(vcpu.run(), pykvm.exits.Intr)
    assert m.host_bugs == 0 and m.check() is None


def test_irqchip_must_come_before_vcpus():
    m = pykvm.Machine(cpus=2, vendor="vmx")
    vm = m.create_vm()
    vm.create_vcpu()
    with pytest.raises(pykvm.InvalidConfiguration, match="after KVM_CREATE_VCPU"):
        vm.create_irqchip()
    vm2 = m.create_vm()
    vm2.create_irqchip()
    with pytest.raises(pykvm.InvalidConfiguration, match="already has an in-kernel irqchip"):
        vm2.create_irqchip()


def test_kernel_thread_leaves_the_user_return_msrs_loaded(vendor):
    """A kernel thread never returns to user mode: the guest's user-return MSR values stay
    in the CPU until the vCPU thread (or another task) returns there."""
    m, s = _start(vendor, "pio")
    cpu = s.vcpu.cpu
    s.vcpu.run(return_to_user=False)
    guest_tsc_aux = m.read_cpu_msr(cpu, W.MSR_TSC_AUX)
    assert guest_tsc_aux == W.GUEST_TSC_AUX
    m.run_kthread(cpu)
    assert m.read_cpu_msr(cpu, W.MSR_TSC_AUX) == W.GUEST_TSC_AUX
    s.vcpu.return_to_user()
    assert m.read_cpu_msr(cpu, W.MSR_TSC_AUX) == cpu
    assert m.check() is None


def test_kernel_thread_preemption_puts_and_loads_the_vcpu(vendor):
    m, s = _start(vendor, "kthread")
    before = s.vcpu.stats()["preemptions"]
    ex, hit = s.vcpu.run_rescheduled(by="kthread")
    assert hit and s.vcpu.stats()["preemptions"] == before + 1
    # The checker's injection of the same event.
    ex, hit = s.vcpu.run_preempted(2, by="kthread")
    assert hit and m.check() is None
    with pytest.raises(pykvm.InvalidConfiguration, match="by must be"):
        s.vcpu.run_rescheduled(by="irq")


def test_legacy_ibrs_host_runs_the_kernel_with_ibrs():
    m, s = _start("vmx", "pio")
    assert m.read_cpu_msr(1, 0x48) == 0
    m2 = pykvm.Machine(cpus=2, vendor="vmx", params={"kernel.kernel_ibrs": 1})
    s2 = W.get("pio").start(m2)
    s2.vcpu.run(return_to_user=False)
    assert m2.read_cpu_msr(1, 0x48) == 1        # SPEC_CTRL.IBRS in the kernel
    s2.vcpu.return_to_user()
    assert m2.read_cpu_msr(1, 0x48) == 0        # and not in user mode
    s2.run(3)
    assert m2.check() is None


def test_host_msr_snapshot_needs_the_old_msr_scheme():
    with pytest.raises(pykvm.InvalidConfiguration, match="needs user_return_msrs=0"):
        pykvm.Machine(vendor="vmx", params={"host_msrs_snapshot": 0})
    pykvm.Machine(vendor="vmx", params={"host_msrs_snapshot": 0, "user_return_msrs": 0})


def test_kick_period_is_checked():
    m, s = _halt_kick_session("vmx")
    with pytest.raises(pykvm.InvalidConfiguration, match="period_ns"):
        s.vcpu.kick_every(-1)
    s.vcpu.kick_every(0)                        # no more kicks: a halt would hang...
    assert isinstance(s.vcpu.run(), pykvm.exits.Intr)   # ...so the run's alarm ends it
    t0 = m.cpu_tsc(1)
    woken = s.vcpu.stats()["halt_wakeup"]
    s.vcpu.kick_after(100_000)                  # one kick 100 us on: the halt ends there
    s.vcpu.run()                                # (and the next halt waits for the alarm)
    assert s.vcpu.stats()["halt_wakeup"] == woken + 1
    # 100 us to the kick, then the next halt polls the 10 us its window grew to (the
    # 100 us halt was shorter than halt_poll_ns) before it blocks for good.
    assert m.cpu_tsc(1) - t0 == 210_000 + 21_000 and s.vcpu.halt_poll_ns == 10_000


def test_hotplug_reads_the_idt_only_without_the_global_base():
    from pykvm import study
    up = study.measure("vmx:upstream", "vcpu-hotplug", iterations=2)
    old = study.measure("vmx:upstream:global_host_idt=0", "vcpu-hotplug", iterations=2)
    sidt = lambda r: sum(d.get("SIDT", 0) for d in r.path_ops.values())
    assert (sidt(up), sidt(old)) == (0, 1)
