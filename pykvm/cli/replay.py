"""`pykvm replay`: reproduce a saved violation deterministically."""
import argparse
import json

from . import EXIT_FINDING, EXIT_PASS, _complete


EPILOG = """\
The file is checked first (format version, vCPU and pCPU indexes, parameters); the report
ends with "reproduced" when the saved violation came back, "did not reproduce" otherwise.

exit status: 1 when replaying finds a violation, 0 when it finds none (a fixed model),
2 for a file that cannot be read or is not a valid check file.

examples:
  pykvm replay pykvm-violation.json
  pykvm replay leak.json --perfetto timeline.json    open in ui.perfetto.dev"""


def add_parser(sub):
    rp = sub.add_parser("replay", help="reproduce a violation saved by `pykvm check`, with "
                                       "its kvm tracepoints",
                        description="Replay the steps of a file written by `pykvm check "
                                    "--save` from the same initial state, print the "
                                    "violation as kvm tracepoints and say whether it is the "
                                    "saved one.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _complete.file(rp.add_argument("trace", metavar="FILE",
                                   help="a violation file written by pykvm check --save"))
    _complete.file(rp.add_argument(
        "--perfetto", default=None, metavar="FILE",
        help="also write the timeline as trace-event JSON (ui.perfetto.dev)"))
    rp.set_defaults(func=run)


def run(args):
    from .. import check
    r = check.replay(args.trace)
    print(r.report())
    if args.perfetto:
        with open(args.perfetto, "w") as f:
            json.dump(r.perfetto(), f)
    return EXIT_FINDING if r.violation is not None else EXIT_PASS
