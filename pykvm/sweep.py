"""`pykvm sweep`: every combination of chosen module parameters x CPU models x presets x
workloads, each with its costs (pykvm.study.measure) and the checker's verdict, as one
table in Parquet and CSV::

    from pykvm import sweep
    variants = sweep.plan(vendors=["vmx"], presets=["upstream"],
                          params={"user_return_msrs": [0, 1]}, cpu_models=["all"])
    rows = sweep.run(variants, workloads=["pio"])    # study.Row each; engine="dask" too
    sweep.write(rows, "sweep-out")      # sweep.parquet, sweep.csv

Each row is a task (a variant and a workload out, a Row back) and each variant's verdict
another, on any engine (pykvm.engine); the rows are the same on every engine. The table
has study.csv's columns plus one `param.NAME` column per swept parameter, typed (bool or
int), so that a dataframe library can group by them.
"""
from __future__ import annotations

import itertools
import os

from . import study
from .errors import InvalidConfiguration

__all__ = ["plan", "run", "table", "write", "DEFAULT_OUT"]

DEFAULT_OUT = "sweep-out"


def _vendor(name):
    from .vendors import get_vendor
    return get_vendor(name)


def _accepts(vendor, name, value):
    """The parsed value if `vendor` has parameter `name`, else None."""
    from .params import resolve
    try:
        return resolve(vendor, {name: value})
    except InvalidConfiguration as e:
        if "no parameter" in str(e) or "loads" in str(e):
            return None
        raise


def plan(vendors=None, presets=None, cpu_models=None, params=None):
    """[study.Variant]: vendors x presets x CPU models x every combination of `params`
    ({"[module.]name": [values]}). presets: None for every preset of each vendor.
    cpu_models: None for each vendor's default, ["all"] for every model of each vendor,
    or names (each vendor takes its own). A parameter goes to the vendors that have it."""
    vendors = list(vendors or ("vmx", "svm"))
    params = {k: list(v) for k, v in (params or {}).items()}
    for name, values in params.items():
        if not values:
            raise InvalidConfiguration(f"parameter {name}: no values to sweep")
        if not any(_accepts(v, name, values[0]) is not None for v in vendors):
            raise InvalidConfiguration(f"no vendor of {', '.join(vendors)} has a parameter "
                                       f"{name!r}; `pykvm list params` lists them")
    models = list(cpu_models or [])
    known = {m for v in vendors for m in _vendor(v).cpu_models}
    for m in models:
        if m != "all" and m not in known:
            raise InvalidConfiguration(f"no vendor of {', '.join(vendors)} has CPU model "
                                       f"{m!r}; they have {', '.join(sorted(known))}")
    out = []
    for vendor in vendors:
        have = list(_vendor(vendor).presets or {}) or [None]
        chosen = [p for p in (presets or have) if p in have]
        if presets and not chosen:
            continue
        if not models:
            vm = [None]
        elif "all" in models:
            vm = list(_vendor(vendor).cpu_models)
        else:
            vm = [m for m in models if m in _vendor(vendor).cpu_models]
        mine = {k: vals for k, vals in params.items()
                if _accepts(vendor, k, vals[0]) is not None}
        names = list(mine)
        for preset, model in itertools.product(chosen, vm):
            for values in itertools.product(*(mine[k] for k in names)):
                resolved = {}
                for k, val in zip(names, values):
                    resolved.update(_accepts(vendor, k, val))
                out.append(study.Variant(vendor, preset, tuple(sorted(resolved.items())),
                                         model))
    if presets and not out:
        raise InvalidConfiguration(f"no vendor of {', '.join(vendors)} has the presets "
                                   f"{', '.join(presets)}")
    return list(dict.fromkeys(out))


def run(variants, workloads=None, profile=None, iterations=None, engine=None, check=True,
        progress=None):
    """[study.Row] for variants x workloads, with the checker's verdict per variant when
    `check`. engine: see pykvm.study.run_study."""
    from .check import study_verdict
    return study.run_study(variants=variants, workloads=workloads, profile=profile,
                           iterations=iterations, engine=engine, progress=progress,
                           verdict_fn=study_verdict if check else None)


def _swept(rows):
    """The parameter names that vary across rows (or were set), in first-seen order."""
    names = {}
    for r in rows:
        for k in r.params:
            names.setdefault(k, None)
    return list(names)


def table(rows):
    """A pyarrow.Table: study.csv's columns (typed) and param.NAME per swept parameter."""
    import pyarrow as pa
    names = _swept(rows)
    records = []
    for r in rows:
        flat = r.flat()
        for col, v in flat.items():
            if v == "":
                flat[col] = None       # an empty CSV cell is a missing value
        for k in names:
            v = r.params.get(k)
            flat[f"param.{k}"] = None if v is None else (bool(v) if isinstance(v, bool)
                                                          else int(v))
        records.append(flat)
    cols = study.csv_columns() + [f"param.{k}" for k in names]
    numeric = {c for c in cols if c not in ("variant", "vendor", "preset", "params",
                                            "cpu_model", "profile", "workload", "event",
                                            "estimates", "unpriced", "skipped", "verdict")
               and not c.startswith("param.")}
    fields = []
    for c in cols:
        if c in numeric:
            t = pa.float64()
        elif c.startswith("param."):
            vals = [rec[c] for rec in records if rec.get(c) is not None]
            t = pa.bool_() if vals and all(isinstance(v, bool) for v in vals) else pa.int64()
        else:
            t = pa.string()
        fields.append(pa.field(c, t))
    schema = pa.schema(fields)
    data = {c: [rec.get(c) for rec in records] for c in cols}
    for c in numeric:
        data[c] = [None if v is None else float(v) for v in data[c]]
    return pa.table(data, schema=schema)


def write(rows, out_dir=DEFAULT_OUT):
    """sweep.parquet and sweep.csv in `out_dir` (one table, two formats); their paths."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    os.makedirs(out_dir, exist_ok=True)
    t = table(rows)
    paths = {"parquet": os.path.join(out_dir, "sweep.parquet"),
             "csv": os.path.join(out_dir, "sweep.csv")}
    pq.write_table(t, paths["parquet"])
    pcsv.write_csv(t, paths["csv"])
    return paths
