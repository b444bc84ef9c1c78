"""Host events placed by a scenario of one's own (pykvm.events), without the explorer:
the paths they reach and what the oracle says about them. Selftest style."""
import pytest

import pykvm
from pykvm import exits as X
from pykvm import guest
from pykvm.errors import InvalidConfiguration
from pykvm.events import Inject, parse_point


def _vcpu(m, body=lambda a: (a.sync(), a.sync(), a.sync(), a.done()), cpu=0, vm=None):
    image = guest.program(body)
    vcpu = (vm or m.create_vm()).create_vcpu(cpu=cpu)
    vcpu.load(image)
    return vcpu


def _vmwrites(m, path="VCPU_RUN"):
    return m.costs().get(path, {}).get("ops", {}).get("VMWRITE", 0)


@pytest.mark.parametrize("forget", [False, True])
def test_host_cr3_refreshed_before_entry(forget):
    """A CR3 change without a reschedule while guest state is being prepared (IRQs on:
    a LAM-enable IPI) makes vmx_vcpu_run rewrite HOST_CR3 before VM-entry; without the
    refresh the VM-exit loads the stale CR3 and the host runs on it."""
    m = pykvm.Machine(cpus=1, vendor="vmx", params={"forget_host_cr3_refresh": forget})
    vcpu = _vcpu(m)
    vcpu.run()
    m.reset_costs()
    vcpu.run()
    plain = _vmwrites(m)
    m.reset_costs()
    # Saving the host's segments: preemption off, IRQs on.
    vcpu.run(inject=Inject("cr3", "PREPARE_SWITCH:MOV_SREG"))
    assert vcpu.last_injection_fired
    if forget:
        assert m.check().reg == "CR3"
        assert _vmwrites(m) == plain
    else:
        assert m.check() is None
        assert _vmwrites(m) == plain + 1    # HOST_CR3


@pytest.mark.parametrize("forget", [False, True])
def test_host_cr4_refreshed_before_entry(forget):
    """prctl(PR_SET_TSC) by the VMM thread sets CR4.TSD for it: HOST_CR4 must follow."""
    m = pykvm.Machine(cpus=1, vendor="vmx", params={"forget_host_cr4_refresh": forget})
    vcpu = _vcpu(m)
    vcpu.run()
    m.reset_costs()
    vcpu.run()
    plain = _vmwrites(m)
    vcpu.change_task("set_tsc")
    m.reset_costs()
    vcpu.run()
    if forget:
        v = m.check()
        assert (v.reg, v.obs) == ("CR4", "host user mode")
    else:
        assert m.check() is None
        assert _vmwrites(m) == plain + 1    # HOST_CR4


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_failed_vm_entry(vendor):
    """Virtualization off under KVM: the entry fails (VMX: VMfail; SVM: VMRUN faults,
    SVM_EXIT_ERR), and userspace gets KVM_EXIT_FAIL_ENTRY."""
    m = pykvm.Machine(cpus=1, vendor=vendor)
    vcpu = _vcpu(m)
    m.disable_virtualization(0)
    ex = vcpu.run()
    assert isinstance(ex, X.FailEntry), ex
    assert m.host_bugs > 0          # a VMX instruction failing / VMRUN faulting: a WARN


def test_machine_check_at_a_named_point():
    """#MC is not held by GIF: right before VMRUN the guest's GS base is loaded (the
    guest VMLOAD). A paranoid entry that trusts a kernel-looking GS_BASE (before v5.9)
    uses it; with FSGSBASE it computes the per-cpu base and nothing is found."""
    for params, leak in (({"paranoid_entry_fsgsbase": False}, True), ({}, False)):
        m = pykvm.Machine(cpus=1, vendor="svm", params=params)
        vcpu = _vcpu(m, lambda a: (a.wrmsr_safe(0xC0000101, 0xFFFFA00000000000), a.sync(),
                                   a.sync(), a.done()))
        vcpu.run()
        vcpu.run(inject=Inject("mc", "VCPU_RUN:VMRUN"))
        assert vcpu.last_injection_fired
        v = m.check()
        assert (v is not None) == leak, v
        if leak:
            assert (v.reg, v.obs, v.actual) == ("GS_BASE", "NMI/#MC handler",
                                                0xFFFFA00000000000)


def test_preemption_by_another_vms_vcpu():
    """Another VM's vCPU thread takes the pCPU in the middle of a KVM_RUN (with guest
    state loaded), runs its own KVM_RUN, and the first thread comes back: clean."""
    m = pykvm.Machine(cpus=1, vendor="vmx")
    a = _vcpu(m)
    b = _vcpu(m)
    a.run()
    ex = a.run(inject=Inject("preempt_vm", "HANDLE_EXIT:*", other=b))
    assert a.last_injection_fired and isinstance(ex, X.Io)
    assert b.stats()["exits"] > 0 and a.stats()["preemptions"] == 1
    assert m.check() is None


def test_host_task_user_mode_instructions():
    """A host program's RDTSCP/RDPID (getcpu), RD*BASE and a SYSCALL: clean on upstream;
    with a guest LSTAR left in hardware its SYSCALL would land in the guest's handler."""
    m = pykvm.Machine(cpus=1, vendor="vmx")
    _vcpu(m).run()
    m.host_user_insns(0)
    assert m.check() is None
    m = pykvm.Machine(cpus=1, vendor="vmx", params={"forget_lstar": True})
    vcpu = _vcpu(m, lambda a: (a.wrmsr_safe(0xC0000082, 0xFFFF800000001000), a.sync(),
                               a.done()))
    vcpu.run()
    before = m.check().count
    m.host_user_insns(0)
    assert m.check().count > before and m.check().reg == "LSTAR"


def test_vmm_thread_changes_its_fs_base():
    """WRFSBASE in user mode: the kernel learns the VMM's new FS base only at its next
    context switch, so KVM must read the live register (current_save_fsgs)."""
    for bug in (False, True):
        m = pykvm.Machine(cpus=1, vendor="vmx", params={"bug_no_current_save_fsgs": bug})
        vcpu = _vcpu(m)
        vcpu.run()
        vcpu.change_task("wrfsbase")
        vcpu.run()
        v = m.check()
        assert (v is not None) == bug, v
        if bug:
            assert (v.reg, v.obs) == ("FS_BASE", "host user mode")


def test_point_names_are_checked():
    assert parse_point("VCPU_RUN:WRMSR SPEC_CTRL#2")[1:] != (-1, 0, 1)
    for bad in ("nowhere", "NOPATH:WRMSR", "VCPU_RUN:FLY", "VCPU_RUN:WRMSR NOMSR"):
        with pytest.raises(InvalidConfiguration):
            parse_point(bad)
    with pytest.raises(InvalidConfiguration):
        Inject("preempt_vm", 3)
    with pytest.raises(InvalidConfiguration):
        Inject("tickle", 3)
