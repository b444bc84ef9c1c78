"""pykvm study: exact operation counts per path for every preset (derived from reading
csrc/kvm, so they catch regressions in the mirror), per-event cycles from the profile,
and the study's outputs: table, CSV, JSON, PNG, --compare. No timing assertions."""
import argparse
import csv
import json

import pytest

from pykvm import profiles as P
from pykvm import study

# ---------------------------------------------------------------------------------------
# Expected operations per event, per path (GUEST left out), as the code does them.
#
# Set-up common to every row (pykvm.study, pykvm.workloads): the profile's CPU model
# (vmx: skylake, with load-EFER controls and TSX; svm: zen3, no V_SPEC_CTRL), the vCPU
# thread on pCPU 1, the guest's boot MSRs = workloads.GUEST_MSRS: STAR and LSTAR differ
# from the host's, SYSCALL_MASK equals it (0x47700), TSC_AUX = 7 (the host's is the pCPU
# number). Guest and host SPEC_CTRL are both 0 on these CPUs, so no SPEC_CTRL writes.
# ---------------------------------------------------------------------------------------

# VMX, upstream: one exit to userspace and back (pio: OUT answered by the C loop).
VMX_PIO = {
    # The ioctl's kernel entry and exit to user mode: SWAPGS each.
    "OTHER": {"SWAPGS": 2},
    # vcpu_load on the same pCPU: VMCS already current, this vCPU ran here last (no IBPB).
    # vmx_prepare_switch_to_guest: kvm_set_user_return_msr for the loaded slots whose
    # value differs from what the CPU holds: LSTAR, STAR, TSC_AUX (SYSCALL_MASK equal;
    # CSTAR never loaded; EFER via the VMCS controls; TSX_CTRL 0 under ~CPUID_CLEAR equals
    # the host's) = 3, + WRMSR KERNEL_GS_BASE (guest) = 4 WRMSR; current_save_fsgs():
    # the host user GS base by SWAPGS, RDGSBASE, SWAPGS (an FSGSBASE host); savesegment
    # LDT, DS, ES, GS, FS = 5 MOV_SREG; RDFSBASE; no VMWRITE (host state as cached).
    "PREPARE_SWITCH": {"WRMSR": 4, "SWAPGS": 2, "RDGSBASE": 1, "MOV_SREG": 5,
                       "RDFSBASE": 1},
    # vmx_vcpu_run: VMWRITE GUEST_RIP (dirty after the skip); CR3 and CR4 from their
    # per-cpu copies (no MOV from CR); VMRESUME; VM-exit; RSB fill; vmx_vcpu_enter_exit
    # VMREADs VM_EXIT_REASON.
    "VCPU_RUN": {"VMWRITE": 1, "VMRESUME": 1, "VMEXIT": 1, "RSB_FILL": 1, "VMREAD": 1},
    # handle_io: VMREAD EXIT_QUALIFICATION; kvm_fast_pio reads RIP for cui_linear_rip;
    # complete_fast_pio_out on the next KVM_RUN VMREADs VM_EXIT_INSTRUCTION_LEN.
    "HANDLE_EXIT": {"VMREAD": 3},
    # vmx_prepare_switch_to_host: RDMSR KERNEL_GS_BASE (guest), savesegment GS to compare,
    # load DS and ES (the host's are __USER_DS) = 3 MOV_SREG, WRMSR KERNEL_GS_BASE (host),
    # LGDT (VM-exit left the GDT limit at 0xffff).
    "VCPU_PUT": {"RDMSR": 1, "MOV_SREG": 3, "WRMSR": 1, "LGDT": 1},
    # kvm_on_user_return: LSTAR, STAR, TSC_AUX back to the host's values.
    "USER_RETURN": {"WRMSR": 3},
}
VMX_PIO_MSRS = {
    "PREPARE_SWITCH": {"WRMSR LSTAR": 1, "WRMSR STAR": 1, "WRMSR TSC_AUX": 1,
                       "WRMSR KERNEL_GS_BASE": 1},
    "VCPU_PUT": {"RDMSR KERNEL_GS_BASE": 1, "WRMSR KERNEL_GS_BASE": 1},
    "USER_RETURN": {"WRMSR LSTAR": 1, "WRMSR STAR": 1, "WRMSR TSC_AUX": 1},
}
# HLT: kvm_emulate_halt skips the instruction in handle_exit (VMREAD RIP and LEN there);
# nothing is left to complete on the next KVM_RUN.
VMX_HLT = dict(VMX_PIO, HANDLE_EXIT={"VMREAD": 2})
# MMIO store: handle_ept_misconfig reads nothing (the model hands KVM the decoded access);
# complete_emulated_mmio on the next KVM_RUN skips it: VMREAD RIP (not cached) and LEN.
VMX_MMIO = dict(VMX_PIO, HANDLE_EXIT={"VMREAD": 2})
# One in-kernel exit (CPUID, VMCALL): guest state stays loaded, so prepare does nothing;
# the handler skips the instruction (VMREAD RIP and LEN).
VMX_KERNEL_EXIT = {"VCPU_RUN": VMX_PIO["VCPU_RUN"], "HANDLE_EXIT": {"VMREAD": 2}}
# One fast-path exit: VMREAD of the reason on VCPU_RUN; the skip in
# handle_fastpath_set_msr_irqoff (FASTPATH path) VMREADs RIP and LEN.
VMX_FASTPATH = {"VCPU_RUN": VMX_PIO["VCPU_RUN"], "FASTPATH": {"VMREAD": 2}}

# Before the user-return MSR infrastructure (v2.6.31: user_return_msrs=0,
# efer_load_controls=0): vmx_prepare_switch_to_host drops the notifiers, so the three
# host values come back in VCPU_PUT and nothing is left for USER_RETURN. EFER now goes
# through user return, but guest 0x501 and host 0xd01 differ only in NX, an ignored bit:
# update_transition_efer() does not load it.
VMX_PIO_PUT = {k: v for k, v in VMX_PIO.items() if k != "USER_RETURN"}
VMX_PIO_PUT["VCPU_PUT"] = dict(VMX_PIO["VCPU_PUT"], WRMSR=4)
VMX_PIO_PUT_MSRS = {
    "PREPARE_SWITCH": VMX_PIO_MSRS["PREPARE_SWITCH"],
    "VCPU_PUT": {"RDMSR KERNEL_GS_BASE": 1, "WRMSR KERNEL_GS_BASE": 1, "WRMSR LSTAR": 1,
                 "WRMSR STAR": 1, "WRMSR TSC_AUX": 1},
}

# SVM, upstream: one exit to userspace and back.
SVM_PIO = {
    "OTHER": {"SWAPGS": 2},
    # svm_prepare_switch_to_guest: VMSAVE to the per-CPU host save area; TSC_AUX via
    # kvm_set_user_return_msr (7 != the pCPU's 1).
    "PREPARE_SWITCH": {"VMSAVE": 1, "WRMSR": 1},
    # svm_vcpu_run: CLGI; __svm_vcpu_run: VMLOAD guest, VMRUN, #VMEXIT, VMSAVE guest,
    # VMLOAD host save area, RSB fill; STGI. svm_vcpu_put writes nothing.
    "VCPU_RUN": {"CLGI": 1, "VMLOAD": 2, "VMRUN": 1, "VMEXIT": 1, "VMSAVE": 1,
                 "RSB_FILL": 1, "STGI": 1},
    # kvm_on_user_return: TSC_AUX back to the pCPU number.
    "USER_RETURN": {"WRMSR": 1},
}
SVM_PIO_MSRS = {"PREPARE_SWITCH": {"WRMSR TSC_AUX": 1}, "USER_RETURN": {"WRMSR TSC_AUX": 1}}
SVM_KERNEL_EXIT = {"VCPU_RUN": SVM_PIO["VCPU_RUN"]}

# SVM before e79b91bb3c91 and before TSC_AUX moved to user return (v5.10):
SVM_PIO_V510 = {
    "OTHER": {"SWAPGS": 2},
    # svm_vcpu_load: savesegment FS, GS, LDT; RDMSR GS_BASE and the nine saved MSRs
    # (STAR, LSTAR, CSTAR, SYSCALL_MASK, KERNEL_GS_BASE, FS_BASE, SYSENTER_CS/ESP/EIP),
    # RDMSR TSC_AUX (host) = 11; WRMSR TSC_AUX (guest).
    "VCPU_LOAD": {"MOV_SREG": 3, "RDMSR": 11, "WRMSR": 1},
    # No VMSAVE in prepare; after #VMEXIT no host VMLOAD but reload_tss() (LTR) and
    # WRMSR GS_BASE before STGI.
    "VCPU_RUN": {"CLGI": 1, "VMLOAD": 1, "VMRUN": 1, "VMEXIT": 1, "VMSAVE": 1,
                 "RSB_FILL": 1, "WRMSR": 1, "LTR": 1, "STGI": 1},
    # svm_vcpu_put: LLDT; loadsegment FS; WRMSR KERNEL_GS_BASE; load_gs_index (SWAPGS,
    # MOV GS, SWAPGS); WRMSR of the nine saved MSRs (KERNEL_GS_BASE a second time, as the
    # kernel's host_save_user_msrs list had it); WRMSR TSC_AUX (host) = 11.
    "VCPU_PUT": {"LLDT": 1, "MOV_SREG": 2, "SWAPGS": 2, "WRMSR": 11},
}
SVM_PIO_V510_MSRS = {
    "VCPU_LOAD": {"RDMSR STAR": 1, "RDMSR LSTAR": 1, "RDMSR CSTAR": 1,
                  "RDMSR SYSCALL_MASK": 1, "RDMSR KERNEL_GS_BASE": 1, "RDMSR SYSENTER_CS": 1,
                  "RDMSR SYSENTER_ESP": 1, "RDMSR SYSENTER_EIP": 1, "RDMSR TSC_AUX": 1,
                  "RDMSR other": 2,            # GS_BASE and FS_BASE have no slot
                  "WRMSR TSC_AUX": 1},
    "VCPU_RUN": {"WRMSR other": 1},            # GS_BASE
    "VCPU_PUT": {"WRMSR STAR": 1, "WRMSR LSTAR": 1, "WRMSR CSTAR": 1,
                 "WRMSR SYSCALL_MASK": 1, "WRMSR KERNEL_GS_BASE": 2, "WRMSR SYSENTER_CS": 1,
                 "WRMSR SYSENTER_ESP": 1, "WRMSR SYSENTER_EIP": 1, "WRMSR TSC_AUX": 1,
                 "WRMSR other": 1},            # FS_BASE
}
SVM_KERNEL_EXIT_V510 = {"VCPU_RUN": SVM_PIO_V510["VCPU_RUN"]}

# What one preemption adds (overcommit: the vCPU thread preempted inside KVM_RUN right
# after its in-kernel CPUID exit, guest state loaded, vs no preemption): two context
# switches, each saving and loading user FS/GS (RDFSBASE, WRFSBASE, savesegment FS and GS,
# the inactive GS base by SWAPGS + RD/WRGSBASE + SWAPGS on these FSGSBASE hosts) and CR3,
# and the other task's return to user mode and next kernel entry (2 SWAPGS)...
CTX_SWITCHES_2 = {"RDFSBASE": 2, "WRFSBASE": 2, "MOV_SREG": 4, "SWAPGS": 8, "RDGSBASE": 2,
                  "WRGSBASE": 2, "MOV_CR": 2}
PREEMPT_HOST = dict(CTX_SWITCHES_2, SWAPGS=CTX_SWITCHES_2["SWAPGS"] + 2)
# ... plus KVM's part: kvm_sched_out -> vcpu_put puts the host state back (VMX: the
# KERNEL_GS_BASE swap and GDT reload); the other task's return to user mode restores the
# user-return MSRs; after kvm_sched_in the next entry prepares again. On VMX that is one
# more PREPARE_SWITCH, VCPU_PUT and USER_RETURN of a userspace round trip; on SVM (put
# only clears a flag) one more VMSAVE and TSC_AUX load, and its restore.
VMX_PREEMPTION = {"OTHER": PREEMPT_HOST, "PREPARE_SWITCH": VMX_PIO["PREPARE_SWITCH"],
                  "VCPU_PUT": VMX_PIO["VCPU_PUT"], "USER_RETURN": VMX_PIO["USER_RETURN"]}
# v2.6.31: the user-return MSRs come back in the put itself; no USER_RETURN work.
VMX_PREEMPTION_PUT = {"OTHER": PREEMPT_HOST, "PREPARE_SWITCH": VMX_PIO["PREPARE_SWITCH"],
                      "VCPU_PUT": VMX_PIO_PUT["VCPU_PUT"]}
SVM_PREEMPTION = {"OTHER": PREEMPT_HOST, "PREPARE_SWITCH": SVM_PIO["PREPARE_SWITCH"],
                  "USER_RETURN": SVM_PIO["USER_RETURN"]}
# v5.10: the by-hand save on sched_in's vcpu_load and restore on sched_out's vcpu_put.
SVM_PREEMPTION_V510 = {"OTHER": PREEMPT_HOST, "VCPU_LOAD": SVM_PIO_V510["VCPU_LOAD"],
                       "VCPU_PUT": SVM_PIO_V510["VCPU_PUT"]}
# What one migration adds: the old pCPU's own process takes it (enter and exit: 2
# SWAPGS) and the new pCPU switches from its process to the vCPU thread: two context
# switches. VMX also VMCLEARs on the old pCPU, VMPTRLDs and rewrites HOST_TR_BASE,
# HOST_GDTR_BASE and HOST_IA32_SYSENTER_ESP on the new one, rewrites HOST_GS_BASE (this
# pCPU's per-cpu base) in prepare, and VMLAUNCHes instead of VMRESUMEs. No IBPB: this
# vCPU ran last on both pCPUs.
SVM_MIGRATION = {"OTHER": dict(CTX_SWITCHES_2, SWAPGS=CTX_SWITCHES_2["SWAPGS"] + 2)}
VMX_MIGRATION = dict(SVM_MIGRATION, VCPU_LOAD={"VMCLEAR": 1, "VMPTRLD": 1, "VMWRITE": 3},
                     PREPARE_SWITCH={"VMWRITE": 1}, VCPU_RUN={"VMLAUNCH": 1, "VMRESUME": -1})

EXPECTED = {
    # The VMX presets between 2009 and today differ in where the host SPEC_CTRL is
    # restored (none is written here), in how host-initiated KERNEL_GS_BASE accesses work
    # and in where HOST_IDTR_BASE comes from (at vCPU reset): none of it is on these paths.
    **{("vmx", p): {"pio": (VMX_PIO, VMX_PIO_MSRS), "hlt": (VMX_HLT, VMX_PIO_MSRS),
                    "mmio": (VMX_MMIO, VMX_PIO_MSRS), "cpuid": (VMX_KERNEL_EXIT, {}),
                    "vmcall": (VMX_KERNEL_EXIT, {}), "fastpath": (VMX_FASTPATH, {}),
                    "guest-ctxsw": ({}, {}), "overcommit": (VMX_PREEMPTION, None),
                    "migrate": (VMX_MIGRATION, None)}
       for p in ("upstream", "v5.18", "v4.18")},
    ("vmx", "v2.6.31"): {"pio": (VMX_PIO_PUT, VMX_PIO_PUT_MSRS),
                         "cpuid": (VMX_KERNEL_EXIT, {}), "fastpath": (VMX_FASTPATH, {}),
                         "overcommit": (VMX_PREEMPTION_PUT, None),
                         "migrate": (VMX_MIGRATION, None)},
    # v5.15 restores the host state with a VMLOAD in C before STGI, and SPEC_CTRL in C:
    # the same operations as upstream, in another place.
    **{("svm", p): {"pio": (SVM_PIO, SVM_PIO_MSRS), "hlt": (SVM_PIO, SVM_PIO_MSRS),
                    "mmio": (SVM_PIO, SVM_PIO_MSRS), "cpuid": (SVM_KERNEL_EXIT, {}),
                    "vmcall": (SVM_KERNEL_EXIT, {}), "fastpath": (SVM_KERNEL_EXIT, {}),
                    "guest-ctxsw": ({}, {}), "overcommit": (SVM_PREEMPTION, None),
                    "migrate": (SVM_MIGRATION, None)}
       for p in ("upstream", "v5.15")},
    ("svm", "v5.10"): {"pio": (SVM_PIO_V510, SVM_PIO_V510_MSRS),
                       "hlt": (SVM_PIO_V510, SVM_PIO_V510_MSRS),
                       "cpuid": (SVM_KERNEL_EXIT_V510, {"VCPU_RUN": {"WRMSR other": 1}}),
                       "fastpath": (SVM_KERNEL_EXIT_V510, {"VCPU_RUN": {"WRMSR other": 1}}),
                       "overcommit": (SVM_PREEMPTION_V510, None),
                       "migrate": (SVM_MIGRATION, None)},
}
CASES = [(v, p, w) for (v, p), ws in EXPECTED.items() for w in ws]


def test_every_preset_has_expectations():
    """A new preset needs its counts derived here."""
    from pykvm.vendors import get_vendor
    for vendor in ("vmx", "svm"):
        assert {p for v, p in EXPECTED if v == vendor} == set(get_vendor(vendor).presets)


def _clean(d):
    return {p: {k: v for k, v in ops.items() if v} for p, ops in d.items()
            if any(ops.values())}


@pytest.mark.parametrize("vendor, preset, workload", CASES)
def test_exact_operation_counts(vendor, preset, workload):
    ops, msrs = EXPECTED[(vendor, preset)][workload]
    row = study.measure(study.Variant(vendor, preset), workload, iterations=4)
    assert _clean(row.path_ops) == _clean(ops)
    if msrs is not None:
        assert _clean(row.path_msrs) == _clean(msrs)
    # Cycles per event are the profile's prices of exactly those operations.
    prof = P.load_profile(P.default_profile(vendor))
    want = 0
    for p, o in ops.items():
        c = {"ops": o, "msrs": (msrs or {}).get(p, {}) if msrs is not None
             else row.path_msrs.get(p, {})}
        want += sum(prof.attribute(c).values())
    assert row.cycles == want


def test_counts_do_not_depend_on_the_iteration_count():
    a = study.measure("vmx:upstream", "fastpath", iterations=3)
    b = study.measure("vmx:upstream", "fastpath", iterations=17)
    assert (a.path_ops, a.cycles) == (b.path_ops, b.cycles)
    assert a.events["fastpath_exits"] == 3 and b.events["fastpath_exits"] == 17


def test_row_metrics_and_estimates():
    r = study.measure("svm:upstream", "pio", iterations=4)
    assert r.cyc_per_userspace_round_trip == r.cycles > 0
    assert r.cyc_per_fastpath_exit is None and r.cyc_per_preemption is None
    assert r.verdict == study.NOT_CHECKED
    # VMLOAD is an estimate in epyc-zen, and VMRUN/VMEXIT are derived from it.
    assert {"op.VMLOAD", "op.VMRUN", "op.VMEXIT"} <= set(r.estimates)
    assert "op.VMSAVE" not in r.estimates          # claimed
    assert 0 < r.estimate_share < 1
    assert r.total("VMLOAD") == 2 and r.ops("VMSAVE") == {"PREPARE_SWITCH": 1, "VCPU_RUN": 1}


# ---------------------------------------------------------------------------------------
# Variants, the study run, outputs, compare, CLI
# ---------------------------------------------------------------------------------------

def test_variant_parse():
    v = study.Variant.parse("vmx:upstream:user_return_msrs=0,cpu_model=icelake,forget_star=on")
    assert v == study.Variant("vmx", "upstream", (("forget_star", True),
                                                  ("user_return_msrs", False)), "icelake")
    assert v.label == "vmx:upstream:forget_star=1,user_return_msrs=0,cpu_model=icelake"
    assert study.Variant.parse("svm").preset is None
    assert study.Variant.parse("svm:-").label == "svm:-"
    with pytest.raises(ValueError, match="no parameter 'oops'"):
        study.Variant.parse("vmx:upstream:oops")
    with pytest.raises(ValueError, match="'banana' is not a bool"):
        study.Variant.parse("vmx:upstream:user_return_msrs=banana")
    with pytest.raises(ValueError, match="no parameter .user_return_msrs. in kernel, kvm, kvm_amd"):
        study.Variant.parse("svm:upstream:user_return_msrs=0")


def test_variant_errors_are_clear():
    with pytest.raises(ValueError, match="no CPU model 'zen9'"):
        study.measure("svm:upstream:cpu_model=zen9", "pio")
    with pytest.raises(ValueError, match="prices an intel CPU"):
        study.measure("svm:upstream", "pio", profile="skylake-sp")
    with pytest.raises(ValueError, match="none of the presets"):
        study.plan(vendors=["svm"], presets=["v2.6.31"])


def test_params_on_top_of_a_preset_change_the_counts():
    base = study.measure("vmx:upstream", "pio", iterations=3)
    put = study.measure("vmx:upstream:user_return_msrs=0", "pio", iterations=3)
    assert put.ops("WRMSR") == {"PREPARE_SWITCH": 4, "VCPU_PUT": 4}
    assert base.ops("WRMSR") == {"PREPARE_SWITCH": 4, "VCPU_PUT": 1, "USER_RETURN": 3}


@pytest.fixture(scope="module")
def small_study():
    seen = []
    rows = study.run_study(vendors=["vmx", "svm"], presets=["upstream"],
                           workloads=["pio", "fastpath", "overcommit"], iterations=3,
                           progress=lambda done, total, row: seen.append((done, total)),
                           verdict_fn=lambda row: f"ok {row.variant}")
    return rows, seen


def test_study_rows_and_progress(small_study):
    rows, seen = small_study
    assert [(r.variant, r.workload) for r in rows] == [
        (f"{v}:upstream", w) for v in ("vmx", "svm") for w in ("pio", "fastpath", "overcommit")]
    assert seen == [(i, 6) for i in range(1, 7)]
    assert all(r.verdict == f"ok {r.variant}" for r in rows)
    assert {r.profile for r in rows} == {"skylake-sp", "epyc-zen"}
    by = {(r.vendor, r.workload): r for r in rows}
    assert by[("vmx", "fastpath")].cyc_per_fastpath_exit > 0
    assert by[("svm", "pio")].cyc_per_userspace_round_trip > 0
    assert by[("vmx", "overcommit")].cyc_per_preemption > 0


def test_study_writes_csv_json_png(small_study, tmp_path):
    rows, _ = small_study
    paths = study.write_outputs(rows, tmp_path / "out")
    with open(paths["csv"]) as f:
        data = list(csv.DictReader(f))
    cols = list(data[0])
    assert cols == study.csv_columns()
    for col in ("vendor", "preset", "workload", "cyc_per_fastpath_exit",
                "cyc_per_userspace_round_trip", "cyc_per_preemption", "estimate_share",
                "estimates", "verdict", *[f"{op}.{p}" for op in study.REPORTED_OPS
                                          for p in ("PREPARE_SWITCH", "VCPU_RUN",
                                                    "VCPU_PUT", "USER_RETURN")]):
        assert col in cols, col
    pio = next(d for d in data if d["vendor"] == "vmx" and d["workload"] == "pio")
    assert (pio["WRMSR.PREPARE_SWITCH"], pio["WRMSR.USER_RETURN"]) == ("4", "3")
    assert pio["cyc_per_fastpath_exit"] == "" and pio["cyc_per_userspace_round_trip"] != ""
    assert pio["verdict"] == "ok vmx:upstream"
    with open(paths["json"]) as f:
        js = json.load(f)
    assert len(js["rows"]) == len(rows)
    assert js["rows"][0]["path_ops"]["VCPU_RUN"]["VMRESUME"] == 1
    assert js["profiles"]["epyc-zen"]["figures"]["op.VMLOAD"]["rests_on_estimate"] is True
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_parallel_jobs_give_the_same_rows(small_study):
    rows, _ = small_study
    again = study.run_study(vendors=["vmx", "svm"], presets=["upstream"],
                            workloads=["pio", "fastpath", "overcommit"], iterations=3, jobs=2)
    assert [(r.path_ops, r.cycles) for r in again] == [(r.path_ops, r.cycles) for r in rows]
    assert all(r.verdict == study.NOT_CHECKED for r in again)


def test_table_renders(small_study):
    from rich.console import Console
    rows, _ = small_study
    console = Console(record=True, width=200)
    from pykvm.cli.study import ops_tables, table
    console.print(table(rows))
    for t in ops_tables(rows):
        console.print(t)
    text = console.export_text()
    assert "fast-path exit" in text and "P4 T1 U3" in text and "ok svm:upstream" in text


def test_compare_shows_deltas(tmp_path):
    crows = study.compare("svm:upstream", "svm:v5.10", workloads=["pio", "cpuid"],
                          iterations=3)
    pio, cpuid = crows
    assert (pio.a.variant, pio.b.variant) == ("svm:upstream", "svm:v5.10")
    assert pio.delta == pio.b.cycles - pio.a.cycles > 0
    d = pio.op_deltas()
    assert d["RDMSR"] == {"VCPU_LOAD": 11}
    assert d["WRMSR"] == {"VCPU_LOAD": 1, "VCPU_RUN": 1, "VCPU_PUT": 11,
                          "PREPARE_SWITCH": -1, "USER_RETURN": -1}
    assert d["VMSAVE"] == {"PREPARE_SWITCH": -1} and d["VMLOAD"] == {"VCPU_RUN": -1}
    # An in-kernel exit: WRMSR GS_BASE (200) and LTR (200) instead of the host VMLOAD (150).
    assert cpuid.delta == 200 + 200 - 150
    paths = study.write_compare(crows, tmp_path)
    with open(paths["csv"]) as f:
        data = list(csv.DictReader(f))
    assert data[0]["delta"] == str(round(pio.delta))
    assert data[0]["RDMSR.VCPU_LOAD.delta"] == "11"
    assert json.load(open(paths["json"]))["b"] == "svm:v5.10"


def _cli(argv):
    ap = argparse.ArgumentParser(prog="pykvm")
    sub = ap.add_subparsers(dest="cmd", required=True)
    from pykvm.cli.study import add_parser
    add_parser(sub, verdict_fn=lambda row: "checked")
    args = ap.parse_args(argv)
    return args.func(args)


def test_cli_study_and_compare(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "o"
    assert _cli(["study", "--vendor", "svm", "--preset", "upstream", "--workload", "pio",
                 "--iterations", "2", "--jobs", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "svm: cycles per event" in text and "upstream" in text and "checked" in text
    assert "study.csv" in text
    assert (out / "study.csv").exists() and (out / "study.png").exists()
    assert _cli(["study", "--compare", "vmx:upstream", "vmx:v2.6.31", "--workload", "pio",
                 "--iterations", "2", "--jobs", "1", "--out", str(out), "--no-png"]) == 0
    text = capsys.readouterr().out
    assert "B = vmx:v2.6.31" in text and "WRMSR" in text
    assert (out / "compare.csv").exists() and not (out / "compare.png").exists()
