"""The `pykvm` command: `conform` (the MSR conformance table) and `run` (a guest binary)."""
import argparse
import json
import sys

import structlog
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

log = structlog.get_logger("pykvm")

_STYLE = {"pass": "green", "fail": "bold red", "unsupported": "yellow"}


def cmd_conform(args):
    from . import conform
    console = Console(stderr=False)
    backends = [conform.SimBackend(v) for v in args.vendor]
    if args.kvm:
        from .kvm import KvmMachine
        ok, why = KvmMachine.available()
        if ok:
            backends.append(conform.KvmBackend())
        else:
            console.print(f"[yellow]{why}: the host column is left out")
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task("conformance", total=len(conform.CASES))
        table = conform.run_all(backends, progress=lambda c: progress.advance(task))

    if args.json:
        out = {str(n): {b: vars(r) for b, r in row.items()} for n, row in table.items()}
        json.dump({"backends": [b.name for b in backends], "results": out}, sys.stdout, indent=1)
        print()
    else:
        t = Table(title="MSR conformance (CONFORMANCE.md)")
        t.add_column("#", justify="right")
        t.add_column("case")
        t.add_column("expect")
        for b in backends:
            t.add_column(b.name)
        for case in conform.CASES:
            row = table[case.number]
            cells = []
            for b in backends:
                r = row[b.name]
                text = r.status + (f": {r.observed}" if r.observed else "")
                cells.append(f"[{_STYLE[r.status]}]{text}")
            t.add_row(str(case.number), case.title, case.expect, *cells)
        console.print(t)
    # Host KVM differences are findings about the host; the exit status reflects the model.
    model_fail = [(n, b.name) for n, row in table.items() for b in backends
                  if b.is_model and row[b.name].status == "fail"]
    host = [b for b in backends if not b.is_model]
    if host and not args.json:
        findings = [(n, row[host[0].name]) for n, row in table.items()
                    if row[host[0].name].status != "pass"]
        if findings:
            console.print(f"\nFindings about the host ({host[0].name}): "
                          f"{len(findings)} case(s) differ from the expectation or are "
                          "unsupported; they do not affect the exit status.")
    for b in backends:
        b.close()
    if model_fail:
        console.print(f"[bold red]model failures: {model_fail}")
        return 1
    return 0


def cmd_run(args):
    from .exits import Io
    from .machine import Machine
    code = open(args.binary, "rb").read()
    m = Machine(cpus=1, vendor=args.vendor)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(code)
    for _ in range(args.max_exits):
        ex = vcpu.run(max_insns=args.max_insns)
        print(ex)
        if not isinstance(ex, Io):
            break
    return 0


def main(argv=None):
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    p = argparse.ArgumentParser(prog="pykvm", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("conform", help="the MSR conformance table on every backend")
    c.add_argument("--json", action="store_true", help="JSON instead of a table")
    c.add_argument("--kvm", action="store_true",
                   help="add the host's /dev/kvm as a column (findings about the host)")
    c.add_argument("--vendor", action="append", default=None,
                   help="simulated vendor(s) to include (default: vmx and svm)")
    c.set_defaults(func=cmd_conform)
    r = sub.add_parser("run", help="run raw x86-64 code (loaded at the standard image's "
                                   "code start) and print the exits")
    r.add_argument("binary")
    r.add_argument("--vendor", default="vmx")
    r.add_argument("--max-exits", type=int, default=100)
    r.add_argument("--max-insns", type=int, default=10_000_000)
    r.set_defaults(func=cmd_run)
    args = p.parse_args(argv)
    if getattr(args, "vendor", None) is None and args.cmd == "conform":
        args.vendor = ["vmx", "svm"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
