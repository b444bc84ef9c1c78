"""`pykvm study`: what each switching strategy costs, on which path, per event.

Runs vendors x presets x workloads on the simulated machine, prices every operation
with a cost profile (pykvm.profiles), and reports for each row the cycles per event of
the workload (per fast-path exit, per userspace round trip, per preemption, ...), the
RDMSR/WRMSR/VMREAD/VMWRITE/VMLOAD/VMSAVE counts per path, and which of the row's cycles
rest on estimates::

    from pykvm import study
    rows = study.run_study(vendors=["svm"], presets=["upstream", "v5.10"],
                           workloads=["pio", "fastpath"])
    r = rows[0]
    r.cyc_per_userspace_round_trip        # cycles, GUEST path left out
    r.path_ops["PREPARE_SWITCH"]["VMSAVE"]  # operations per event on that path
    r.cycles_lo, r.cycles_hi              # the range the profile's grades allow
    study.write_outputs(rows, "study-out")  # study.csv, study.json, study.png

How a row is measured: a fresh machine with the variant's vendor, preset and parameters
and the profile's prices; the workload starts and warms up; then the costs of run(2n)
minus those of run(n), divided by the events that difference contains (exact in the
steady state: the simulation is deterministic). For "extra" workloads (overcommit,
migrate) the same difference measured without the host behaviour is subtracted, so the
row is what one preemption or one migration adds. The GUEST path (the guest's own
instructions) is never part of a figure.

Each cycle figure carries a range (Row.cycles_lo/cycles_hi, Row.path_cycles_range): the
cycles each profile entry priced, scaled by the factors its grade allows
(pykvm.profiles.GRADE_RANGE: spec exact, measured +-10%, derived/claimed x/÷1.33-1.5,
estimate x/÷2), summed over the entries. It is the interval if every figure were at the
end of its range at once: wide where the row rests on estimates.

A variant is written vendor:preset[:name=value,...], e.g. "svm:v5.10" or
"vmx:upstream:user_return_msrs=0"; the name cpu_model=... picks the CPU model.

Verdicts come from the checker, passed in as `verdict_fn(row) -> str`; without one the
column reads "not checked".
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field

from . import profiles as P
from . import workloads as W
from .errors import InvalidConfiguration

__all__ = ["Variant", "Row", "CompareRow", "run_study", "compare", "write_outputs",
           "write_compare", "plan", "REPORTED_OPS", "METRICS", "NOT_CHECKED", "EVENT_NAMES"]

REPORTED_OPS = ("RDMSR", "WRMSR", "VMREAD", "VMWRITE", "VMLOAD", "VMSAVE")
# The primary event of a workload -> the row attribute holding cycles per that event.
METRICS = {
    "fastpath_exits": "cyc_per_fastpath_exit",
    "userspace_exits": "cyc_per_userspace_round_trip",
    "preemptions": "cyc_per_preemption",
    "kernel_exits": "cyc_per_kernel_exit",
    "migrations": "cyc_per_migration",
    "guest_switches": "cyc_per_guest_switch",
    "halts": "cyc_per_halt",
    "msr_ioctls": "cyc_per_msr_ioctl",
    "vcpu_creations": "cyc_per_vcpu_creation",
}
NOT_CHECKED = "not checked"
DEFAULT_OUT = "study-out"
_CPUS = 2


def _paths():
    from ._lib import PATHS
    return [p for p in PATHS if p != "GUEST"]


# ---- variants -----------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """What runs: a vendor module, one of its presets (None: its first), parameters on
    top, and optionally a CPU model (None: the profile's, else the vendor's first)."""
    vendor: str
    preset: str | None = None
    params: tuple = ()                # sorted (name, value) pairs
    cpu_model: str | None = None

    @classmethod
    def parse(cls, spec):
        """"vendor:preset[:name=value,...]"; cpu_model=NAME is the CPU model."""
        parts = spec.split(":", 2)
        if not parts[0]:
            raise InvalidConfiguration(f"variant {spec!r}: say vendor:preset[:name=value,...]")
        preset = parts[1] if len(parts) > 1 and parts[1] not in ("", "-") else None
        params, cpu_model = {}, None
        if len(parts) > 2 and parts[2]:
            for item in parts[2].split(","):
                name, eq, value = item.partition("=")
                if name.strip() == "cpu_model":
                    cpu_model = value.strip()
                else:
                    params[name.strip()] = value if eq else None
        # Parsed as the kernel parses module parameters: the label echoes what runs.
        from .params import resolve
        params = resolve(parts[0], params)
        return cls(parts[0], preset, tuple(sorted(params.items())), cpu_model)

    @property
    def label(self):
        s = f"{self.vendor}:{self.preset or '-'}"
        extra = [f"{k}={int(v)}" for k, v in self.params]
        if self.cpu_model:
            extra.append(f"cpu_model={self.cpu_model}")
        return s + (":" + ",".join(extra) if extra else "")

    def machine(self, profile=None):
        """A fresh Machine for this variant, priced with `profile` (a Profile)."""
        import pykvm
        kw = {}
        if self.preset is not None:
            kw["preset"] = self.preset
        if self.params:
            kw["params"] = dict(self.params)
        cpu_model = self.cpu_model or (profile.cpu_model if profile else None)
        vendor = pykvm.vendors.get_vendor(self.vendor)
        if cpu_model is not None and cpu_model not in vendor.cpu_models:
            raise InvalidConfiguration(
                f"{self.label}: {self.vendor} has no CPU model {cpu_model!r}; it has "
                f"{', '.join(vendor.cpu_models)}")
        return pykvm.Machine(cpus=_CPUS, vendor=self.vendor, cpu_model=cpu_model,
                             profile=profile.costs if profile else None, **kw)


def _presets(vendor):
    from .vendors import get_vendor
    return list(getattr(get_vendor(vendor), "presets", {}) or {}) or [None]


# Profiles loaded for rows, by name: a row names its profile, which may be a file (e.g.
# one `pykvm profile measure` wrote) that load_profile cannot find by that name.
_LOADED = {}


def profile_of(row):
    """The Profile `row` was priced with."""
    return _LOADED.get(row.profile) or P.load_profile(row.profile)


def _profile_for(vendor, profile):
    from .vendors import get_vendor
    if isinstance(profile, dict):
        profile = profile.get(vendor)
    p = P.load_profile(profile if profile is not None else P.default_profile(vendor))
    _LOADED[p.name] = p
    want = get_vendor(vendor).cpu_vendor
    if p.vendor != want:
        raise InvalidConfiguration(f"profile {p.name} prices an {p.vendor} CPU; vendor "
                                   f"{vendor} runs on {want}")
    return p


# ---- rows ---------------------------------------------------------------------------

@dataclass
class Row:
    """One variant x workload. Per-event figures are per `event` (the workload's primary
    event); `events` counts what happened in the n measured iterations (for "extra"
    workloads, in the iterations with the host behaviour; the baseline without it is
    subtracted from the costs, not listed)."""
    variant: str
    vendor: str
    preset: str | None
    params: dict
    cpu_model: str
    profile: str
    workload: str
    event: str
    method: str
    iterations: int
    events: dict = field(default_factory=dict)
    cycles: float = 0.0                       # switch cycles per event (all but GUEST)
    cycles_lo: float = 0.0                    # the range the profile's grades give it
    cycles_hi: float = 0.0
    path_cycles: dict = field(default_factory=dict)   # path -> cycles per event
    path_cycles_range: dict = field(default_factory=dict)  # path -> (lo, hi) per event
    path_ops: dict = field(default_factory=dict)      # path -> {op: per event}
    path_msrs: dict = field(default_factory=dict)     # path -> {"WRMSR STAR": per event}
    estimates: list = field(default_factory=list)     # entries the cycles rest on
    estimate_share: float = 0.0               # share of `cycles` priced by those
    unpriced: list = field(default_factory=list)      # operations with no figure
    skipped: str = ""                         # why the row did not run
    verdict: str = NOT_CHECKED

    def metric(self, event):
        """Cycles per `event` if that is this row's event, else None."""
        return self.cycles if self.event == event and not self.skipped else None

    @property
    def cyc_per_fastpath_exit(self):
        return self.metric("fastpath_exits")

    @property
    def cyc_per_userspace_round_trip(self):
        return self.metric("userspace_exits")

    @property
    def cyc_per_preemption(self):
        return self.metric("preemptions")

    @property
    def cyc_per_kernel_exit(self):
        return self.metric("kernel_exits")

    @property
    def cyc_per_migration(self):
        return self.metric("migrations")

    @property
    def cyc_per_guest_switch(self):
        return self.metric("guest_switches")

    @property
    def cyc_per_halt(self):
        return self.metric("halts")

    @property
    def cyc_per_msr_ioctl(self):
        return self.metric("msr_ioctls")

    @property
    def cyc_per_vcpu_creation(self):
        return self.metric("vcpu_creations")

    def ops(self, op):
        """{path: count per event} of one operation, non-zero paths only."""
        return {p: d[op] for p, d in self.path_ops.items() if d.get(op)}

    def total(self, op):
        return sum(self.ops(op).values())

    def flat(self):
        """One CSV line: scalars, per-metric cycles, per-path cycles and counts."""
        out = {"variant": self.variant, "vendor": self.vendor, "preset": self.preset or "",
               "params": ",".join(f"{k}={int(v)}" for k, v in sorted(self.params.items())),
               "cpu_model": self.cpu_model, "profile": self.profile,
               "workload": self.workload, "event": self.event, "iterations": self.iterations}
        for ev in W.EVENTS:
            out[f"events.{ev}"] = self.events.get(ev, 0)
        for attr in METRICS.values():
            v = getattr(self, attr)
            out[attr] = "" if v is None else _num(v)
        out["cycles"] = "" if self.skipped else _num(self.cycles)
        out["cycles_lo"] = "" if self.skipped else _num(self.cycles_lo)
        out["cycles_hi"] = "" if self.skipped else _num(self.cycles_hi)
        for p in _paths():
            out[f"cycles.{p}"] = _num(self.path_cycles.get(p, 0))
            lo, hi = self.path_cycles_range.get(p, (0, 0))
            out[f"cycles_lo.{p}"] = _num(lo)
            out[f"cycles_hi.{p}"] = _num(hi)
        for op in REPORTED_OPS:
            out[f"{op}.total"] = _num(self.total(op))
            for p in _paths():
                out[f"{op}.{p}"] = _num(self.path_ops.get(p, {}).get(op, 0))
        out["estimate_share"] = round(self.estimate_share, 4)
        out["estimates"] = " ".join(self.estimates)
        out["unpriced"] = " ".join(self.unpriced)
        out["skipped"] = self.skipped
        out["verdict"] = self.verdict
        return out

    def to_dict(self):
        return asdict(self)


def _num(x):
    """An int when the value is whole (exact per-event counts), else rounded."""
    if isinstance(x, float) and x.is_integer():
        return int(x)
    if isinstance(x, float):
        x = round(x, 3)
        return int(x) if x.is_integer() else x
    return x


def csv_columns():
    """The CSV header, in order."""
    cols = ["variant", "vendor", "preset", "params", "cpu_model", "profile", "workload",
            "event", "iterations"]
    cols += [f"events.{ev}" for ev in W.EVENTS]
    cols += list(METRICS.values()) + ["cycles", "cycles_lo", "cycles_hi"]
    for p in _paths():
        cols += [f"cycles.{p}", f"cycles_lo.{p}", f"cycles_hi.{p}"]
    for op in REPORTED_OPS:
        cols += [f"{op}.total"] + [f"{op}.{p}" for p in _paths()]
    cols += ["estimate_share", "estimates", "unpriced", "skipped", "verdict"]
    return cols


# ---- measuring one row --------------------------------------------------------------

def _phase(m, s, n, extra):
    m.reset_costs()
    ev = s.run(n, extra=extra)
    return ev, m.costs()


def _diff_costs(a, b, sign=1):
    """a - sign*b over {path: {"ops", "cycles", "msrs"}}."""
    out = {}
    for p in set(a) | set(b):
        pa, pb = a.get(p, {}), b.get(p, {})
        d = {"cycles": pa.get("cycles", 0) - sign * pb.get("cycles", 0)}
        for k in ("ops", "msrs"):
            ka, kb = pa.get(k, {}), pb.get(k, {})
            d[k] = {x: ka.get(x, 0) - sign * kb.get(x, 0) for x in set(ka) | set(kb)}
        out[p] = d
    return out


def _diff_events(a, b):
    return {k: a.get(k, 0) - b.get(k, 0) for k in set(a) | set(b)}


def _scale(m, s, n, extra):
    """Costs and events of n iterations, per-call overhead cancelled: run(2n) - run(n)."""
    e1, c1 = _phase(m, s, n, extra)
    e2, c2 = _phase(m, s, 2 * n, extra)
    return _diff_events(e2, e1), _diff_costs(c2, c1)


def measure(variant, workload, profile=None, iterations=None, warmup=2):
    """One Row: `variant` (Variant or spec string) running `workload` (name)."""
    if isinstance(variant, str):
        variant = Variant.parse(variant)
    w = W.get(workload)
    prof = _profile_for(variant.vendor, profile)
    m = variant.machine(prof)
    n = iterations or w.default_n
    row = Row(variant=variant.label, vendor=variant.vendor,
              preset=getattr(m, "preset", variant.preset), params=dict(variant.params),
              cpu_model=m.cpu_model_name, profile=prof.name, workload=w.name,
              event=w.primary, method=w.method, iterations=n)
    ok, why = w.available(m)
    if not ok:
        row.skipped = why
        return row
    s = w.start(m, warmup=warmup)
    events, costs = _scale(m, s, n, extra=True)
    count = events.get(w.primary, 0)
    if w.method == "extra":
        s.run(warmup, extra=False)
        base_events, base_costs = _scale(m, s, n, extra=False)
        costs = _diff_costs(costs, base_costs)
        count -= base_events.get(w.primary, 0)
    if count <= 0:
        raise InvalidConfiguration(f"{variant.label} {w.name}: the measurement holds no "
                                   f"{w.primary} ({events})")
    row.events = {k: events.get(k, 0) for k in W.EVENTS}
    _fill(row, costs, count, prof)
    return row


def _fill(row, costs, count, prof):
    total = 0
    attributed = {}
    lo_sum = hi_sum = 0.0
    for p in _paths():
        c = costs.get(p)
        if not c:
            continue
        ops = {k: v / count for k, v in c["ops"].items() if v}
        msrs = {k: v / count for k, v in c["msrs"].items() if v}
        if ops:
            row.path_ops[p] = ops
        if msrs:
            row.path_msrs[p] = msrs
        path_attr = prof.attribute(c)
        if c["cycles"]:
            row.path_cycles[p] = c["cycles"] / count
            lo, hi = prof.interval(path_attr)
            row.path_cycles_range[p] = (lo / count, hi / count)
            lo_sum += lo
            hi_sum += hi
        total += c["cycles"]
        for k, v in path_attr.items():
            attributed[k] = attributed.get(k, 0) + v
    if sum(attributed.values()) != total:
        raise InvalidConfiguration(
            f"{row.variant} {row.workload}: profile {prof.name} accounts for "
            f"{sum(attributed.values())} cycles, the machine charged {total}")
    row.cycles = total / count
    row.cycles_lo, row.cycles_hi = lo_sum / count, hi_sum / count
    est = sorted(k for k in attributed if prof.rests_on_estimate(k)
                 and _used(k, costs))
    row.estimates = est
    row.estimate_share = (sum(abs(attributed[k]) for k in est) /
                          sum(abs(v) for v in attributed.values())) if attributed and any(
        attributed.values()) else 0.0
    row.unpriced = sorted(k.split(".", 1)[1] for k in attributed if k.startswith("unpriced."))


def _used(key, costs):
    """Whether the operation behind entry `key` occurred in the measured difference."""
    table, name = key.split(".", 1)
    for c in costs.values():
        if table == "op" and c["ops"].get(name):
            return True
        if table in ("rdmsr", "wrmsr") and c["msrs"].get(f"{table.upper()} {name}"):
            return True
    return False


# ---- the study ----------------------------------------------------------------------

def plan(vendors=None, presets=None, workloads=None, variants=None):
    """[(Variant, workload name)] the study will run, in order."""
    wl = list(workloads or W.names())
    for name in wl:
        W.get(name)
    if variants:
        vs = [v if isinstance(v, Variant) else Variant.parse(v) for v in variants]
    else:
        vs = []
        for vendor in vendors or ("vmx", "svm"):
            have = _presets(vendor)
            chosen = [p for p in (presets or have) if p in have]
            if presets and not chosen:
                raise InvalidConfiguration(f"{vendor} has none of the presets "
                                           f"{', '.join(presets)}; it has "
                                           f"{', '.join(str(p) for p in have)}")
            vs += [Variant(vendor, p) for p in chosen]
    return [(v, w) for v in vs for w in wl]


def _task(variant, workload, profile, iterations, verdict_fn=None):
    row = measure(variant, workload, profile, iterations)
    if verdict_fn is not None and not row.skipped:
        row.verdict = str(verdict_fn(row))
    return row


def run_study(vendors=None, presets=None, workloads=None, profile=None, progress=None,
              iterations=None, engine=None, verdict_fn=None, variants=None):
    """Rows for vendors x presets x workloads (default: vmx and svm, every preset of
    each, every workload, each vendor's default profile), or for explicit `variants`.

    profile: a name, path or Profile for every vendor, or {vendor: profile}.
    progress: called as progress(done, total, row) as rows come in.
    engine: where the rows are measured (pykvm.engine: an Engine, or "local" / "dask";
    default: this process, the fastest for a study of this size). Each row is a task of
    plain data out (variant, workload, profile), a Row back.
    verdict_fn: row -> str, the checker's verdict, asked once per variant (with its first
    row, in that row's task) and given to all its rows; None leaves "not checked"."""
    from . import engine as _engine
    tasks = plan(vendors, presets, workloads, variants)
    profs = {}
    for v, _ in tasks:
        if v.vendor not in profs:
            profs[v.vendor] = _profile_for(v.vendor, profile)
    carried = set()
    args = []
    for v, w in tasks:
        fn = verdict_fn if verdict_fn is not None and v not in carried else None
        carried.add(v)
        args.append((v, w, profs[v.vendor], iterations, fn))
    owned = not isinstance(engine, _engine.Engine)
    e = _engine.get(engine or "local")
    try:
        rows = e.map(_task, args, progress=progress)
        if verdict_fn is not None:
            verdicts = {r.variant: r.verdict for r in rows if r.verdict != NOT_CHECKED}
            # A variant whose first row did not run: its first row that did.
            late = {}
            for r in rows:
                if not r.skipped and r.variant not in verdicts:
                    late.setdefault(r.variant, r)
            verdicts.update(zip(late, e.map(_verdict, [(verdict_fn, r)
                                                       for r in late.values()])))
            for r in rows:
                if not r.skipped:
                    r.verdict = verdicts[r.variant]
    finally:
        if owned:
            e.close()
    return rows


def _verdict(verdict_fn, row):
    return str(verdict_fn(row))


# ---- comparing two variants ---------------------------------------------------------

@dataclass
class CompareRow:
    """One workload under variants A and B: cycles per event and operation counts per
    path, with B - A."""
    workload: str
    event: str
    a: Row
    b: Row

    @property
    def delta(self):
        if self.a.skipped or self.b.skipped:
            return None
        return self.b.cycles - self.a.cycles

    @property
    def delta_pct(self):
        d = self.delta
        return None if d is None or not self.a.cycles else 100.0 * d / self.a.cycles

    def op_deltas(self):
        """{op: {path: B - A}} for the reported operations, non-zero only."""
        out = {}
        for op in REPORTED_OPS:
            pa, pb = self.a.ops(op), self.b.ops(op)
            d = {p: pb.get(p, 0) - pa.get(p, 0) for p in set(pa) | set(pb)}
            d = {p: v for p, v in d.items() if v}
            if d:
                out[op] = d
        return out

    def flat(self):
        out = {"workload": self.workload, "event": self.event,
               "a": self.a.variant, "b": self.b.variant,
               "a.cycles": "" if self.a.skipped else _num(self.a.cycles),
               "b.cycles": "" if self.b.skipped else _num(self.b.cycles),
               "delta": "" if self.delta is None else _num(self.delta),
               "delta_pct": "" if self.delta_pct is None else round(self.delta_pct, 2)}
        for op in REPORTED_OPS:
            for p in _paths():
                a = self.a.path_ops.get(p, {}).get(op, 0)
                b = self.b.path_ops.get(p, {}).get(op, 0)
                out[f"{op}.{p}.a"] = _num(a)
                out[f"{op}.{p}.b"] = _num(b)
                out[f"{op}.{p}.delta"] = _num(b - a)
        out["a.verdict"], out["b.verdict"] = self.a.verdict, self.b.verdict
        return out


def compare(a, b, workloads=None, profile=None, progress=None, iterations=None, engine=None,
            verdict_fn=None):
    """[CompareRow] for variants `a` and `b` (Variant or "vendor:preset[:k=v,...]")."""
    va = a if isinstance(a, Variant) else Variant.parse(a)
    vb = b if isinstance(b, Variant) else Variant.parse(b)
    rows = run_study(workloads=workloads, profile=profile, progress=progress,
                     iterations=iterations, engine=engine, verdict_fn=verdict_fn,
                     variants=[va, vb])
    by = {(r.variant, r.workload): r for r in rows}
    return [CompareRow(w, by[(va.label, w)].event, by[(va.label, w)], by[(vb.label, w)])
            for w in (workloads or W.names())]


# ---- outputs ------------------------------------------------------------------------

def _profiles_meta(rows):
    out = {}
    for r in rows:
        if r.profile in out:
            continue
        p = profile_of(r)
        out[r.profile] = {
            "path": p.path, "vendor": p.vendor, "cpu": p.cpu,
            "grade_range": P.GRADE_RANGE,
            "figures": {k: {"cycles": e.cycles, "grade": e.grade, "source": e.source,
                            "range": list(p.range(k)),
                            "rests_on_estimate": p.rests_on_estimate(k)}
                        for k, e in p.entries.items()}}
    return out


def write_outputs(rows, out_dir=DEFAULT_OUT, png=True):
    """study.csv, study.json and (png=True) study.png in `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"csv": os.path.join(out_dir, "study.csv"),
             "json": os.path.join(out_dir, "study.json")}
    with open(paths["csv"], "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=csv_columns())
        wr.writeheader()
        for r in rows:
            wr.writerow(r.flat())
    with open(paths["json"], "w") as f:
        json.dump({"columns": csv_columns(), "metrics": METRICS,
                   "profiles": _profiles_meta(rows), "rows": [r.to_dict() for r in rows]},
                  f, indent=1)
    if png:
        paths["png"] = os.path.join(out_dir, "study.png")
        chart(rows, paths["png"])
    return paths


def write_compare(crows, out_dir=DEFAULT_OUT, png=True):
    """compare.csv, compare.json and (png=True) compare.png in `out_dir`."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"csv": os.path.join(out_dir, "compare.csv"),
             "json": os.path.join(out_dir, "compare.json")}
    flats = [c.flat() for c in crows]
    cols = list(flats[0]) if flats else []
    with open(paths["csv"], "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols)
        wr.writeheader()
        wr.writerows(flats)
    with open(paths["json"], "w") as f:
        json.dump({"a": crows[0].a.variant if crows else None,
                   "b": crows[0].b.variant if crows else None,
                   "rows": [dict(c.flat(), op_deltas=c.op_deltas(), a_row=c.a.to_dict(),
                                 b_row=c.b.to_dict()) for c in crows]}, f, indent=1)
    if png:
        paths["png"] = os.path.join(out_dir, "compare.png")
        compare_chart(crows, paths["png"])
    return paths


# One colour per path, the same in every chart pykvm draws (matplotlib's tab10 colours;
# GUEST is never charted). Red is kept for LEAK verdicts alone.
PATH_COLORS = {
    "OTHER": "#7f7f7f", "HARDWARE": "#17becf", "VCPU_LOAD": "#ff7f0e",
    "PREPARE_SWITCH": "#2ca02c", "VCPU_RUN": "#1f77b4", "FASTPATH": "#9467bd",
    "HANDLE_EXIT": "#8c564b", "VCPU_PUT": "#e377c2", "USER_RETURN": "#bcbd22",
    "IOCTL": "#aec7e8", "SYSCALL": "#c5b0d5", "GUEST": "#000000",
}
VERDICT_COLORS = {"pass": "#2ca02c", "leak": "#d62728", "other": "#7f7f7f"}


def _verdict_kind(verdict):
    return "pass" if verdict == "pass" else "leak" if verdict.startswith("LEAK") else "other"


def _short_verdict(verdict):
    return verdict.split(" (", 1)[0]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _charted(rows):
    """(workloads with a panel, workloads whose switch costs nothing in every row)."""
    wls = list(dict.fromkeys(r.workload for r in rows))
    zero = [w for w in wls if all(not r.path_cycles and not r.cycles
                                  for r in rows if r.workload == w)]
    return [w for w in wls if w not in zero], zero


def _stack(ax, xs, rows_or_values, width=0.7):
    """Stacked bars by path at xs; each item a {path: cycles}. Returns (top, bottom)."""
    pos = [0.0] * len(xs)
    neg = [0.0] * len(xs)
    for p in _paths():
        vals = [d.get(p, 0) for d in rows_or_values]
        if not any(vals):
            continue
        base = [bp if v >= 0 else bn for v, bp, bn in zip(vals, pos, neg)]
        ax.bar(xs, vals, bottom=base, color=PATH_COLORS[p], label=p, width=width,
               edgecolor="white", linewidth=0.4)
        pos = [b + max(v, 0) for b, v in zip(pos, vals)]
        neg = [b + min(v, 0) for b, v in zip(neg, vals)]
    return pos, neg


def _hold(ax, top, bottom, room=1.32):
    """Axes that hold every bar and the labels above it."""
    hi = max([0.0, *top])
    lo = min([0.0, *bottom])
    span = (hi - lo) or 1.0
    ax.set_ylim(lo - (0.12 * span if lo < 0 else 0), hi + (room - 1) * span)


def _legend(fig, axes, note_lines):
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    order = [p for p in _paths() if p in labels]
    handles = [handles[labels.index(p)] for p in order]
    if handles:
        fig.legend(handles, order, loc="lower center", ncol=min(len(order), 5), fontsize=8,
                   title="path (one colour per path in every pykvm chart)",
                   title_fontsize=8, bbox_to_anchor=(0.5, 0.0))
    if note_lines:
        fig.text(0.5, 0.962, "\n".join(note_lines), fontsize=7.5, va="top", ha="center",
                 color="#444444")


def _grid(n):
    ncol = min(3, max(1, n))
    nrow = max(1, -(-n // ncol))
    return nrow, ncol


def chart(rows, path):
    """Stacked bars of cycles per event by path: one panel per workload, one bar per
    variant, each bar labelled with its cycles, the share resting on estimates and (under
    it) the checker's verdict; a bar's interval, when the study priced one, as a whisker.
    Workloads that cost no switch cycles in any variant get a note, not an empty panel."""
    plt = _plt()
    rows = [r for r in rows if not r.skipped]
    wls, zero = _charted(rows)
    nrow, ncol = _grid(len(wls))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.4 * ncol, 3.9 * nrow + 1.2),
                             squeeze=False)
    for ax, wl in zip(axes.flat, wls):
        rs = [r for r in rows if r.workload == wl]
        xs = list(range(len(rs)))
        top, bottom = _stack(ax, xs, [r.path_cycles for r in rs])
        for x, r, t, b in zip(xs, rs, top, bottom):
            if _verdict_kind(r.verdict) == "leak":      # a leaking variant's bar, outlined
                ax.bar([x], [t - b], bottom=[b], width=0.78, fill=False,
                       edgecolor=VERDICT_COLORS["leak"], linewidth=1.6)
        his = []
        for x, r, t in zip(xs, rs, top):
            lo, hi = getattr(r, "cycles_lo", None), getattr(r, "cycles_hi", None)
            if lo is not None and hi is not None and hi > lo:
                ax.errorbar([x], [r.cycles], yerr=[[r.cycles - lo], [hi - r.cycles]],
                            fmt="none", ecolor="black", capsize=3, linewidth=0.8)
                his.append(hi)
            ax.annotate(f"{r.cycles:,.0f}\nest {100 * r.estimate_share:.0f}%",
                        (x, max(t, hi if his and his[-1] == hi else 0)),
                        xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=6.5)
        _hold(ax, [max(t, h) for t, h in zip(top, top)] + his, bottom)
        ax.set_title(f"{wl}: cycles per {EVENT_NAMES[rs[0].event]}", fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{r.variant}\n{_short_verdict(r.verdict)}" for r in rs],
                           rotation=30, ha="right", fontsize=6.5)
        for lab, r in zip(ax.get_xticklabels(), rs):
            lab.set_color(VERDICT_COLORS[_verdict_kind(r.verdict)])
        ax.tick_params(axis="y", labelsize=7)
        ax.axhline(0, color="black", linewidth=0.5)
    for ax in list(axes.flat)[len(wls):]:
        ax.axis("off")
    notes = [f"{w}: 0 switch cycles in every variant: the guest's work takes no VM-exit"
             for w in zero]
    notes.insert(0, "under each variant: the checker's verdict (green: pass; red, and the "
                    "bar outlined: LEAK); above each bar: cycles and the share priced by "
                    "figures that rest on estimates")
    _legend(fig, axes, notes)
    fig.suptitle("pykvm study: switch cycles per event, by path (GUEST excluded)",
                 fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0.07, 1, 0.955 - 0.012 * len(notes)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_chart(crows, path):
    """A vs B per workload: the two stacked bars by path and a third bar, B - A, with each
    path's difference (up: B costs more there, down: less), labelled with the total."""
    plt = _plt()
    crows = [c for c in crows if not (c.a.skipped or c.b.skipped)]
    rows = [r for c in crows for r in (c.a, c.b)]
    wls, zero = _charted(rows)
    shown = [c for c in crows if c.workload in wls]
    nrow, ncol = _grid(len(shown))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.0 * ncol, 3.9 * nrow + 1.2),
                             squeeze=False)
    a_label = crows[0].a.variant if crows else "A"
    b_label = crows[0].b.variant if crows else "B"
    for ax, c in zip(axes.flat, shown):
        delta = {p: c.b.path_cycles.get(p, 0) - c.a.path_cycles.get(p, 0) for p in _paths()}
        top, bottom = _stack(ax, [0, 1, 2], [c.a.path_cycles, c.b.path_cycles, delta])
        d = c.delta or 0
        labels = [f"{c.a.cycles:,.0f}\nest {100 * c.a.estimate_share:.0f}%",
                  f"{c.b.cycles:,.0f}\nest {100 * c.b.estimate_share:.0f}%",
                  f"{d:+,.0f}" + (f"\n({c.delta_pct:+.0f}%)" if c.delta_pct is not None
                                  else "")]
        for x, t, lab in zip((0, 1, 2), top, labels):
            ax.annotate(lab, (x, t), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7)
        _hold(ax, top, bottom)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"{c.workload}: cycles per {EVENT_NAMES[c.event]}", fontsize=9)
        ax.set_xticks([0, 1, 2])
        ax.set_xticklabels([f"A\n{_short_verdict(c.a.verdict)}",
                            f"B\n{_short_verdict(c.b.verdict)}", "B - A"], fontsize=7)
        for lab, r in zip(ax.get_xticklabels()[:2], (c.a, c.b)):
            lab.set_color(VERDICT_COLORS[_verdict_kind(r.verdict)])
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    notes = [f"A = {a_label}, B = {b_label}; B - A: each path's difference (below zero: "
             "B spends less there); est: share priced by figures that rest on estimates"]
    notes += [f"{w}: 0 switch cycles in A and B (no VM-exit)" for w in zero]
    _legend(fig, axes, notes)
    fig.suptitle(f"pykvm study --compare: {a_label} (A) vs {b_label} (B), switch cycles "
                 "per event by path", fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0.07, 1, 0.955 - 0.012 * len(notes)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# The primary event of a workload, as a column head says it.
EVENT_NAMES = {"fastpath_exits": "fast-path exit", "userspace_exits": "userspace RT",
               "preemptions": "preemption", "kernel_exits": "in-kernel exit",
               "migrations": "migration", "guest_switches": "guest switch",
               "halts": "halt", "msr_ioctls": "MSR get+set", "vcpu_creations": "vCPU created"}
