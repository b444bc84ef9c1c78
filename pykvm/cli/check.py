"""`pykvm check`: explore event sequences for host/guest state leaks."""
import argparse
import json
import time

from ..swarm import DEFAULT_SWARM

from . import EXIT_FINDING, EXIT_INTERRUPTED, EXIT_PASS, UsageError
from . import _complete, _engine, _progress
from . import params as cli_params
from .args import int_range, positive_seconds

MAX_BOUND = 64          # the explorer's deepest exhaustive search (PK_CHECK_MAX_STEPS)


EPILOG = """\
A violation prints the register, where the host (or guest) consumed it, whose value it was,
the shortest step sequence found, and that sequence replayed as kvm tracepoints; it is
saved for `pykvm replay`. docs/checker.md explains how to read one.

exit status: 0 no violation within the bound, 1 a violation, 2 bad usage, 130
interrupted (Ctrl-C: what was explored so far is printed).

examples:
  pykvm check                                        upstream vmx, default bound
  pykvm check --vendor svm --preset v5.10            an older kernel era
  pykvm check --vendor vmx --param kvm.forget_lstar=1
  pykvm check --vcpus 2 --bound 4 --walks 0          deeper, exhaustive only
  pykvm check --seconds 60 --walks 1000000           random walks for a minute
  pykvm check --vcpus 2 --bound 5 --reduce none      without reductions (to compare)
  pykvm check --vcpus 2 --bound 4 --reduce revisit,sleep   with sleep sets
  pykvm check --engine dask --vcpus 2 --bound 6      on a local Dask cluster: the search
                                                     split by level, then a swarm
  pykvm check --scheduler tcp://10.0.0.5:8786        on an existing Dask cluster"""


def check_reductions():
    from ..check import REDUCTIONS
    return tuple(REDUCTIONS)


def _reductions(text):
    """--reduce: 'all' (the default set), 'none' or a comma list of names, as a tuple of
    names."""
    from ..check import DEFAULT_REDUCE, reduce_mask
    from ..errors import InvalidConfiguration
    known = check_reductions()
    if text == "all":
        return DEFAULT_REDUCE
    if text == "none":
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown reduction {', '.join(bad) or repr(text)}: 'all', 'none' or a comma list "
            f"of {', '.join(known)}")
    try:
        reduce_mask(names)
    except InvalidConfiguration as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return names


def add_parser(sub):
    from ..vendors import vendors
    k = sub.add_parser("check", help="explore event sequences for host/guest state leaks; "
                                     "a violation is shrunk, traced and saved",
                       description="Explore KVM_RUN, KVM_SET/GET_MSRS, migration, other "
                                   "tasks and virtualization off/on, with NMIs, #MC, disable "
                                   "IPIs and preemption injected at host instructions; a "
                                   "violation is shrunk, printed as kvm tracepoints and saved.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    k.add_argument("--vendor", default="vmx", choices=sorted(vendors()),
                   help="vendor module (default: %(default)s); e.g. --vendor svm")
    k.add_argument("--preset", default=None, metavar="ERA",
                   help="a kernel era of the vendor (default: upstream; `pykvm list "
                        "presets`); e.g. --preset v5.10")
    cli_params.add_argument(k)
    k.add_argument("--cpu-model", default=None, metavar="NAME",
                   help="a CPU model of the vendor (default: the vendor's first; `pykvm list "
                        "cpus`); e.g. --cpu-model icelake")
    k.add_argument("--cpus", type=int_range(1, 8), default=2, metavar="N",
                   help="pCPUs, 1..8 (default: %(default)s)")
    k.add_argument("--vcpus", type=int_range(1, 4), default=1, metavar="N",
                   help="vCPUs, 1..4 (default: %(default)s)")
    k.add_argument("--bound", type=int_range(0, MAX_BOUND), default=3, metavar="STEPS",
                   help=f"explore every sequence up to this many steps, 0..{MAX_BOUND} "
                        f"(default: %(default)s)")
    k.add_argument("--walks", type=int_range(0, 2**64 - 1), default=2000, metavar="N",
                   help="random walks of 12 steps after that (default: %(default)s)")
    k.add_argument("--seed", type=int_range(0, 2**64 - 1), default=1,
                   help="random seed, 0..2**64-1 (default: %(default)s)")
    k.add_argument("--seconds", type=positive_seconds, default=None, metavar="S",
                   help="stop exploring after this long (default: no limit); a budget too "
                        "short to finish the exhaustive part is refused; e.g. --seconds 60")
    k.add_argument("--reduce", type=_reductions, default=None, metavar="NAMES",
                   help="the search's reductions: 'all' (default: those sound without "
                        "assumptions, revisit), 'none' (plain iterative deepening: each bound "
                        "searched again from the start), or a comma list of: "
                        + ", ".join(check_reductions()) + " (revisit: breadth-first, each "
                        "distinct state expanded once; sleep, with revisit: sleep sets, steps "
                        "that commute not tried in both orders, sound as far as the model's "
                        "steps are local (docs/checker.md); verify, with sleep: try the steps "
                        "left out anyway and count where the two orders disagree)")
    _engine.add_arguments(k, what="searches")
    k.add_argument("--swarm", type=int_range(0, 2**31 - 1), default=None, metavar="N",
                   help="split the search into tasks: the exhaustive part breadth-first, "
                        "level by level, then N diversified searches (seeds, prefixes, "
                        "depth limits, step and event mixes) sharing --walks (default with "
                        "--engine dask: %d; without it, one search in this process); "
                        "--seconds then limits each search" % DEFAULT_SWARM)
    _complete.file(k.add_argument(
        "--save", default="pykvm-violation.json", metavar="FILE",
        help="where a violation's replayable steps go (default: %(default)s)"))
    _complete.file(k.add_argument(
        "--perfetto", default=None, metavar="FILE",
        help="also write a violation's timeline as trace-event JSON (ui.perfetto.dev, "
             "chrome://tracing); e.g. --perfetto leak.json"))
    k.set_defaults(func=run)


def run(args):
    from .. import check
    params = cli_params.parse(args)
    if args.bound == 0 and args.walks == 0:
        raise UsageError("--bound 0 and --walks 0 explore nothing")
    if args.engine == "dask" or args.scheduler or args.swarm is not None:
        if args.reduce is not None:
            raise UsageError("--reduce is for the search in this process; the search split "
                             "over tasks is breadth-first, each state expanded once, already")
        r = _run_tasks(args, params)
    else:
        try:
            r = _run_here(args, params, check)
        except check.CheckInterrupted as e:
            # Ctrl-C: the explorer stopped after its current step; say what it covered.
            print(e.result.report())
            return EXIT_INTERRUPTED
        if r.violation is None and not r.exhaustive and args.seconds is not None:
            raise UsageError(
                f"--seconds {args.seconds:g} ran out before every sequence of {args.bound} "
                f"steps was explored ({r.events} steps, {r.states} states): nothing was "
                f"explored exhaustively; raise --seconds or lower --bound")
    print(r.report())
    closed = ("the reachable space is closed: no state within reach is left unexplored"
              if r.closed else "")
    if getattr(r, "tasks", 0):
        print(f"{r.tasks} tasks on {r.engine}" + (f"; {closed}" if closed else ""))
    elif closed:
        print(closed)
    if r.violation is not None:
        if args.save:
            r.save(args.save)
            print(f"saved: {args.save} (pykvm replay {args.save})")
        if args.perfetto:
            with open(args.perfetto, "w") as f:
                json.dump(r.perfetto(), f)
            print(f"timeline: {args.perfetto} (open in ui.perfetto.dev or chrome://tracing)")
        return EXIT_FINDING
    return EXIT_PASS


def _run_here(args, params, check):
    """The search in this process (pykvm.check); Ctrl-C raises CheckInterrupted."""
    with _progress.progress() as bar:
        exhaustive = bar.add_task(f"{args.vendor} to depth {args.bound}", total=None,
                                  unit="steps")
        walks = bar.add_task("random walks", total=args.walks or None, unit="walks",
                             visible=False)
        timed = (bar.add_task(f"time limit {args.seconds:g} s", total=args.seconds)
                 if args.seconds else None)
        t0 = time.monotonic()

        def tick(n):
            bar.update(exhaustive, completed=n["events"] if not n["walks"] else None,
                       description=f"{args.vendor} to depth {args.bound}: "
                                   f"{n['states']:,} states")
            if n["walks"]:
                bar.update(exhaustive, total=1, completed=1)
                bar.update(walks, completed=n["walks"], visible=True)
            if timed is not None:
                bar.update(timed, completed=min(args.seconds, time.monotonic() - t0))
        return check.check(args.vendor, preset=args.preset, params=params,
                           cpu_model=args.cpu_model, cpus=args.cpus, vcpus=args.vcpus,
                           bound=args.bound, walks=args.walks, seed=args.seed,
                           seconds=args.seconds, progress=tick,
                           reduce=check.DEFAULT_REDUCE if args.reduce is None else args.reduce)


def _run_tasks(args, params):
    """The search as tasks on an engine (pykvm.swarm); Ctrl-C stops it (exit 130) and
    closes the engine, with nothing to report: the tasks' results are on the workers."""
    from .. import swarm
    n = DEFAULT_SWARM if args.swarm is None else args.swarm
    with _engine.open_engine(args) as engine, _progress.progress() as bar:
        tasks = {}

        def tick(phase, done, total):
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{args.vendor} {phase}", total=total,
                                            unit="tasks")
            bar.update(tasks[phase], completed=done, total=total)
        r = swarm.check(args.vendor, preset=args.preset, params=params,
                        cpu_model=args.cpu_model, cpus=args.cpus, vcpus=args.vcpus,
                        bound=args.bound, swarm=n, walks=args.walks, seed=args.seed,
                        seconds=args.seconds, engine=engine, progress=tick)
    return r
