"""`pykvm sweep`: every combination of module parameters x CPU models x presets x
workloads, with costs and the checker's verdict, written as Parquet and CSV."""
import argparse
import time

from .. import workloads as W
from ..sweep import DEFAULT_OUT
from . import _complete, _engine, _progress

EPILOG = """\
Each --param takes the values to sweep, comma-separated; the sweep runs every combination
of them with every preset (default: all of each vendor), CPU model (default: each
vendor's own; `all` for every model) and workload (default: all). A parameter applies to
the vendors that have it. One row per combination and workload: cycles per event, the
operations per path (study.csv's columns), one param.NAME column per swept parameter, and
the checker's verdict for the combination (--no-check to skip it).

exit status: 0 every combination passes (or was not checked), 1 some leak, 2 bad usage.

examples:
  pykvm sweep --vendor vmx --param user_return_msrs=0,1 --cpu-model all
  pykvm sweep --vendor svm --preset upstream --param kvm_amd.vmsave_host_state=0,1 \\
              --param kernel.ret_uses_percpu=0,1 --workload pio
  pykvm sweep --engine dask --workers 2              on a local Dask cluster
  pykvm sweep --scheduler tcp://10.0.0.5:8786        on an existing cluster"""


def add_parser(sub):
    from ..vendors import vendors
    p = sub.add_parser("sweep", help="every combination of parameters x CPU models x presets "
                                     "x workloads: costs and verdicts as Parquet and CSV",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vendor", action="append", choices=sorted(vendors()),
                   help="vendor module(s), repeatable (default: all); e.g. --vendor vmx")
    p.add_argument("--preset", action="append", metavar="ERA",
                   help="kernel era(s), repeatable (default: every preset of each vendor; "
                        "`pykvm list presets`); e.g. --preset upstream")
    p.add_argument("--cpu-model", action="append", metavar="NAME",
                   help="CPU model(s), repeatable, or `all` (default: each vendor's own; "
                        "`pykvm list cpus`); e.g. --cpu-model icelake")
    p.add_argument("--param", action="append", default=[], metavar="[MODULE.]NAME=V1,V2,...",
                   help="a module parameter and the values to sweep, repeatable; "
                        "e.g. --param kvm.user_return_msrs=0,1")
    p.add_argument("--workload", action="append", choices=W.names(), metavar="WORKLOAD",
                   help=f"workload(s), repeatable (default: all: {', '.join(W.names())})")
    _complete.file(p.add_argument("--profile", metavar="NAME|PATH",
                                  help="cost profile for every vendor (default: each "
                                       "vendor's own)"))
    p.add_argument("--iterations", type=int, default=None, metavar="N",
                   help="iterations per measured phase (default: per workload)")
    p.add_argument("--no-check", action="store_true", help="skip the checker's verdicts")
    _engine.add_arguments(p, what="rows and verdicts")
    _complete.directory(p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                                       help="where sweep.parquet and sweep.csv go "
                                            "(default: %(default)s)"))
    p.set_defaults(func=run)


def _params(items):
    from . import UsageError
    out = {}
    for item in items:
        name, eq, values = item.partition("=")
        if not eq or not values:
            raise UsageError(f"--param {item}: say NAME=V1,V2,... (the values to sweep)")
        out[name.strip()] = [v.strip() for v in values.split(",")]
    return out


def run(args):
    from .. import sweep
    t0 = time.monotonic()
    variants = sweep.plan(args.vendor, args.preset, args.cpu_model, _params(args.param))
    with _engine.open_engine(args) as engine, _progress.progress() as bar:
        task = bar.add_task("sweep", total=None, unit="rows")

        def tick(done, total, row):
            bar.update(task, completed=done, total=total,
                       description=f"{row.variant} {row.workload}")
        rows = sweep.run(variants, workloads=args.workload, profile=args.profile,
                         iterations=args.iterations, engine=engine, check=not args.no_check,
                         progress=tick)
        where = engine.describe()
    paths = sweep.write(rows, args.out)
    leaks = sorted({r.variant for r in rows if r.verdict.startswith("LEAK")})
    print(f"{len(variants)} combinations x {len(rows) // max(1, len(variants))} workloads: "
          f"{len(rows)} rows ({sum(1 for r in rows if r.skipped)} skipped) on {where}")
    for v in leaks:
        print(f"  LEAK: {v}: {next(r.verdict for r in rows if r.variant == v)}")
    print(f"wrote {paths['parquet']}, {paths['csv']} in {time.monotonic() - t0:.1f}s")
    return 1 if leaks else 0
