"""`pykvm profile`: cost profiles. `pykvm profile measure` measures this host's."""
import argparse
import os

from rich.markup import escape

from .. import measure as M
from .. import profiles as P
from . import _progress


def add_parser(subparsers):
    p = subparsers.add_parser(
        "profile", help="cost profiles: measure this host's", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pykvm profile measure --out my-cpu.toml\n"
               "  pykvm list profiles                            the built-in ones")
    sub = p.add_subparsers(dest="profile_cmd", required=True, metavar="SUBCOMMAND",
                           help="measure: this host's profile through /dev/kvm")
    m = sub.add_parser(
        "measure", help="guest micro-benchmarks on /dev/kvm solved into a profile",
        description=M.__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  pykvm profile measure                          measured.toml + .json\n"
               "  pykvm profile measure --out my-cpu.toml --budget 120\n"
               "  pykvm study --profile my-cpu.toml --vendor vmx\n"
               "  pykvm validate --profile my-cpu.toml")
    m.add_argument("--out", default="measured.toml",
                   help="the profile to write (default: %(default)s); the raw data go to "
                        "the same name with .json")
    m.add_argument("--name", default=None, help="the profile's name (default: the file's)")
    m.add_argument("--base", default=None,
                   help="the profile unmeasured figures come from (default: the vendor's "
                        "built-in: " + ", ".join(P.list_profiles()) + ")")
    m.add_argument("--variant", default=None,
                   help="the simulated vendor:preset whose operation counts price the "
                        "round trips (default: vmx:upstream on kvm_intel, svm:upstream on "
                        "kvm_amd, by CPU vendor otherwise)")
    m.add_argument("--budget", type=float, default=60.0,
                   help="seconds of sampling at most (default: %(default)s)")
    m.add_argument("--rel-ci", type=float, default=2.0,
                   help="stop a benchmark once the 95%% interval of its median is within "
                        "this many %% (default: %(default)s)")
    m.add_argument("--max-samples", type=int, default=200,
                   help="batches per benchmark and loop length at most (default: "
                        "%(default)s)")
    m.add_argument("--bench", action="append",
                   help="only these benchmarks (the loop and cpuid always run)")
    m.set_defaults(func=run_measure)
    return p


def run_measure(args):
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from . import UsageError
    if args.budget <= 0 or args.rel_ci <= 0 or args.max_samples < M.MIN_SAMPLES:
        raise UsageError(f"--budget and --rel-ci must be > 0, --max-samples >= "
                         f"{M.MIN_SAMPLES}")
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>8} batches/s"), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())
    with _progress.progress(console, columns) as progress:
        task = progress.add_task("probing", total=None, rate="")

        def tick(done, total, what):
            t = progress.tasks[0]
            rate = done / t.elapsed if t.elapsed else 0.0
            progress.update(task, completed=done, total=total, description=what,
                            rate=f"{rate:,.0f}")
        result = M.measure_host(budget=args.budget, rel_ci=args.rel_ci / 100,
                                max_samples=args.max_samples, base=args.base,
                                variant=args.variant, only=args.bench, progress=tick)
    name = args.name or os.path.splitext(os.path.basename(args.out))[0]
    paths = result.write_profile(args.out, name=name)
    report(console, result)
    console.print(f"wrote {', '.join(paths)} in {result.seconds:.1f}s")
    return 0


def report(console, result):
    """What was measured, what could not be, and what the measurements identify."""
    from rich import box
    from rich.table import Table
    info, sol = result.info, result.solution
    console.print(f"[bold]{info.cpu}[/] through [bold]{info.kvm_module}[/], Linux "
                  f"{info.kernel}, TSC {result.tsc_ghz:.3f} GHz"
                  + (" (software KVM: guest instructions are emulated)"
                     if info.software_kvm else ""))
    t = Table(title="figures solved from this host's benchmarks (cycles)", box=box.SIMPLE_HEAD)
    t.add_column("figure", no_wrap=True)
    t.add_column("cycles", justify="right")
    t.add_column("90% interval", justify="right")
    t.add_column("grade")
    figs = result.figures()
    for c in sol.columns:
        f = figs.get(c)
        if f is None and c not in M.NUISANCE[2:]:
            continue
        lo, hi = sol.interval.get(c, (sol.values[c],) * 2)
        grade = f["grade"] if f else "not a profile figure"
        t.add_row(escape(c), f"{sol.values[c]:,.0f}", f"{lo:,.0f}-{hi:,.0f}", grade)
    console.print(t)
    for g in sol.groups:
        names = [c for c in g if "[" not in c]
        if names:
            console.print(f"[yellow]not identifiable separately[/] (only their combination "
                          f"is measured; split as {result.base.name}): {escape(', '.join(names))}")
    for name, why in result.unsupported.items():
        console.print(f"[yellow]unsupported here[/]: {escape(name)}: {escape(why)}")
    if result.left_out:
        console.print(f"[yellow]measured, not used for figures[/]: {len(result.left_out)} "
                      f"benchmarks ({', '.join(sorted(result.left_out))}); why: in the .json")
