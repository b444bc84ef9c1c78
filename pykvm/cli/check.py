"""`pykvm check`: explore event sequences for host/guest state leaks."""
import json

from rich.console import Console

from . import params as cli_params


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
    k.add_argument("--cpus", type=int, default=2, help="pCPUs (default: %(default)s)")
    k.add_argument("--vcpus", type=int, default=1, help="vCPUs (default: %(default)s)")
    k.add_argument("--bound", type=int, default=3,
                   help="exhaustive depth in steps (default: %(default)s)")
    k.add_argument("--walks", type=int, default=2000,
                   help="random walks after that (default: %(default)s)")
    k.add_argument("--seed", type=int, default=1, help="random seed (default: %(default)s)")
    k.add_argument("--seconds", type=float, default=None, help="stop exploring after this")
    k.add_argument("--save", default="pykvm-violation.json",
                   help="where a violation's replayable trace goes (default: %(default)s)")
    k.add_argument("--perfetto", default=None, help="also write a trace-event JSON timeline")
    k.set_defaults(func=run)


def run(args):
    from .. import check
    console = Console()
    params = cli_params.parse(args)
    with console.status(f"checking {args.vendor} to depth {args.bound}, then "
                        f"{args.walks} random walks"):
        r = check.check(args.vendor, preset=args.preset, params=params,
                        cpu_model=args.cpu_model, cpus=args.cpus, vcpus=args.vcpus,
                        bound=args.bound, walks=args.walks, seed=args.seed,
                        seconds=args.seconds)
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
