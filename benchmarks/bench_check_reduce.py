"""The checker's search reductions (issue 12): the same exhaustive search with and without
them, side by side in one run (steps tried, distinct states, time), and the issue's targets
on one core: 2 vCPUs on 2 pCPUs close the reachable space within 60 s on both vendors,
4 vCPUs reach depth 6 within 10 minutes. The targets take minutes: run them with
`python benchmarks/bench_check_reduce.py [vmx|svm ...] [--seconds S] [--vcpus N]
[--reduce 'none;revisit;revisit,sleep'] [--bound D]`;
results in benchmarks/README.md. No assertion on time here: what was reached is recorded
in extra_info."""
import argparse
import time

import pytest

from pykvm import check


def _search(vendor, reduce, bound, vcpus=2, seconds=None, **kw):
    c = check.Checker(vendor, vcpus=vcpus, **kw)
    t0 = time.perf_counter()
    v, _, events, states, done, _ = c.explore(bound=bound, walks=0, seconds=seconds,
                                              max_states=8_000_000, reduce=reduce)
    return {"violation": v is not None, "steps": events, "states": states,
            "depth_done": done, "closed": c.last_closed, "replayed": c.last_replayed,
            "slept": c.last_slept, "seconds": time.perf_counter() - t0}


@pytest.mark.parametrize("reduce", ["none", "revisit", "revisit,sleep"])
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_exhaustive_2_vcpus_depth_4_without_host_events(benchmark, vendor, reduce):
    names = () if reduce == "none" else tuple(reduce.split(","))
    out = benchmark.pedantic(lambda: _search(vendor, names, 4, injections=[]), rounds=2,
                             iterations=1)
    benchmark.extra_info.update(out)


@pytest.mark.parametrize("reduce", ["none", "revisit", "revisit,sleep"])
@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_exhaustive_1_vcpu_depth_3_with_host_events(benchmark, vendor, reduce):
    names = () if reduce == "none" else tuple(reduce.split(","))
    out = benchmark.pedantic(lambda: _search(vendor, names, 3, vcpus=1), rounds=1,
                             iterations=1)
    benchmark.extra_info.update(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vendors", nargs="*", default=["vmx", "svm"])
    ap.add_argument("--vcpus", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--reduce", default="revisit",
                    help="'none' or a comma list; several separated by ';' run side by side")
    ap.add_argument("--bound", type=int, default=check.MAX_STEPS,
                    help="stop at this depth (counts at a fixed depth; default: the deepest)")
    a = ap.parse_args()
    for vendor in a.vendors:
        for how in a.reduce.split(";"):
            names = () if how == "none" else tuple(how.split(","))
            # The deepest bound allowed: breadth-first, the search goes level by level
            # until the space closes or the time runs out (depth_done: the last level
            # finished).
            r = _search(vendor, names, a.bound, vcpus=a.vcpus, seconds=a.seconds)
            print(f"{vendor} vcpus={a.vcpus} cpus=2 reduce={how}: depth {r['depth_done']} "
                  f"done in {r['seconds']:.1f} s (budget {a.seconds:g} s), "
                  f"{r['states']:,} states, {r['steps']:,} steps "
                  f"(+{r['replayed']:,} replayed, {r['slept']:,} asleep)"
                  + (", reachable space closed" if r["closed"] else ", not closed")
                  + (", VIOLATION" if r["violation"] else ""), flush=True)


if __name__ == "__main__":
    main()
