"""`pykvm run`: raw x86-64 code in a simulated guest, its exits printed."""


def add_parser(sub):
    r = sub.add_parser("run", help="run raw x86-64 code and print its exits",
                       description="Load raw x86-64 machine code at the standard image's "
                                   "code start in a one-vCPU VM and print each exit.")
    r.add_argument("binary", help="a file of raw 64-bit machine code")
    r.add_argument("--vendor", default="vmx", help="vmx or svm (default: %(default)s)")
    r.add_argument("--max-exits", type=int, default=100,
                   help="stop after this many exits (default: %(default)s)")
    r.add_argument("--max-insns", type=int, default=10_000_000,
                   help="guest instructions per KVM_RUN before it returns (default: "
                        "%(default)s)")
    r.set_defaults(func=run)


def run(args):
    from ..exits import Io
    from ..machine import Machine
    with open(args.binary, "rb") as f:
        code = f.read()
    m = Machine(cpus=1, vendor=args.vendor)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(code)
    for _ in range(args.max_exits):
        ex = vcpu.run(max_insns=args.max_insns)
        print(ex)
        if not isinstance(ex, Io):
            break
    return 0
