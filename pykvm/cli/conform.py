"""`pykvm conform`: the MSR conformance suites on every backend."""
import argparse
import json
import sys

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from . import _progress

_STYLE = {"pass": "green", "fail": "bold red", "unsupported": "yellow"}
_HOST_LABEL = {"known": "[dim](known)", "new": "[bold red](NEW)", "fixed": "[bold cyan](FIXED?)",
               "pass": ""}
_SUITES = ("table", "msr", "msrs", "userspace-msr", "all")
_TITLES = {
    "table": "MSR conformance (docs/conformance.md)",
    "msr": "kvm-unit-tests x86/msr.c",
    "msrs": "KVM selftests x86/msrs_test.c",
    "userspace-msr": "KVM selftests x86/userspace_msr_exit_test.c",
    "all": "every MSR conformance suite",
}


def add_parser(sub):
    c = sub.add_parser(
        "conform", help="the guest-visible MSR cases and suites on every backend, side by side",
        description="Run guest-visible MSR cases on the simulated vendors and, with --kvm, "
                    "the host's /dev/kvm. --suite picks the cases: the docs/conformance.md "
                    "table (default), our ports of kvm-unit-tests x86/msr.c (msr) and of the "
                    "KVM selftests msrs_test.c (msrs) and userspace_msr_exit_test.c "
                    "(userspace-msr), or all of them. Each host result is labelled known, "
                    "NEW or FIXED? against the host module's recorded findings "
                    "(pykvm/conform/host_findings.py).",
        epilog="exit status: 1 if the model fails a case (the host's answers are findings, "
               "not failures).\n\nexamples:\n"
               "  pykvm conform\n  pykvm conform --kvm\n"
               "  pykvm conform --suite msrs --kvm\n"
               "  pykvm conform --suite all --vendor svm --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--suite", choices=_SUITES, default="table",
                   help="which cases to run (default: table, the 19 docs/conformance.md cases)")
    c.add_argument("--json", action="store_true", help="JSON instead of a table")
    c.add_argument("--kvm", action="store_true",
                   help="add the host's /dev/kvm as a column (findings about the host)")
    c.add_argument("--vendor", action="append", default=None,
                   help="simulated vendor(s) to include, repeatable (default: vmx and "
                        "svm); e.g. --vendor svm")
    c.set_defaults(func=run)


def _backends(args, console):
    from .. import conform
    backends = [conform.SimBackend(v) for v in (args.vendor or ["vmx", "svm"])]
    if args.kvm:
        from ..devkvm import KvmMachine
        ok, why = KvmMachine.available()
        if ok:
            backends.append(conform.KvmBackend())
        else:
            console.print(f"[yellow]{why}: the host column is left out")
    return backends


def _host_labels(conform, backends, cases, results):
    """{(case id, backend name): "pass"/"known"/"new"/"fixed"} for the host column."""
    out = {}
    for b in backends:
        if b.is_model:
            continue
        for case in cases:
            out[case.id, b.name] = conform.classify(b.module, case.id, results[case.id][b.name])
    return out


def run(args):
    from .. import conform
    console = Console(stderr=False)
    cases = conform.suite_cases(args.suite)
    backends = _backends(args, console)
    try:
        with _progress.progress(console) as progress:
            task = progress.add_task("conformance", total=len(cases))
            results = conform.run_all(backends, cases,
                                      progress=lambda c: progress.advance(task))
        labels = _host_labels(conform, backends, cases, results)
    finally:
        for b in backends:
            b.close()

    if args.json:
        # "results" keeps its shape ({case id: {backend: {status, observed}}}); "cases"
        # adds what each case mirrors and, for a host column, its label.
        res, meta = {}, {}
        for case in cases:
            res[str(case.id)] = {b.name: vars(results[case.id][b.name]) for b in backends}
            meta[str(case.id)] = {
                "suite": case.suite, "title": case.title, "expect": case.expect,
                "upstream": case.upstream,
                "host": {b: labels[case.id, b] for (cid, b) in labels if cid == case.id}}
        json.dump({"suite": args.suite, "backends": [b.name for b in backends],
                   "results": res, "cases": meta,
                   "summary": {b.name: dict(zip(("passed", "applicable"),
                                                conform.summary(results, b.name)))
                               for b in backends}}, sys.stdout, indent=1)
        print()
    else:
        # Narrow terminals: the case's name gets the most room and long names fold onto
        # the next line instead of being cut (an MSR name is what a reader looks for).
        t = Table(title=_TITLES[args.suite])
        t.add_column("#", justify="right", no_wrap=True)
        t.add_column("case", overflow="fold", ratio=4)
        t.add_column("expect", overflow="fold", ratio=2)
        for b in backends:
            t.add_column(b.name, overflow="fold", ratio=2)
        for case in cases:
            cells = []
            for b in backends:
                r = results[case.id][b.name]
                text = escape(r.status + (f": {r.observed}" if r.observed else ""))
                label = _HOST_LABEL.get(labels.get((case.id, b.name), "pass"), "")
                cells.append(f"[{_STYLE[r.status]}]{text}[/] {label}".rstrip())
            # The table's title names the file; a row names the check (all: both).
            upstream = case.upstream if args.suite == "all" else \
                case.upstream.split(": ", 1)[-1]
            # escaped: a title such as "[msr64] ..." is text, not a style
            title = escape(case.title) + (f"\n[dim]{escape(upstream)}" if upstream else "")
            t.add_row(str(case.id), title, escape(case.expect), *cells)
        # the ratios apply only to a table set to the terminal's width: when it would
        # not fit as it is
        t.expand = Measurement.get(console, console.options, t).maximum >= console.width
        console.print(t)
        for b in backends:
            passed, applicable = conform.summary(results, b.name)
            console.print(f"{b.name}: {passed}/{applicable} applicable cases pass "
                          f"({len(cases) - applicable} unsupported)")
        host_counts = {}
        for label in labels.values():
            host_counts[label] = host_counts.get(label, 0) + 1
        if labels:
            console.print(
                f"Host findings: {host_counts.get('known', 0)} known, "
                f"{host_counts.get('new', 0)} new, {host_counts.get('fixed', 0)} recorded "
                "but now passing (pykvm/conform/host_findings.py); they do not affect the "
                "exit status.")
    # Host KVM differences are findings about the host; the exit status reflects the model.
    model_fail = [(case.id, b.name) for case in cases for b in backends
                  if b.is_model and results[case.id][b.name].status == "fail"]
    if model_fail:
        console.print(f"[bold red]model failures: {model_fail}")
        return 1
    return 0
