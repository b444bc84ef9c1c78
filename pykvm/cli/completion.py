"""`pykvm completion SHELL`: the shell completion script, generated from the parser.

shtab writes the script from the argparse parser itself, so it completes every command,
option and closed set of values (vendors, workloads, formats, list kinds) with no Python
run at TAB time; the alternative, argcomplete, starts the program on every TAB."""
import argparse

SHELLS = ("bash", "zsh", "tcsh")

EPILOG = """\
examples:
  pykvm completion bash > ~/.local/share/bash-completion/completions/pykvm
  pykvm completion zsh > "${fpath[1]}/_pykvm"
  eval "$(pykvm completion bash)"          this shell only"""


def add_parser(sub):
    p = sub.add_parser("completion", help="print the shell completion script (bash, zsh, "
                                          "tcsh)",
                       description="Print a completion script for SHELL on stdout; install "
                                   "it where your shell looks for completions.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=SHELLS, help="bash, zsh or tcsh")
    p.set_defaults(func=run)


def run(args):
    import shtab

    from . import build_parser
    print(shtab.complete(build_parser(), shell=args.shell))
    return 0
