"""The checker finds every historical bug and every forgotten switch with a short trace,
and passes upstream at the same bound (WORLD-SWITCH.md section 7, issue 3)."""
import json

import pytest
from hypothesis import HealthCheck, given, settings

from pykvm import check
from pykvm.check import Step

BOUND = 3

# (vendor, params, cpu_model, register the violation names, where it is seen, steps)
VARIANTS = [
    # 7.1 (c8770e7ba63b): with a 32-bit VMM, put reloads GS with load_gs_index(), which
    # replaces the inactive GS base; reading the guest KERNEL_GS_BASE after it loses it.
    ("vmx", {"vmm_32bit_gs": True, "bug_kgs_saved_after_load_gs_index": True}, None,
     "KERNEL_GS_BASE", "guest read", 1),
    # 7.2: an NMI's paranoid entry found per-cpu data with RDPID: the guest's TSC_AUX.
    ("vmx", {"paranoid_entry_rdpid": True}, None, "TSC_AUX", "NMI/#MC handler", 1),
    ("svm", {"paranoid_entry_rdpid": True}, None, "TSC_AUX", "NMI/#MC handler", 1),
    # 7.3: a disable IPI between the WRMSR and the update of `curr` (issue 11's example:
    # one KVM_RUN with a disable IPI, once reported in 3 steps).
    ("vmx", {"uret_irqs_off": False}, None, "SYSCALL_MASK", "virtualization disabled", 1),
    ("svm", {"uret_irqs_off": False}, None, "TSC_AUX", "virtualization disabled", 1),
    # 7.4: SVM host GS base / SPEC_CTRL restored after the vmenter RET.
    ("svm", {"host_vmload_in_vmenter": False}, None, "GS_BASE", "first RET after VM-exit", 1),
    ("svm", {"spec_ctrl_in_vmenter": False}, None, "SPEC_CTRL", "first RET after VM-exit", 1),
    ("vmx", {"spec_ctrl_in_vmenter": False}, None, "SPEC_CTRL", "first RET after VM-exit", 1),
    # 7.5: restoring the host GS base after STGI: the NMI held since CLGI sees the guest's.
    # On a host whose paranoid entry trusts a kernel-looking GS_BASE (before v5.9).
    ("svm", {"vmsave_host_state": False, "tsc_aux_user_return": False,
             "host_vmload_in_vmenter": False, "ret_uses_percpu": False,
             "paranoid_entry_fsgsbase": False, "bug_gs_base_after_stgi": True}, None,
     "GS_BASE", "NMI/#MC handler", 1),
    # A variant per switched register that forgets to switch it.
    ("vmx", {"forget_star": True}, None, "STAR", "host user mode", 1),
    ("vmx", {"forget_lstar": True}, None, "LSTAR", "host user mode", 1),
    ("vmx", {"forget_syscall_mask": True}, None, "SYSCALL_MASK", "host user mode", 1),
    ("vmx", {"forget_tsc_aux": True}, None, "TSC_AUX", "host user mode", 1),
    ("svm", {"forget_tsc_aux": True}, None, "TSC_AUX", "host user mode", 1),
    ("vmx", {"forget_tsx_ctrl": True}, None, "TSX_CTRL", "virtualization disabled", 1),
    ("vmx", {"forget_efer": True}, "skylake-noloadefer", "EFER", "host user mode", 1),
    ("vmx", {"forget_kernel_gs_base": True}, None, "GS_BASE", "host user mode", 1),
    ("vmx", {"forget_host_fs_base": True}, None, "FS_BASE", "host user mode", 1),
    ("vmx", {"forget_host_gs_base": True}, None, "GS_BASE", "first RET after VM-exit", 1),
    ("vmx", {"forget_gdt_reload": True}, None, "GDTR.limit", "host user mode", 1),
    ("vmx", {"forget_host_tr_base": True}, None, "TR.base", "per-cpu access", 3),
    ("vmx", {"forget_host_sysenter_esp": True}, None, "SYSENTER_ESP", "host user mode", 3),
    ("vmx", {"forget_spec_ctrl": True}, None, "SPEC_CTRL", "first RET after VM-exit", 1),
    ("svm", {"forget_spec_ctrl": True}, None, "SPEC_CTRL", "first RET after VM-exit", 1),
    ("svm", {"forget_host_vmload": True}, None, "GS_BASE", "first RET after VM-exit", 1),
    # Issue 11's classes. Leaks toward the guest, seen only by its direct observations
    # (RDPID, SYSCALL, RDGSBASE): KVM answers an RDMSR from its own copy.
    ("vmx", {"bug_uret_curr_stale": True}, None, "TSC_AUX", "guest read", 1),
    ("svm", {"bug_uret_curr_stale": True}, None, "TSC_AUX", "guest read", 1),
    ("vmx", {"bug_uret_loaded_kept_across_put": True}, None, "TSC_AUX", "guest read", 2),
    ("svm", {"bug_guest_state_loaded_kept_across_put": True}, None, "TSC_AUX",
     "guest read", 1),
    # The guest sets EFER.SCE and executes SYSCALL in the same run: the reload of the
    # user-return MSRs must not sit below an early return.
    ("vmx", {"bug_uret_reload_below_loaded_check": True}, None, "STAR", "guest read", 2),
    # A stale HOST_CR3/CR4: a CR3 change without a reschedule, prctl(PR_SET_TSC).
    ("vmx", {"forget_host_cr3_refresh": True}, None, "CR3", "first RET after VM-exit", 1),
    ("vmx", {"bug_host_cr3_refresh_in_prepare": True}, None, "CR3",
     "first RET after VM-exit", 1),
    ("vmx", {"forget_host_cr4_refresh": True}, None, "CR4", "host user mode", 2),
    # Segments and descriptor tables the host relies on.
    ("vmx", {"forget_host_ds_es": True}, None, "DS selector", "host user mode", 1),
    ("vmx", {"forget_ldt_reload": True, "vmm_ldt": True}, None, "LDTR selector",
     "host user mode", 1),
    # The VMM wrote its FS base with WRFSBASE in user mode: thread.fsbase is stale.
    ("vmx", {"bug_no_current_save_fsgs": True}, None, "FS_BASE", "host user mode", 2),
]


@pytest.mark.parametrize("vendor, params, cpu_model, reg, obs, length", VARIANTS,
                         ids=[f"{v}-{'+'.join(p)}" for v, p, *_ in VARIANTS])
def test_variant_is_caught_with_a_minimal_trace(vendor, params, cpu_model, reg, obs, length):
    r = check.check(vendor, params=params, cpu_model=cpu_model, bound=BOUND, walks=500)
    assert r.verdict == "violation", r.report()
    assert (r.violation.reg, r.violation.obs) == (reg, obs), r.report()
    # Iterative deepening finds a shortest sequence; the shrinker makes it 1-minimal.
    assert len(r.steps) == length, r.report()
    c = check.Checker(**r.config)
    assert c.is_minimal(r.steps, r.violation), r.report()
    text = "\n".join(check._format_trace(r.trace()))
    assert "--- step 1" in text and f"*** {reg} wrong at {obs}" in text, text


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_upstream_passes_at_the_bound(vendor):
    r = check.check(vendor, bound=BOUND, walks=300)
    assert r.verdict == "pass", r.report()
    assert r.depth_done == BOUND and r.states > 0 and r.events > 0


@pytest.mark.parametrize("vendor, preset", [("svm", "v5.15"), ("svm", "v5.10"),
                                            ("vmx", "v5.18")])
def test_pre_2022_eras_run_a_ret_with_the_guest_spec_ctrl(vendor, preset):
    """Before the 2022 fixes (fc02735b14ff; the SVM vmenter series) the host SPEC_CTRL
    came back only after a RET: 7.4 of WORLD-SWITCH.md, found in the eras themselves."""
    r = check.check(vendor, preset=preset, bound=BOUND, walks=300)
    assert (r.violation.reg, r.violation.obs) == ("SPEC_CTRL", "first RET after VM-exit")


def test_dec_2020_alternatives():
    """'VMLOAD before STGI' is safe (on a kernel whose RETs do not touch per-cpu data, as
    in 2020). 'WRGSBASE before STGI, VMLOAD on put' is not: VMLOAD also loads TR, so the
    host kernel runs until vcpu_put with the guest's TR, and an NMI there would be
    delivered through the guest's TSS (its IST stacks)."""
    r = check.check("svm", params={"host_vmload_in_vmenter": False, "ret_uses_percpu": False},
                    bound=BOUND, walks=300)
    assert r.verdict == "pass", r.report()
    wr = {"host_gs_wrgsbase": True, "ret_uses_percpu": False}
    r = check.check("svm", params=wr, bound=BOUND, walks=300, injections=["nmi"])
    assert (r.violation.reg, r.violation.obs) == ("TR selector", "per-cpu access"), r.report()
    assert [str(s) for s in r.steps] == ["KVM_RUN vcpu0"]


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_32bit_vmm_passes_upstream(vendor):
    r = check.check(vendor, params={"vmm_32bit_gs": True}, bound=BOUND, walks=300)
    assert r.verdict == "pass", r.report()


def test_two_vcpus_and_migration_pass_upstream():
    r = check.check("vmx", vcpus=2, bound=2, walks=200)
    assert r.verdict == "pass", r.report()


def test_violation_replays_from_json(tmp_path):
    r = check.check("vmx", params={"forget_host_tr_base": True}, bound=BOUND, walks=100)
    assert [s.kind for s in r.steps] == ["run", "migrate", "run"]
    path = tmp_path / "v.json"
    r.save(path)
    again = check.replay(str(path))
    assert again.violation == r.violation
    lines = again.trace()
    text = "\n".join(check._format_trace(lines))
    assert "kvm_entry" in text and "kvm_exit" in text and "sched_switch" in text
    assert "*** TR.base" in text
    perf = again.perfetto()
    assert perf["traceEvents"] and all("ph" in e for e in perf["traceEvents"])
    json.dumps(perf)


def test_bad_configuration_refused():
    with pytest.raises(Exception, match="no parameter 'no_such_param'"):
        check.check("vmx", params={"no_such_param": True})
    with pytest.raises(Exception, match="unknown step kind"):
        check.Checker("vmx", steps=["fly"])


_checkers = {}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=check.steps_strategy(vcpus=2, cpus=2, max_steps=6))
def test_property_upstream_never_leaks(steps):
    """A user-written property test with the library's strategy: any sequence of steps
    with any injected event leaves upstream KVM without a violation."""
    if "vmx" not in _checkers:
        _checkers["vmx"] = check.Checker("vmx", vcpus=2)
    c = _checkers["vmx"]
    violation, _ = c.replay(steps)
    assert violation is None, [str(s) for s in steps]


def test_step_strings_name_the_event():
    assert str(Step("run", 0, 0, "nmi", 5)) == "KVM_RUN vcpu0, nmi before host instruction 5"
    assert str(Step("migrate", 1, 0)) == "migrate vcpu1 -> CPU 0"


def test_machine_check_in_the_vmrun_window_on_a_pre_fsgsbase_host():
    """#MC is not held by GIF = 0: between VMRUN and the host VMLOAD, a paranoid entry
    that trusts a kernel-looking GS_BASE uses the guest's. With FSGSBASE (v5.9+) it sets
    GS from the CPU number and nothing is found."""
    r = check.check("svm", params={"paranoid_entry_fsgsbase": False}, bound=BOUND, walks=300)
    assert (r.violation.reg, r.violation.obs) == ("GS_BASE", "NMI/#MC handler")
    assert r.steps[-1].inject == "mc"


def test_violation_names_the_write_that_caused_it():
    """Attribution names the last write of the register, never a value that matches."""
    r = check.check("vmx", params={"forget_lstar": True}, bound=1, walks=0)
    # The guest's WRMSR LSTAR is intercepted: KVM loaded it (prepare_switch_to_guest's
    # kvm_set_user_return_msr), and no user-return notifier ever put the host's back.
    assert r.violation.cause.startswith("last written by WRMSR in kvm_set_user_return_msr"), \
        r.violation.cause
    assert r.violation.cause in str(r.violation)
    # The example: a GS base of 0 loaded from a host save area never saved (the
    # 'loaded' flag kept across put skips the VMSAVE on the new CPU) was blamed on a guest
    # register whose value happened to match. Now: the host VMLOAD that loaded it.
    c = check.Checker("svm", params={"bug_guest_state_loaded_kept_across_put": True})
    v = c.attribute([check.Step("run"), check.Step("migrate", cpu=1), check.Step("run")])
    assert (v.reg, v.actual, v.obs) == ("GS_BASE", 0, "first RET after VM-exit"), v
    assert v.cause == "last written by VMLOAD in __svm_vcpu_run (VCPU_RUN) on CPU 1, step 3"
    # Never a value that happens to match: a value from before the initial state says so.
    r = check.check("vmx", params={"forget_tsx_ctrl": True}, bound=1, walks=0)
    assert r.violation.cause == "not written since the initial state", r.report()


@pytest.mark.parametrize("vendor, cpu_model", [("svm", "zen4"), ("vmx", "icelake"),
                                               ("vmx", "skylake-noloadefer")])
def test_upstream_passes_on_every_cpu_model(vendor, cpu_model):
    """V_SPEC_CTRL (zen4), eIBRS with the host's IBRS set (icelake), EFER through
    user-return MSRs (no load-EFER controls): upstream is clean on each."""
    r = check.check(vendor, cpu_model=cpu_model, bound=BOUND, walks=300)
    assert r.verdict == "pass", r.report()


# ---- the explorer's rules, its detectors, and paths nothing else reaches ----------------

@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_explorer_takes_events_only_where_the_kernel_allows_them(vendor):
    """Every kind of host event is taken during exploration and none is tried where the
    kernel forbids it: no interrupt with IRQs off, no preemption with preemption or IRQs
    off (inside __schedule, whose sched_out runs with both off)."""
    c = check.Checker(vendor, vms=2)
    v, *_ = c.explore(bound=2, walks=0)
    assert v is None
    assert c.last_refused == 0
    assert all(n > 0 for n in c.last_injected.values()), c.last_injected
    # The rules are not vacuous: inside a run that switches the vCPU thread back in (its
    # CPU ran another task), some points refuse a preemption and every preemption that
    # fired did so with preempt_count 0 and IRQs on.
    steps = [check.Step("other_task", cpu=0), check.Step("run")]
    n, irq_ok, preempt_ok = c.points(steps, 1)
    assert set(range(1, n + 1)) - preempt_ok and irq_ok - preempt_ok
    for at in range(1, n + 1):
        _, recs = c.replay(steps[:1] + [check.Step("run", inject="preempt", at=at)], trace=True)
        fired = [b for kind, _, a, b in recs if kind == "inject"]
        assert bool(fired) == (at in preempt_ok), at
        for flags in fired:
            assert flags == 1 << 31, (at, hex(flags))   # preempt_count 0, IRQs on


def test_kernel_threads_and_the_idle_task_run_between_entries():
    """A halting pass blocks the vCPU in KVM: the idle task takes the pCPU and the vCPU
    comes back in the same run, with no return to user mode in between; a kernel thread
    can take the CPU between ioctls or preempt the vCPU thread inside KVM_RUN."""
    c = check.Checker("vmx")
    _, recs = c.replay([check.Step("run")], trace=True)
    switches = [(a, b) for kind, _, a, b in recs if kind == "sched_switch"]
    user = [i for i, r in enumerate(recs) if r[0] == "user_return"]
    assert len(switches) == 2 and switches[0] == switches[1][::-1]   # vcpu -> idle -> vcpu
    assert user and recs.index(("sched_switch", 0, *switches[1])) < user[0]
    v, _ = c.replay([check.Step("kthread", cpu=0), check.Step("run"),
                     check.Step("run", inject="preempt_kthread", at=20)])
    assert v is None


def test_detector_get_msrs_wrong_value():
    """KVM_GET_MSRS answers a value the guest never wrote (7.1's lost KERNEL_GS_BASE)."""
    c = check.Checker("vmx", params={"vmm_32bit_gs": True,
                                     "bug_kgs_saved_after_load_gs_index": True},
                      steps=["run", "get_msrs"], injections=[])
    v, _ = c.replay([check.Step("get_msrs"), check.Step("run"), check.Step("get_msrs")])
    assert (v.obs, v.reg) == ("KVM_GET_MSRS", "KERNEL_GS_BASE"), v


def test_detector_set_msrs_short_count():
    """KVM_SET_MSRS processes fewer entries than given (a vCPU whose CPUID lost long
    mode refuses STAR)."""
    def no_long_mode(c):
        vcpu = c.vcpus[0]
        vcpu.set_cpuid([e if e.function != 0x80000001 else
                        type(e)(**{**e.__dict__, "edx": e.edx & ~(1 << 29)})
                        for e in c.m.get_supported_cpuid()])
    c = check.Checker("vmx", setup=no_long_mode)
    v, _ = c.replay([check.Step("set_msrs")])
    assert v.obs == "KVM_GET_MSRS" and v.expected == len(c.regs) and v.actual == 0, v


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_detectors_unexpected_exit_and_host_warn(vendor):
    """Virtualization switched off under KVM (no re-enable): the entry fails (VMX: VMfail,
    SVM: VMRUN faults), the guest's run ends in KVM_EXIT_FAIL_ENTRY, an exit its program
    never takes; on VMX a KVM_SET_MSRS then WARNs (VMPTRLD/VMWRITE fail)."""
    c = check.Checker(vendor, setup=lambda c: c.m.disable_virtualization(0))
    v, recs = c.replay([check.Step("run")], trace=True)
    assert (v.obs, v.reg, v.actual) == ("unexpected exit", "MSR 0x0", 9), v  # FAIL_ENTRY
    assert ("kvm_userspace_exit", 0, 9, 0) in recs
    if vendor == "vmx":
        v, _ = c.replay([check.Step("set_msrs")])
        assert v.obs == "host WARN", v


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_a_syscall_into_a_foreign_lstar_names_lstar(vendor):
    """The guest's SYSCALL lands where LSTAR points; at the host's entry_SYSCALL_64 (not
    guest memory) the run ends in an MMIO exit at that address, and its mark names LSTAR."""
    def host_lstar(c):
        for v in c.vcpus:            # a guest LSTAR outside its memory (KVM_SET_MSRS)
            assert v.set_msrs({0xC0000082: 0xFFFFFFFF81E00080}) == 1
        c.vms[0].memory.write_u64(check.TABLES + 8 * c.regs.index(0xC0000082),
                                  0xFFFFFFFF81E00080)
    c = check.Checker(vendor, setup=host_lstar)
    v, _ = c.replay([check.Step("run")])
    assert (v.obs, v.reg, v.actual) == ("unexpected exit", "LSTAR", 0xFFFFFFFF81E00080), v


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_svm_and_vmx_tracepoints_name_their_exits(vendor):
    """kvm_exit carries the vendor's own code: VMX reason 0x1e (I/O), SVM 0x7b (IOIO)."""
    c = check.Checker(vendor)
    _, recs = c.replay([check.Step("run")], trace=True)
    reasons = {a for kind, _, a, _ in recs if kind == "kvm_exit"}
    assert (0x1E if vendor == "vmx" else 0x7B) in reasons, reasons


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_hosts_without_fsgsbase(vendor):
    """A CPU without FSGSBASE: the host switches the inactive GS base with RDMSR/WRMSR,
    the paranoid entry tests the GS_BASE sign; upstream is clean and a bug is found."""
    import dataclasses
    from pykvm.vendors import get_vendor
    model = dataclasses.replace(next(iter(get_vendor(vendor).cpu_models.values())),
                                has_fsgsbase=False)
    params = {"paranoid_entry_fsgsbase": False}
    # Without FSGSBASE, a machine check in SVM's VMRUN window is found (the test of it
    # below); everything else is clean.
    inj = [k for k in check.INJECTS[1:] if k != "mc" or vendor == "vmx"]
    r = check.check(vendor, cpu_model=model, params=params, bound=2, walks=100, injections=inj)
    assert r.verdict == "pass", r.report()
    r = check.check(vendor, cpu_model=model, params={**params, "forget_spec_ctrl": True},
                    bound=2, walks=0)
    assert r.violation.reg == "SPEC_CTRL", r.report()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=check.steps_strategy(vcpus=2, cpus=2, max_steps=6))
def test_property_upstream_svm_never_leaks(steps):
    """The same property on SVM."""
    if "svm" not in _checkers:
        _checkers["svm"] = check.Checker("svm", vcpus=2)
    violation, _ = _checkers["svm"].replay(steps)
    assert violation is None, [str(s) for s in steps]
