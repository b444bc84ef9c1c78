"""`pykvm study`: what each switching strategy costs, on which path, per event."""
import argparse
import os
import time

from .. import profiles as P
from .. import study as _study
from .. import workloads as W
from ..study import (DEFAULT_OUT, EVENT_NAMES, REPORTED_OPS, _num, compare, run_study,
                     write_compare, write_outputs)

_PATH_ABBR = {"OTHER": "O", "HARDWARE": "H", "VCPU_LOAD": "L", "PREPARE_SWITCH": "P",
              "VCPU_RUN": "R", "FASTPATH": "F", "HANDLE_EXIT": "X", "VCPU_PUT": "T",
              "USER_RETURN": "U", "IOCTL": "I"}


def _fmt(x):
    if x is None:
        return ""
    x = _num(x)
    return f"{x:,}" if isinstance(x, int) else f"{x:,.2f}"


def _by_path(row, op):
    d = row.ops(op)
    if not d:
        return ""
    return " ".join(f"{_PATH_ABBR.get(p, p)}{_fmt(v)}" for p, v in d.items())


def table(rows, title="pykvm study"):
    """A rich Table of the rows: cycles per the workload's event, then operations per
    event by path (only operations that occur)."""
    from rich.table import Table
    ops = [op for op in REPORTED_OPS if any(r.ops(op) for r in rows)]
    t = Table(title=title, caption="operations per event by path: " + ", ".join(
        f"{a}={p}" for p, a in _PATH_ABBR.items()) + ". est: share of the cycles priced "
        "by figures that rest on estimates.")
    t.add_column("variant")
    t.add_column("workload")
    t.add_column("cycles", justify="right")
    t.add_column("per")
    for op in ops:
        t.add_column(op)
    t.add_column("est", justify="right")
    t.add_column("verdict")
    last = None
    for r in rows:
        if last is not None and r.variant != last:
            t.add_section()
        last = r.variant
        if r.skipped:
            t.add_row(r.variant, r.workload, "", "", *[""] * len(ops), "",
                      f"[yellow]skipped: {r.skipped}")
            continue
        t.add_row(r.variant, r.workload, _fmt(r.cycles), EVENT_NAMES[r.event],
                  *[_by_path(r, op) for op in ops], f"{100 * r.estimate_share:.0f}%",
                  r.verdict)
    return t


def compare_table(crows):
    from rich.table import Table
    a = crows[0].a.variant if crows else "A"
    b = crows[0].b.variant if crows else "B"
    t = Table(title=f"{a} (A) vs {b} (B): cycles per event and operations per path")
    for col, just in (("workload", "left"), ("per", "left"), ("A", "right"),
                      ("B", "right"), ("B - A", "right"), ("%", "right"),
                      ("operations B - A", "left")):
        t.add_column(col, justify=just)
    for c in crows:
        ops = "; ".join(f"{op} " + " ".join(f"{_PATH_ABBR.get(p, p)}{_fmt(v):>}"
                                             if v < 0 else f"{_PATH_ABBR.get(p, p)}+{_fmt(v)}"
                                             for p, v in d.items())
                        for op, d in c.op_deltas().items())
        pct = c.delta_pct
        t.add_row(c.workload, EVENT_NAMES[c.event],
                  "skipped" if c.a.skipped else _fmt(c.a.cycles),
                  "skipped" if c.b.skipped else _fmt(c.b.cycles),
                  "" if c.delta is None else (("+" if c.delta > 0 else "") + _fmt(c.delta)),
                  "" if pct is None else f"{pct:+.1f}%", ops)
    return t



def add_parser(subparsers, verdict_fn=None):
    """The `study` subcommand on an argparse subparsers object; `verdict_fn` (row -> str)
    fills the verdict column (default: the checker's verdict)."""
    if verdict_fn is None:
        from ..check import study_verdict as verdict_fn
    p = subparsers.add_parser(
        "study", help="cycles per event and operations per path: vendors x presets x "
                      "workloads", description=_study.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pykvm study                                  every vendor, preset, workload\n"
               "  pykvm study --vendor svm --workload pio --workload fastpath\n"
               "  pykvm study --compare svm:upstream svm:v5.10\n"
               "  pykvm study --compare vmx:upstream vmx:upstream:user_return_msrs=0\n"
               "  pykvm study --compare svm:upstream svm:upstream:cpu_model=zen4\n"
               "  pykvm study --vendor vmx --profile ./my-cpu.toml")
    p.add_argument("--vendor", action="append", help="vmx, svm (default: both)")
    p.add_argument("--preset", action="append",
                   help="kernel era(s) of each vendor (default: every preset)")
    p.add_argument("--workload", action="append",
                   help=f"default: every workload ({', '.join(W.names())})")
    p.add_argument("--profile", help="a built-in profile (" + ", ".join(P.list_profiles())
                   + ") or a .toml path, for every vendor (default: each vendor's own)")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations per measured phase (default: per workload)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: %(default)s)")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help="directory for study.csv/.json/.png (default: %(default)s)")
    p.add_argument("--no-png", action="store_true", help="skip the chart")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two variants side by side: vendor:preset[:name=value,...]")
    p.set_defaults(func=lambda args: run(args, verdict_fn))
    return p


def run(args, verdict_fn=None):
    from rich.console import Console
    from rich.progress import Progress
    console = Console()
    t0 = time.monotonic()
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task("study", total=None)

        def tick(done, total, row):
            progress.update(task, completed=done, total=total,
                            description=f"{row.variant} {row.workload}")
        if args.compare:
            crows = compare(args.compare[0], args.compare[1], workloads=args.workload,
                            profile=args.profile, progress=tick, iterations=args.iterations,
                            jobs=args.jobs, verdict_fn=verdict_fn)
        else:
            rows = run_study(vendors=args.vendor, presets=args.preset,
                             workloads=args.workload, profile=args.profile, progress=tick,
                             iterations=args.iterations, jobs=args.jobs,
                             verdict_fn=verdict_fn)
    if args.compare:
        console.print(compare_table(crows))
        paths = write_compare(crows, args.out, png=not args.no_png)
        rows = [r for c in crows for r in (c.a, c.b)]
    else:
        console.print(table(rows))
        paths = write_outputs(rows, args.out, png=not args.no_png)
    _print_estimates(console, rows)
    console.print(f"wrote {', '.join(paths.values())} in {time.monotonic() - t0:.1f}s")
    return 0


def _print_estimates(console, rows):
    seen, rep = {}, {}
    for r in rows:
        seen.setdefault(r.profile, set()).update(r.estimates)
        rep.setdefault(r.profile, r)
    for name, keys in seen.items():
        if not keys:
            continue
        p = _study.profile_of(rep[name])
        console.print(f"[bold]{name}[/] figures these rows use that rest on estimates "
                      f"(reasoning in {p.path}): " + ", ".join(
                          f"{k}={p.entries[k].cycles}" for k in sorted(keys)))
