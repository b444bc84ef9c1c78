"""The checker beyond one core: a partitioned exhaustive search and a swarm of searches,
as tasks for an engine (pykvm.engine: this process, or a Dask cluster)::

    from pykvm import engine, swarm
    with engine.get("local") as e:     # or engine.get("dask", workers=2): the same result
        r = swarm.check("vmx", params={"forget_host_tr_base": True}, bound=3, swarm=4,
                        walks=100, engine=e)
    r.verdict, r.steps          # a CheckResult, as pykvm.check.check() returns

Two kinds of task, both taking plain data (the checker's configuration, steps as tuples,
a seed) and giving plain data back (counters, a hash per new state, a verdict and a
shrunk trace); a worker builds the machine from the configuration and keeps it for the
next task with the same one:

- The exhaustive part is a breadth-first search split level by level: the driver keeps
  the set of states seen (64-bit hashes that are the same in every process) and the
  frontier, each state named by the steps that reach it; a task expands a share of the
  frontier by one level (pk_checker_expand: replay the steps, try every child). Each
  distinct state is expanded once, at its shallowest depth, whatever the number of
  workers, so the work is that of one process and the frontier spreads over the workers.
  When a level brings no new state, the reachable space is closed.
- The swarm: many bounded searches, each diversified from the seed (its own seed, a
  random prefix of steps to start from, its own depth limit and walk length, a random
  subset of step kinds and host events: swarm testing, Groce et al., ISSTA 2012), run by
  pk_checker_explore_from.

A violation found by a task is shrunk there; the first in task order wins (pykvm.engine's
`stop`), so results are the same on every engine and number of workers.
"""
from __future__ import annotations

import errno
import json
import random
import threading
import time
from dataclasses import asdict, astuple, dataclass

from .check import CheckResult

from ._lib import ffi, lib
from .errors import InvalidConfiguration

__all__ = ["SpreadResult", "check", "exhaustive", "swarm_plan", "run_swarm", "swarm_task", "expand_task",
           "DEFAULT_SWARM"]

DEFAULT_SWARM = 32
_CHILDREN = 4096          # children buffer of pk_checker_expand, grown on -ENOSPC
_CACHE = 4                # machines a worker thread keeps, by configuration

_tls = threading.local()


@dataclass
class SpreadResult(CheckResult):
    """A CheckResult of a search spread over tasks: `closed` when a level of the
    exhaustive part found no new state (the reachable space is explored completely),
    `tasks` run, and the engine they ran on."""
    closed: bool = False
    tasks: int = 0
    engine: str = ""


# ---- on the worker ----------------------------------------------------------------------

def _checker(config):
    """A Checker for `config` (Checker keyword arguments), kept per thread: a task never
    shares a machine with another running task."""
    from .check import Checker
    cache = getattr(_tls, "checkers", None)
    if cache is None:
        cache = _tls.checkers = {}
    key = json.dumps(config, sort_keys=True)
    c = cache.pop(key, None)
    if c is None:
        c = Checker(**config)
        while len(cache) >= _CACHE:
            cache.pop(next(iter(cache)))
    cache[key] = c            # most recently used last
    return c


def _c_steps(steps):
    out = ffi.new("struct pk_step[]", max(1, len(steps)))
    for i, s in enumerate(steps):
        s.to_c(out[i])
    return out


def _steps(res):
    from .check import Step
    return [Step.from_c(res.steps[i]) for i in range(res.nr_steps)]


def _expand(c, prefix, hashes=True):
    """(children, n, result) for the state after `prefix`: the pk_child array as C
    holds it (thousands per state: read through _hashes and _step, never as objects).
    hashes=False: children's hashes are 1 (goes on) or 0 (the branch ends)."""
    cap = _CHILDREN
    while True:
        out = ffi.new("struct pk_child[]", cap)
        res = ffi.new("struct pk_check_result *")
        n = lib.pk_checker_expand(c._c, _c_steps(prefix), len(prefix), out, cap, hashes,
                                  res)
        if n == -errno.ENOSPC:
            cap *= 4
            continue
        if n == -errno.ECHILD:
            raise InvalidConfiguration("a prefix ends its branch: "
                                       + "; ".join(str(s) for s in prefix))
        if n < 0:
            raise InvalidConfiguration(f"pk_checker_expand failed ({n})")
        return out, n, res


def _hashes(out, n):
    """The children's hashes, in order, read straight from the C array."""
    stride = ffi.sizeof("struct pk_child") // 8
    words = memoryview(ffi.buffer(out, n * stride * 8)).cast("Q")
    return words[ffi.offsetof("struct pk_child", "hash") // 8::stride].tolist()


def _step(out, i):
    from .check import Step
    return Step.from_c(out[i].step)


def _finish(c, steps, violation):
    """The violation's shrunk steps, replayed and attributed, as plain data."""
    steps = c.shrink(steps, violation)
    v = c.attribute(steps)
    return {"violation": asdict(v), "steps": [astuple(s) for s in steps]}


def expand_task(config, paths, hashes=True):
    """Expand each state named by `paths` (lists of step tuples) by one level, in order.
    Returns {"children": [(path index, step tuple, hash)] with each hash once, "events",
    "exits", "violation", "steps"}; stops at the first violation (shrunk). hashes=False
    (the last level of a bounded search): children are only checked, not returned."""
    from .check import Step
    from .oracle import Violation
    c = _checker(config)
    seen, children, events, exits = set(), [], 0, 0
    for i, path in enumerate(paths):
        out, n, res = _expand(c, [Step(*t) for t in path], hashes)
        events += res.events
        exits += res.exits
        if res.violated:
            got = _finish(c, _steps(res), Violation.from_c(res.violation, 1))
            return dict(got, children=[], events=events, exits=exits)
        if not hashes:
            continue
        for k, h in enumerate(_hashes(out, n)):
            if h and h not in seen:
                seen.add(h)
                children.append((i, astuple(_step(out, k)), h))
    return {"children": children, "events": events, "exits": exits, "violation": None,
            "steps": []}


def swarm_task(spec):
    """One bounded search of the swarm (a dict from swarm_plan): a random prefix of
    spec["prefix"] steps from spec["seed"], then every sequence of spec["bound"] more
    steps, then spec["walks"] random walks of spec["walk_len"] steps, from there.
    Returns counters, and a violation with its shrunk steps (or None)."""
    from .check import Step
    from .oracle import Violation
    t0 = time.perf_counter()
    c = _checker(spec["config"])
    rng = random.Random(spec["seed"])
    prefix, events, exits = [], 0, 0
    res = None
    for _ in range(spec["prefix"]):
        out, n, got = _expand(c, prefix)
        events += got.events
        exits += got.exits
        if got.violated:
            res = got            # found on the way: the prefix and the violating step
            break
        going = [k for k, h in enumerate(_hashes(out, n)) if h]
        if not going:
            break                # a dead end: search from here
        prefix.append(_step(out, rng.choice(going)))
    if res is None:
        res = ffi.new("struct pk_check_result *")
        r = lib.pk_checker_explore_from(c._c, _c_steps(prefix), len(prefix), spec["bound"],
                                        spec["max_states"], spec["walks"], spec["walk_len"],
                                        spec["seed"], float(spec.get("seconds") or 0), res)
        if r < 0:
            raise InvalidConfiguration(f"pk_checker_explore_from failed ({r})")
        events += res.events
        exits += res.exits
    out = {"events": events, "exits": exits, "states": res.states, "walks": res.walks,
           "depth_done": res.depth_done, "prefix": [astuple(s) for s in prefix],
           "violation": None, "steps": [], "seconds": time.perf_counter() - t0}
    if res.violated:
        out.update(_finish(c, _steps(res), Violation.from_c(res.violation, 1)))
    return out


# ---- on the driver ------------------------------------------------------------------------

def _chunks(seq, n):
    """`seq` in n contiguous parts, as even as can be (none empty)."""
    n = max(1, min(n, len(seq)))
    k, extra = divmod(len(seq), n)
    out, at = [], 0
    for i in range(n):
        size = k + (i < extra)
        out.append(seq[at:at + size])
        at += size
    return out


def exhaustive(config, bound, engine, max_states=200_000, progress=None, tasks_per_worker=16):
    """Every sequence of up to `bound` steps, breadth-first, spread level by level over
    `engine`. Returns {"events", "exits", "states", "depth_done", "closed", "violation",
    "steps", "tasks", "levels"}; violation and steps as expand_task gives them; levels:
    per depth expanded, (its states, steps tried, tasks, seconds).
    progress: called as progress(level, done, total) as the level's tasks finish."""
    frontier = [()]
    seen = set()
    out = {"events": 0, "exits": 0, "states": 0, "depth_done": 0, "closed": False,
           "violation": None, "steps": [], "tasks": 0, "levels": []}
    for d in range(bound):
        # The last level's children are checked, not kept: their states are not hashed
        # (a third of a step each), so a bound that cuts the search says nothing of closure.
        last = d == bound - 1
        # How the frontier is cut does not change the result (children merge in
        # frontier order), only how it spreads: enough tasks per worker that the
        # level's barrier does not wait long on its slowest (docs/scale.md).
        chunks = _chunks(frontier, engine.workers * tasks_per_worker)
        specs = [(config, chunk, not last) for chunk in chunks]
        t0, before = time.perf_counter(), out["events"]
        tick = (lambda done, total, r, d=d: progress(d + 1, done, total)) if progress else None
        results = engine.map(expand_task, specs, stop=lambda r: r["violation"] is not None,
                             progress=tick)
        out["tasks"] += len(specs)
        nxt = []
        for chunk, r in zip(chunks, results):
            if r is None:
                break
            out["events"] += r["events"]
            out["exits"] += r["exits"]
            if r["violation"] is not None:
                out.update(violation=r["violation"], steps=r["steps"])
                out["states"] = len(seen)
                return out
            for i, step, h in r["children"]:
                if h not in seen:
                    seen.add(h)
                    nxt.append(chunk[i] + (tuple(step),))
        out["depth_done"] = d + 1
        out["states"] = len(seen)
        out["levels"].append((len(frontier), out["events"] - before, len(specs),
                              time.perf_counter() - t0))
        frontier = nxt
        if not frontier and not last:
            out["closed"] = True        # no new state: every depth is explored
            out["depth_done"] = bound
            break
        if len(seen) >= max_states:
            break
    return out


def swarm_plan(config, n=DEFAULT_SWARM, seed=1, bound=3, walks=2000, walk_len=12,
               max_states=200_000, seconds=None):
    """n diversified search specs (plain dicts for swarm_task), the same for a seed."""
    from .check import INJECTS, STEP_KINDS
    rng = random.Random(seed)
    kinds = list(config.get("steps") or STEP_KINDS)
    injections = list(INJECTS[1:] if config.get("injections") is None
                      else config["injections"])
    per_task = -(-walks // n) if n else 0
    plan = []
    for _ in range(n):
        mix = [k for k in kinds if k == "run" or rng.random() < 0.5] or kinds
        events = [k for k in injections if rng.random() < 0.5]
        prefix = rng.randint(0, max(1, bound))
        length = min(rng.choice((walk_len // 2 or 1, walk_len, 2 * walk_len)), 64 - prefix)
        plan.append({"config": dict(config, steps=mix, injections=events),
                     "seed": rng.getrandbits(48) | 1, "prefix": prefix,
                     "bound": rng.choice((0, 1)), "walks": per_task,
                     "walk_len": length, "max_states": max_states, "seconds": seconds})
    return plan


def run_swarm(plan, engine, progress=None):
    """The results of swarm_task over `plan`, cut after the first violation in order."""
    return engine.map(swarm_task, plan, stop=lambda r: r["violation"] is not None,
                      progress=progress)


def check(vendor="vmx", *, preset=None, params=None, cpu_model=None, cpus=2, vcpus=1,
          bound=3, max_states=200_000, swarm=DEFAULT_SWARM, walks=2000, walk_len=12, seed=1,
          seconds=None, steps=None, injections=None, vms=1, engine=None, progress=None):
    """pykvm.check.check() spread over `engine` (default: this process): the exhaustive
    search to `bound`, breadth-first and split by level; then, unless it found a
    violation, `swarm` diversified searches sharing `walks` random walks. A CheckResult;
    its counters add up every task's. progress: called as progress(phase, done, total)
    with phase "depth N" or "swarm"."""
    from . import engine as _engine
    from .check import Checker, Step
    from .oracle import Violation
    t0 = time.perf_counter()
    # Built here too: a bad configuration fails before any task goes out, and the result
    # names the preset and parameters as the machine resolved them.
    c = Checker(vendor, preset, params, cpu_model, cpus, vcpus, steps, injections, vms=vms)
    config = {k: v for k, v in c.config.items() if k != "run_budget"}
    config = dict(config, params=dict(c.m.params))
    e = engine if engine is not None else _engine.LocalEngine()
    tick = None
    if progress:
        def tick(level, done, total):
            progress(f"depth {level}", done, total)
    ex = exhaustive(config, bound, e, max_states, tick)
    events, exits, nwalks = ex["events"], ex["exits"], 0
    found, fsteps = ex["violation"], ex["steps"]
    searches = []
    if found is None and swarm:
        plan = swarm_plan(config, swarm, seed, bound, walks, walk_len, max_states, seconds)
        sw_tick = (lambda done, total, r: progress("swarm", done, total)) if progress else None
        searches = run_swarm(plan, e, sw_tick)
        for r in searches:
            if r is None:
                break
            events += r["events"]
            exits += r["exits"]
            nwalks += r["walks"]
            if r["violation"] is not None:
                found, fsteps = r["violation"], r["steps"]
                break
    v = Violation(**found) if found else None
    # max_states can cut the exhaustive part short, as a time budget cuts check()'s.
    verdict = "violation" if v else "pass" if ex["depth_done"] >= bound else "incomplete"
    return SpreadResult(vendor, c.m.preset, c.m.params, verdict, v,
                        [Step(*t) for t in fsteps] if v else [], events, ex["states"],
                        ex["depth_done"], nwalks, time.perf_counter() - t0, config=c.config,
                        exits=exits, bound=bound, walks_asked=walks, closed=ex["closed"],
                        tasks=ex["tasks"] + len([r for r in searches if r is not None]),
                        engine=e.describe())
