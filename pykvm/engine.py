"""Where independent tasks run: in this process, or on a Dask cluster.

Work that outgrows one core (a check spread over many searches, a sweep over parameters
x CPU models x workloads, a study) is a list of tasks: a module-level function and plain
data for each (a seed, a parameter set, a list of steps: never a machine). An engine maps
the function over the tasks and hands the results back in task order::

    from pykvm import engine
    with engine.get("dask", workers=2) as e:     # a local cluster, started and stopped here
        squares = e.map(pow, [(2, 2), (3, 2)])   # [4, 9]

`local` runs the tasks one after another in this process (the default: no start-up
cost, and nothing to serialize). `dask` uses dask.distributed: a LocalCluster of one
single-threaded worker process per core of this machine, started and stopped by the
engine, or an existing cluster named by its scheduler's address
(`get("dask", scheduler="tcp://host:8786")`).

`map(..., stop=pred)` ends early in a way that does not depend on timing: once the
result of task i satisfies `pred`, tasks after i are cancelled (their results are None)
while tasks before i still finish, so the first such task in order is the same on every
engine and every number of workers.
"""
from __future__ import annotations

import os

from .errors import InvalidConfiguration

__all__ = ["Engine", "LocalEngine", "DaskEngine", "get", "ENGINES"]

ENGINES = ("local", "dask")


def _call(fn, item):
    return fn(*item) if isinstance(item, tuple) else fn(item)


class Engine:
    """Maps a function over tasks; a context manager that releases what it started."""
    name = "?"
    workers = 1

    def map(self, fn, items, stop=None, progress=None):
        """[fn(item)] in item order (a tuple item is unpacked as arguments).
        stop: result -> bool, see the module doc. progress: called as
        progress(done, total, result) as each result arrives."""
        raise NotImplementedError

    def close(self):
        pass

    def describe(self):
        return self.name

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalEngine(Engine):
    """Every task in this process, in order."""
    name = "local"

    def map(self, fn, items, stop=None, progress=None):
        items = list(items)
        out = [None] * len(items)
        for i, item in enumerate(items):
            out[i] = _call(fn, item)
            if progress:
                progress(i + 1, len(items), out[i])
            if stop is not None and stop(out[i]):
                break
        return out


class DaskEngine(Engine):
    """Tasks on a dask.distributed cluster: a LocalCluster of `workers` single-threaded
    processes (default: one per core), or the cluster whose scheduler is at `scheduler`."""
    name = "dask"

    def __init__(self, scheduler=None, workers=None):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError as e:      # pragma: no cover - a dependency of pykvm
            raise InvalidConfiguration(f"the dask engine needs dask.distributed: {e}") from e
        import logging
        self.cluster = None
        if scheduler:
            self.client = Client(scheduler, timeout="30s", set_as_default=False)
        else:
            n = workers or os.cpu_count() or 1
            if n < 1:
                raise InvalidConfiguration(f"workers must be >= 1, got {n}")
            # One thread per worker: the checker's C explorer and the study's machines are
            # CPU-bound, and a process per core keeps them apart. Everything listens on
            # the loopback interface, on ports the system picks (several clusters, or
            # several users of this machine, never collide on the defaults).
            self.cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", scheduler_port=0,
                                        dashboard_address="127.0.0.1:0",
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster, set_as_default=False)
        self.workers = max(1, sum(w.get("nthreads", 1) for w in
                                  self.client.scheduler_info()["workers"].values()))

    def describe(self):
        where = "local cluster" if self.cluster else self.client.scheduler.address
        return f"dask ({where}, {self.workers} worker thread{'s' * (self.workers != 1)})"

    def map(self, fn, items, stop=None, progress=None):
        from dask.distributed import as_completed
        items = list(items)
        if not items:
            return []
        # One batch to the scheduler; results come back in batches as they finish.
        futures = self.client.map(_call, [fn] * len(items), items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        out = [None] * len(items)
        missing = len(items)      # results still wanted, up to the cut
        have = [False] * len(items)
        cut = len(items) - 1      # the last task wanted
        done = 0
        try:
            # This client's loop: with several clients in one process, as_completed would
            # otherwise wait on the default client's.
            for f, r in as_completed(futures, loop=self.client.loop, with_results=True,
                                     raise_errors=False):
                i = index[f.key]
                if i > cut or f.cancelled():
                    continue
                if f.status == "error":
                    raise r
                out[i], have[i] = r, True
                missing -= 1
                done += 1
                if progress:
                    progress(done, cut + 1, r)
                if stop is not None and stop(r):
                    self.client.cancel([g for g in futures[i + 1:] if not g.done()])
                    missing -= sum(1 for j in range(i + 1, cut + 1) if not have[j])
                    out[i + 1:] = [None] * (len(items) - i - 1)
                    cut = i
                if not missing:
                    break
        finally:
            self.client.cancel([g for g in futures if not g.done()])
        return out

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def get(name="local", scheduler=None, workers=None):
    """An engine by name: "local" (this process) or "dask" (a local cluster of `workers`
    processes, or the existing cluster at `scheduler`, e.g. "tcp://10.0.0.5:8786")."""
    if isinstance(name, Engine):
        return name
    if name == "local":
        if scheduler:
            raise InvalidConfiguration("a scheduler address needs the dask engine")
        return LocalEngine()
    if name == "dask":
        return DaskEngine(scheduler=scheduler, workers=workers)
    raise InvalidConfiguration(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
