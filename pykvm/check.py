"""The checker: does a switching strategy leak host or guest state?

    from pykvm import check
    r = check.check("vmx", params={"forget_lstar": True}, bound=2)
    r.verdict            # "violation"
    print(r.report())    # the violation, a minimal trace in kvm tracepoint shape
    r.save("leak.json")  # `pykvm replay leak.json` reproduces it

A guest program on each vCPU writes every switched register with its own values, and on
its next run reads them back (a wrong value is a violation the guest reports); the
oracle (csrc/check/oracle.c) watches the host. Steps -- KVM_RUN, KVM_SET/GET_MSRS,
migration, another task on a CPU, virtualization off and on -- are explored in C
(csrc/check/explore.c): every sequence up to `bound` with states deduplicated, each run
also with an NMI, a disable IPI or a preemption before each of its host instructions;
then random walks. A violation is shrunk to a minimal sequence and replayed with
tracepoints on.
"""
import json
import time
from dataclasses import asdict, dataclass, field, replace

from ._lib import ffi, lib
from .errors import InvalidConfiguration
from .guest.asm import Asm, mem, qword
from .guest.layout import initial_regs, initial_sregs
from .machine import Machine
from .oracle import Violation, reg_name
from .tracepoints import exit_reason_name, userspace_exit_reason

STEP_KINDS = ("run", "set_msrs", "get_msrs", "migrate", "other_task", "virt_off_on")
INJECTS = ("", "nmi", "disable_ipi", "preempt", "mc")
SYNC_PORT, VIOLATION_PORT = 0xE0, 0xE2
GMEM = 0x10000
CODE = 0x2000
TABLES = 0x8000
STACK = 0xF000

# Switched registers the guest owns, with per-vCPU starting values none of the host's.
REGS = [
    (0xC0000102, lambda v: 0xFFFF900000000000 + (v << 28)),   # KERNEL_GS_BASE
    (0xC0000100, lambda v: 0x0000550000000000 + (v << 28)),   # FS_BASE
    (0xC0000101, lambda v: 0xFFFFA00000000000 + (v << 28)),   # GS_BASE
    (0xC0000081, lambda v: 0x0013000800000000 + v),            # STAR
    (0xC0000082, lambda v: 0xFFFFB00000000000 + (v << 28)),   # LSTAR
    (0xC0000083, lambda v: 0xFFFFC00000000000 + (v << 28)),   # CSTAR
    (0xC0000084, lambda v: 0x3F000 + v),                       # SYSCALL_MASK
    (0x174, lambda v: 0x10 + 0x20 * v),                        # SYSENTER_CS
    (0x175, lambda v: 0x80000000 + (v << 20)),                 # SYSENTER_ESP
    (0x176, lambda v: 0x90000000 + (v << 20)),                 # SYSENTER_EIP
    (0xC0000103, lambda v: 0x200 + 0x40 * v),                  # TSC_AUX (needs RDTSCP/RDPID)
    (0x48, lambda v: 0),                                       # SPEC_CTRL (needs IBRS)
    (0x122, lambda v: 1),                                      # TSX_CTRL (needs RTM)
    (0xC0000080, lambda v: 0x501),                             # EFER (SCE flips)
]
# What the guest flips in each register between runs (csrc/check/explore.c next_value).
DELTA = {0x48: 1, 0xC0000103: 0x10, 0xC0000084: 0x100, 0x174: 0x8, 0xC0000081: 0x10000000,
         0x122: 1, 0xC0000080: 1}


@dataclass(frozen=True)
class Step:
    kind: str
    vcpu: int = 0
    cpu: int = 0
    inject: str = ""
    at: int = 0

    def __str__(self):
        what = {"run": f"KVM_RUN vcpu{self.vcpu}", "set_msrs": f"KVM_SET_MSRS vcpu{self.vcpu}",
                "get_msrs": f"KVM_GET_MSRS vcpu{self.vcpu}",
                "migrate": f"migrate vcpu{self.vcpu} -> CPU {self.cpu}",
                "other_task": f"another task runs on CPU {self.cpu}",
                "virt_off_on": f"virtualization off/on on CPU {self.cpu}"}[self.kind]
        return what + (f", {self.inject} before host instruction {self.at}" if self.inject else "")

    def to_c(self, s):
        s.kind, s.vcpu, s.cpu = STEP_KINDS.index(self.kind), self.vcpu, self.cpu
        s.inject, s.at = INJECTS.index(self.inject), self.at

    @classmethod
    def from_c(cls, s):
        return cls(STEP_KINDS[s.kind], s.vcpu, s.cpu, INJECTS[s.inject], s.at)


def _guest_program(regs):
    a = Asm(CODE)
    top = a.here("top")
    bad = []
    for i, msr in enumerate(regs):
        lab = a.label(f"bad{i}")
        bad.append((lab, i, msr))
        a.mov("ecx", msr)
        a.rdmsr()
        a.shl("rdx", 32)
        a.or_("rax", "rdx")
        a.cmp("rax", qword(mem("r15", 8 * i)))
        a.jne(lab)
        a.mov("rbx", DELTA.get(msr, 0x1000))
        a.xor("rax", "rbx")
        a.mov(qword(mem("r15", 8 * i)), "rax")
        a.mov("rdx", "rax")
        a.shr("rdx", 32)
        a.wrmsr()
    a.out(SYNC_PORT, "al")
    a.jmp(top)
    for lab, i, msr in bad:
        a.bind(lab)
        a.mov("edi", msr)
        a.mov("rsi", qword(mem("r15", 8 * i)))
        a.mov("rdx", "rax")
        a.out(VIOLATION_PORT, "al")
        stop = a.here()
        a.hlt()
        a.jmp(stop)
    return a.assemble().code


@dataclass
class CheckResult:
    vendor: str
    preset: str
    params: dict
    verdict: str                 # "pass" or "violation"
    violation: Violation | None
    steps: list
    events: int
    states: int
    depth_done: int
    walks: int
    seconds: float
    config: dict = field(default_factory=dict)
    exits: int = 0               # VM-exits inside the explored steps
    _trace: list = field(default_factory=list, repr=False)

    @property
    def events_per_second(self):
        return self.events / self.seconds if self.seconds else 0.0

    def trace(self):
        """The violating sequence replayed, as kvm tracepoint lines."""
        if not self._trace and self.steps:
            self._trace = Checker(**self.config).replay(self.steps, trace=True)[1]
        return self._trace

    def report(self):
        lines = [f"{self.vendor} ({self.preset}, {_params_str(self.params)}): {self.verdict}; "
                 f"{self.events} step{'s' if self.events != 1 else ''} "
                 f"({self.exits} VM-exits in them), {self.states} states, "
                 f"exhaustive to depth "
                 f"{self.depth_done}, {self.walks} random walks, {self.seconds:.1f} s"]
        if self.violation:
            lines.append(f"violation: {self.violation}")
            lines.append("steps:")
            lines += [f"  {i + 1}. {s}" for i, s in enumerate(self.steps)]
            lines.append("trace:")
            lines += ["  " + t for t in _format_trace(self.trace(), self.vendor)]
        return "\n".join(lines)

    def to_json(self):
        return {"vendor": self.vendor, "preset": self.preset, "params": self.params,
                "config": self.config, "verdict": self.verdict,
                "violation": asdict(self.violation) if self.violation else None,
                "steps": [asdict(s) for s in self.steps]}

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=1)

    def perfetto(self):
        """Chrome/Perfetto trace-event JSON: host and guest on a timeline per CPU."""
        events, ts, open_guest = [], 0, {}
        for rec in self.trace():
            kind, cpu, a, b = rec
            ts += 1
            if kind == "kvm_entry":
                open_guest[cpu] = ts
            elif kind == "kvm_exit" and cpu in open_guest:
                start = open_guest.pop(cpu)
                events.append({"name": f"guest (exit {a:#x})", "ph": "X", "pid": 1,
                               "tid": cpu, "ts": start, "dur": ts - start})
            else:
                events.append({"name": kind, "ph": "i", "s": "t", "pid": 1, "tid": cpu,
                               "ts": ts, "args": {"a": a, "b": b}})
        return {"traceEvents": events, "displayTimeUnit": "ns"}


def _params_str(params):
    return ", ".join(f"{k}={int(v)}" for k, v in params.items()) or "upstream parameters"


_TRACE_KINDS = ("kvm_entry", "kvm_exit", "kvm_msr", "kvm_userspace_exit", "sched_switch",
                "user_return", "nmi", "virt_disable", "vcpu_load", "vcpu_put", "step",
                "nmi_handler", "violation")


def _violation_text(a, b):
    from .oracle import OBS
    return f"*** {reg_name(b)} wrong at {OBS[a] if a < len(OBS) else a}"


# kvm tracepoint-shaped text of each record kind (a, b as events.h says).
_TRACE_FORMAT = {
    "kvm_entry": lambda a, b: f"vcpu {a}, rip 0x{b:x}",
    "kvm_exit": lambda a, b: f"reason 0x{a:x} rip 0x{b:x}",   # named in _format_trace
    "kvm_msr": lambda a, b: f"msr_{'write' if a >> 32 else 'read'} {a & 0xffffffff:x} = 0x{b:x}",
    "kvm_userspace_exit": lambda a, b: f"reason {userspace_exit_reason(a)}",
    "sched_switch": lambda a, b: f"prev_pid={a} ==> next_pid={b}",
    "user_return": lambda a, b: f"pid={a} notifiers={'yes' if b else 'no'}",
    "nmi": lambda a, b: "machine check" if a == 2 else "held (GIF=0)" if a else "taken",
    "nmi_handler": lambda a, b: f"found GS_BASE 0x{a:x}",
    "violation": _violation_text,
}


def _format_trace(recs, vendor="vmx"):
    out = []
    for kind, cpu, a, b in recs:
        if kind == "step":
            out.append(f"--- step {a + 1}")
        elif kind == "kvm_exit":      # the hardware reason, named as the kernel names it
            out.append(f"[{cpu:03d}] kvm_exit: reason {exit_reason_name(vendor, a)} "
                       f"rip 0x{b:x}")
        else:
            out.append(f"[{cpu:03d}] {kind}: " + _TRACE_FORMAT.get(kind, lambda a, b: str(a))(a, b))
    return out


class Checker:
    """A machine set up for checking one vendor/preset/params; explore or replay."""

    def __init__(self, vendor="vmx", preset=None, params=None, cpu_model=None, cpus=2,
                 vcpus=1, steps=None, injections=None, run_budget=100_000):
        if not 1 <= vcpus <= 4:
            raise InvalidConfiguration(f"vcpus must be 1..4, got {vcpus}")
        if cpus < 1:
            raise InvalidConfiguration("cpus must be >= 1")
        self.config = dict(vendor=vendor, preset=preset, params=dict(params or {}),
                           cpu_model=cpu_model, cpus=cpus, vcpus=vcpus,
                           steps=list(steps) if steps else None,
                           injections=list(injections) if injections is not None else None,
                           run_budget=run_budget)
        self.m = Machine(cpus=cpus, vendor=vendor, cpu_model=cpu_model, preset=preset,
                         params=params)
        model = self.m.cpu_model
        regs = [(msr, f) for msr, f in REGS
                if (msr != 0xC0000103 or model.has_rdtscp or model.has_rdpid)
                and (msr != 0x48 or model.has_ibrs) and (msr != 0x122 or model.has_rtm)]
        self.regs = [msr for msr, _ in regs]
        vm = self.m.create_vm()
        vm.add_memory(0, GMEM)
        self.vm = vm
        code = _guest_program(self.regs)
        vm.memory.write(CODE, code)
        self.vcpus = []
        sregs = initial_sregs()
        sregs.idt.limit = 0          # any fault: a triple fault the checker reports
        for v in range(vcpus):
            vcpu = vm.create_vcpu(cpu=v % cpus)
            vcpu.set_sregs(sregs)
            r = initial_regs()
            r.rip, r.rsp, r.r15 = CODE, STACK - 0x100 * v, TABLES + 0x100 * v
            vcpu.set_regs(r)
            values = {msr: f(v) for msr, f in regs}
            n = vcpu.set_msrs(values)
            if n != len(values):
                raise InvalidConfiguration(
                    f"the guest's starting value of {reg_name(self.regs[n])} was refused")
            for i, msr in enumerate(self.regs):
                vm.memory.write_u64(TABLES + 0x100 * v + 8 * i, values[msr])
            self.vcpus.append(vcpu)
        cfg = ffi.new("struct pk_check_cfg *")
        for v, vcpu in enumerate(self.vcpus):
            cfg.vcpus[v] = vcpu._vcpu
            cfg.table_gpa[v] = TABLES + 0x100 * v
        cfg.nr_vcpus = vcpus
        slot = vm.slots[0]
        cfg.gmem = ffi.cast("uint8_t *", slot._hva)
        cfg.gmem_size = GMEM
        # The guest writes only its tables (no stack, no self-modifying code).
        cfg.gmem_dirty_lo, cfg.gmem_dirty_hi = TABLES, TABLES + 0x100 * vcpus
        for i, msr in enumerate(self.regs):
            cfg.regs[i] = msr
        cfg.nr_regs = len(self.regs)
        cfg.violation_port, cfg.sync_port = VIOLATION_PORT, SYNC_PORT
        cfg.run_budget = run_budget
        kinds = steps or STEP_KINDS
        for k in kinds:
            if k not in STEP_KINDS:
                raise InvalidConfiguration(f"unknown step kind {k!r}; known: {STEP_KINDS}")
        cfg.step_mask = sum(1 << STEP_KINDS.index(k) for k in kinds)
        inj = INJECTS[1:] if injections is None else injections
        for k in inj:
            if k not in INJECTS[1:]:
                raise InvalidConfiguration(f"unknown injection {k!r}; known: {INJECTS[1:]}")
        cfg.inject_mask = sum(1 << INJECTS.index(k) for k in inj)
        self._cfg = cfg
        self._c = ffi.gc(lib.pk_checker_new(self.m._m, cfg), lib.pk_checker_free)
        if self._c == ffi.NULL:
            raise InvalidConfiguration("the checker could not be set up")

    def replay(self, steps, trace=False):
        """Apply `steps` from the initial state: (Violation or None, trace records)."""
        c_steps = ffi.new("struct pk_step[]", max(1, len(steps)))
        for i, s in enumerate(steps):
            s.to_c(c_steps[i])
        buf = ffi.new("struct pk_trace *") if trace else ffi.NULL
        lib.pk_machine_set_trace(self.m._m, buf)
        v = ffi.new("struct pk_violation *")
        try:
            hit = lib.pk_checker_replay(self._c, c_steps, len(steps), v, bool(trace))
        finally:
            lib.pk_machine_set_trace(self.m._m, ffi.NULL)
        recs = [(_TRACE_KINDS[r.kind], r.cpu, r.a, r.b) for r in buf.rec[0:buf.n]] if trace else []
        return (Violation.from_c(v, 1) if hit else None), recs

    def explore(self, bound=3, max_states=200_000, walks=2000, walk_len=12, seed=1,
                seconds=None, progress=None):
        """progress: called about 5 times a second, from another thread, with a dict of
        the counters so far (events, exits, states, walks) while the C explorer runs."""
        res = ffi.new("struct pk_check_result *")
        watcher = _Watcher(res, progress) if progress else None
        try:
            # The C call releases the GIL (cffi API mode): the watcher reads the counters
            # the explorer updates as it goes.
            r = lib.pk_checker_explore(self._c, bound, max_states, walks, walk_len, seed,
                                       float(seconds or 0), res)
        finally:
            if watcher:
                watcher.stop()
        if r < 0:
            raise InvalidConfiguration(f"explore: bound and walk length must be <= 64 (got {r})")
        steps = [Step.from_c(res.steps[i]) for i in range(res.nr_steps)]
        v = Violation.from_c(res.violation, 1) if res.violated else None
        self.last_exits = res.exits
        return v, steps, res.events, res.states, res.depth_done, res.walks

    def attribute(self, violation):
        """Name whose value was found: a vCPU's guest value, or another host task's."""
        if violation is None:
            return None
        for v in range(len(self.vcpus)):
            for msr, f in REGS:
                start = f(v)
                if violation.actual in (start, start ^ DELTA.get(msr, 0x1000)):
                    return replace(violation, owner=f"vcpu{v}'s guest {reg_name(msr)}")
        if violation.actual == 0:
            return replace(violation, owner="zeroed")
        return violation

    def shrink(self, steps, violation):
        """A shortest-found sequence with the same violation (register and place)."""
        def same(cand):
            v, _ = self.replay(cand)
            return v is not None and (v.reg, v.obs) == (violation.reg, violation.obs)
        changed = True
        while changed:
            changed = False
            for i in range(len(steps)):
                cand = steps[:i] + steps[i + 1:]
                if cand and same(cand):
                    steps, changed = cand, True
                    break
            for i, s in enumerate(steps):
                if s.inject:
                    cand = steps[:i] + [Step(s.kind, s.vcpu, s.cpu)] + steps[i + 1:]
                    if same(cand):
                        steps, changed = cand, True
                        break
        return steps


class _Watcher:
    """Calls progress(counters) every 0.2 s until stopped, from a daemon thread."""

    def __init__(self, res, progress, period=0.2):
        import threading
        self.res, self.progress, self.period = res, progress, period
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def counters(self):
        r = self.res
        return {"events": r.events, "exits": r.exits, "states": r.states,
                "walks": r.walks, "depth_done": r.depth_done}

    def _run(self):
        while not self.done.wait(self.period):
            self.progress(self.counters())

    def stop(self):
        self.done.set()
        self.thread.join()
        self.progress(self.counters())


def check(vendor="vmx", *, preset=None, params=None, cpu_model=None, cpus=2, vcpus=1,
          bound=3, max_states=200_000, walks=2000, walk_len=12, seed=1, seconds=None,
          steps=None, injections=None, progress=None):
    """Explore, and shrink any violation to a minimal sequence. Returns a CheckResult.
    progress: see Checker.explore."""
    c = Checker(vendor, preset, params, cpu_model, cpus, vcpus, steps, injections)
    t0 = time.perf_counter()
    v, found, events, states, depth, nwalks = c.explore(bound, max_states, walks, walk_len,
                                                        seed, seconds, progress)
    elapsed = time.perf_counter() - t0
    exits = c.last_exits
    if v is not None:
        found = c.shrink(found, v)
        v, _ = c.replay(found)
        v = c.attribute(v)
    return CheckResult(vendor, c.m.preset, c.m.params, "violation" if v else "pass", v,
                       found if v else [], events, states, depth, nwalks, elapsed,
                       config=c.config, exits=exits)


def replay(data):
    """Reproduce a saved check (the dict of CheckResult.to_json(), or a path)."""
    if isinstance(data, str):
        with open(data) as f:
            data = json.load(f)
    steps = [Step(**s) for s in data["steps"]]
    c = Checker(**data["config"])
    v, recs = c.replay(steps, trace=True)
    v = c.attribute(v)
    exits = sum(1 for r in recs if r[0] == "kvm_exit")     # the replay's own VM-exits
    return CheckResult(data["vendor"], c.m.preset, c.m.params, "violation" if v else "pass",
                       v, steps, len(steps), 0, 0, 0, 0.0, config=c.config, exits=exits,
                       _trace=recs)


DEFAULT_BOUND = 3
DEFAULT_WALKS = 300
_verdicts = {}


def verdict(vendor, preset=None, params=None, cpu_model=None, bound=DEFAULT_BOUND,
            walks=DEFAULT_WALKS, seed=1):
    """The checker's verdict for a variant at the default bound, as one short string
    ("pass" or "violation: <register> at <place>"), cached per variant."""
    key = (vendor, preset, tuple(sorted((params or {}).items())), cpu_model, bound, walks, seed)
    if key not in _verdicts:
        r = check(vendor, preset=preset, params=params, cpu_model=cpu_model, bound=bound,
                  walks=walks, seed=seed)
        _verdicts[key] = ("pass" if r.violation is None else
                          f"LEAK {r.violation.reg} ({r.violation.obs}, "
                          f"{len(r.steps)} step{'s' if len(r.steps) > 1 else ''})")
    return _verdicts[key]


def study_verdict(row):
    """verdict_fn for pykvm.study: the checker at its default bound for the row's variant."""
    return verdict(row.vendor, row.preset, row.params, row.cpu_model)


# ---- a hypothesis strategy for property tests ------------------------------------------

def steps_strategy(vcpus=1, cpus=2, max_steps=8):
    """Hypothesis strategy for step sequences (import hypothesis only when used)."""
    from hypothesis import strategies as st
    vcpu = st.integers(0, vcpus - 1)
    cpu = st.integers(0, cpus - 1)
    step = st.one_of(
        st.builds(Step, st.just("run"), vcpu, st.just(0),
                  st.sampled_from(INJECTS), st.integers(1, 80)).map(
            lambda s: s if s.inject else Step("run", s.vcpu)),
        st.builds(Step, st.just("set_msrs"), vcpu),
        st.builds(Step, st.just("get_msrs"), vcpu),
        st.builds(Step, st.just("migrate"), vcpu, cpu),
        st.builds(Step, st.just("other_task"), st.just(0), cpu),
        st.builds(Step, st.just("virt_off_on"), st.just(0), cpu),
    )
    return st.lists(step, min_size=1, max_size=max_steps)
