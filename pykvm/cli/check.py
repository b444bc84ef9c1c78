"""`pykvm check`: explore event sequences for host/guest state leaks."""
import argparse
import json
import time

from . import _complete, _progress
from . import params as cli_params


EPILOG = """\
A violation prints the register, where the host (or guest) consumed it, whose value it was,
the shortest step sequence found, and that sequence replayed as kvm tracepoints; it is
saved for `pykvm replay`. docs/checker.md explains how to read one.

exit status: 0 no violation within the bound, 1 a violation, 2 bad usage.

examples:
  pykvm check                                        upstream vmx, default bound
  pykvm check --vendor svm --preset v5.10            an older kernel era
  pykvm check --vendor vmx --param kvm.forget_lstar=1
  pykvm check --vcpus 2 --bound 4 --walks 0          deeper, exhaustive only
  pykvm check --seconds 60 --walks 1000000           random walks for a minute"""


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
    k.add_argument("--cpus", type=int, default=2, metavar="N",
                   help="pCPUs (default: %(default)s)")
    k.add_argument("--vcpus", type=int, default=1, metavar="N",
                   help="vCPUs, 1..4 (default: %(default)s)")
    k.add_argument("--bound", type=int, default=3, metavar="STEPS",
                   help="explore every sequence up to this many steps (default: "
                        "%(default)s)")
    k.add_argument("--walks", type=int, default=2000, metavar="N",
                   help="random walks of 12 steps after that (default: %(default)s)")
    k.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    k.add_argument("--seconds", type=float, default=None, metavar="S",
                   help="stop exploring after this long (default: no limit); "
                        "e.g. --seconds 60")
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
        r = check.check(args.vendor, preset=args.preset, params=params,
                        cpu_model=args.cpu_model, cpus=args.cpus, vcpus=args.vcpus,
                        bound=args.bound, walks=args.walks, seed=args.seed,
                        seconds=args.seconds, progress=tick)
    print(r.report())
    if r.violation is not None:
        if args.save:
            r.save(args.save)
            print(f"saved: {args.save} (pykvm replay {args.save})")
        if args.perfetto:
            with open(args.perfetto, "w") as f:
                json.dump(r.perfetto(), f)
            print(f"timeline: {args.perfetto} (open in ui.perfetto.dev or chrome://tracing)")
        return 1
    return 0
