"""`pykvm validate`: the cost model's predictions against published end-to-end figures."""
import argparse
import sys

from rich.markup import escape

from .. import validation as V


def add_parser(subparsers):
    p = subparsers.add_parser(
        "validate", help="the model's predictions against published end-to-end figures",
        description=V.__doc__.split("\n\n")[0] + "\n\nA report, not a gate: the exit "
        "status is 0 whatever the errors, 2 for a bad data or profile file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pykvm validate\n"
               "  pykvm validate --json validate.json --csv validate.csv\n"
               "  pykvm validate --profile measured.toml      price with your own profile\n"
               "  pykvm validate --entry roth_2020_v2_total --entry lutomirski_2017_cpuid")
    p.add_argument("--file", help="a validation file (default: the built-in "
                                  "pykvm/validation/published.toml)")
    p.add_argument("--profile", action="append",
                   help="a profile (name or .toml) used instead of the recipe's for entries "
                        "of its CPU vendor; repeat for Intel and AMD")
    p.add_argument("--entry", action="append", help="only these entry ids")
    p.add_argument("--json", metavar="PATH", help="write the report as JSON ('-': stdout)")
    p.add_argument("--csv", metavar="PATH", help="write the report as CSV ('-': stdout)")
    p.set_defaults(func=run)
    return p


def _fmt(x, pct=False):
    if x is None:
        return ""
    if pct:
        return f"{100 * x:+.0f}%"
    return f"{x:,.0f}" if abs(x) >= 10 else f"{x:,.2f}"


_KIND = {"absolute": "abs", "delta": "delta"}


def table(report):
    """The numbers, one line per entry; the reasons follow the table (`reasons`)."""
    from rich import box
    from rich.table import Table
    t = Table(title="pykvm validate: predicted vs published (cycles)", box=box.SIMPLE_HEAD,
              pad_edge=False, caption="kind: abs = one measurement, delta = what a change "
              "saved; ratio = predicted / published, green within 25% (the goal: every "
              "entry within 25%, the median error within 10%)")
    t.add_column("entry", no_wrap=True)
    t.add_column("kind")
    t.add_column("published", justify="right")
    t.add_column("predicted", justify="right")
    t.add_column("ratio", justify="right")
    for r in report.results:
        if not r.predicted_ok:
            t.add_row(escape(r.id), _KIND[r.kind], _fmt(r.published), "[yellow]needs", "")
            continue
        style = "green" if r.within else "red"
        t.add_row(escape(r.id), _KIND[r.kind], _fmt(r.published), _fmt(r.predicted),
                  f"[{style}]{r.ratio:.2f}" if r.ratio is not None else "")
    return t


def reasons(console, report):
    """Why each entry outside 25% misses, and what each unpredictable entry needs."""
    misses = [r for r in report.predicted if not r.within]
    if misses:
        console.print("[bold]Why they miss[/] (what the published measurement includes "
                      "that the model does not):")
        for r in misses:
            why = r.misses
            if r.error > 0:
                why = (f"the model predicts more than was measured; "
                       f"{100 * (r.estimate_share or 0):.0f}% of its cycles rest on "
                       f"estimated figures. The measurement also includes: {r.misses}")
            console.print(f"  [red]{escape(r.id)}[/] ({_fmt(r.error, pct=True)}): {escape(why)}")
    needs = [r for r in report.results if not r.predicted_ok]
    if needs:
        console.print("[bold]Not predictable yet[/]:")
        for r in needs:
            console.print(f"  [yellow]{escape(r.id)}[/]: needs {escape(r.needs)}")


def _write(text, path):
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w") as f:
            f.write(text)


def run(args):
    from rich.console import Console
    entries = V.load_entries(args.file)
    if args.entry:
        known = {e.id for e in entries}
        unknown = [e for e in args.entry if e not in known]
        if unknown:
            from . import UsageError
            raise UsageError(f"no validation entry {', '.join(unknown)}; see --file's "
                             f"[entry.ID] tables")
        entries = [e for e in entries if e.id in args.entry]
    report = V.validate(entries, profile=args.profile)
    # Keep stdout clean for a JSON/CSV written there.
    to_stdout = "-" in (args.json, args.csv)
    console = Console(stderr=to_stdout)
    console.print(table(report))
    reasons(console, report)
    s = report.summary()
    med = s["median_error"]
    console.print(f"{s['predicted']} of {s['entries']} entries predicted, "
                  f"{s['within_25pct']} within 25%; median error "
                  f"{'n/a' if med is None else f'{100 * med:.1f}%'} (goal: all within 25%, "
                  f"median within 10%: {'met' if s['goal']['met'] else 'not met'}); "
                  f"{s['not_predictable']} not predictable yet.")
    for o in report.overlaps:
        console.print(f"[red]COSTS.md rule: profile {o['profile']} figure {o['key']} "
                      f"comes from validation entry {o['entry']} ({o['reason']})")
    if args.json:
        _write(report.to_json() + "\n", args.json)
    if args.csv:
        _write(report.to_csv(), args.csv)
    return 0
