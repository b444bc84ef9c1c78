"""`pykvm conform`: the MSR conformance table on every backend."""
import argparse
import json
import sys

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

_STYLE = {"pass": "green", "fail": "bold red", "unsupported": "yellow"}


def add_parser(sub):
    c = sub.add_parser("conform", help="the guest-visible MSR cases on every backend, side "
                                       "by side",
                       description="Run the guest-visible MSR cases (docs/conformance.md) on "
                                   "the simulated vendors and, with --kvm, the host's "
                                   "/dev/kvm.",
                       epilog="exit status: 1 if the model fails a case (the host's answers "
                              "are findings, not failures).\n\nexamples:\n"
                              "  pykvm conform\n  pykvm conform --kvm\n"
                              "  pykvm conform --vendor svm --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--json", action="store_true", help="JSON instead of a table")
    c.add_argument("--kvm", action="store_true",
                   help="add the host's /dev/kvm as a column (findings about the host)")
    c.add_argument("--vendor", action="append", default=None,
                   help="simulated vendor(s) to include, repeatable (default: vmx and "
                        "svm); e.g. --vendor svm")
    c.set_defaults(func=run)


def run(args):
    from .. import conform
    console = Console(stderr=False)
    backends = [conform.SimBackend(v) for v in (args.vendor or ["vmx", "svm"])]
    if args.kvm:
        from ..devkvm import KvmMachine
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
        t = Table(title="MSR conformance (docs/conformance.md)")
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
