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
        from .devkvm import KvmMachine
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


def cmd_check(args):
    from . import check
    console = Console()
    params = {}
    for item in args.param or []:
        if "=" not in item:
            raise SystemExit(f"--param {item!r}: say name=0 or name=1")
        k, v = item.split("=", 1)
        params[k] = v.strip() not in ("0", "false", "False", "n", "no")
    with console.status(f"checking {args.vendor} to depth {args.bound}, then "
                        f"{args.walks} random walks"):
        r = check.check(args.vendor, preset=args.preset, params=params,
                        cpu_model=args.cpu_model, cpus=args.cpus, vcpus=args.vcpus,
                        bound=args.bound, walks=args.walks, seed=args.seed,
                        seconds=args.seconds)
    print(r.report())
    if r.violation is not None:
        if args.save:
            r.save(args.save)
            print(f"saved: {args.save} (pykvm replay {args.save})")
        if args.perfetto:
            with open(args.perfetto, "w") as f:
                json.dump(r.perfetto(), f)
            print(f"timeline: {args.perfetto} (open in ui.perfetto.dev or chrome://tracing)")
        return 1
    return 0


def cmd_replay(args):
    from . import check
    r = check.replay(args.trace)
    print(r.report())
    if args.perfetto:
        with open(args.perfetto, "w") as f:
            json.dump(r.perfetto(), f)
    return 1 if r.violation is not None else 0


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
    k = sub.add_parser("check", help="explore event sequences for host/guest state leaks")
    k.add_argument("--vendor", default="vmx")
    k.add_argument("--preset", default=None, help="a kernel era of the vendor")
    k.add_argument("--param", action="append", help="name=0|1 (a variant)")
    k.add_argument("--cpu-model", default=None)
    k.add_argument("--cpus", type=int, default=2)
    k.add_argument("--vcpus", type=int, default=1)
    k.add_argument("--bound", type=int, default=3, help="exhaustive depth (steps)")
    k.add_argument("--walks", type=int, default=2000, help="random walks after that")
    k.add_argument("--seed", type=int, default=1)
    k.add_argument("--seconds", type=float, default=None, help="stop exploring after this")
    k.add_argument("--save", default="pykvm-violation.json",
                   help="where a violation's replayable trace goes")
    k.add_argument("--perfetto", default=None, help="also write a trace-event JSON timeline")
    k.set_defaults(func=cmd_check)
    rp = sub.add_parser("replay", help="reproduce a saved violation deterministically")
    rp.add_argument("trace")
    rp.add_argument("--perfetto", default=None)
    rp.set_defaults(func=cmd_replay)
    from . import check, study
    study.add_parser(sub, verdict_fn=check.study_verdict)
    args = p.parse_args(argv)
    if getattr(args, "vendor", None) is None and args.cmd == "conform":
        args.vendor = ["vmx", "svm"]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
