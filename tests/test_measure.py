"""`pykvm profile measure`: the solver on synthetic data with known answers, the profile
it writes (TOML round trip, priced by the study), and a short real measurement on the
host's /dev/kvm (skipped with the reason when there is none)."""
import json

import numpy as np
import pytest

from pykvm import measure as M
from pykvm import study
from pykvm.cli import main
from pykvm.devkvm import KvmMachine
from pykvm.profiles import load_profile

AVAILABLE, REASON = KvmMachine.available()
needs_kvm = pytest.mark.skipif(not AVAILABLE, reason=REASON)


# ---- the solver ---------------------------------------------------------------------

TRUE = {"op.GUEST_INSN": 2.0, "op.SWAPGS": 30.0, "rdmsr.STAR": 110.0, "op.VMRUN": 700.0,
        "op.VMEXIT": 500.0}


def synthetic(noise=0.0, rng=None):
    """Loops of SWAPGS and RDMSR STAR at two lengths (with their own fixed costs), and a
    round trip whose VMRUN and VMEXIT always come together."""
    rng = rng or np.random.default_rng(1)
    out = []

    def add(name, k, fixed, coefs):
        v = (sum(TRUE[c] * n for c, n in coefs.items()) + fixed / k) * \
            (1 + noise * rng.standard_normal())
        c = dict(coefs, **{f"guest.fixed[{name}]": 1 / k})
        out.append(M.Equation(f"{name} K={k}", "guest", v, max(0.01 * v, 0.01), c))
    for k in (100, 200):
        add("loop", k, 40, {"op.GUEST_INSN": 2})
        add("swapgs", k, 55, {"op.SWAPGS": 1, "op.GUEST_INSN": 2})
        add("rdmsr.STAR", k, 70, {"rdmsr.STAR": 1, "op.GUEST_INSN": 2})
        add("cpuid", k, 900, {"op.VMRUN": 1, "op.VMEXIT": 1, "op.SWAPGS": 2,
                              "op.GUEST_INSN": 3})
    return out


def test_nnls_recovers_identified_costs_exactly():
    sol = M.solve(synthetic(), prior={"op.VMRUN": 300, "op.VMEXIT": 100})
    for c in ("op.GUEST_INSN", "op.SWAPGS", "rdmsr.STAR"):
        assert sol.identified[c]
        assert sol.values[c] == pytest.approx(TRUE[c], rel=1e-6)
    for name, fixed in (("loop", 40), ("swapgs", 55), ("cpuid", 900)):
        assert sol.values[f"guest.fixed[{name}]"] == pytest.approx(fixed, rel=1e-4)
    assert max(abs(r) for r in sol.residuals.values()) < 1e-6


def test_an_unidentifiable_pair_is_reported_and_split_like_the_base():
    sol = M.solve(synthetic(), prior={"op.VMRUN": 300, "op.VMEXIT": 100})
    assert not sol.identified["op.VMRUN"] and not sol.identified["op.VMEXIT"]
    assert sorted(["op.VMEXIT", "op.VMRUN"]) in [sorted(g) for g in sol.groups]
    assert sol.rank == len(sol.columns) - 1
    # The combination is what was measured; the split follows the prior's 3:1.
    total = sol.values["op.VMRUN"] + sol.values["op.VMEXIT"]
    assert total == pytest.approx(1200, rel=1e-3)
    assert sol.values["op.VMRUN"] / sol.values["op.VMEXIT"] == pytest.approx(3, rel=1e-2)


def test_noise_gives_intervals_that_hold_the_truth():
    rng = np.random.default_rng(7)
    eqs = synthetic(noise=0.002, rng=rng)
    boots = [[e.value * (1 + 0.002 * rng.standard_normal()) for e in eqs]
             for _ in range(60)]
    sol = M.solve(eqs, prior={"op.VMRUN": 300, "op.VMEXIT": 100}, bootstrap=boots)
    for c in ("op.SWAPGS", "rdmsr.STAR"):
        lo, hi = sol.interval[c]
        assert lo <= sol.values[c] <= hi
        assert sol.values[c] == pytest.approx(TRUE[c], rel=0.15)


def test_median_ci_covers_the_median_and_narrows_with_samples():
    rng = np.random.default_rng(3)
    xs = rng.normal(100, 5, 400)
    med, lo, hi = M.median_ci(xs)
    assert lo <= med <= hi and lo < 100 < hi
    _m, lo2, hi2 = M.median_ci(xs[:25])
    assert hi2 - lo2 > hi - lo


def test_model_terms_are_the_study_rows_counts():
    base = load_profile("epyc-zen")
    terms = M.model_terms("svm:v5.10", "hlt", base)
    row = study.measure("svm:v5.10", "hlt", base)
    # Every operation of the row lands in one column, MSRs by their pricing entry.
    assert sum(terms.values()) == pytest.approx(
        sum(sum(ops.values()) for ops in row.path_ops.values()))
    priced = sum(n * base.entries[c].cycles for c, n in terms.items() if c in base.entries)
    assert priced == pytest.approx(row.cycles)


# ---- the profile it writes ----------------------------------------------------------

def fake_result(tmp_path):
    info = M.HostInfo(cpu="Test CPU 9000", cpu_vendor="amd", mhz=3000.0,
                      kvm_module="kvm_amd", kvm_modules=("kvm_amd",), kernel="6.99",
                      machine="x86_64", date="2030-01-02")
    eqs = synthetic()
    base = load_profile("epyc-zen")
    sol = M.solve(eqs, prior={k: e.cycles for k, e in base.entries.items()})
    return M.MeasureResult(info=info, variant="svm:upstream", base=base, tsc_ghz=3.0,
                           tsc_interval=(2.99, 3.01), measurements=[], unsupported={
                               "rdtscp": "KVM_EXIT_INTERNAL_ERROR"}, left_out={},
                           equations=eqs, solution=sol, msrs=[])


def test_written_profile_loads_with_grades_sources_and_fallbacks(tmp_path):
    r = fake_result(tmp_path)
    path, jpath = r.write_profile(tmp_path / "mine.toml", name="mine")
    p = load_profile(path)
    base = load_profile("epyc-zen")
    assert p.name == "mine" and p.vendor == "amd" and p.cpu_model == base.cpu_model
    assert "kvm_amd" in p.description and "6.99" in p.description and "2030-01-02" in \
        p.description
    e = p.entries["op.SWAPGS"]
    assert e.grade == "measured" and e.cycles == 30 and "kvm_amd" in e.source
    assert p.entries["rdmsr.STAR"].cycles == 110
    assert p.entries["op.VMRUN"].grade == "estimate"
    assert "only together" in p.entries["op.VMRUN"].note
    # Everything else: the base's figure, marked as a fallback.
    assert set(p.entries) >= set(base.entries)
    assert p.entries["op.LTR"].cycles == base.entries["op.LTR"].cycles
    assert p.entries["op.LTR"].note.startswith("Fallback")
    data = json.loads(open(jpath).read())
    assert data["unsupported"] == {"rdtscp": "KVM_EXIT_INTERNAL_ERROR"}
    assert data["solution"]["groups"]


def test_written_profile_prices_the_study(tmp_path, capsys):
    path, _ = fake_result(tmp_path).write_profile(tmp_path / "mine.toml", name="mine")
    row = study.measure("svm:upstream", "cpuid", path)
    assert row.profile == "mine" and row.cycles > 0
    assert main(["study", "--profile", str(path), "--vendor", "svm", "--preset", "upstream",
                 "--workload", "cpuid", "--out", str(tmp_path / "out"), "--no-png",
                 "--jobs", "1"]) == 0
    assert "mine" in (tmp_path / "out" / "study.json").read_text()


# ---- on the host's /dev/kvm ---------------------------------------------------------

@pytest.fixture(scope="module")
def measured():
    if not AVAILABLE:
        pytest.skip(REASON)
    return M.measure_host(budget=3.0, max_samples=12, bootstrap=10,
                          only=["out", "hlt", "out_python", "rdtscp", "rdmsr.STAR"])


@needs_kvm
def test_real_measurement_says_what_it_measured(measured, tmp_path):
    r = measured
    assert r.info.kvm_module in ("kvm_intel", "kvm_amd", "kvm_pvm")
    assert 0.2 < r.tsc_ghz < 10
    assert {m.bench for m in r.measurements} >= {"loop", "cpuid", "out"}
    for m in r.measurements:
        assert len(m.guest_cycles) >= M.MIN_SAMPLES and m.stop
        assert all(g > 0 for g in m.guest_cycles) and all(h > 0 for h in m.host_ns)
    # RDTSCP either ran or is reported as unsupported, with the reason.
    assert "rdtscp" in {m.bench for m in r.measurements} or r.unsupported["rdtscp"]
    assert r.solution.identified["op.GUEST_INSN"]
    path, _ = r.write_profile(tmp_path / "host.toml")
    p = load_profile(path)
    assert r.info.kvm_module in p.description
    assert p.entries["op.GUEST_INSN"].grade == "measured"
    assert study.measure(r.variant, "pio", path).cycles > 0


@needs_kvm
def test_the_host_clock_encloses_the_guests_batch(measured):
    # Each batch's guest RDTSC interval lies inside the host's KVM_RUN interval, so in
    # TSC cycles (at the top of the calibrated frequency's interval) the host never sees
    # less. How much more it sees depends on load; that is not asserted here.
    ghz_hi = measured.tsc_interval[1]
    out = [m for m in measured.measurements if m.bench == "out"]
    assert out
    for m in out:
        for gc, ns in zip(m.guest_cycles, m.host_ns, strict=True):
            assert gc < ns * ghz_hi


@needs_kvm
def test_cli_profile_measure_writes_a_loadable_profile(tmp_path, capsys):
    out = tmp_path / "m.toml"
    assert main(["profile", "measure", "--out", str(out), "--budget", "2",
                 "--max-samples", "8", "--bench", "out"]) == 0
    assert load_profile(out).name == "m"
    assert (tmp_path / "m.json").exists()
    assert "wrote" in capsys.readouterr().err


def test_cli_rejects_a_bad_budget(capsys):
    assert main(["profile", "measure", "--budget", "0"]) == 2
