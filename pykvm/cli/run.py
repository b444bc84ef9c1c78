"""`pykvm run`: raw x86-64 code in a simulated guest, its exits decoded and printed."""
import argparse
import os
import threading

from . import EXIT_INTERRUPTED, UsageError, _complete
from .args import int_range

EPILOG = """\
The code is loaded at the standard image's code start, in long mode at CPL 0, with the
runtime's exception stubs installed: an exception the code does not handle comes back as
a ucall naming the vector and RIP. Port and MMIO reads are answered with zeros.

exit status: 0 when the guest halts, reports DONE, or the run stops at --max-exits;
1 when it died (an unhandled exception, a failed assertion, a triple fault, an internal
error or a failed entry); 2 for a file that cannot be read or is larger than the guest
image's room for code; 130 when Ctrl-C stopped it.

examples:
  printf '\\xe6\\x80\\xf4' > out.bin && pykvm run out.bin     OUT to port 0x80, then HLT
  pykvm run --vendor svm --trace code.bin                    with kvm tracepoints
  pykvm run --max-exits 10 loop.bin"""


def add_parser(sub):
    from ..vendors import vendors
    r = sub.add_parser("run", help="run raw x86-64 code in a guest and print its exits, "
                                   "decoded",
                       description="Load raw 64-bit machine code into a one-vCPU VM on the "
                                   "simulated machine, run it, and print each exit decoded: "
                                   "ucall messages, the vector and RIP of an exception, "
                                   "port and MMIO accesses with direction and data.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _complete.file(r.add_argument("binary", help="a file of raw 64-bit machine code"))
    r.add_argument("--vendor", default="vmx", choices=sorted(vendors()),
                   help="vendor module (default: %(default)s); e.g. --vendor svm")
    r.add_argument("--cpu-model", default=None, metavar="NAME",
                   help="a CPU model of the vendor (default: the vendor's own; "
                        "`pykvm list cpus`); e.g. --cpu-model zen4")
    r.add_argument("--max-exits", type=int_range(1, 2**63 - 1), default=100, metavar="N",
                   help="stop after this many exits (default: %(default)s)")
    r.add_argument("--max-insns", type=int_range(0, 2**64 - 1), default=10_000_000,
                   metavar="N",
                   help="guest instructions per KVM_RUN before it returns with "
                        "KVM_EXIT_INTR; 0: no bound (Ctrl-C stops it) (default: %(default)s)")
    r.add_argument("--trace", action="store_true",
                   help="print the kvm tracepoints (kvm_entry, kvm_exit, kvm_msr, ...) "
                        "of each run before its exit")
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


def describe(vcpu, ex, image=None):
    """(text, died, stop) for one exit: a decoded line, whether the guest died, and
    whether the run loop should stop."""
    from .. import exits as X
    from .. import guest
    if isinstance(ex, X.Io):
        if ex.port == guest.UCALL_PORT and not ex.is_in and ex.size == 4:
            try:
                uc = guest.get_ucall(vcpu, ex, image)
            except Exception as e:          # not a well-formed ucall: show the raw port exit
                return f"{_io(ex)} (not a ucall: {e})", False, False
            if uc.cmd == guest.UcallCmd.SYNC:
                return f"ucall SYNC {', '.join(f'{a:#x}' for a in uc.args)}", False, False
            if uc.cmd == guest.UcallCmd.DONE:
                return "ucall DONE", False, True
            return f"ucall {uc.cmd.name}: {uc.message()}", True, True
        return _io(ex), False, False
    if isinstance(ex, X.Mmio):
        way = "write" if ex.is_write else "read"
        data = (f" data {_hex(ex.data[:ex.len])}" if ex.is_write
                else " (answered with zeros)")
        return f"MMIO {way} {ex.phys_addr:#x} len {ex.len}{data}", False, False
    if isinstance(ex, X.Hlt):
        return "HLT (the guest halted)", False, True
    if isinstance(ex, X.Shutdown):
        return "SHUTDOWN (triple fault: an exception with no way to deliver it)", True, True
    if isinstance(ex, X.Intr):
        return "INTR (the instruction budget of this KVM_RUN ran out)", False, False
    if isinstance(ex, X.InternalError):
        return (f"INTERNAL_ERROR suberror {ex.suberror} data "
                f"{' '.join(f'{d:#x}' for d in ex.data)}"), True, True
    if isinstance(ex, X.FailEntry):
        return (f"FAIL_ENTRY hardware reason {ex.hardware_entry_failure_reason:#x} "
                f"on CPU {ex.cpu}"), True, True
    return guest.describe_exit(ex), False, True


def _hex(b):
    return "0x" + bytes(b)[::-1].hex() if len(b) <= 8 else bytes(b).hex(" ")


def _io(ex):
    way = "in" if ex.is_in else "out"
    data = (f"data {_hex(ex.data[:ex.size * ex.count])}" if not ex.is_in
            else "(answered with zeros)")
    rep = f" count {ex.count}" if ex.count != 1 else ""
    return f"IO {way} port {ex.port:#x} size {ex.size}{rep} {data}"


def run(args):
    from .. import exits as X
    from .._lib import ffi, lib
    from ..check import _TRACE_KINDS, _format_trace
    from ..machine import Machine
    from ..vcpu_base import MAX_RAW_CODE
    size = os.path.getsize(args.binary)
    if size > MAX_RAW_CODE:
        raise UsageError(f"{args.binary}: {size} bytes of code; the guest image holds at "
                         f"most {MAX_RAW_CODE}")
    with open(args.binary, "rb") as f:
        code = f.read(MAX_RAW_CODE + 1)
    m = Machine(cpus=1, vendor=args.vendor, cpu_model=args.cpu_model)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(code)
    image = getattr(vcpu, "image", None)
    buf = ffi.new("struct pk_trace *") if args.trace else None
    died = False
    try:
        if buf is not None:
            lib.pk_machine_set_trace(m._m, buf)
        for n in range(1, args.max_exits + 1):
            ex, interrupted = _run_once(vcpu, args.max_insns)
            if buf is not None:
                recs = [(_TRACE_KINDS[r.kind], r.cpu, r.a, r.b) for r in buf.rec[0:buf.n]]
                for line in _format_trace(recs, args.vendor):
                    print(f"  {line}")
                if buf.dropped:
                    print(f"  ({buf.dropped} tracepoints dropped: the buffer holds "
                          f"{len(buf.rec)})")
                buf.n = buf.dropped = 0
            text, died, stop = describe(vcpu, ex, image)
            if interrupted and isinstance(ex, X.Intr):
                text = "INTR (interrupted: Ctrl-C signalled the vCPU thread)"
            print(f"exit {n}: {text}")
            if interrupted:
                if not isinstance(ex, X.Intr):
                    print("interrupted (Ctrl-C)")
                return EXIT_INTERRUPTED
            if stop:
                break
            if isinstance(ex, X.Mmio) and not ex.is_write:
                ex.data[:] = bytes(len(ex.data))
        else:
            print(f"stopped after {args.max_exits} exits (--max-exits)")
    finally:
        if buf is not None:
            lib.pk_machine_set_trace(m._m, ffi.NULL)
    return 1 if died else 0
