"""benchmarks/README.md's tables are what benchmarks/results.json says (written by
benchmarks/report.py), per-exit figures come from min and mean each labelled as such, and
every target is checked."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_tables_are_the_json():
    assert _report().main(["--check"]) == 0


def _bench(name, mn, mean, **extra):
    return {"fullname": f"benchmarks/{name}", "stats": {"min": mn, "mean": mean, "rounds": 5},
            "extra_info": extra}


def test_per_exit_min_and_mean_and_targets():
    report = _report()
    data = {"datetime": "2026-01-01T00:00:00", "machine_info": {}, "commit_info": {},
            "benchmarks": [
                _bench("bench_kvm.py::test_out_round_trip_c_loop", 1e-3, 3e-3,
                       exits_per_round=200),
                _bench("bench_switch.py::test_fastpath_round_trip[vmx]", 2e-3, 4e-3,
                       exits_per_round=20_000),
                _bench("bench_switch.py::test_fastpath_round_trip[svm]", 4e-3, 4e-3,
                       exits_per_round=20_000),
            ]}
    text = report.render(data)
    kvm = next(line for line in text.splitlines() if line.startswith("| C run loop"))
    assert "| 5.00 us | 15.00 us |" in kvm           # min / 200, then mean / 200
    rows = {what: (measured, verdict) for what, _, measured, verdict in
            report.targets(report.Results(data))}
    assert rows["fast-path exit round trip, vmx (min per exit)"] == ("100 ns", "pass")
    assert rows["fast-path exit round trip, svm (min per exit)"] == ("200 ns", "**miss**")
    assert rows["guest interpreter vs unicorn, dec_jnz (time ratio)"][1] == "not run"
    assert "not run (no /dev/kvm)" in text            # bench_kvm rows without results
