"""`pykvm replay`: reproduce a saved violation deterministically."""
import json


def add_parser(sub):
    rp = sub.add_parser("replay", help="reproduce a saved violation deterministically",
                        description="Replay the steps of a file written by `pykvm check "
                                    "--save` and print the violation as kvm tracepoints.")
    rp.add_argument("trace", help="a violation file written by pykvm check")
    rp.add_argument("--perfetto", default=None, help="also write a trace-event JSON timeline")
    rp.set_defaults(func=run)


def run(args):
    from .. import check
    r = check.replay(args.trace)
    print(r.report())
    if args.perfetto:
        with open(args.perfetto, "w") as f:
            json.dump(r.perfetto(), f)
    return 1 if r.violation is not None else 0
