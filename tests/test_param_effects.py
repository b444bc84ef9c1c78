"""Every strategy parameter costs something somewhere, and every kernel era differs from
the next: the study can only answer "what does this strategy cost?" if some workload
runs the code the strategy changes.

For each vendor, each parameter of kernel.*, kvm.* and the vendor's module that is not a
planted bug (forget_*, bug_*) is flipped on its upstream value (a bool to the opposite, a
uint to TRY's value) and every workload is measured with and without it; the parameter
must change the cycles or the operation counts of at least one workload. A parameter
that cannot change any cost is listed in NO_COST with the reason, and must then change
none (the table is reviewed, not a way to quiet a failure). The same for each preset
against the next older one (PRESET_NO_COST).

`delta_table()` is the table itself (parameter x workload, cycles per event B - A, "op"
where only counts moved); `python -m tests.test_param_effects` prints it.
"""
import functools

import pytest

from pykvm import study
from pykvm import workloads as W
from pykvm.vendors import get_vendor

ITERATIONS = 4
VENDORS = ("vmx", "svm")

# A uint parameter is tried at this value (a bool at the opposite of upstream's).
TRY = {"halt_poll_ns": 0, "vmentry_l1d_flush": 0}
# A parameter that means something only on top of others is tried on that base.
BASE = {("vmx", "host_msrs_snapshot"): {"user_return_msrs": False}}

# Parameters that cannot change what any workload costs, and why.
NO_COST = {
    "paranoid_entry_rdpid": "decides how the host NMI entry finds its per-cpu base; no "
                            "workload takes an NMI, and NMI entry is not a priced path",
    "paranoid_entry_fsgsbase": "the same: the NMI/#MC entry only",
    "ret_uses_percpu": "decides what the oracle requires of the first RET after a VM-exit "
                       "(the host GS base), not any operation",
    "uret_irqs_off": "local_irq_save/restore around the user-return WRMSR: IRQ masking is "
                     "not an operation the model prices (no CLI/STI/POPF in PK_OPS)",
    "spec_ctrl_in_vmenter": "moves the host SPEC_CTRL restore before the vmenter path's "
                            "first RET (vmx: fc02735b14ff; svm: the 2022 series): the same "
                            "operations on the same path, in another order",
    "host_vmload_in_vmenter": "moves the host VMLOAD from C before STGI into __svm_vcpu_run: "
                              "the same operation on the same path, earlier",
    "ignore_msrs": "decides only what an access to an MSR KVM does not know returns "
                   "(kvm_do_msr_access); every MSR a workload touches is one KVM knows",
}

# The same for one vendor only: host mitigations that apply where the CPU has the bug or
# lacks the feature (the kernel's =auto), and none of the SVM rows' CPU (zen3) does.
VENDOR_NO_COST = {
    ("svm", "kernel_ibrs"): "legacy kernel IBRS is for Intel CPUs with IBRS and without "
                            "eIBRS (X86_FEATURE_KERNEL_IBRS); AMD hosts use retpolines",
    ("svm", "pti"): "Zen is not affected by Meltdown (X86_BUG_CPU_MELTDOWN unset): no PTI",
    ("svm", "mds"): "Zen is not affected by MDS (X86_BUG_MDS unset): no VERW",
}


def _no_cost(vendor, name):
    return VENDOR_NO_COST.get((vendor, name)) or NO_COST.get(name)


# Presets whose only differences from the next older one are all in NO_COST.
PRESET_NO_COST = {
    ("svm", "upstream", "v5.15"): "only host_vmload_in_vmenter, spec_ctrl_in_vmenter and "
                                  "ret_uses_percpu differ (orderings, an oracle rule)",
}


def strategy_params(vendor):
    """{name: Param} of the parameters with a claimed cost effect: all but planted bugs."""
    return {n: p for n, p in get_vendor(vendor).params.items()
            if not n.startswith(("forget_", "bug_"))}


def tried_value(p):
    return TRY[p.name] if p.type == "uint" else not p.upstream


@functools.lru_cache(maxsize=None)
def _measure(vendor, preset, params, workload):
    v = study.Variant(vendor, preset, params)
    r = study.measure(v, workload, iterations=ITERATIONS)
    return (r.skipped, round(r.cycles, 6),
            tuple(sorted((p, tuple(sorted(d.items()))) for p, d in r.path_ops.items())),
            tuple(sorted((p, tuple(sorted(d.items()))) for p, d in r.path_msrs.items())))


def _delta(a, b):
    """B - A in cycles, or "op" if only the counts moved, or None for no change."""
    if a == b:
        return None
    if a[1] != b[1]:
        return b[1] - a[1]
    return "op"


def param_deltas(vendor, name):
    """{workload: delta} of flipping `name` on its base (module docstring)."""
    p = strategy_params(vendor)[name]
    base = dict(BASE.get((vendor, name), {}))
    a_params = tuple(sorted(base.items()))
    b_params = tuple(sorted({**base, name: tried_value(p)}.items()))
    return {w: _delta(_measure(vendor, "upstream", a_params, w),
                      _measure(vendor, "upstream", b_params, w))
            for w in W.names()}


def preset_deltas(vendor, newer, older):
    return {w: _delta(_measure(vendor, newer, (), w), _measure(vendor, older, (), w))
            for w in W.names()}


def _neighbours(vendor):
    presets = list(get_vendor(vendor).presets)
    return list(zip(presets, presets[1:]))


PARAM_CASES = [(v, n) for v in VENDORS for n in strategy_params(v)]
PRESET_CASES = [(v, a, b) for v in VENDORS for a, b in _neighbours(v)]


@pytest.mark.parametrize("vendor, name", PARAM_CASES)
def test_each_strategy_parameter_costs_something(vendor, name):
    d = {w: x for w, x in param_deltas(vendor, name).items() if x is not None}
    why = _no_cost(vendor, name)
    if why:
        assert not d, (f"{vendor}: {name} is listed as having no cost effect "
                       f"({why}) but changes {d}: take it off NO_COST")
    else:
        assert d, (f"{vendor}: no workload's cost changes with {name}="
                   f"{tried_value(strategy_params(vendor)[name])}: add a workload that runs "
                   f"its code, or list it in NO_COST with the reason")


@pytest.mark.parametrize("vendor, newer, older", PRESET_CASES)
def test_each_era_differs_from_the_next(vendor, newer, older):
    d = {w: x for w, x in preset_deltas(vendor, newer, older).items() if x is not None}
    why = PRESET_NO_COST.get((vendor, newer, older))
    if why:
        assert not d, f"{vendor} {newer} vs {older} listed as equal ({why}) but {d}"
        # Equal only because every differing parameter is a reviewed no-cost one.
        pa, pb = get_vendor(vendor).presets[newer], get_vendor(vendor).presets[older]
        differing = {k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k)}
        assert differing and all(_no_cost(vendor, k) for k in differing), differing
    else:
        assert d, f"{vendor}: presets {newer} and {older} cost the same on every workload"


def test_no_cost_table_names_real_parameters():
    known = {n for v in VENDORS for n in strategy_params(v)}
    assert set(NO_COST) <= known, set(NO_COST) - known
    for (vendor, name) in VENDOR_NO_COST:
        assert name in strategy_params(vendor)
    for (vendor, name) in BASE:
        assert name in strategy_params(vendor)


def delta_table():
    """Rows (vendor, parameter or presets, {workload: delta}) for every case above."""
    rows = [(v, f"{n}={int(tried_value(strategy_params(v)[n]))}", param_deltas(v, n))
            for v, n in PARAM_CASES]
    rows += [(v, f"{a} -> {b}", preset_deltas(v, a, b)) for v, a, b in PRESET_CASES]
    return rows


def format_table(rows):
    wls = W.names()
    head = ["vendor", "parameter / presets"] + wls
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for vendor, what, d in rows:
        cells = []
        for w in wls:
            x = d[w]
            cells.append("" if x is None else x if isinstance(x, str) else f"{x:+,.0f}")
        lines.append(" | ".join([vendor, what] + cells))
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - a report helper
    print(format_table(delta_table()))
