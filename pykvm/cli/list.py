"""`pykvm list`: the values other commands take, with what they mean."""
import argparse
import json
import sys

from rich.markup import escape

KINDS = ("params", "presets", "cpus", "workloads", "profiles")

EPILOG = """\
examples:
  pykvm list params --vendor vmx      kvm_intel.*, kvm.* and kernel.* with upstream values
  pykvm list presets                  kernel eras and the parameters each one sets
  pykvm list cpus --vendor svm        CPU models and their features
  pykvm list workloads                what each workload runs and what it counts
  pykvm list profiles --format json   cost profiles, for a script"""


def add_parser(sub):
    from ..vendors import vendors
    p = sub.add_parser("list", help="list parameters, presets, CPU models, workloads or "
                                    "cost profiles, with what they mean",
                       description="List the values other commands take: module parameters "
                                   "(--param) with their upstream value and meaning, kernel "
                                   "eras (--preset), CPU models (--cpu-model), workloads "
                                   "(--workload) and cost profiles (--profile).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=KINDS, help="what to list: " + ", ".join(KINDS))
    p.add_argument("--vendor", action="append", choices=sorted(vendors()),
                   help="only this vendor's (repeatable; default: every vendor); "
                        "e.g. --vendor svm")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="a table (default) or JSON; e.g. --format json")
    p.set_defaults(func=run)


def _vendors(args):
    from ..vendors import vendors
    return [vendors()[v] for v in (args.vendor or vendors())]


def params(args):
    """Rows of parameters: the modules each selected vendor loads, each parameter once."""
    seen, rows = set(), []
    for v in _vendors(args):
        for p in v.params.values():
            if p.qualified in seen:
                continue
            seen.add(p.qualified)
            rows.append({"parameter": p.qualified, "type": p.type,
                         "upstream": _value(p.upstream, p.type), "meaning": p.doc})
    order = {"kernel": 0, "kvm": 1}
    rows.sort(key=lambda r: (order.get(r["parameter"].split(".")[0], 2),
                             r["parameter"].split(".")[0]))
    return rows


def _value(v, typ):
    return ("Y" if v else "N") if typ == "bool" else str(v)


def presets(args):
    rows = []
    for v in _vendors(args):
        for i, (name, values) in enumerate(v.presets.items()):
            sets = ", ".join(f"{v.params[k].qualified}={_value(x, v.params[k].type)}"
                             for k, x in values.items()) or "(upstream values)"
            rows.append({"vendor": v.name, "preset": name,
                         "default": "yes" if i == 0 else "", "sets": sets})
    return rows


def cpus(args):
    from dataclasses import fields
    rows = []
    for v in _vendors(args):
        for i, (name, model) in enumerate(v.cpu_models.items()):
            has = [f.name[4:] for f in fields(model)
                   if f.name.startswith("has_") and getattr(model, f.name)]
            rows.append({"vendor": v.name, "cpu model": name,
                         "default": "yes" if i == 0 else "", "cpu": model.vendor,
                         "features": " ".join(has)})
    return rows


def workloads(args):
    from .. import workloads as W
    from ..study import EVENT_NAMES
    return [{"workload": w.name, "cycles per": EVENT_NAMES.get(w.primary, w.primary),
             "how isolated": w.method, "what runs": w.summary}
            for w in W.WORKLOADS.values()]


def profiles(args):
    from .. import profiles as P
    wanted = {v.cpu_vendor for v in _vendors(args)}
    defaults = {}
    for v in _vendors(args):
        try:
            defaults.setdefault(P.default_profile(v.name), []).append(v.name)
        except P.ProfileError:
            pass
    rows = []
    for name in P.list_profiles():
        p = P.load_profile(name)
        if p.vendor not in wanted:
            continue
        rows.append({"profile": name, "default for": ", ".join(defaults.get(name, [])),
                     "cpu": p.cpu, "cpu model": p.cpu_model or "",
                     "figures": str(len(p.entries)),
                     "on estimates": str(len(p.estimates())), "file": p.path})
    return rows


def run(args):
    rows = globals()[args.what](args)
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    from rich import box
    from rich.console import Console
    from rich.table import Table
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in (rows[0] if rows else {}):
        wrap = col in ("meaning", "sets", "what runs", "features", "file", "cpu")
        t.add_column(col, no_wrap=not wrap, overflow="fold")
    for r in rows:
        t.add_row(*(escape(str(v)) for v in r.values()))   # data, not markup
    Console().print(t)
    return 0
