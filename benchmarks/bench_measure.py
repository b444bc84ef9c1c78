"""`pykvm profile measure` on the host's /dev/kvm, end to end with its defaults: probe,
every benchmark at two loop lengths until stable, TSC calibration, NNLS, bootstrap.
Target (issue 8): under 2 minutes on this kind of machine (kvm_pvm, 2 cores).
`extra_info` records how many benchmarks ran, were unsupported or left out, and how many
batches settled. Run: pytest benchmarks/bench_measure.py --benchmark-columns=min,mean"""
import pytest

from pykvm import measure as M
from pykvm.devkvm import KvmMachine

AVAILABLE, REASON = KvmMachine.available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)

TARGET_S = 120


def test_profile_measure_defaults(benchmark, tmp_path):
    def run():
        r = M.measure_host()
        r.write_profile(tmp_path / "measured.toml")
        return r
    r = benchmark.pedantic(run, rounds=1, iterations=1)
    ms = r.measurements
    benchmark.extra_info.update(
        seconds=round(r.seconds, 1), target_s=TARGET_S, kvm_module=r.info.kvm_module,
        benchmarks=len({m.bench for m in ms}), unsupported=sorted(r.unsupported),
        left_out=len(r.left_out), batches=sum(len(m.guest_cycles) for m in ms),
        settled=sum(m.stop.startswith("settled") for m in ms), measurements=len(ms),
        identified=sum(r.solution.identified.values()), unknowns=len(r.solution.columns))
