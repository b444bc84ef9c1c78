"""Validation: the cost model against published end-to-end measurements (design/COSTS.md).

The figures live in `published.toml` beside this file, apart from the per-operation figures
that build the profiles, and are never used to build or tune one. For every entry the
model's prediction comes from pykvm.study.measure, run with the entry's recipe (workload,
variant or before/after variants, profile, optionally the paths the measurement brackets)::

    from pykvm import validation
    entries = validation.load_entries()            # the built-in file, or a path
    report = validation.validate(entries)
    for r in report.results:
        print(r.id, r.published, r.predicted, r.ratio, r.misses)
    report.median_error                            # over the entries it could predict
    [r.needs for r in report.results if not r.predicted_ok]   # what the rest need

A report is not a pass/fail gate: it says what the model predicts now, how far that is
from what was published, and why it misses where it misses (what the published
measurement includes that the model leaves out).

`provenance_overlaps(profile, entries)` is COSTS.md's rule checked mechanically: a profile
figure whose source or basis cites a validation entry (its commit id, Message-ID, quote,
id, or its author together with one of its numbers) is reported.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import statistics
import tomllib
from dataclasses import asdict, dataclass, field

from ..errors import InvalidConfiguration

__all__ = ["ValidationEntry", "Recipe", "Result", "Report", "ValidationDataError",
           "DATA_FILE", "TOLERANCE", "MEDIAN_GOAL", "load_entries", "validate", "predict",
           "provenance_overlaps", "entry_identifiers", "unmet_need"]

DATA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "published.toml")
TOLERANCE = 0.25          # the goal: every entry within 25% ...
MEDIAN_GOAL = 0.10        # ... and the median error within 10%
KINDS = ("absolute", "delta")
UNITS = ("cycles", "ns")
VENDORS = ("intel", "amd", "unknown")
_ENTRY_FIELDS = {"source", "quote", "verified", "authors", "cpu", "vendor", "kernel",
                 "measured", "figure", "unit", "kind", "before", "after", "spread",
                 "confidence", "frequency_ghz", "predict"}
_REQUIRED = ("source", "quote", "authors", "cpu", "vendor", "kernel", "measured", "figure",
             "unit", "kind")
_RECIPE_FIELDS = {"workload", "variant", "before", "after", "profile", "paths", "assumes",
                  "misses", "needs"}


class ValidationDataError(InvalidConfiguration):
    """The validation file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Recipe:
    """How the model predicts an entry. `needs` says what the model lacked when the entry
    was written; with a complete recipe beside it (workload, variants, profile), the entry
    is predicted as soon as that workload and those presets and parameters exist in the
    installed pykvm (`unmet_need`)."""
    workload: str | None = None
    variant: str | None = None          # absolute entries
    before: str | None = None           # delta entries: prediction = before - after
    after: str | None = None
    profile: str | None = None
    paths: tuple = ()                   # () = every path but GUEST
    assumes: str = ""
    misses: str = ""
    needs: str = ""


@dataclass(frozen=True)
class ValidationEntry:
    """One published figure (published.toml's schema, documented at its top)."""
    id: str
    source: str
    quote: str
    authors: tuple
    cpu: str
    vendor: str
    kernel: str
    measured: str
    figure: float
    unit: str
    kind: str
    recipe: Recipe
    before: float | None = None
    after: float | None = None
    spread: str = ""
    confidence: str = ""
    verified: str = ""
    frequency_ghz: float | None = None

    @property
    def figure_cycles(self):
        """The figure in cycles, or None when it is in ns and the source gives no clock."""
        if self.unit == "cycles":
            return float(self.figure)
        if self.frequency_ghz:
            return float(self.figure) * self.frequency_ghz
        return None


# ---- loading ------------------------------------------------------------------------

def load_entries(path=None):
    """[ValidationEntry] from `path` (default: the built-in published.toml), in file
    order. Raises ValidationDataError naming the file and the entry."""
    path = os.fspath(path) if path is not None else DATA_FILE
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValidationDataError(f"{path}: not valid TOML: {e}") from None
    unknown = set(data) - {"entry"}
    if unknown:
        raise ValidationDataError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; "
                                  f"a validation file has [entry.ID] tables only")
    section = data.get("entry", {})
    if not isinstance(section, dict) or not section:
        raise ValidationDataError(f"{path}: no [entry.ID] tables")
    return [_entry(path, eid, raw) for eid, raw in section.items()]


def _entry(path, eid, raw):
    def fail(msg):
        raise ValidationDataError(f"{path}: [entry.{eid}]: {msg}")

    if not isinstance(raw, dict):
        fail("must be a table")
    bad = set(raw) - _ENTRY_FIELDS
    if bad:
        fail(f"unknown field(s) {', '.join(sorted(bad))}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        fail(f"missing {', '.join(missing)}")
    for k in ("source", "quote", "cpu", "kernel", "measured"):
        if not isinstance(raw[k], str) or not raw[k].strip():
            fail(f"{k} must be a non-empty string")
    authors = raw["authors"]
    if not isinstance(authors, list) or not authors or \
            not all(isinstance(a, str) and a.strip() for a in authors):
        fail("authors must be a non-empty list of surnames")
    if raw["vendor"] not in VENDORS:
        fail(f"vendor must be one of {', '.join(VENDORS)}, got {raw['vendor']!r}")
    if raw["unit"] not in UNITS:
        fail(f"unit must be one of {', '.join(UNITS)}, got {raw['unit']!r}")
    if raw["kind"] not in KINDS:
        fail(f"kind must be one of {', '.join(KINDS)}, got {raw['kind']!r}")
    nums = {}
    for k in ("figure", "before", "after", "frequency_ghz"):
        v = raw.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            fail(f"{k} must be a number, got {v!r}")
        nums[k] = v
    if nums.get("frequency_ghz") is not None and nums["frequency_ghz"] <= 0:
        fail("frequency_ghz must be > 0")
    if raw["kind"] == "delta" and "before" in nums and "after" in nums and \
            abs(nums["before"] - nums["after"] - nums["figure"]) > 0.5:
        fail(f"a delta's figure is before - after = {nums['before'] - nums['after']}, "
             f"got {nums['figure']}")
    for k in ("spread", "confidence", "verified"):
        if k in raw and not isinstance(raw[k], str):
            fail(f"{k} must be a string")
    recipe = _recipe(raw.get("predict"), raw["kind"], fail)
    return ValidationEntry(
        id=eid, source=raw["source"].strip(), quote=raw["quote"].strip(),
        authors=tuple(a.strip() for a in authors), cpu=raw["cpu"], vendor=raw["vendor"],
        kernel=raw["kernel"], measured=raw["measured"], figure=nums["figure"],
        unit=raw["unit"], kind=raw["kind"], recipe=recipe, before=nums.get("before"),
        after=nums.get("after"), spread=raw.get("spread", ""),
        confidence=raw.get("confidence", ""), verified=raw.get("verified", ""),
        frequency_ghz=nums.get("frequency_ghz"))


def _recipe(raw, kind, fail):
    if raw is None:
        fail("missing [predict]: give a recipe (workload, variant/before+after, profile) "
             "or needs = \"what the model lacks\"")
    if not isinstance(raw, dict):
        fail("[predict] must be a table")
    bad = set(raw) - _RECIPE_FIELDS
    if bad:
        fail(f"[predict]: unknown field(s) {', '.join(sorted(bad))}")
    for k, v in raw.items():
        if k != "paths" and not isinstance(v, str):
            fail(f"[predict]: {k} must be a string")
    paths = raw.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        fail("[predict]: paths must be a list of path names")
    from .._lib import PATHS
    unknown = [p for p in paths if p not in PATHS or p == "GUEST"]
    if unknown:
        fail(f"[predict]: unknown path(s) {', '.join(unknown)}; known: "
             f"{', '.join(p for p in PATHS if p != 'GUEST')}")
    r = Recipe(workload=raw.get("workload"), variant=raw.get("variant"),
               before=raw.get("before"), after=raw.get("after"), profile=raw.get("profile"),
               paths=tuple(paths), assumes=raw.get("assumes", ""),
               misses=raw.get("misses", ""), needs=raw.get("needs", "").strip())
    if r.needs and not r.workload:
        return r
    if not r.workload or not r.profile:
        fail("[predict]: a recipe needs workload and profile (or needs = \"...\")")
    if kind == "absolute" and (not r.variant or r.before or r.after):
        fail("[predict]: an absolute entry is predicted from one variant (variant = ...)")
    if kind == "delta" and (not r.before or not r.after or r.variant):
        fail("[predict]: a delta entry is predicted from two variants (before, after)")
    if not r.misses.strip():
        fail("[predict]: say what the published measurement includes that the model does "
             "not (misses = \"...\")")
    return r


# ---- predicting ---------------------------------------------------------------------

def unmet_need(recipe):
    """"" if this pykvm can run the recipe, else what it lacks (the recipe's `needs`, or
    why its workload, variants or profile do not resolve)."""
    if not recipe.workload:
        return recipe.needs or "a recipe"
    from .. import workloads as W
    from ..profiles import ProfileError, load_profile
    from ..study import Variant
    from ..vendors import get_vendor
    why = []
    if recipe.workload not in W.names():
        why.append(f"workload {recipe.workload!r}")
    for spec in (recipe.variant, recipe.before, recipe.after):
        if not spec:
            continue
        try:
            v = Variant.parse(spec)
            presets = getattr(get_vendor(v.vendor), "presets", {}) or {}
            if v.preset is not None and v.preset not in presets:
                why.append(f"preset {v.vendor}:{v.preset}")
            if v.cpu_model and v.cpu_model not in get_vendor(v.vendor).cpu_models:
                why.append(f"CPU model {v.cpu_model}")
        except InvalidConfiguration as e:
            why.append(f"variant {spec} ({e})")
    try:
        load_profile(recipe.profile)
    except ProfileError:
        why.append(f"profile {recipe.profile}")
    if not why:
        return ""
    return recipe.needs or f"{', '.join(why)}, not in this pykvm"

@dataclass
class Result:
    """One entry of the report. `predicted` is None when the entry cannot be predicted
    (`needs` says why); `error` = predicted / published - 1."""
    id: str
    kind: str
    vendor: str
    published: float | None
    unit: str
    predicted: float | None = None
    ratio: float | None = None
    error: float | None = None
    within: bool | None = None
    workload: str = ""
    variants: tuple = ()
    profile: str = ""
    paths: tuple = ()
    event: str = ""
    assumes: str = ""
    misses: str = ""
    needs: str = ""
    estimate_share: float | None = None
    source: str = ""
    measured: str = ""

    @property
    def predicted_ok(self):
        return self.predicted is not None

    @property
    def status(self):
        if self.predicted is None:
            return f"not predictable yet: needs {self.needs}"
        return "within 25%" if self.within else "outside 25%"

    def to_dict(self):
        d = asdict(self)
        d["status"] = self.status
        return d


@dataclass
class Report:
    results: list
    profile_override: dict = field(default_factory=dict)
    overlaps: list = field(default_factory=list)     # provenance_overlaps of the profiles used

    @property
    def predicted(self):
        return [r for r in self.results if r.predicted_ok]

    @property
    def median_error(self):
        """Median of |predicted / published - 1| over the entries predicted, or None."""
        errs = [abs(r.error) for r in self.predicted]
        return statistics.median(errs) if errs else None

    @property
    def within(self):
        return [r for r in self.predicted if r.within]

    def summary(self):
        med = self.median_error
        return {"entries": len(self.results), "predicted": len(self.predicted),
                "not_predictable": len(self.results) - len(self.predicted),
                "within_25pct": len(self.within),
                "median_error": None if med is None else round(med, 4),
                "goal": {"every_entry_within": TOLERANCE, "median_within": MEDIAN_GOAL,
                         "met": bool(self.predicted) and len(self.within) ==
                         len(self.results) and med is not None and med <= MEDIAN_GOAL}}

    def to_json(self):
        return json.dumps({"summary": self.summary(),
                           "profile_override": self.profile_override,
                           "rule_overlaps": self.overlaps,
                           "results": [r.to_dict() for r in self.results]}, indent=1)

    CSV_COLUMNS = ("id", "kind", "vendor", "published", "unit", "predicted", "ratio", "error",
                   "within", "status", "workload", "variants", "profile", "paths", "event",
                   "estimate_share", "assumes", "misses", "needs", "source")

    def to_csv(self):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in self.results:
            d = r.to_dict()
            d["variants"] = " | ".join(r.variants)
            d["paths"] = " ".join(r.paths)
            for k in ("predicted", "ratio", "error", "estimate_share"):
                if d[k] is not None:
                    d[k] = round(d[k], 4)
            w.writerow(d)
        return buf.getvalue()


def _profile_name(entry, override):
    """The profile an entry is priced with: the override for its CPU vendor, if any."""
    if override:
        from ..profiles import load_profile
        for p in override:
            if load_profile(p).vendor == entry.vendor:
                return p
    return entry.recipe.profile


def _row_cycles(row, paths):
    if row.skipped:
        raise InvalidConfiguration(f"{row.variant} {row.workload}: skipped: {row.skipped}")
    if not paths:
        return row.cycles
    return sum(row.path_cycles.get(p, 0.0) for p in paths)


def predict(entry, profile_override=(), cache=None):
    """The Result for one entry: the model's prediction through pykvm.study.measure."""
    from .. import study
    rc = entry.recipe
    res = Result(id=entry.id, kind=entry.kind, vendor=entry.vendor,
                 published=entry.figure_cycles, unit="cycles", workload=rc.workload or "",
                 paths=rc.paths, assumes=rc.assumes, misses=rc.misses, needs=rc.needs,
                 source=entry.source, measured=entry.measured)
    res.needs = unmet_need(rc)
    if res.published is None:
        res.published = float(entry.figure)
        res.unit = entry.unit
        res.needs = res.needs or ("a clock frequency from the source to convert its "
                                  f"{entry.unit} into cycles")
    if res.needs:
        return res
    profile = _profile_name(entry, profile_override)
    res.profile = getattr(profile, "name", profile)
    cache = {} if cache is None else cache

    def row(variant):
        key = (variant, rc.workload, res.profile)
        if key not in cache:
            cache[key] = study.measure(variant, rc.workload, profile)
        return cache[key]

    if entry.kind == "absolute":
        r = row(rc.variant)
        res.variants = (r.variant,)
        res.predicted = _row_cycles(r, rc.paths)
        res.estimate_share = r.estimate_share
        res.event = r.event
    else:
        rb, ra = row(rc.before), row(rc.after)
        res.variants = (rb.variant, ra.variant)
        res.predicted = _row_cycles(rb, rc.paths) - _row_cycles(ra, rc.paths)
        res.estimate_share = max(rb.estimate_share, ra.estimate_share)
        res.event = rb.event
    res.ratio = res.predicted / res.published if res.published else None
    res.error = None if res.ratio is None else res.ratio - 1.0
    res.within = res.error is not None and abs(res.error) <= TOLERANCE
    return res


def validate(entries=None, profile=None, progress=None):
    """A Report over `entries` (default: the built-in file). `profile`: a profile (name,
    path or Profile) or a list of them, used instead of the recipe's for entries of the
    same CPU vendor (e.g. a profile `pykvm profile measure` wrote).
    progress(done, total, result) is called after each entry."""
    from ..profiles import load_profile
    entries = load_entries() if entries is None else entries
    override = [] if profile is None else (
        list(profile) if isinstance(profile, (list, tuple)) else [profile])
    override = [load_profile(p) for p in override]
    cache, results = {}, []
    for i, e in enumerate(entries):
        results.append(predict(e, override, cache))
        if progress:
            progress(i + 1, len(entries), results[-1])
    used = {r.profile for r in results if r.profile}
    overlaps = []
    for name in sorted(used):
        p = next((o for o in override if o.name == name), None) or load_profile(name)
        overlaps += [dict(o, profile=p.name) for o in provenance_overlaps(p, entries)]
    return Report(results, {p.vendor: p.name for p in override}, overlaps)


# ---- the rule, checked mechanically ---------------------------------------------------

_COMMIT = re.compile(r"\b[0-9a-f]{10,40}\b")
_MSGID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_MONTH = (r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\.?")
# Dates ("16 Dec 2020", "Aug 2015", "2015-08-06") and years in parentheses: their digits
# are not figures.
_DATES = re.compile(rf"\b\d{{1,2}}\s+{_MONTH}\s+\d{{4}}\b|\b{_MONTH}\s+\d{{4}}\b|"
                    rf"\b\d{{4}}-\d{{2}}-\d{{2}}\b|\(\s*\d{{4}}\s*\)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])\d+(?:\.\d+)?")
_MIN_FIGURE = 10          # smaller numbers ("2x WRMSR") say nothing about provenance


def _numbers(text):
    text = _DATES.sub(" ", text)
    out = set()
    for m in _NUMBER.finditer(text):
        v = float(m.group(0).replace(",", ""))
        if v >= _MIN_FIGURE:
            out.add(v)
    return out


def entry_identifiers(entry):
    """What identifies a validation entry in another text: {"commits", "message_ids",
    "quote_fragments", "numbers", "authors", "id"}."""
    text = f"{entry.source} {entry.quote}"
    nums = {float(entry.figure)} | {float(x) for x in (entry.before, entry.after)
                                    if x is not None}
    nums |= _numbers(entry.quote) | _numbers(entry.spread)
    frags = [re.sub(r"\s+", " ", f).strip().lower() for f in re.split(r"\.\.\.|;", entry.quote)]
    return {"id": entry.id,
            "commits": set(_COMMIT.findall(entry.source.lower())),
            "message_ids": {m.lower() for m in _MSGID.findall(text)},
            "quote_fragments": [f for f in frags if len(f) >= 24],
            "numbers": {n for n in nums if n >= _MIN_FIGURE},
            "authors": {a.lower() for a in entry.authors}}


def provenance_overlaps(profile, entries=None):
    """[{"key", "entry", "reason"}]: priced figures of `profile` whose source or basis
    names a validation entry (COSTS.md: no profile figure may come from one). Checked:
    the entry's id, commit ids, Message-IDs and quote in the figure's source or basis, and
    one of the entry's authors in the source together with one of its numbers (in the
    source, or as the figure's cycles)."""
    from ..profiles import load_profile
    profile = load_profile(profile)
    entries = load_entries() if entries is None else entries
    ids = [entry_identifiers(e) for e in entries]
    found = []
    for key, fig in profile.entries.items():
        src = re.sub(r"\s+", " ", fig.source).lower()
        basis = " ".join(fig.basis).lower()
        text = f"{src} {basis}"
        nums = _numbers(fig.source) | {float(fig.cycles)}
        words = set(re.findall(r"[a-z]+", src))
        for ident in ids:
            reasons = []
            if ident["id"].lower() in text:
                reasons.append(f"names the entry {ident['id']}")
            reasons += [f"cites commit {c}" for c in ident["commits"]
                        if re.search(rf"\b{c[:10]}", text)]
            reasons += [f"cites Message-ID <{m}>" for m in ident["message_ids"] if m in text]
            reasons += [f"quotes {q!r}" for q in ident["quote_fragments"] if q in text]
            authors = ident["authors"] & words
            shared = sorted(ident["numbers"] & nums)
            if authors and shared:
                reasons.append(f"cites {', '.join(sorted(authors))} with the entry's "
                               f"figure(s) {', '.join(f'{n:g}' for n in shared)}")
            if reasons:
                found.append({"key": key, "entry": ident["id"], "reason": "; ".join(reasons)})
    return found
