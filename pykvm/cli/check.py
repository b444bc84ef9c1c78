"""`pykvm check`: explore event sequences for host/guest state leaks."""
import json

from rich.console import Console

from . import EXIT_FINDING, EXIT_INTERRUPTED, EXIT_PASS, UsageError
from . import params as cli_params
from .args import int_range, positive_seconds

MAX_BOUND = 64          # the explorer's deepest exhaustive search (PK_CHECK_MAX_STEPS)


def add_parser(sub):
    k = sub.add_parser("check", help="explore event sequences for host/guest state leaks",
                       description="Explore KVM_RUN, KVM_SET/GET_MSRS, migration, other "
                                   "tasks and virtualization off/on, with NMIs, #MC, disable "
                                   "IPIs and preemption injected at host instructions; a "
                                   "violation is shrunk, printed as kvm tracepoints and saved.")
    k.add_argument("--vendor", default="vmx", help="vmx or svm (default: %(default)s)")
    k.add_argument("--preset", default=None, help="a kernel era of the vendor")
    cli_params.add_argument(k)
    k.add_argument("--cpu-model", default=None, help="a CPU model of the vendor")
    k.add_argument("--cpus", type=int_range(1, 8), default=2,
                   help="pCPUs, 1..8 (default: %(default)s)")
    k.add_argument("--vcpus", type=int_range(1, 4), default=1,
                   help="vCPUs, 1..4 (default: %(default)s)")
    k.add_argument("--bound", type=int_range(0, MAX_BOUND), default=3,
                   help=f"exhaustive depth in steps, 0..{MAX_BOUND} (default: %(default)s)")
    k.add_argument("--walks", type=int_range(0, 2**64 - 1), default=2000,
                   help="random walks after that (default: %(default)s)")
    k.add_argument("--seed", type=int_range(0, 2**64 - 1), default=1,
                   help="random seed, 0..2**64-1 (default: %(default)s)")
    k.add_argument("--seconds", type=positive_seconds, default=None,
                   help="stop exploring after this; a budget too short to finish the "
                        "exhaustive part is refused")
    k.add_argument("--save", default="pykvm-violation.json",
                   help="where a violation's replayable trace goes (default: %(default)s)")
    k.add_argument("--perfetto", default=None, help="also write a trace-event JSON timeline")
    k.set_defaults(func=run)


def run(args):
    from .. import check
    console = Console()
    params = cli_params.parse(args)
    if args.bound == 0 and args.walks == 0:
        raise UsageError("--bound 0 and --walks 0 explore nothing")
    try:
        with console.status(f"checking {args.vendor} to depth {args.bound}, then "
                            f"{args.walks} random walks"):
            r = check.check(args.vendor, preset=args.preset, params=params,
                            cpu_model=args.cpu_model, cpus=args.cpus, vcpus=args.vcpus,
                            bound=args.bound, walks=args.walks, seed=args.seed,
                            seconds=args.seconds)
    except check.CheckInterrupted as e:
        # Ctrl-C: the explorer stopped after its current step; say what it covered.
        print(e.result.report())
        return EXIT_INTERRUPTED
    if r.violation is None and not r.exhaustive:
        raise UsageError(
            f"--seconds {args.seconds:g} ran out before every sequence of {args.bound} steps "
            f"was explored ({r.events} steps, {r.states} states): nothing was explored "
            f"exhaustively; raise --seconds or lower --bound")
    print(r.report())
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
