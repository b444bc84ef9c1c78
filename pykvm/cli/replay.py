"""`pykvm replay`: reproduce a saved violation deterministically."""
import json

from . import EXIT_FINDING, EXIT_PASS


def add_parser(sub):
    rp = sub.add_parser("replay", help="reproduce a saved violation deterministically",
                        description="Check a file written by `pykvm check --save`, replay "
                                    "its steps, and say whether the saved violation was "
                                    "reproduced (printed as kvm tracepoints). Exit status: 1 "
                                    "when replaying finds a violation, 0 when it finds none.")
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
    return EXIT_FINDING if r.violation is not None else EXIT_PASS
