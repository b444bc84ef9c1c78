"""The `pykvm` command line. The library (the rest of pykvm) never parses arguments,
prints to a console, configures logging or exits the process: that all happens here.

Each subcommand is a module of this package with `add_parser(subparsers)` (which sets
`func`) and the function it sets. `main()` owns what every command shares: exit statuses
(0 pass, 1 a finding, 2 bad usage or input, 130 interrupted), one-line errors (`--debug`
for the traceback), and the log level.
"""
import argparse
import importlib
import sys

# Subcommands, in the order `pykvm --help` lists them: the main job first.
COMMANDS = ("study", "check", "replay", "conform", "run")

EXIT_PASS, EXIT_FINDING, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

DESCRIPTION = """\
KVM's x86 world switch, in user space. pykvm mirrors the part of Linux KVM that
switches host and guest state (MSRs, FS/GS bases, KERNEL_GS_BASE, TSC_AUX, SPEC_CTRL,
VMCS/VMCB host state) on a simulated x86-64 machine, prices each path in cycles, and
checks that no host or guest state leaks."""

EPILOG = """\
exit status: 0 pass, 1 a finding (a leak, a model failure, a guest that died),
2 bad usage or input, 130 interrupted."""


class UsageError(Exception):
    """Bad command-line input found after parsing; main() prints it and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    p = _Parser(prog="pykvm", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks and debug logs instead of one-line errors")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return p


def _configure_logging(debug):
    import logging

    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(
        logging.DEBUG if debug else logging.WARNING))


def main(argv=None):
    """Run `pykvm ARGV`; returns the exit status."""
    from ..errors import PykvmError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:          # --help, or a bad argument (already reported)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    _configure_logging(args.debug)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("pykvm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UsageError, PykvmError, OSError) as e:
        if args.debug:
            raise
        print(f"pykvm {args.cmd}: {e}", file=sys.stderr)
        return EXIT_USAGE


def entry():
    """The console script."""
    sys.exit(main())
