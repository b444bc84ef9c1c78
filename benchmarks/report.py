"""Write benchmarks/README.md's result tables from a pytest-benchmark JSON file, so the
tables say what was measured and nothing else.

    pytest benchmarks --benchmark-json=benchmarks/results.json
    python benchmarks/report.py benchmarks/results.json --note "quiet machine"
    python benchmarks/report.py --check        # exit 1 if README.md is not what the JSON says

Per-exit figures are a round's time divided by the exits in it (`exits_per_round` in each
benchmark's extra_info), for the round's minimum and for the mean, each labelled as such.
The speed targets live here, in TARGETS, and every run checks them: a table of target,
measured and pass/miss.
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "README.md")
RESULTS = os.path.join(HERE, "results.json")
BEGIN = ("<!-- results: written by benchmarks/report.py from the benchmark JSON; edit the "
         "script, not this -->")
END = "<!-- end of results -->"


class Results:
    """The benchmarks of one JSON file, by test name ("bench_switch.py::test_x[vmx]")."""

    def __init__(self, data):
        self.data = data
        self.by = {b["fullname"].split("/")[-1]: b for b in data["benchmarks"]}

    def get(self, name):
        return self.by.get(name)

    def per_exit(self, name, stat):
        """Seconds per exit: the round's `stat` ("min" or "mean") / exits_per_round."""
        b = self.get(name)
        if b is None:
            return None
        return b["stats"][stat] / b["extra_info"].get("exits_per_round", 1)

    def extra(self, name, key):
        b = self.get(name)
        return None if b is None else b["extra_info"].get(key)


# ---- targets: (what, how it is measured, limit, "<=" or ">=") ---------------------------

def _switch(test, vendor):
    return lambda r: r.per_exit(f"bench_switch.py::{test}[{vendor}]", "min")


def _ratio_python_vs_kvm(vendor):
    def f(r):
        sim = r.per_exit(f"bench_switch.py::test_python_run_per_exit[{vendor}]", "min")
        kvm = r.per_exit("bench_kvm.py::test_out_round_trip_python_bare_ioctl", "min")
        return None if sim is None or kvm is None else kvm / sim
    return f


# bench_exec.py's loops (its LOOPS), in its order: issue 14's ratio target covers each.
EXEC_LOOPS = ["dec_jnz", "sub_jnz", "alu_mix", "load_store", "call_ret", "push_pop",
              "rep_movsb", "rep_stosq", "msr_swapgs", "straight_100", "straight_1000",
              "straight_10000", "straight_100000", "straight_1000000"]


def _exec(loop, key):
    return lambda r: r.extra(f"bench_exec.py::test_interpreter_vs_unicorn[{loop}]", key)


def _flatness(r, key="pykvm_ns_per_insn"):
    """Time per instruction with 1,000,000 hot instructions over with 100: the
    interpreter's, or (key host_ns_per_insn) the host CPU's on the same bytes."""
    big, small = _exec("straight_1000000", key)(r), _exec("straight_100", key)(r)
    return None if big is None or not small else big / small


TARGETS = [
    *[(f"fast-path exit round trip, {v} (min per exit)", _switch("test_fastpath_round_trip", v),
       100e-9, "<=", "ns") for v in ("vmx", "svm")],
    *[(f"exit to userspace handled in C, {v} (min per exit)",
       _switch("test_userspace_exit_in_c", v), limit, "<=", "ns")
      for v, limit in (("vmx", 200e-9), ("svm", 150e-9))],
    *[(f"Python vcpu.run(), {v} (min per exit)", _switch("test_python_run_per_exit", v),
       1e-6, "<=", "us") for v in ("vmx", "svm")],
    *[(f"Python vcpu.run() on {v} vs a Python fcntl.ioctl(KVM_RUN) on /dev/kvm "
       "(times faster, min per exit)", _ratio_python_vs_kvm(v), 1.0, ">=", "x")
      for v in ("vmx", "svm")],
    *[(f"guest interpreter vs unicorn, {w} (time ratio)", _exec(w, "time_ratio"), 2.0, "<=",
       "x") for w in EXEC_LOOPS],
    ("guest interpreter time per instruction, 1,000,000 vs 100 hot instructions (ratio)",
     _flatness, 1.2, "<=", "x"),
    *[(f"checker, {kind}, {v} (events/s: steps + VM-exits)",
       (lambda r, t=test, v=v: r.extra(f"bench_check.py::{t}[{v}]", "events_per_second")),
       1e6, ">=", "/s")
      for kind, test in (("exhaustive", "test_exhaustive_events_per_second"),
                         ("random walks", "test_random_walk_events_per_second"))
      for v in ("vmx", "svm")],
    ("check spread over 2 local Dask workers vs 1 (times faster, best turns)",
     lambda r: r.extra("bench_engine.py::test_check_side_by_side", "speedup_2_vs_1"),
     1.7, ">=", "x"),
    ("Dask engine's own cost per task, 2 local workers (min)",
     lambda r: r.extra("bench_engine.py::test_overhead_per_task[dask-2]", "seconds_per_task"),
     5e-3, "<=", "ms"),
    *[(f"memory per idle vCPU beside its guest memory, {v} (process RSS)",
       (lambda r, v=v: r.extra(f"bench_memory.py::test_memory_per_idle_vcpu[{v}]",
                               "rss_kib_per_vcpu")), 64, "<=", "KiB")
      for v in ("vmx", "svm")],
]


def _count(value):
    """A count from a benchmark's extra_info; results from before it was recorded say so."""
    return f"{value:,}" if isinstance(value, int) else "not recorded"


def _per_insn(ns):
    return "not recorded" if ns is None else f"{ns:,.3f} ns"


def _fmt(value, unit):
    if value is None:
        return "not measured"
    if unit == "ns":
        return f"{value * 1e9:,.0f} ns"
    if unit == "us":
        return f"{value * 1e6:,.2f} us"
    if unit == "ms":
        return f"{value * 1e3:,.1f} ms"
    if unit == "x":
        return f"{value:,.2f}x"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "KiB":
        return f"{value:,.1f} KiB"
    return f"{value:,}"


def _table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def targets(r):
    rows = []
    for what, measure, limit, op, unit in TARGETS:
        v = measure(r)
        ok = None if v is None else (v <= limit if op == "<=" else v >= limit)
        rows.append((what, f"{op} {_fmt(limit, unit)}", _fmt(v, unit),
                     "not run" if ok is None else "pass" if ok else "**miss**"))
    return rows


def render(data, note=""):
    """The generated part of README.md, as text."""
    r = Results(data)
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {})
    lines = [BEGIN, "",
             f"Measured {data.get('datetime', '?')[:16].replace('T', ' ')} UTC at commit "
             f"{(data.get('commit_info') or {}).get('id', '?')[:12]} on {mi.get('node', '?')}: "
             f"{cpu.get('count', '?')} CPUs ({cpu.get('brand_raw', mi.get('processor', '?'))}), "
             f"Python {mi.get('python_version', '?')}."
             + (f" {note}" if note else ""), ""]
    lines += ["### Targets", ""]
    lines += _table(["target", "limit", "measured", ""], targets(r))
    lines += ["", "### World switch on the simulated machine (`bench_switch.py`)", "",
              "Per exit: the round's time divided by the exits in it; min and mean over "
              "the rounds.", ""]
    rows = []
    for label, test in (("fast-path exit round trip (WRMSR TSC_DEADLINE, re-entered in "
                         "the kernel)", "test_fastpath_round_trip"),
                        ("exit to userspace handled in C (OUT to a sink port) and re-entered",
                         "test_userspace_exit_in_c"),
                        ("Python `vcpu.run()` per exit (OUT)", "test_python_run_per_exit")):
        row = [label]
        for v in ("vmx", "svm"):
            name = f"bench_switch.py::{test}[{v}]"
            row += [_fmt(r.per_exit(name, "min"), "ns"), _fmt(r.per_exit(name, "mean"), "ns")]
        row.append(str(r.extra(f"bench_switch.py::{test}[vmx]", "exits_per_round") or "?"))
        rows.append(row)
    lines += _table(["path", "vmx min", "vmx mean", "svm min", "svm mean", "exits per round"],
                    rows)
    lines += ["", "### Guest interpreter against unicorn (`bench_exec.py`, same bytes)", "",
              "Per guest instruction: a round's time (the minimum of the rounds, after a "
              "warm-up round that decodes, or translates) divided by the instructions it "
              "retires (a REP string instruction counts once). Host CPU: the same bytes "
              "run by the machine's own CPU (`host_cpu.py`), for the loops that only "
              "compute on registers.", ""]
    rows = []
    for w in EXEC_LOOPS:
        ours = r.get(f"bench_exec.py::test_interpreter_vs_unicorn[{w}]")
        if ours is None:
            continue
        x = ours["extra_info"]
        rows.append([w, _count(x.get("hot_insns")), _count(x.get("guest_insns")),
                     _per_insn(x.get("pykvm_ns_per_insn")),
                     _per_insn(x.get("unicorn_ns_per_insn")),
                     _per_insn(x.get("host_ns_per_insn")) if "host_ns_per_insn" in x else "-",
                     _fmt(x.get("time_ratio"), "x"), f"<= {x.get('target_ratio', 2.0)}x"])
    lines += _table(["loop", "hot insns", "insns per round", "interpreter", "unicorn",
                     "host CPU", "time ratio", "target"], rows)
    host = _flatness(r, "host_ns_per_insn")
    if host is not None:
        lines += ["", f"Time per instruction, 1,000,000 vs 100 hot instructions: interpreter "
                      f"{_fmt(_flatness(r), 'x')}, host CPU {_fmt(host, 'x')}."]
    lines += ["", "### The host's /dev/kvm (`bench_kvm.py`)", ""]
    rows = []
    for label, test in (("C run loop (csrc/vmm/kvm_run_loop.c)", "test_out_round_trip_c_loop"),
                        ("one cffi call per KVM_RUN",
                         "test_out_round_trip_one_kvm_run_per_cffi_call"),
                        ("Python `fcntl.ioctl(KVM_RUN)`",
                         "test_out_round_trip_python_bare_ioctl"),
                        ("`vcpu.run()` with a typed exit", "test_out_round_trip_python_run")):
        name = f"bench_kvm.py::{test}"
        if r.get(name) is None:
            rows.append([label, "not run (no /dev/kvm)", "", ""])
            continue
        rows.append([label, _fmt(r.per_exit(name, "min"), "us"),
                     _fmt(r.per_exit(name, "mean"), "us"),
                     str(r.get(name)["stats"]["rounds"])])
    lines += _table(["driver", "per exit, min", "per exit, mean", "rounds"], rows)
    lines += ["", "### The checker (`bench_check.py`; 1 VM, 2 pCPUs)", ""]
    rows = []
    for kind, test in (("exhaustive (bound 4)", "test_exhaustive_events_per_second"),
                       ("random walks (5,000 of 12 steps)",
                        "test_random_walk_events_per_second")):
        for v in ("vmx", "svm"):
            name = f"bench_check.py::{test}[{v}]"
            e = r.get(name)
            if e is None:
                continue
            x = e["extra_info"]
            rows.append([kind, v, _fmt(x.get("events_per_second"), "/s"),
                         _fmt(x.get("steps_per_second"), "/s"),
                         f"{x['exits'] / x['steps']:.1f}" if x.get("steps") else "?"])
    lines += _table(["search", "vendor", "events/s (steps + VM-exits)", "steps/s",
                     "VM-exits per step"], rows)
    lines += _engine_section(r)
    lines += ["", "### Memory per idle vCPU (`bench_memory.py`; vCPUs in one VM, no guest "
              "memory)", ""]
    rows = []
    for v in ("vmx", "svm"):
        name = f"bench_memory.py::test_memory_per_idle_vcpu[{v}]"
        e = r.get(name)
        if e is None:
            rows.append([v, "not measured", "", "", ""])
            continue
        x = e["extra_info"]
        rows.append([v, _fmt(x.get("rss_kib_per_vcpu"), "KiB"),
                     _fmt(x.get("kernel_kib_per_vcpu"), "KiB"), f"{x.get('vcpus', '?'):,}",
                     _fmt(e["stats"]["min"] / x["vcpus"], "us")
                     if x.get("vcpus") else "?"])
    lines += _table(["vendor", "process RSS per vCPU", "simulated kernel memory per vCPU",
                     "vCPUs", "creating one (min)"], rows)
    lines += ["", END]
    return "\n".join(lines)


def _engine_section(r):
    """bench_engine.py: the same work in this process and on 1 and 2 local workers."""
    lines = ["", "### Beyond one core (`bench_engine.py`, side by side in one run)", ""]
    first = r.get("bench_engine.py::test_check_side_by_side")
    if first is None:
        return lines + ["Not run."]
    x = first["extra_info"]
    lines += [f"Measured {x.get('measured_at', '?')}; load average {x.get('load_average', '?')} "
              f"on {x.get('cores', '?')} cores at the end. The engines take turns, "
              f"{first['stats']['rounds']} rounds; each one's best round. Cores used: the CPU "
              "seconds its workers got over the wall time (2 workers can use 2 cores only "
              "when nothing else runs).", ""]
    rows = []
    # runs before the bound was recorded searched to depth 4
    bound = (r.extra("bench_engine.py::test_check_side_by_side", "best") or {}) \
        .get("local", {}).get("bound", 4)
    for label, test in ((f"check: 2 vCPUs to depth {bound} by level, then 4 swarm searches",
                         "test_check_side_by_side"),
                        ("sweep: 12 combinations x 2 workloads, with verdicts",
                         "test_sweep_side_by_side")):
        best = r.extra(f"bench_engine.py::{test}", "best") or {}
        for where in ("local", "dask-1", "dask-2"):
            b = best.get(where)
            if b is None:
                continue
            rows.append([label if where == "local" else "", where, f"{b['wall']:.2f} s",
                         f"{b['speedup_vs_local']:.2f}x", f"{b['cores_used']:.2f}",
                         str(b.get("tasks", ""))])
    lines += _table(["work", "engine", "best round", "speedup vs local", "cores used",
                     "tasks"], rows)
    for where in ("dask-1", "dask-2"):
        per = r.extra(f"bench_engine.py::test_overhead_per_task[{where}]", "seconds_per_task")
        if per is not None:
            lines.append(f"\nEngine cost per task, {where}: {per * 1e3:.1f} ms (500 tasks that "
                         "do nothing, min of 3 rounds).")
    return lines


def splice(readme, generated):
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README}: no generated section (add the lines {BEGIN!r} and "
                         f"{END!r} where the tables go)")
    head = readme[:readme.index(BEGIN)]
    tail = readme[readme.index(END) + len(END):]
    return head + generated + tail


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", nargs="?", default=RESULTS,
                   help="pytest-benchmark JSON (default: benchmarks/results.json)")
    p.add_argument("--note", default=None,
                   help="a sentence on the conditions (kept from the last run if omitted)")
    p.add_argument("--check", action="store_true",
                   help="do not write; exit 1 if README.md differs from the JSON's tables")
    args = p.parse_args(argv)
    with open(args.json) as f:
        data = json.load(f)
    if not args.check:
        if args.note is not None:
            data["pykvm_note"] = args.note      # kept with the figures it describes
        # The tables need the statistics, not every sample: the file stays small enough
        # to keep in the repository.
        for b in data["benchmarks"]:
            b["stats"].pop("data", None)
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    note = data.get("pykvm_note", "")
    with open(README) as f:
        readme = f.read()
    new = splice(readme, render(data, note))
    if args.check:
        if new != readme:
            print(f"{README} does not match {args.json}: run python benchmarks/report.py",
                  file=sys.stderr)
            return 1
        return 0
    with open(README, "w") as f:
        f.write(new)
    print(f"wrote {README} from {args.json}")
    for what, limit, measured, verdict in targets(Results(data)):
        print(f"{verdict:>10}  {what}: {measured} ({limit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
