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
])
def test_exact_event_counts(vendor, name, expect):
    m, s = _start(vendor, name)
    if s is None:
        return
    ev = s.run(5)
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
