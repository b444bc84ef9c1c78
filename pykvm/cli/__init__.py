"""The `pykvm` command line. The library (the rest of pykvm) never parses arguments,
prints to a console, configures logging or exits the process: that all happens here.

Each subcommand is a module of this package with `add_parser(subparsers)` (which sets
`func`) and the function it sets. `main()` owns what every command shares: exit statuses
(0 pass, 1 a finding, 2 bad usage or input, 130 interrupted, 141 output pipe closed), one-line errors (`--debug`
for the traceback), and the log level.
"""
import argparse
import importlib
import sys

# Subcommands, in the order `pykvm --help` lists them: the main job first.
COMMANDS = ("study", "check", "sweep", "replay", "conform", "run", "validate", "profile",
            "list", "completion")

EXIT_PASS, EXIT_FINDING, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE = 0, 1, 2, 130, 141

DESCRIPTION = """\
KVM's x86 world switch, in user space. pykvm mirrors the part of Linux KVM that
switches host and guest state (MSRs, FS/GS bases, KERNEL_GS_BASE, TSC_AUX, SPEC_CTRL,
VMCS/VMCB host state) on a simulated x86-64 machine, for VMX and SVM in each kernel era
it models. It prices every path in cycles (study), searches event sequences for host or
guest state that leaks (check, replay), holds the model and the host's /dev/kvm to the
guest-visible MSR cases (conform), and runs your own guest code (run). It checks its
cycles against published measurements (validate) and measures this host's costs through
/dev/kvm into a profile (profile measure)."""

EPILOG = """\
examples:
  pykvm study                                   cycles per event and a verdict, every era
  pykvm study --compare svm:upstream svm:v5.10  two variants side by side
  pykvm check --vendor vmx --param kvm.forget_lstar=1
  pykvm replay pykvm-violation.json
  pykvm conform --kvm
  pykvm run code.bin
  pykvm list params --vendor svm                what --param takes, with upstream values
  pykvm COMMAND --help                          each command's options and examples

exit status: 0 pass, 1 a finding (a leak, a model failure, a guest that died),
2 bad usage or input, 130 interrupted (Ctrl-C), 141 output pipe closed."""


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
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(name)s: %(message)s")


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
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as command-line tools do.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except (UsageError, PykvmError, OSError) as e:
        if args.debug:
            raise
        print(f"pykvm {args.cmd}: {e}", file=sys.stderr)
        return EXIT_USAGE


def entry():
    """The console script."""
    sys.exit(main())
