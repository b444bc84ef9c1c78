"""The checker's speed: events explored per second, exhaustive (a snapshot restore per
event) and by random walks (one restore per walk), per vendor, in one run. The bound the
exhaustive search reaches in 60 s is measured by `python benchmarks/bench_check.py`
(too long for a benchmark round); results in benchmarks/README.md."""
import sys
import time

import pytest

from pykvm import check


def _report(benchmark, steps, exits):
    """Steps (a whole KVM_RUN, an ioctl, a host event) and VM-exits inside them; the
    issue's events are both ("guest steps, exits, preemption, ... ioctls")."""
    t = benchmark.stats.stats.min
    benchmark.extra_info.update(steps=steps, exits=exits, steps_per_second=steps / t,
                                events_per_second=(steps + exits) / t)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_exhaustive_events_per_second(benchmark, vendor):
    c = check.Checker(vendor)
    # Bound 3: issue 11's step kinds and host events made depth 4 fourteen times larger.
    out = benchmark.pedantic(lambda: c.explore(bound=3, walks=0), rounds=3, iterations=1)
    _report(benchmark, out[2], c.last_exits)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_random_walk_events_per_second(benchmark, vendor):
    c = check.Checker(vendor)
    out = benchmark.pedantic(lambda: c.explore(bound=0, walks=5000, walk_len=12),
                             rounds=3, iterations=1)
    _report(benchmark, out[2], c.last_exits)


def bound_in(seconds, vendor, vcpus=1, progress=None):
    """The deepest exhaustive bound fully explored within `seconds`. progress(bound,
    counters, elapsed) is called while it runs (counters: Checker.explore's)."""
    c = check.Checker(vendor, vcpus=vcpus)
    t0, best, last = time.perf_counter(), 0, None
    for b in range(1, check.PK_MAX_STEPS if hasattr(check, "PK_MAX_STEPS") else 64):
        left = seconds - (time.perf_counter() - t0)
        if left <= 0:
            break
        tick = (lambda n, b=b: progress(b, n, time.perf_counter() - t0)) if progress else None
        _, _, events, states, done, _ = c.explore(bound=b, walks=0, seconds=left,
                                                  max_states=8_000_000, progress=tick)
        if done != b:
            break
        best = b
        if last == states:      # no new state at this depth: the space is closed
            return best, states, True
        last = states
    return best, last, False


def main(vendors, seconds=60):
    """Each vendor with 1 and 2 vCPUs for `seconds`, with a progress bar (time spent and
    left, steps per second, the bound being explored)."""
    from pykvm.cli._progress import progress
    results = []
    with progress() as bar:
        for vendor in vendors:
            for vcpus in (1, 2):
                label = f"{vendor} vcpus={vcpus}"
                task = bar.add_task(label, total=seconds)
                last = {"steps": 0, "t": 0.0}

                def tick(b, n, elapsed, task=task, label=label, last=last):
                    dt = elapsed - last["t"]
                    rate = (n["events"] - last["steps"]) / dt if dt > 0.5 else None
                    if dt > 0.5:
                        last.update(steps=n["events"], t=elapsed)
                    bar.update(task, completed=min(elapsed, seconds),
                               description=f"{label}: bound {b}, {n['states']:,} states"
                               + (f", {rate:,.0f} steps/s" if rate else ""))
                results.append((vendor, vcpus, bound_in(seconds, vendor, vcpus, tick)))
                bar.update(task, completed=seconds)
    for vendor, vcpus, (b, states, closed) in results:
        print(f"{vendor} vcpus={vcpus}: bound {b} in {seconds} s, {states} states"
              + (" (reachable space closed: every depth explored)" if closed else ""))


if __name__ == "__main__":
    main(sys.argv[1:] or ["vmx", "svm"])
