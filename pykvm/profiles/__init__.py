"""Cost profiles: what one operation costs on a real CPU, as data files (docs/costs.md).

A profile is a TOML file, one per microarchitecture. Every figure carries a grade and a
source, so a report can say which of its numbers rest on estimates::

    import pykvm
    from pykvm.profiles import load_profile
    p = load_profile("skylake-sp")             # a built-in name, or a path to your own file
    m = pykvm.Machine(vendor="vmx", profile=p)  # (the default profile of vmx, in fact)
    p.entries["op.VMRESUME"].grade             # 'derived'
    [e.key for e in p.estimates()]             # figures that rest on estimates

File format (see skylake-sp.toml for a full example)::

    [profile]
    name = "my-cpu"
    vendor = "intel"                 # or "amd"
    cpu_model = "skylake"            # optional: the vendor's CpuModel this profile prices

    [op.WRMSR]                       # an operation: pykvm._lib.OPS
    cycles = 200
    grade = "estimate"               # measured | claimed | derived | estimate | spec
    source = "where the number comes from"
    note = "the reasoning (required for estimate and derived)"
    basis = ["op.RDMSR"]             # optional: entries this one was computed from

    [wrmsr.SPEC_CTRL]                # per-MSR figure overriding op.WRMSR: pykvm._lib.PRICED_MSRS
    ...                              # (also [rdmsr.NAME]); FS_BASE, GS_BASE, PRED_CMD, ...

Rule (docs/costs.md): build a profile from per-operation figures only; never fit it to a
patch's before/after numbers or to any end-to-end figure. Those live in the validation
data (pykvm.validation), not here: a profile has no [check] tables.

Every figure has a range that follows from its grade (GRADE_RANGE): what the grade says
about how far the true value may lie from the figure on the profile's CPU. An entry
computed from others (`basis`) is at least as wide as the widest of them. The study adds
the ranges of the entries that priced a path (interval arithmetic: every figure at the
end of its range at once), so a cycle figure resting on estimates carries a wide range::

    p.range("op.WRMSR")                  # (100, 400): an estimate of 200
    p.interval({"op.WRMSR": 400, "op.RDMSR": 250})   # cycles by entry -> (lo, hi)
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from ..errors import InvalidConfiguration

__all__ = ["GRADES", "GRADE_RANGE", "Entry", "Profile", "ProfileError", "load_profile",
           "list_profiles", "default_profile", "PROFILE_DIR"]

PROFILE_DIR = os.path.dirname(os.path.abspath(__file__))
GRADES = ("measured", "claimed", "derived", "estimate", "spec")
# The range a grade gives a figure, as factors (low, high) of it. The one rule of the
# study's intervals:
#   spec      a fact of the architecture (0 for an instruction the CPU lacks): exact.
#   measured  a published measurement of this operation: +-10%, for run-to-run spread,
#             the stepping and microcode measured versus the part priced.
#   derived   arithmetic on a measurement (a difference, a unit conversion, another part
#             of the same family): x/÷ 1.33.
#   claimed   an author's rough figure ("a couple hundred", "~2 us"): x/÷ 1.5.
#   estimate  ours, reasoned from instruction counts or neighbours: x/÷ 2.
GRADE_RANGE = {
    "spec": (1.0, 1.0),
    "measured": (0.9, 1.1),
    "derived": (0.75, 1.33),
    "claimed": (0.67, 1.5),
    "estimate": (0.5, 2.0),
}
# Grades whose figure must say how it was obtained.
_NEEDS_NOTE = ("derived", "estimate")
_PRICED_TABLES = ("op", "rdmsr", "wrmsr")
_ENTRY_FIELDS = {"cycles", "grade", "source", "note", "basis"}
_PROFILE_FIELDS = {"name", "vendor", "cpu", "cpu_model", "description"}
_U32_MAX = 2**32 - 1
# The built-in profile for each built-in vendor module.
_DEFAULTS = {"vmx": "skylake-sp", "svm": "epyc-zen"}


class ProfileError(InvalidConfiguration):
    """A profile file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Entry:
    """One figure: `cycles` for operation `name` of `table` ("op", "rdmsr", "wrmsr"), with
    its grade, source, reasoning and the entries it was computed from."""
    table: str
    name: str
    cycles: int
    grade: str
    source: str
    note: str = ""
    basis: tuple = ()

    @property
    def key(self):
        return f"{self.table}.{self.name}"


@dataclass
class Profile:
    """A loaded profile. `costs` is in Machine.set_profile's shape."""
    name: str
    vendor: str
    path: str
    entries: dict = field(default_factory=dict)      # key -> Entry (priced tables)
    cpu: str = ""
    cpu_model: str | None = None
    description: str = ""

    @property
    def costs(self):
        """{"op": {OP: cycles}, "rdmsr": {MSR: cycles}, "wrmsr": {MSR: cycles}}."""
        out = {t: {} for t in _PRICED_TABLES}
        for e in self.entries.values():
            out[e.table][e.name] = e.cycles
        return out

    def rests_on_estimate(self, key):
        """True if the figure `key` is an estimate, or was computed from one."""
        seen = set()

        def walk(k):
            if k in seen:
                return False
            seen.add(k)
            e = self.entries.get(k)
            if e is None:
                return False
            return e.grade == "estimate" or any(walk(b) for b in e.basis)
        return walk(key)

    def estimates(self):
        """Entries whose figure rests on an estimate, directly or through their basis."""
        return [e for k, e in self.entries.items() if self.rests_on_estimate(k)]

    def factors(self, key):
        """(low, high) factors of entry `key`'s range: its grade's (GRADE_RANGE), widened
        to those of the entries it was computed from. Unknown keys (an unpriced
        operation, 0 cycles) are exact."""
        lo, hi = 1.0, 1.0
        seen = set()

        def walk(k):
            nonlocal lo, hi
            if k in seen or k not in self.entries:
                return
            seen.add(k)
            e = self.entries[k]
            f_lo, f_hi = GRADE_RANGE[e.grade]
            lo, hi = min(lo, f_lo), max(hi, f_hi)
            for b in e.basis:
                walk(b)
        walk(key)
        return lo, hi

    def range(self, key):
        """(low, high) cycles of entry `key`."""
        e = self.entries[key]
        lo, hi = self.factors(key)
        return e.cycles * lo, e.cycles * hi

    def interval(self, attributed):
        """(low, high) of a sum of cycles given by entry, {key: cycles} as attribute()
        returns: each entry's cycles scaled by its factors, summed (a negative amount, an
        operation a variant saves, takes the factors the other way round)."""
        lo = hi = 0.0
        for key, cycles in attributed.items():
            f_lo, f_hi = self.factors(key)
            a, b = cycles * f_lo, cycles * f_hi
            lo += min(a, b)
            hi += max(a, b)
        return lo, hi

    def missing_ops(self):
        """Operations with no figure: the machine charges them 0 cycles."""
        from .._lib import OPS
        return [op for op in OPS if f"op.{op}" not in self.entries]

    def pricing_entry(self, op, msr=None):
        """The entry that prices one `op` (for RDMSR/WRMSR of slot `msr`, the per-MSR entry
        when there is one, as the machine does), or None if nothing prices it."""
        if op in ("RDMSR", "WRMSR") and msr and msr != "other":
            e = self.entries.get(f"{op.lower()}.{msr}")
            if e is not None and e.cycles:
                return e
        return self.entries.get(f"op.{op}")

    def attribute(self, path_costs):
        """Split one path of Machine.costs() by the entry that priced it:
        {entry key or "unpriced.OP": cycles}. Sums to the path's cycles."""
        out = {}
        ops = dict(path_costs.get("ops", {}))
        for key, n in path_costs.get("msrs", {}).items():
            verb, msr = key.split(" ", 1)
            ops[verb] = ops.get(verb, 0) - n
            self._add(out, verb, msr, n)
        for op, n in ops.items():
            if n:
                self._add(out, op, None, n)
        return out

    def _add(self, out, op, msr, n):
        e = self.pricing_entry(op, msr)
        key = e.key if e is not None else f"unpriced.{op}"
        out[key] = out.get(key, 0) + n * (e.cycles if e is not None else 0)

    def __repr__(self):
        n = len(self.entries)
        return (f"<Profile {self.name} ({self.vendor}, {self.cpu or '?'}): {n} figures, "
                f"{len(self.estimates())} resting on estimates>")


def list_profiles():
    """Names of the built-in profiles."""
    return sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".toml"))


def default_profile(vendor):
    """The built-in profile name for a vendor module ("vmx", "svm"), or for a third-party
    vendor the first built-in profile of its CPU vendor."""
    if vendor in _DEFAULTS:
        return _DEFAULTS[vendor]
    from ..vendors import get_vendor
    cpu_vendor = get_vendor(vendor).cpu_vendor
    for name in list_profiles():
        if load_profile(name).vendor == cpu_vendor:
            return name
    raise ProfileError(f"no built-in profile for a {cpu_vendor} CPU (vendor {vendor!r}); "
                       f"pass a profile file")


def _resolve(name_or_path):
    s = os.fspath(name_or_path)
    if os.sep in s or s.endswith(".toml") or os.path.exists(s):
        if not os.path.isfile(s):
            raise ProfileError(f"profile file {s!r} does not exist")
        return s
    path = os.path.join(PROFILE_DIR, f"{s}.toml")
    if not os.path.isfile(path):
        raise ProfileError(f"no profile {s!r}; built-in: {', '.join(list_profiles())} "
                           f"(or give a path to a .toml file)")
    return path


def load_profile(name_or_path):
    """A built-in profile by name ("skylake-sp"), or your own file by path. A Profile is
    returned as is. Raises ProfileError naming the file and the offending key."""
    if isinstance(name_or_path, Profile):
        return name_or_path
    path = _resolve(name_or_path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{path}: not valid TOML: {e}") from None
    return _parse(data, path)


def _parse(data, path):
    from .._lib import OPS, PRICED_MSRS

    def fail(msg):
        raise ProfileError(f"{path}: {msg}")

    if "check" in data:
        fail("[check.*] tables are not part of a profile any more: end-to-end and "
             "before/after figures belong in the validation data, never beside the figures "
             "a profile is built from (COSTS.md)")
    unknown = set(data) - {"profile", *_PRICED_TABLES}
    if unknown:
        fail(f"unknown table(s) {', '.join(sorted(unknown))}; a profile has [profile], "
             f"[op.*], [rdmsr.*] and [wrmsr.*]")
    head = data.get("profile")
    if not isinstance(head, dict):
        fail("missing [profile] table (name, vendor)")
    bad = set(head) - _PROFILE_FIELDS
    if bad:
        fail(f"[profile]: unknown field(s) {', '.join(sorted(bad))}")
    for f in ("name", "vendor"):
        if not isinstance(head.get(f), str) or not head[f]:
            fail(f"[profile]: {f} must be a non-empty string")
    if head["vendor"] not in ("intel", "amd"):
        fail(f"[profile]: vendor must be 'intel' or 'amd', got {head['vendor']!r}")

    names = {"op": set(OPS), "rdmsr": {n for n, _ in PRICED_MSRS},
             "wrmsr": {n for n, _ in PRICED_MSRS}}
    entries = {}
    for table in _PRICED_TABLES:
        section = data.get(table, {})
        if not isinstance(section, dict):
            fail(f"[{table}] must be a table of entries like [{table}.NAME]")
        for name, raw in section.items():
            key = f"{table}.{name}"
            if name not in names[table]:
                what = "operation" if table == "op" else "MSR"
                fail(f"[{key}]: unknown {what} {name!r}; known: "
                     f"{', '.join(sorted(names[table]))}")
            entries[key] = _entry(table, name, raw, fail)
    for e in entries.values():
        for b in e.basis:
            if b not in entries:
                fail(f"[{e.key}]: basis {b!r} is not an entry of this profile")
    return Profile(name=head["name"], vendor=head["vendor"], path=path, entries=entries,
                   cpu=head.get("cpu", ""), cpu_model=head.get("cpu_model"),
                   description=head.get("description", ""))


def _entry(table, name, raw, fail):
    key = f"{table}.{name}"
    if not isinstance(raw, dict):
        fail(f"[{key}] must be a table with cycles, grade and source")
    bad = set(raw) - _ENTRY_FIELDS
    if bad:
        fail(f"[{key}]: unknown field(s) {', '.join(sorted(bad))}")
    cycles = raw.get("cycles")
    if isinstance(cycles, bool) or not isinstance(cycles, int) or not 0 <= cycles <= _U32_MAX:
        fail(f"[{key}]: cycles must be an integer in 0..{_U32_MAX}, got {cycles!r}")
    if table in ("rdmsr", "wrmsr") and cycles == 0:
        fail(f"[{key}]: a per-MSR figure of 0 means 'no figure' to the machine (the "
             f"op.{table.upper()} figure applies); leave the entry out instead")
    grade = raw.get("grade")
    if grade not in GRADES:
        fail(f"[{key}]: grade must be one of {', '.join(GRADES)}, got {grade!r}")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        fail(f"[{key}]: every figure needs a source (a non-empty string)")
    note = raw.get("note", "")
    if not isinstance(note, str):
        fail(f"[{key}]: note must be a string")
    if grade in _NEEDS_NOTE and not note.strip():
        fail(f"[{key}]: {grade} figures need a note with their reasoning")
    basis = raw.get("basis", [])
    if not isinstance(basis, list) or not all(isinstance(b, str) for b in basis):
        fail(f"[{key}]: basis must be a list of entry keys like \"op.RDMSR\"")
    return Entry(table, name, cycles, grade, source.strip(), note.strip(), tuple(basis))
