"""Beyond one core: the same work in this process, on a local Dask cluster of 1 worker
and of 2 workers, side by side in one run (the speedup is the ratio of their times), and
the engine's own cost per task. The clusters start before the timed rounds: their
start-up (a few seconds) is not in the figures."""
import os
import time

import pytest

from pykvm import engine, swarm, sweep

ENGINES = ("local", "dask-1", "dask-2")


@pytest.fixture(scope="module")
def engines():
    out = {"local": engine.LocalEngine()}
    out["dask-1"] = engine.get("dask", workers=1)
    out["dask-2"] = engine.get("dask", workers=2)
    yield out
    for e in out.values():
        e.close()


def _conditions(benchmark, e):
    """When, how busy the machine was (another engineer's build shares these cores), and
    how many workers: the figures mean little without them."""
    benchmark.extra_info.update(workers=e.workers, cores=os.cpu_count(),
                                load_average=round(os.getloadavg()[0], 2),
                                measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def _warm(e):
    """Every worker has imported pykvm and built a checker before the clock starts."""
    e.map(swarm.expand_task, [({"vendor": "vmx", "preset": None, "params": {},
                                "cpu_model": None, "cpus": 2, "vcpus": 2, "steps": None,
                                "injections": None}, [()], False)] * 4 * e.workers)


@pytest.mark.parametrize("where", ENGINES)
def test_check_spread(benchmark, engines, where):
    """The exhaustive search of 2 vCPUs on 2 pCPUs to depth 4, split by level, then 8
    swarm searches: about 400k steps."""
    e = engines[where]
    _warm(e)
    r = benchmark.pedantic(lambda: swarm.check("vmx", vcpus=2, bound=4, swarm=8, walks=800,
                                               engine=e), rounds=2, iterations=1)
    benchmark.extra_info.update(steps=r.events, tasks=r.tasks, states=r.states)
    _conditions(benchmark, e)


@pytest.mark.parametrize("where", ENGINES)
def test_sweep_spread(benchmark, engines, where):
    """A sweep of 12 combinations (3 CPU models x 2 values of 2 parameters) x 2 workloads,
    with the checker's verdict per combination: 24 row tasks."""
    e = engines[where]
    variants = sweep.plan(["vmx"], ["upstream"], ["all"],
                          {"user_return_msrs": ["0", "1"], "forget_lstar": ["0", "1"]})
    e.map(_nothing, list(range(4 * e.workers)))
    rows = benchmark.pedantic(lambda: sweep.run(variants, workloads=["pio", "fastpath"],
                                                iterations=4, engine=e),
                              rounds=2, iterations=1)
    benchmark.extra_info.update(rows=len(rows))
    _conditions(benchmark, e)


def _nothing(i):
    return i


@pytest.mark.parametrize("where", ("dask-1", "dask-2"))
def test_overhead_per_task(benchmark, engines, where):
    """500 tasks that do nothing: what the engine itself costs per task (submit, schedule,
    run, send back, collect), divided by the tasks."""
    e = engines[where]
    n = 500
    benchmark.pedantic(lambda: e.map(_nothing, list(range(n))), rounds=3, iterations=1)
    benchmark.extra_info.update(tasks=n, seconds_per_task=benchmark.stats.stats.min / n)
    _conditions(benchmark, e)
