"""`pykvm run`: raw x86-64 code in a simulated guest, its exits printed."""
import os
import threading

from . import EXIT_INTERRUPTED, UsageError
from .args import int_range


def add_parser(sub):
    r = sub.add_parser("run", help="run raw x86-64 code and print its exits",
                       description="Load raw x86-64 machine code at the standard image's "
                                   "code start in a one-vCPU VM and print each exit.")
    r.add_argument("binary", help="a file of raw 64-bit machine code")
    r.add_argument("--vendor", default="vmx", help="vmx or svm (default: %(default)s)")
    r.add_argument("--max-exits", type=int_range(1, 2**63 - 1), default=100,
                   help="stop after this many exits (default: %(default)s)")
    r.add_argument("--max-insns", type=int_range(0, 2**64 - 1), default=10_000_000,
                   help="guest instructions per KVM_RUN before it returns; 0: no bound "
                        "(Ctrl-C stops it) (default: %(default)s)")
    r.set_defaults(func=run)


def _run_once(vcpu, max_insns):
    """One KVM_RUN on a worker thread, so that Ctrl-C reaches this one: it signals the
    vCPU thread (kick), whose run ends at the next host timer tick."""
    out = {}
    done = threading.Event()

    def work():
        try:
            out["exit"] = vcpu.run(max_insns=max_insns)
        except BaseException as e:  # handed to the caller's thread
            out["error"] = e
        finally:
            done.set()

    t = threading.Thread(target=work, name="pykvm-vcpu")
    t.start()
    interrupted = False
    while not done.is_set():        # an Event, not join(): see pykvm.check.Checker.explore
        try:
            done.wait(0.1)
        except KeyboardInterrupt:
            interrupted = True
            vcpu.kick()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["exit"], interrupted


def run(args):
    from ..exits import Io
    from ..machine import Machine
    from ..vcpu_base import MAX_RAW_CODE
    size = os.path.getsize(args.binary)
    if size > MAX_RAW_CODE:
        raise UsageError(f"{args.binary}: {size} bytes of code; the guest image holds at "
                         f"most {MAX_RAW_CODE}")
    with open(args.binary, "rb") as f:
        code = f.read(MAX_RAW_CODE + 1)
    m = Machine(cpus=1, vendor=args.vendor)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(code)
    for _ in range(args.max_exits):
        ex, interrupted = _run_once(vcpu, args.max_insns)
        print(ex)
        if interrupted:
            print("pykvm run: interrupted")
            return EXIT_INTERRUPTED
        if not isinstance(ex, Io):
            break
    return 0
