"""`pykvm study`: what each switching strategy costs, on which path, per event.

The terminal table answers the study's question first: for each vendor, one matrix with a
row per workload and a column per kernel era (variant), the cycles per event in the cells
and the checker's verdict once per variant, on top. Operation counts by path are on
request (--ops), and everything is in study.csv / study.json. The same data prints as
CSV, JSON or a Markdown table with --format.
"""
import argparse
import os
import sys
import time

from .. import profiles as P
from .. import study as _study
from .. import workloads as W
from ..study import (DEFAULT_OUT, EVENT_NAMES, REPORTED_OPS, _num, compare, run_study,
                     write_compare, write_outputs)
from . import _complete, _engine, _progress

FORMATS = ("table", "csv", "json", "markdown")

_PATH_ABBR = {"OTHER": "O", "HARDWARE": "H", "SYSCALL": "S", "IOCTL": "I", "VCPU_LOAD": "L",
              "PREPARE_SWITCH": "P", "VCPU_RUN": "R", "FASTPATH": "F", "HANDLE_EXIT": "X",
              "VCPU_PUT": "T", "USER_RETURN": "U"}
# A cell is marked when more than this share of its cycles rests on estimated prices.
EST_MARK, EST_MARK_SHARE = "*", 0.5
# From this width on, each cycles cell also says its estimate share in full.
WIDE = 110


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


def _range(row):
    """(lo, hi) cycles per event when the study priced an interval, else None."""
    lo, hi = getattr(row, "cycles_lo", None), getattr(row, "cycles_hi", None)
    if lo is None or hi is None or (lo == hi == row.cycles):
        return None
    return lo, hi


def _short(n):
    """3,126 -> '3.1k': ranges stay narrow."""
    n = _num(n)
    return f"{n / 1000:.1f}k" if abs(n) >= 1000 else f"{n:,.0f}"


def _range_text(row):
    r = _range(row)
    return f"{_short(r[0])}-{_short(r[1])}" if r else ""


def verdict_short(verdict):
    """'LEAK SPEC_CTRL (first RET after VM-exit, 1 step)' -> 'LEAK SPEC_CTRL'."""
    return verdict.split(" (", 1)[0]


def check_command(row):
    """The `pykvm check` command line that reproduces a row's verdict with its trace."""
    cmd = f"pykvm check --vendor {row.vendor}"
    if row.preset:
        cmd += f" --preset {row.preset}"
    for k, v in sorted(row.params.items()):
        cmd += f" --param {k}={int(v)}"
    variant = _study.Variant.parse(row.variant)
    if variant.cpu_model:
        cmd += f" --cpu-model {variant.cpu_model}"
    return cmd


def _variants(rows):
    return list(dict.fromkeys(r.variant for r in rows))


def _head(variant, vendor):
    """A column head: the variant without its vendor (the table's title has it)."""
    rest = variant.split(":", 1)[1] if variant.startswith(vendor + ":") else variant
    return rest.replace(":", " ").replace(",", ", ")


# ---- the matrix: the same cells for the terminal and for Markdown --------------------

def matrix(rows, wide=False):
    """[(title, heads, body, notes)] per vendor: heads are column heads, body rows are
    lists of (text, style) cells, notes are lines printed under the table."""
    out = []
    for vendor in dict.fromkeys(r.vendor for r in rows):
        rs = [r for r in rows if r.vendor == vendor]
        variants = _variants(rs)
        by = {(r.variant, r.workload): r for r in rs}
        cpus = ", ".join(dict.fromkeys(r.cpu_model for r in rs))
        profs = ", ".join(dict.fromkeys(r.profile for r in rs))
        title = (f"{vendor}: cycles per event (CPU {cpus}, prices from profile {profs})")
        heads = ["workload", "per"] + [_head(v, vendor) for v in variants]
        body = []
        verdicts = {v: next((r.verdict for r in rs if r.variant == v and not r.skipped),
                            _study.NOT_CHECKED) for v in variants}
        body.append([("verdict", "bold"), ("", "")] +
                    [(verdict_short(verdicts[v]), _verdict_style(verdicts[v]))
                     for v in variants])
        marked = ranged = False
        for wl in dict.fromkeys(r.workload for r in rs):
            event = next(r.event for r in rs if r.workload == wl)
            line = [(wl, "bold"), (EVENT_NAMES[event], "dim")]
            for v in variants:
                r = by.get((v, wl))
                if r is None:
                    line.append(("", ""))
                    continue
                if r.skipped:
                    line.append(("skipped", "yellow"))
                    continue
                text = _fmt(round(r.cycles))
                if wide:
                    text += f" ({100 * r.estimate_share:.0f}%)"
                elif r.estimate_share > EST_MARK_SHARE:
                    text += EST_MARK
                    marked = True
                rng = _range_text(r)
                if rng:
                    text += "\n" + rng
                    ranged = True
                line.append((text, ""))
            body.append(line)
        notes = []
        if wide:
            notes.append("(n%): share of the figure priced by profile entries that rest on "
                         "estimates")
        elif marked:
            notes.append(f"{EST_MARK} more than half of the figure rests on estimated "
                         f"prices (wider terminal or --format csv for the share)")
        if ranged:
            notes.append("second line: the interval the profile's grades allow")
        leaks = {}
        for v in variants:
            if verdicts[v].startswith("LEAK"):
                leaks.setdefault(verdicts[v], []).append(v)
        for full, vs in leaks.items():
            r = next(r for r in rs if r.variant == vs[0] and not r.skipped)
            notes.append(f"{', '.join(_head(v, vendor) for v in vs)}: {full}; the trace: "
                         f"{check_command(r)}")
        for r in rs:
            if r.skipped:
                notes.append(f"{r.variant} {r.workload} skipped: {r.skipped}")
        zero = [wl for wl in dict.fromkeys(r.workload for r in rs)
                if all(not r.skipped and r.cycles == 0 and not r.path_cycles
                       for r in rs if r.workload == wl)]
        for wl in zero:
            notes.append(f"{wl}: 0 switch cycles: {_zero_reason(wl)}")
        out.append((title, heads, body, notes))
    return out


def _zero_reason(workload):
    return ("the guest's own work takes no VM-exit (nothing of the world switch runs)"
            if workload != "guest-ctxsw" else
            "the guest switches tasks (WRMSR KERNEL_GS_BASE, SWAPGS, SYSRET/SYSCALL) "
            "without a VM-exit: KVM passes those MSRs through")


def _verdict_style(verdict):
    if verdict == "pass":
        return "green"
    if verdict.startswith("LEAK"):
        return "bold red"
    return "yellow"


def _rich_table(title, heads, body, caption=None, first_section=True):
    from rich import box
    from rich.table import Table
    t = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left",
              caption_justify="left", pad_edge=False)
    for i, h in enumerate(heads):
        t.add_column(h, justify="left" if i < 2 else "right",
                     no_wrap=i < 2, overflow="fold")
    for k, line in enumerate(body):
        t.add_row(*[f"[{style}]{_esc(text)}[/]" if style else _esc(text)
                    for text, style in line], end_section=first_section and k == 0)
    return t


def _esc(text):
    from rich.markup import escape
    return escape(text)


def _side_by_side(console, blocks):
    """Print blocks (a table and the lines under it) next to each other while they fit
    the console's width; the lines wrap at their table's width."""
    from rich.console import Group
    from rich.text import Text
    line, used = [], 0
    for table, notes in blocks:
        w = min(console.measure(table).maximum, console.width)
        if line and used + 2 + w > console.width:
            _print_line(console, line)
            line, used = [], 0
        line.append((Group(table, *[Text(n, style="dim") for n in notes]), w))
        used += w + (2 if used else 0)
    if line:
        _print_line(console, line)


def _print_line(console, line):
    from rich.table import Table
    if len(line) == 1:
        console.print(line[0][0])
        return
    g = Table.grid(padding=(0, 2))
    for _, w in line:
        g.add_column(vertical="top", width=w)
    g.add_row(*[r for r, _ in line])
    console.print(g)


def _unbroken_width(console, table):
    """The narrowest the table gets with its cells wrapped at spaces and no word cut
    (console.measure clamps to the console's width: measured against a wide one)."""
    return console.measure(table, options=console.options.update_width(10_000)).minimum


def _fitting_tables(console, title, heads, body):
    """The matrix as one table, or as the fewest tables of evenly split variant columns
    that fit the console without cutting a word (a figure cut over two lines reads as two
    numbers). Each repeats the workload and event columns."""
    n = len(heads) - 2
    for parts in range(1, n + 1):
        cuts = [round(i * n / parts) for i in range(parts + 1)]
        tables = []
        for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
            cols = [0, 1] + [2 + j for j in range(a, b)]
            tables.append(_rich_table(title if k == 0 else f"{title}, continued",
                                      [heads[c] for c in cols],
                                      [[line[c] for c in cols] for line in body]))
        if all(_unbroken_width(console, t) <= console.width for t in tables):
            break
    return tables


def print_table(console, rows, ops=False):
    """The study as a terminal table at the console's width."""
    from rich.text import Text
    wide = console.width >= WIDE
    blocks = []
    for title, heads, body, notes in matrix(rows, wide=wide):
        tables = _fitting_tables(console, title, heads, body)
        blocks += [(t, []) for t in tables[:-1]] + [(tables[-1], notes + [""])]
    _side_by_side(console, blocks)
    if ops:
        _side_by_side(console, [(t, [""]) for t in ops_tables(rows)])
        console.print(Text(_ops_legend(), style="dim"))
    else:
        console.print(Text("operation counts by path: --ops (and study.csv)", style="dim"))


def _ops_legend():
    return ("operations per event by path: " +
            ", ".join(f"{a}={p}" for p, a in _PATH_ABBR.items()))


def ops_tables(rows):
    """Per variant: operations per event by path, one row per workload."""
    out = []
    for v in _variants(rows):
        rs = [r for r in rows if r.variant == v and not r.skipped]
        ops = [op for op in REPORTED_OPS if any(r.ops(op) for r in rs)]
        body = [[(r.workload, "bold")] + [(_by_path(r, op), "") for op in ops] for r in rs]
        out.append(_rich_table(f"{v}: operations per event", ["workload"] + ops, body,
                               first_section=False))
    return out


def table(rows, title="pykvm study", width=None):
    """The study's terminal rendering as one rich renderable (for callers that print it
    themselves); `width` defaults to a wide terminal."""
    from rich.console import Group
    from rich.text import Text
    wide = (width or WIDE) >= WIDE
    parts = [Text(title, style="bold")]
    for t_title, heads, body, notes in matrix(rows, wide=wide):
        parts.append(_rich_table(t_title, heads, body))
        parts += [Text(n, style="dim") for n in notes]
    return Group(*parts)


def markdown(rows, ops=False):
    """The study as Markdown tables (for a mailing list, an issue, a commit message)."""
    lines = []
    for title, heads, body, notes in matrix(rows, wide=True):
        lines += [f"**{title}**", ""]
        lines.append(_md_row(heads))
        lines.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(heads)))
                     + "|")
        for line in body:
            lines.append(_md_row([text.replace("\n", " ") for text, _ in line]))
        lines.append("")
        lines += [f"- {n}" for n in notes]
        lines.append("")
    if ops:
        for v in _variants(rows):
            rs = [r for r in rows if r.variant == v and not r.skipped]
            used = [op for op in REPORTED_OPS if any(r.ops(op) for r in rs)]
            lines += [f"**{v}: operations per event by path**", "",
                      _md_row(["workload"] + used), "|" + "---|" * (1 + len(used))]
            lines += [_md_row([r.workload] + [_by_path(r, op) for op in used]) for r in rs]
            lines.append("")
        lines += [_ops_legend(), ""]
    return "\n".join(lines)


def _md_row(cells):
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


# ---- compare -------------------------------------------------------------------------

def compare_grid(crows, wide=False):
    """(title, heads, body, notes) for A vs B."""
    a = crows[0].a.variant if crows else "A"
    b = crows[0].b.variant if crows else "B"
    title = f"A = {a}, B = {b}: cycles per event"
    heads = ["workload", "per", "A", "B", "B - A", "%"]
    if wide:
        heads.append("operations B - A, by path")
    va = crows[0].a.verdict if crows else ""
    vb = crows[0].b.verdict if crows else ""
    body = [[("verdict", "bold"), ("", ""), (verdict_short(va), _verdict_style(va)),
             (verdict_short(vb), _verdict_style(vb)), ("", ""), ("", "")] +
            ([("", "")] if wide else [])]
    for c in crows:
        pct = c.delta_pct
        d = c.delta
        style = "" if not d else ("red" if d > 0 else "green")
        line = [(c.workload, "bold"), (EVENT_NAMES[c.event], "dim"),
                ("skipped" if c.a.skipped else _fmt(round(c.a.cycles)), ""),
                ("skipped" if c.b.skipped else _fmt(round(c.b.cycles)), ""),
                ("" if d is None else ("+" if d > 0 else "") + _fmt(round(d)), style),
                ("" if pct is None else f"{pct:+.1f}%", style)]
        if wide:
            line.append((_op_deltas(c), ""))
        body.append(line)
    notes = []
    for label, r in (("A", crows[0].a if crows else None), ("B", crows[0].b if crows else None)):
        if r is not None and r.verdict.startswith("LEAK"):
            notes.append(f"{label} {r.variant}: {r.verdict}; the trace: {check_command(r)}")
    return title, heads, body, notes


def _op_deltas(c):
    order = list(_PATH_ABBR)

    def paths(d):
        return sorted(d.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    return "; ".join(f"{op} " + " ".join(f"{_PATH_ABBR.get(p, p)}{'+' if v > 0 else ''}"
                                         f"{_fmt(v)}" for p, v in paths(d))
                     for op, d in c.op_deltas().items())


def print_compare(console, crows, ops=False):
    from rich.text import Text
    wide = console.width >= 120
    title, heads, body, notes = compare_grid(crows, wide=wide)
    console.print(_rich_table(title, heads, body))
    for n in notes:
        console.print(Text(n, style="dim"))
    if ops and not wide:
        for c in crows:
            if c.op_deltas():
                console.print(Text(f"{c.workload}: {_op_deltas(c)}"))
    if ops or wide:
        console.print(Text(_ops_legend(), style="dim"))
    else:
        console.print(Text("operation deltas by path: --ops (and compare.csv)", style="dim"))


def compare_table(crows):
    """The compare table as one rich Table (wide form)."""
    return _rich_table(*compare_grid(crows, wide=True)[:3])


def compare_markdown(crows):
    title, heads, body, notes = compare_grid(crows, wide=True)
    lines = [f"**{title}**", "", _md_row(heads),
             "|" + "|".join("---" if i < 2 or i == 6 else "---:"
                            for i in range(len(heads))) + "|"]
    lines += [_md_row([t for t, _ in line]) for line in body]
    lines += [""] + [f"- {n}" for n in notes] + ["", _ops_legend(), ""]
    return "\n".join(lines)


# ---- the command ---------------------------------------------------------------------

def add_parser(subparsers, verdict_fn=None):
    """The `study` subcommand on an argparse subparsers object; `verdict_fn` (row -> str)
    fills the verdict (default: the checker's verdict)."""
    if verdict_fn is None:
        from ..check import study_verdict as verdict_fn
    from ..vendors import vendors
    p = subparsers.add_parser(
        "study", help="cycles per event and verdict per kernel era: vendors x presets x "
                      "workloads (the main job)",
        description=_study.__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pykvm study                                  every vendor, preset, workload\n"
               "  pykvm study --vendor svm --workload pio --workload fastpath\n"
               "  pykvm study --ops                            add operation counts by path\n"
               "  pykvm study --format markdown > study.md     tables to paste\n"
               "  pykvm study --compare svm:upstream svm:v5.10\n"
               "  pykvm study --compare vmx:upstream vmx:upstream:user_return_msrs=0\n"
               "  pykvm study --compare svm:upstream svm:upstream:cpu_model=zen4\n"
               "  pykvm study --vendor vmx --profile ./my-cpu.toml\n"
               "  pykvm study --engine dask --workers 2         rows on a local Dask cluster\n\n"
               "`pykvm list presets|workloads|profiles|params` lists the values.")
    p.add_argument("--vendor", action="append", choices=sorted(vendors()),
                   help="vendor module(s), repeatable (default: all: "
                        f"{', '.join(vendors())}); e.g. --vendor svm")
    p.add_argument("--preset", action="append", metavar="ERA",
                   help="kernel era(s) of each vendor, repeatable (default: every preset; "
                        "`pykvm list presets`); e.g. --preset upstream --preset v5.10")
    p.add_argument("--workload", action="append", choices=W.names(), metavar="WORKLOAD",
                   help="workload(s), repeatable (default: all: "
                        f"{', '.join(W.names())}); e.g. --workload pio")
    _complete.file(p.add_argument("--profile", metavar="NAME|PATH",
                   help="cost profile for every vendor: a built-in name ("
                        + ", ".join(P.list_profiles()) + ") or a .toml file (default: each "
                        "vendor's own); e.g. --profile ./my-cpu.toml"))
    p.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="iterations per measured phase (default: per workload); "
                        "e.g. --iterations 8")
    _engine.add_arguments(p, what="rows")
    # Before the engine: --jobs N was N worker processes. --jobs 1 is this process.
    p.add_argument("--jobs", type=int, default=None, help=argparse.SUPPRESS)
    _complete.directory(p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help="directory for study.csv/.json/.png or compare.* (default: "
                        "%(default)s); e.g. --out /tmp/s"))
    p.add_argument("--no-png", action="store_true", help="skip the chart")
    p.add_argument("--format", choices=FORMATS, default="table",
                   help="what goes to stdout: a terminal table (default), or the same data "
                        "as csv, json or markdown; e.g. --format csv")
    p.add_argument("--ops", action="store_true",
                   help="also show operation counts (RDMSR, WRMSR, VMREAD, ...) per event "
                        "by path")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two variants side by side with B - A: vendor:preset[:name=value,...]"
                        "; e.g. --compare svm:upstream svm:v5.10")
    p.set_defaults(func=lambda args: run(args, verdict_fn))
    return p


def run(args, verdict_fn=None):
    from rich.console import Console
    console = Console()
    err = _progress.stderr_console()
    t0 = time.monotonic()
    if args.jobs is not None:
        if args.jobs > 1:
            args.engine = "dask"
        args.workers = args.workers or (args.jobs if args.jobs > 1 else None)
    with _engine.open_engine(args) as engine, _progress.progress(err) as progress:
        task = progress.add_task("study", total=None, unit="rows")

        def tick(done, total, row):
            progress.update(task, completed=done, total=total,
                            description=f"{row.variant} {row.workload}")
        if args.compare:
            crows = compare(args.compare[0], args.compare[1], workloads=args.workload,
                            profile=args.profile, progress=tick, iterations=args.iterations,
                            engine=engine, verdict_fn=verdict_fn)
            rows = [r for c in crows for r in (c.a, c.b)]
        else:
            rows = run_study(vendors=args.vendor, presets=args.preset,
                             workloads=args.workload, profile=args.profile, progress=tick,
                             iterations=args.iterations, engine=engine,
                             verdict_fn=verdict_fn)
    if args.compare:
        paths = write_compare(crows, args.out, png=not args.no_png)
    else:
        paths = write_outputs(rows, args.out, png=not args.no_png)
    fmt = args.format
    if fmt in ("csv", "json"):
        with open(paths[fmt]) as f:
            sys.stdout.write(f.read())
        if fmt == "json":
            sys.stdout.write("\n")
    elif fmt == "markdown":
        sys.stdout.write(compare_markdown(crows) if args.compare else
                         markdown(rows, ops=args.ops))
        sys.stdout.write("\n")
    else:
        if args.compare:
            print_compare(console, crows, ops=args.ops)
        else:
            print_table(console, rows, ops=args.ops)
        _print_estimates(console, rows)
    # The files written go with the table; with a data format, stdout is the data alone.
    (console if fmt == "table" else err).print(
        f"wrote {', '.join(paths.values())} in {time.monotonic() - t0:.1f}s", highlight=False)
    return 0


def _price_name(key):
    """'op.WRMSR' -> 'WRMSR'; 'rdmsr.KERNEL_GS_BASE' -> 'RDMSR KERNEL_GS_BASE' (a price
    per operation and MSR: the read and the write are two figures)."""
    kind, name = key.split(".", 1)
    return name if kind == "op" else f"{kind.upper()} {name}"


def _print_estimates(console, rows):
    from rich.text import Text
    seen, rep = {}, {}
    for r in rows:
        seen.setdefault(r.profile, set()).update(r.estimates)
        rep.setdefault(r.profile, r)
    for name, keys in seen.items():
        if not keys:
            continue
        # The row's own profile: it may be a file, which load_profile cannot find by name.
        path = _study.profile_of(rep[name]).path
        rel = os.path.relpath(path)
        console.print(Text(f"{name}: {len(keys)} of its figures used here rest on "
                           f"estimates ({', '.join(sorted(_price_name(k) for k in keys))})"
                           f"; reasoning in {path if rel.startswith('..') else rel}",
                           style="dim"))
