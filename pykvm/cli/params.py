"""`--param module.name=value`, shared by every command that loads a vendor module."""


def add_argument(parser):
    parser.add_argument(
        "--param", action="append", default=[], metavar="[MODULE.]NAME[=VALUE]",
        help="a module parameter, as on a kernel command line: kvm.forget_lstar=1, "
             "kvm_intel.spec_ctrl_in_vmenter=off (bools take y/n, 1/0, true/false, "
             "on/off; a bare name is true); repeatable; `pykvm list params` lists them")


def parse(args):
    """{"[module.]name": raw value or None}; values are parsed by the library
    (pykvm.params), which refuses what the kernel would refuse."""
    out = {}
    for item in args.param:
        name, eq, value = item.partition("=")
        out[name.strip()] = value if eq else None
    return out
