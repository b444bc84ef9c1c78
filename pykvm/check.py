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
import functools
import json
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace

from . import events
from ._lib import ensure, ffi, lib
from .errors import InvalidConfiguration, PykvmError
from .guest.asm import Asm, mem, qword
from .guest.layout import CR4_FSGSBASE, idt_gate, initial_regs, initial_sregs, tss_bytes
from .machine import Machine
from .oracle import Violation, reg_name
from .tracepoints import exit_reason_name, userspace_exit_reason

STEP_KINDS = ("run", "set_msrs", "get_msrs", "migrate", "other_task", "virt_off_on",
              "user_insns", "vmm_task", "kthread")
INJECTS = ("", "nmi", "disable_ipi", "preempt", "mc", "preempt_kthread", "softirq", "cr3",
           "preempt_vm")
# Injections taken with IRQs on / only where the vCPU thread is preemptible (events.h).
IRQ_INJECTS = frozenset({"disable_ipi", "softirq", "cr3"})
PREEMPT_INJECTS = frozenset({"preempt", "preempt_kthread", "preempt_vm"})
# What a vmm_task step changes (Step.arg): events.h PK_TASK_*.
TASK_CHANGES = ("arch_prctl", "wrfsbase", "set_tsc")
# The search's reductions (check.h PK_REDUCE_*), by name; DEFAULT_REDUCE by default.
# "revisit": breadth-first once, each distinct state expanded once at its shallowest
# depth, instead of iterative deepening, which searches the space again for each bound.
# "sleep" (with revisit): sleep sets, a step that commutes with the one before it and
# whose other order an earlier state tries is not tried again (docs/checker.md says
# under what it is sound). "verify" (with sleep): tries every step the sleep sets leave
# out both ways anyway and counts where the orders disagree (for tests).
REDUCTIONS = {"revisit": lib.PK_REDUCE_REVISIT, "sleep": lib.PK_REDUCE_SLEEP,
              "verify": lib.PK_REDUCE_VERIFY}
# What each needs beside it, and the reason pk_checker_set_reduce gives when it is
# missing (asked here too, so that a command refuses it before building a machine).
REDUCTION_NEEDS = {"sleep": ("revisit", "sleep sets need the breadth-first search (revisit)"),
                   "verify": ("sleep", "verify checks the sleep sets: it needs sleep")}
DEFAULT_REDUCE = ("revisit",)
MAX_STEPS = 64          # PK_CHECK_MAX_STEPS: bound, walk length, steps of a saved trace
MAX_VCPUS = 4           # PK_CHECK_MAX_VCPUS: vCPUs of all the checker's VMs together
FORMAT = 1              # of the files save() writes and replay() reads
SYNC_PORT, VIOLATION_PORT = 0xE0, 0xE2

# The checker guest's memory (one slot at GPA 0, shared by both VMs when there are two).
GMEM = 0x10000
IDT = 0x1000               # vectors 0..6; #BP (3, DPL 3) and #UD (6) present
CODE = 0x2000
LSTAR_STUBS = 0x3000       # 0x40 per vCPU; the flipped LSTAR is 0x1000 higher
TSS = 0x6000               # TR.base of initial_sregs(): RSP0 for #UD from user mode
RSP0 = 0xE000
TABLES = 0x8000            # 0x100 per vCPU: the values it wrote, then its mark at +0xF0
MARK = 0xF0
STACK = 0xF000
MARK_NONE, MARK_SYSRET, MARK_SYSCALL, MARK_SYSCALL_UD = range(4)   # check.h PK_MARK_*
MARK_KSEL = 4              # checking STAR's kernel selectors (no exit expected)
REG_EFER_SCE, REG_UD = 0x10000012, 0x10000013
# RFLAGS of the guest's user part at its SYSCALL: CF PF AF ZF SF DF OF, IOPL 3 (OUT works
# there) and AC. The guest's SYSCALL_MASKs clear some of the arithmetic flags and DF; the
# host's (TF IF DF IOPL NT AC) clears IOPL and AC: a leak shows.
USER_FLAGS = 0x43CD7
# The guest's halts: its TSC-deadline timer 1 ms ahead (at the simulated 2.1 GHz), past
# halt polling's default window (200 us).
HALT_TSC = 2_100_000

# Switched registers the guest owns, with per-vCPU starting values none of the host's,
# and the bits it flips in each between runs (also what KVM_SET_MSRS steps flip).
REGS = [
    (0xC0000102, lambda v: 0xFFFF900000000000 + (v << 28), 0x1000),   # KERNEL_GS_BASE
    (0xC0000100, lambda v: 0x0000550000000000 + (v << 28), 0x1000),   # FS_BASE
    (0xC0000101, lambda v: 0xFFFFA00000000000 + (v << 28), 0x1000),   # GS_BASE
    # STAR: kernel CS 0x08 + 0x40v (SS + 8), user CS/SS from 0x13 + 0x40v; the flip
    # moves the kernel selectors by 0x20.
    (0xC0000081, lambda v: ((0x13 + 0x40 * v) << 48) | ((0x08 + 0x40 * v) << 32) | v,
     0x20 << 32),
    (0xC0000082, lambda v: LSTAR_STUBS + 0x40 * v, 0x1000),           # LSTAR: its stub
    (0xC0000083, lambda v: 0xFFFFC00000000000 + (v << 28), 0x1000),   # CSTAR
    (0xC0000084, lambda v: 0x800 | (1 << (2 * v)), 0x400),            # SYSCALL_MASK
    (0x174, lambda v: 0x10 + 0x20 * v, 0x8),                          # SYSENTER_CS
    (0x175, lambda v: 0x80000000 + (v << 20), 0x1000),                # SYSENTER_ESP
    (0x176, lambda v: 0x90000000 + (v << 20), 0x1000),                # SYSENTER_EIP
    (0xC0000103, lambda v: 0x200 + 0x40 * v, 0x10),                   # TSC_AUX (RDTSCP/RDPID)
    (0x48, lambda v: 0, 1),                                           # SPEC_CTRL (needs IBRS)
    (0x122, lambda v: 1, 1),                                          # TSX_CTRL (needs RTM)
    (0xC0000080, lambda v: 0x501, 1),                                 # EFER (SCE flips)
]
DELTA = {msr: d for msr, _, d in REGS}


@dataclass(frozen=True)
class Step:
    kind: str
    vcpu: int = 0
    cpu: int = 0
    inject: str = ""
    at: int = 0
    arg: int = 0

    def __str__(self):
        what = {"run": f"KVM_RUN vcpu{self.vcpu}", "set_msrs": f"KVM_SET_MSRS vcpu{self.vcpu}",
                "get_msrs": f"KVM_GET_MSRS vcpu{self.vcpu}",
                "migrate": f"migrate vcpu{self.vcpu} -> CPU {self.cpu}",
                "other_task": f"another task runs on CPU {self.cpu}",
                "virt_off_on": f"virtualization off/on on CPU {self.cpu}",
                "user_insns": f"the task in user mode on CPU {self.cpu} runs RDTSCP, RDPID, "
                              f"RD*BASE, SYSCALL",
                "kthread": f"a kernel thread runs on CPU {self.cpu}",
                "vmm_task": f"vcpu{self.vcpu}'s thread: "
                            + {0: "arch_prctl(ARCH_SET_FS/GS)", 1: "WRFSBASE/WRGSBASE",
                               2: "prctl(PR_SET_TSC)"}.get(self.arg, str(self.arg)),
                }[self.kind]
        return what + (f", {self.inject} before host instruction {self.at}" if self.inject else "")

    def to_c(self, s):
        s.kind, s.vcpu, s.cpu = STEP_KINDS.index(self.kind), self.vcpu, self.cpu
        s.inject, s.at, s.arg = INJECTS.index(self.inject), self.at, self.arg

    @classmethod
    def from_c(cls, s):
        return cls(STEP_KINDS[s.kind], s.vcpu, s.cpu, INJECTS[s.inject], s.at, s.arg)

    def plain(self):
        """The same step without its injected event."""
        return replace(self, inject="", at=0)


@functools.lru_cache(maxsize=16)
def _guest_program_cached(regs, features):
    code, symbols, ud, bp, kentry = _guest_program(list(regs), dict(features))
    return code, symbols, ud.address, bp.address, kentry.address


def _guest_program(regs, features):
    """The checker's guest: on each pass (one KVM_RUN) it reads every register back with
    RDMSR and compares it with what it wrote (exits where KVM intercepts), writes the
    next value; then observes the hardware directly, where KVM cannot answer for it:
    RDPID and RDTSCP (TSC_AUX), RDFSBASE, RDGSBASE and SWAPGS (FS/GS/KERNEL_GS_BASE),
    and, in the very run that set EFER.SCE, a SYSRETQ to a user part that checks STAR's
    user selectors and comes back with SYSCALL to its own LSTAR stub, which checks
    STAR's kernel selectors and the RFLAGS SYSCALL_MASK left; with EFER.SCE clear the
    SYSCALL must raise #UD. A mismatch is reported on VIOLATION_PORT (RDI register, RSI
    expected, RDX found); `features` says which instructions the CPU model has."""
    a = Asm(CODE)
    idx = {msr: i for i, msr in enumerate(regs)}

    def t(msr):
        return qword(mem("r15", 8 * idx[msr]))

    mark = qword(mem("r15", MARK))
    reports = []

    def report(reg, exp, act, user=False):
        """A label that reports (reg, exp, act); exp/act: register names or operands."""
        lab = a.label(f"bad{len(reports)}")
        reports.append((lab, reg, exp, act, user))
        return lab

    kentry = a.label("kentry")
    sync = a.label("sync")
    user = a.label("user")
    after = []                            # where kentry returns to, per observation block

    def observe(n):
        """Direct observations (nothing here exits); block n of the pass."""
        if 0xC0000103 in idx:
            if features["rdpid"]:
                a.rdpid("rax")
                a.cmp("rax", t(0xC0000103))
                a.jne(report(0xC0000103, t(0xC0000103), "rax"))
            if features["rdtscp"]:
                a.rdtscp()
                a.mov("eax", "ecx")
                a.cmp("rax", t(0xC0000103))
                a.jne(report(0xC0000103, t(0xC0000103), "rax"))
        if features["fsgsbase"]:
            for msr, insn in ((0xC0000100, a.rdfsbase), (0xC0000101, a.rdgsbase)):
                insn("rax")
                a.cmp("rax", t(msr))
                a.jne(report(msr, t(msr), "rax"))
            a.swapgs()
            a.rdgsbase("rax")
            a.swapgs()
            a.cmp("rax", t(0xC0000102))
            a.jne(report(0xC0000102, t(0xC0000102), "rax"))
        no_sce, done = a.label(f"no_sce{n}"), a.label(f"done{n}")
        after.append(done)
        a.mov("r14", n)                   # which block kentry returns to
        a.test(t(0xC0000080), 1)
        a.jz(no_sce)
        # EFER.SCE set: SYSRETQ to the user part, which comes back with SYSCALL.
        a.mov(mark, MARK_SYSRET)
        a.mov("rcx", user)
        a.mov("r11", USER_FLAGS)
        a.emit("sysretq")
        a.bind(no_sce)
        a.mov(mark, MARK_SYSCALL_UD)
        a.syscall()                       # #UD: the handler skips it
        a.bind(done)

    top = a.here("top")
    observe(0)                            # what the entry loaded: the values of the last pass
    for i, msr in enumerate(regs):
        a.mov("ecx", msr)
        a.rdmsr()
        a.shl("rdx", 32)
        a.or_("rax", "rdx")
        a.cmp("rax", qword(mem("r15", 8 * i)))
        a.jne(report(msr, qword(mem("r15", 8 * i)), "rax"))
        a.mov("rbx", DELTA.get(msr, 0x1000))
        a.xor("rax", "rbx")
        a.mov(qword(mem("r15", 8 * i)), "rax")
        a.mov("rdx", "rax")
        a.shr("rdx", 32)
        a.wrmsr()
    observe(1)                            # in the run that wrote them (EFER.SCE included)
    if features.get("halt"):
        # Every other pass the vCPU halts in the kernel until its TSC-deadline timer,
        # armed past the halt-polling window: it blocks, the pCPU idles (no return to
        # user mode), the timer wakes it, and it goes on in the same run.
        a.test(t(0xC0000080), 1)
        a.jnz(sync)
        a.rdtsc()
        a.shl("rdx", 32)
        a.or_("rax", "rdx")
        a.mov("rdx", HALT_TSC)
        a.add("rax", "rdx")
        a.mov("rdx", "rax")
        a.shr("rdx", 32)
        a.mov("ecx", 0x6E0)               # TSC_DEADLINE
        a.wrmsr()
        a.hlt()
    a.jmp(sync)
    a.bind(user)                          # CPL 3
    a.int3()                              # the #BP handler checks STAR's user CS/SS
    a.mov(mark, MARK_SYSCALL)
    a.push(USER_FLAGS)
    a.popfq()
    a.syscall()
    a.jmp(user)                           # not reached: SYSCALL does not come back here
    # The kernel side of SYSCALL (CPL 0); the LSTAR stubs jump here with their address.
    a.bind(kentry)
    a.pushfq()
    a.pop("rbx")                          # RFLAGS as SYSCALL left them
    a.cmp(mark, MARK_SYSCALL_UD)
    a.je(report(REG_EFER_SCE, 0, 1))      # EFER.SCE clear, yet SYSCALL ran
    a.mov(mark, MARK_NONE)
    a.cmp("rax", t(0xC0000082))
    a.jne(report(0xC0000082, t(0xC0000082), "rax"))
    a.mov(mark, MARK_KSEL)
    a.int3()                              # the #BP handler checks STAR's kernel CS/SS
    a.mov(mark, MARK_NONE)
    a.mov("rax", t(0xC0000084))
    a.not_("rax")
    a.and_("rax", "r11")
    a.cmp("rax", "rbx")
    a.jne(report(0xC0000084, "rax", "rbx"))
    a.test("r14", "r14")
    a.jz(after[0])
    a.jmp(after[1])
    a.bind(sync)
    a.out(SYNC_PORT, "al")
    a.jmp(top)
    # #BP: the selectors in its frame (the interpreter has no MOV from a segment register).
    bp = a.here("bp_handler")
    a.mov("rcx", qword(mem("rsp", 8)))    # CS
    a.mov("rdx", qword(mem("rsp", 32)))   # SS
    ksel = a.label("ksel")
    a.mov("rax", t(0xC0000081))
    a.cmp(mark, MARK_SYSRET)
    a.jne(ksel)
    a.shr("rax", 48)                      # SYSRETQ: CS = STAR[63:48] + 16, SS = + 8, RPL 3
    a.add("eax", 16)
    a.or_("eax", 3)
    a.cmp("rax", "rcx")
    a.jne(report(0xC0000081, "rax", "rcx"))
    a.sub("eax", 8)
    a.cmp("rax", "rdx")
    a.jne(report(0xC0000081, "rax", "rdx"))
    a.emit("iretq")
    a.bind(ksel)
    a.shr("rax", 32)                      # SYSCALL: CS = STAR[47:32], SS = + 8
    a.and_("eax", 0xFFFC)
    a.cmp("rax", "rcx")
    a.jne(report(0xC0000081, "rax", "rcx"))
    a.add("eax", 8)
    a.cmp("rax", "rdx")
    a.jne(report(0xC0000081, "rax", "rdx"))
    a.emit("iretq")
    # #UD: expected only for the SYSCALL with EFER.SCE clear.
    ud = a.here("ud_handler")
    a.cmp(mark, MARK_SYSCALL_UD)
    bad_ud = a.label("bad_ud")
    a.jne(bad_ud)
    a.mov(mark, MARK_NONE)
    a.add(qword(mem("rsp")), 2)
    a.emit("iretq")
    a.bind(bad_ud)
    a.cmp(mark, MARK_SYSCALL)
    a.je(report(REG_EFER_SCE, 1, 0))      # EFER.SCE set, yet SYSCALL raised #UD
    a.jmp(report(REG_UD, 0, qword(mem("rsp"))))
    for lab, reg, exp, act, user_mode in reports:
        a.bind(lab)
        a.mov("r8", act)
        a.mov("r9", exp)
        a.mov("edi", reg)
        a.mov("rsi", "r9")
        a.mov("rdx", "r8")
        a.out(VIOLATION_PORT, "al")
        stop = a.here()
        if user_mode:
            a.pause()
        else:
            a.hlt()
        a.jmp(stop)
    code = a.assemble()
    assert code.end <= LSTAR_STUBS, "the checker's guest outgrew its code area"
    return code.code, code.symbols, ud, bp, kentry


def _lapic_tsc_deadline_msrs(bsp):
    """KVM_SET_MSRS values that leave a vCPU's LAPIC as pykvm.workloads' halt-idle guest
    sets it up itself (workloads._lapic_timer_prologue)."""
    from . import workloads as W
    # The guest's SREGS left APIC_BASE 0 (disabled): back to the architectural base,
    # enabled (bit 11), BSP for its VM's first vCPU (bit 8), then x2APIC (EXTD).
    base = 0xFEE0_0000 | (1 << 11) | ((1 << 8) if bsp else 0)
    return {W.MSR_APICBASE: base | W.APIC_BASE_EXTD,
            W.X2APIC_SPIV: W.APIC_SPIV_APIC_ENABLED | W.SPURIOUS_VECTOR,
            W.X2APIC_LVTT: W.APIC_LVT_TIMER_TSCDEADLINE | W.LOCAL_TIMER_VECTOR}


def _lstar_stubs(kentry_addr, vcpus):
    """At each LSTAR value a vCPU may hold: load the stub's own address, go to kentry."""
    out = {}
    for v in range(vcpus):
        for base in (LSTAR_STUBS, LSTAR_STUBS + 0x1000):
            at = base + 0x40 * v
            a = Asm(at)
            a.mov("rax", at)
            a.mov("rcx", kentry_addr)
            a.jmp("rcx")
            out[at] = a.assemble().code
    return out


class CheckInterrupted(KeyboardInterrupt):
    """Ctrl-C during an exploration: it stopped after its current step; `result` is the
    CheckResult of what was explored until then."""

    def __init__(self, result):
        super().__init__("check interrupted")
        self.result = result


@dataclass
class CheckResult:
    vendor: str
    preset: str
    params: dict
    verdict: str                 # "pass", "violation", or "incomplete" (a budget ran out
    #                              before the exhaustive part finished, or Ctrl-C)
    violation: Violation | None
    steps: list
    events: int
    states: int
    depth_done: int
    walks: int
    seconds: float
    config: dict = field(default_factory=dict)
    exits: int = 0               # VM-exits inside the explored steps
    bound: int = 0               # the exhaustive depth asked for
    walks_asked: int = 0
    interrupted: bool = False    # stopped by Ctrl-C
    closed: bool = False         # a level brought no new state: every depth is explored
    slept: int = 0               # steps the sleep sets left out (reduce "sleep")
    saved_violation: dict | None = None   # replay: what the file said was found
    replayed: bool = False       # a replay of a saved file, not an exploration
    _trace: list = field(default_factory=list, repr=False)

    @property
    def events_per_second(self):
        return self.events / self.seconds if self.seconds else 0.0

    def trace(self):
        """The violating sequence replayed, as kvm tracepoint lines."""
        if not self._trace and self.steps:
            self._trace = Checker(**self.config).replay(self.steps, trace=True)[1]
        return self._trace

    @property
    def exhaustive(self):
        """Every sequence up to `bound` was explored."""
        return self.depth_done >= self.bound

    def reproduced(self):
        """For a replay: whether it found the violation the file saved (same register at
        the same observation point)."""
        v, saved = self.violation, self.saved_violation
        return v is not None and saved is not None and \
            (v.reg, v.obs) == (saved.get("reg"), saved.get("obs"))

    def report(self):
        if self.replayed:
            return self._replay_report()
        cut = ""
        if self.interrupted:
            cut = " (interrupted: what was explored until Ctrl-C)"
        elif self.verdict == "incomplete":
            cut = " (the time budget ran out before the exhaustive search finished)"
        elif self.walks < self.walks_asked and not self.violation:
            cut = f" (time budget: {self.walks} of {self.walks_asked} random walks)"
        lines = [f"{self.vendor} ({self.preset}, {_params_str(self.params)}): {self.verdict}; "
                 f"{self.events} step{'s' if self.events != 1 else ''} "
                 f"({self.exits} VM-exits in them), {self.states} states, "
                 f"exhaustive to depth "
                 f"{self.depth_done if self.exhaustive else 0} of {self.bound}, "
                 f"{self.walks} random walks, {self.seconds:.1f} s{cut}"]
        if self.slept:
            lines.append(f"sleep sets: {self.slept} steps that commute with the step before "
                         f"them not tried again")
        if self.violation:
            lines.append(f"violation: {self.violation}")
            lines.append("steps:")
            lines += [f"  {i + 1}. {s}" for i, s in enumerate(self.steps)]
            lines.append("trace:")
            lines += ["  " + t for t in _format_trace(self.trace(), self.vendor)]
        return "\n".join(lines)

    def _replay_report(self):
        saved = self.saved_violation
        if saved is None:
            head = "the file saved no violation; " + (
                "replaying its steps found one" if self.violation else "none found")
        elif self.reproduced():
            head = f"reproduced: {saved.get('reg')} at {saved.get('obs')}"
        else:
            head = (f"did not reproduce the saved violation ({saved.get('reg')} at "
                    f"{saved.get('obs')}): " + (f"found another, {self.violation}"
                                                if self.violation else "no violation now"))
        n = len(self.steps)
        lines = [f"{self.vendor} ({self.preset}, {_params_str(self.params)}): {head}; "
                 f"{n} step{'s' if n != 1 else ''} replayed ({self.exits} VM-exits in them)"]
        if self.violation:
            lines.append(f"violation: {self.violation}")
        lines.append("steps:")
        lines += [f"  {i + 1}. {s}" for i, s in enumerate(self.steps)]
        if self.violation:
            lines.append("trace:")
            lines += ["  " + t for t in _format_trace(self.trace(), self.vendor)]
        return "\n".join(lines)

    def to_json(self):
        return {"format": FORMAT, "vendor": self.vendor, "preset": self.preset,
                "params": self.params,
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
                "nmi_handler", "violation", "irq", "cr3", "inject", "task")


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
    "nmi_handler": lambda a, b: f"found GS_BASE 0x{a:x}" + (" (#MC)" if b == 18 else ""),
    "violation": _violation_text,
    "irq": lambda a, b: f"vector 0x{a:x}" + (", softirqs on the way out" if b else ""),
    "cr3": lambda a, b: f"CR3 0x{a:x} ({'LAM-enable IPI' if b else 'text_poke temporary mm'})",
    "inject": lambda a, b: (f"{INJECTS[a] if a < len(INJECTS) else a} (preempt_count "
                            f"{b & 0x7FFFFFFF}, IRQs {'on' if b >> 31 else 'off'})"),
    "task": lambda a, b: f"pid={a} " + {0: "arch_prctl(ARCH_SET_FS/GS)", 1: "WRFSBASE/WRGSBASE",
                                        2: "prctl(PR_SET_TSC)",
                                        0x10: "RDTSCP, RDPID, RD*BASE, SYSCALL in user mode"
                                        }.get(b, str(b)),
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
    """A machine set up for checking one vendor/preset/params; explore or replay.

    `vms=2` adds a second VM with one vCPU (the last index), running the same guest
    program on its own table: it can preempt the others (injection "preempt_vm") and be
    stepped like them. `setup(checker)` runs once before the initial state is taken (a
    scenario of one's own: e.g. a CPUID without some feature). With `halt` (default) the
    VMs have an in-kernel LAPIC and the guest halts every other pass until its own timer:
    the vCPU blocks in KVM and the pCPU's idle task runs."""

    def __init__(self, vendor="vmx", preset=None, params=None, cpu_model=None, cpus=2,
                 vcpus=1, steps=None, injections=None, run_budget=100_000, vms=1,
                 setup=None, halt=True):
        _int_arg("vms", vms, 1, 2)
        _int_arg("vcpus", vcpus, 1, MAX_VCPUS + 1 - vms)
        _int_arg("cpus", cpus, 1, 8)
        _int_arg("run_budget", run_budget, 1, 2**64 - 1)
        if not isinstance(halt, bool):
            raise InvalidConfiguration(f"halt must be True or False, got {halt!r}")
        self.config = dict(vendor=vendor, preset=preset, params=dict(params or {}),
                           cpu_model=cpu_model, cpus=cpus, vcpus=vcpus,
                           steps=list(steps) if steps else None,
                           injections=list(injections) if injections is not None else None,
                           run_budget=run_budget, vms=vms, halt=halt)
        self.m = Machine(cpus=cpus, vendor=vendor, cpu_model=cpu_model, preset=preset,
                         params=params)
        model = self.m.cpu_model
        regs = [(msr, f) for msr, f, _ in REGS
                if (msr != 0xC0000103 or model.has_rdtscp or model.has_rdpid)
                and (msr != 0x48 or model.has_ibrs) and (msr != 0x122 or model.has_rtm)]
        self.regs = [msr for msr, _ in regs]
        features = {"rdpid": model.has_rdpid, "rdtscp": model.has_rdtscp,
                    "fsgsbase": model.has_fsgsbase, "halt": halt}
        code, self.symbols, ud, bp, kentry = _guest_program_cached(
            tuple(self.regs), tuple(sorted(features.items())))
        nr = vcpus + vms - 1
        vm = self.m.create_vm()
        if halt:
            vm.create_irqchip()      # the LAPIC in the kernel: HLT blocks in KVM
        slot = vm.add_memory(0, GMEM)
        self.vms = [vm]
        vm_of = [0] * vcpus
        if vms == 2:
            # A second VM backed by the same host memory (two VMs mapping one memfd).
            vm2 = self.m.create_vm()
            if halt:
                vm2.create_irqchip()
            from ._lib import ensure
            ensure(lib.pk_vm_set_memslot(vm2._kvm, 0, 0, GMEM, slot._hva), "memslot")
            self.vms.append(vm2)
            vm_of.append(1)
        vm.memory.write(CODE, code)
        for at, stub in _lstar_stubs(kentry, nr).items():
            vm.memory.write(at, stub)
        vm.memory.write(IDT + 3 * 16, idt_gate(bp, dpl=3))   # INT3 from user mode
        vm.memory.write(IDT + 6 * 16, idt_gate(ud))
        vm.memory.write(TSS, tss_bytes(RSP0))
        sregs = initial_sregs()
        sregs.idt.base, sregs.idt.limit = IDT, 7 * 16 - 1   # beyond #UD: a triple fault
        if not model.has_fsgsbase:
            sregs.cr4 &= ~CR4_FSGSBASE
        self.vcpus = []
        for v in range(nr):
            owner = self.vms[vm_of[v]]
            vcpu = owner.create_vcpu(cpu=v % cpus)
            vcpu.set_sregs(sregs)
            r = initial_regs()
            r.rip, r.rsp, r.r15 = CODE, STACK - 0x100 * v, TABLES + 0x100 * v
            vcpu.set_regs(r)
            values = {msr: f(v) for msr, f in regs}
            n = vcpu.set_msrs(values)
            if n != len(values):
                raise InvalidConfiguration(
                    f"the guest's starting value of {reg_name(self.regs[n])} was refused")
            if halt:
                # The LAPIC as a Linux guest leaves it before its first idle (x2APIC,
                # enabled, LVT timer in TSC-deadline mode), set by the VMM as it would
                # restore a migrated vCPU, so the deadline wakes the halted vCPU.
                bsp = vm_of.index(vm_of[v]) == v
                lapic = _lapic_tsc_deadline_msrs(bsp)
                if vcpu.set_msrs(lapic) != len(lapic):
                    raise InvalidConfiguration("the guest's LAPIC set-up was refused")
                if not bsp:
                    # An AP waits for INIT/SIPI; the VMM starts it, as a migrated one.
                    vcpu.set_mp_state(lib.KVM_MP_STATE_RUNNABLE)
            for i, msr in enumerate(self.regs):
                vm.memory.write_u64(TABLES + 0x100 * v + 8 * i, values[msr])
            vm.memory.write_u64(TABLES + 0x100 * v + MARK, MARK_NONE)
            self.vcpus.append(vcpu)
        cfg = ffi.new("struct pk_check_cfg *")
        for v, vcpu in enumerate(self.vcpus):
            cfg.vcpus[v] = vcpu._vcpu
            cfg.table_gpa[v] = TABLES + 0x100 * v
            cfg.vm_of[v] = vm_of[v]
        cfg.nr_vcpus = nr
        cfg.gmem = ffi.cast("uint8_t *", slot._hva)
        cfg.gmem_size = GMEM
        # The guest writes only its tables (and its stack, which it never reads before
        # writing); no self-modifying code.
        cfg.gmem_dirty_lo, cfg.gmem_dirty_hi = TABLES, TABLES + 0x100 * nr
        for i, msr in enumerate(self.regs):
            cfg.regs[i] = msr
            cfg.delta[i] = DELTA[msr]
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
        if setup is not None:       # the caller's own scenario: part of the initial state
            setup(self)
        self._c = ffi.gc(lib.pk_checker_new(self.m._m, cfg), lib.pk_checker_free)
        if self._c == ffi.NULL:
            raise InvalidConfiguration("the checker could not be set up")
        self.set_reduce(DEFAULT_REDUCE)

    def set_reduce(self, reduce):
        """The reductions explore() (and pykvm.swarm's searches from a prefix) use: names
        of REDUCTIONS; () for the plain iterative deepening."""
        ensure(lib.pk_checker_set_reduce(self._c, reduce_mask(reduce)), "reduce",
               InvalidConfiguration)

    def replay(self, steps, trace=False):
        """Apply `steps` from the initial state: (Violation or None, trace records)."""
        c_steps = self._c_steps(steps)
        buf = ffi.new("struct pk_trace *") if trace else ffi.NULL
        lib.pk_machine_set_trace(self.m._m, buf)
        v = ffi.new("struct pk_violation *")
        try:
            hit = lib.pk_checker_replay(self._c, c_steps, len(steps), v, bool(trace))
        finally:
            lib.pk_machine_set_trace(self.m._m, ffi.NULL)
        recs = [(_TRACE_KINDS[r.kind], r.cpu, r.a, r.b) for r in buf.rec[0:buf.n]] if trace else []
        return (Violation.from_c(v, 1) if hit else None), recs

    @staticmethod
    def _c_steps(steps):
        c_steps = ffi.new("struct pk_step[]", max(1, len(steps)))
        for i, s in enumerate(steps):
            s.to_c(c_steps[i])
        return c_steps

    def points(self, steps, idx):
        """Host points of run step `idx` after steps[:idx]: (count, irq_ok, preempt_ok),
        the sets of 1-based `at` values where an interrupt / a preemption can be taken;
        None if an earlier step ends the branch."""
        irq = ffi.new("uint64_t[]", lib.PK_INJ_OK_WORDS)
        pre = ffi.new("uint64_t[]", lib.PK_INJ_OK_WORDS)
        log = events.point_log()
        lib.pk_machine_set_point_log(self.m._m, log)
        try:
            n = lib.pk_checker_points(self._c, self._c_steps(steps), idx, irq, pre)
        finally:
            lib.pk_machine_set_point_log(self.m._m, ffi.NULL)
        if n < 0:
            return None
        self._last_points = events.points_of(log)

        def ats(words):
            return {p + 1 for p in range(min(n, 64 * len(words)))
                    if words[p // 64] >> (p % 64) & 1}
        return n, ats(irq), ats(pre)

    def point_names(self, steps, idx):
        """The host points of run step `idx` (after steps[:idx]) as pykvm.events.HostPoint:
        what `Step.at` and pykvm.events.Inject name."""
        if self.points(steps, idx) is None:
            return []
        return self._last_points

    def explore(self, bound=3, max_states=200_000, walks=2000, walk_len=12, seed=1,
                seconds=None, progress=None, reduce=None):
        """Explore in C, on a worker thread so that Ctrl-C reaches this one: the C loop is
        asked to stop (it polls a flag after each step) and CheckInterrupted carries what
        was explored. progress: called about 5 times a second, from another thread, with
        a dict of the counters so far (events, exits, states, walks) while the C explorer
        runs. reduce: the reductions (names of REDUCTIONS) for this and later searches
        (None: as set before, all by default). Returns (violation, steps, events, states,
        depth_done, walks); last_closed says whether the reachable space was closed."""
        if reduce is not None:
            self.set_reduce(reduce)
        bound = _int_arg("bound", bound, 0, MAX_STEPS)
        walk_len = _int_arg("walk_len", walk_len, 0, MAX_STEPS)
        max_states = _int_arg("max_states", max_states, 1, 2**40)
        walks = _int_arg("walks", walks, 0, 2**64 - 1)
        seed = _int_arg("seed", seed, 0, 2**64 - 1)
        if seconds is not None and (isinstance(seconds, bool) or
                                    not isinstance(seconds, (int, float)) or
                                    not math.isfinite(seconds) or seconds <= 0):
            raise InvalidConfiguration(f"seconds must be a positive number, got {seconds!r}")
        res = ffi.new("struct pk_check_result *")
        out = {}
        done = threading.Event()

        def work():
            try:
                # The C call releases the GIL (cffi API mode): the watcher reads the
                # counters the explorer updates as it goes.
                out["r"] = lib.pk_checker_explore(self._c, bound, max_states, walks, walk_len,
                                                  seed, float(seconds or 0), res)
            finally:
                done.set()

        watcher = _Watcher(res, progress) if progress else None
        worker = threading.Thread(target=work, name="pykvm-explore")
        worker.start()
        interrupted = False
        try:
            # An Event, not join(): a KeyboardInterrupt that lands inside Thread.join()
            # can leave the thread looking finished while it still runs (CPython 3.11).
            while not done.is_set():
                try:
                    done.wait(0.1)
                except KeyboardInterrupt:
                    interrupted = True
                    lib.pk_checker_stop(self._c)
            worker.join()
        finally:
            if watcher:
                watcher.stop()
        ensure(out["r"], "explore", InvalidConfiguration)
        steps = [Step.from_c(res.steps[i]) for i in range(res.nr_steps)]
        v = Violation.from_c(res.violation, 1) if res.violated else None
        self.last_exits = res.exits
        self.last_interrupted = interrupted or bool(res.interrupted)
        self.last_injected = {INJECTS[k]: res.injected[k] for k in range(1, len(INJECTS))}
        self.last_refused = res.refused
        self.last_closed = bool(res.closed)
        self.last_replayed = res.replayed
        self.last_slept = res.slept
        self.last_sleep_checked = res.sleep_checked
        self.last_sleep_mismatch = res.sleep_mismatch
        return v, steps, res.events, res.states, res.depth_done, res.walks

    def attribute(self, steps):
        """Replay `steps` with attribution by last write on: the Violation whose `cause`
        names the write that put the wrong value there (instruction, kernel function,
        CPU, step), or None."""
        from ._lib import ensure
        ensure(lib.pk_attr_enable(self.m._m, True), "attribution")
        try:
            v, _ = self.replay(steps)
        finally:
            lib.pk_attr_enable(self.m._m, False)
        return v

    # ---- shrinking ------------------------------------------------------------------

    def _fails(self, steps, violation):
        v, _ = self.replay(steps)
        return v is not None and (v.reg, v.obs) == (violation.reg, violation.obs)

    def _eligible_ats(self, steps, i):
        """The `at` values (ascending) where step i's injection can be taken."""
        pts = self.points(steps, i)
        if pts is None:
            return []
        n, irq, pre = pts
        kind = steps[i].inject
        ok = irq if kind in IRQ_INJECTS else pre if kind in PREEMPT_INJECTS else None
        return [at for at in range(1, n + 1) if ok is None or at in ok]

    def _earliest(self, steps, i, violation, below=None):
        """Steps with step i's injection at the earliest host point (below `below`, if
        given) where the violation still shows; None if there is none."""
        for at in self._eligible_ats(steps, i):
            if below is not None and at >= below:
                break
            cand = steps[:i] + [replace(steps[i], at=at)] + steps[i + 1:]
            if self._fails(cand, violation):
                return cand
        return None

    def _without(self, steps, i, violation):
        """`steps` without step i, still violating: as is, or with one injection of a
        later step moved (removing a step shifts the host points after it)."""
        cand = steps[:i] + steps[i + 1:]
        if not cand:
            return None
        if self._fails(cand, violation):
            return cand
        for j in range(i, len(cand)):
            if cand[j].inject:
                moved = self._earliest(cand, j, violation)
                if moved is not None:
                    return moved
        return None

    def shrink(self, steps, violation):
        """A 1-minimal sequence with the same violation (register and place): no step
        and no injection can go, and no injection can move to an earlier host point,
        without losing it."""
        steps = list(steps)
        changed = True
        while changed:
            changed = False
            for i in range(len(steps)):
                cand = self._without(steps, i, violation)
                if cand is not None:
                    steps, changed = cand, True
                    break
            if changed:
                continue
            for i, s in enumerate(steps):
                if not s.inject:
                    continue
                cand = steps[:i] + [s.plain()] + steps[i + 1:]
                if self._fails(cand, violation):
                    steps, changed = cand, True
                    break
                cand = self._earliest(steps, i, violation, below=s.at)
                if cand is not None:
                    steps, changed = cand, True
                    break
        return steps

    def is_minimal(self, steps, violation):
        """True if removing any step or injection, or moving any injection to an
        earlier host point, loses the violation (what shrink() guarantees)."""
        if not self._fails(steps, violation):
            return False
        for i, s in enumerate(steps):
            if len(steps) > 1 and self._fails(steps[:i] + steps[i + 1:], violation):
                return False
            if s.inject:
                if self._fails(steps[:i] + [s.plain()] + steps[i + 1:], violation):
                    return False
                for at in self._eligible_ats(steps, i):
                    if at >= s.at:
                        break
                    if self._fails(steps[:i] + [replace(s, at=at)] + steps[i + 1:], violation):
                        return False
        return True


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
          steps=None, injections=None, progress=None, vms=1, reduce=DEFAULT_REDUCE):
    """Explore, and shrink any violation to a 1-minimal sequence. Returns a CheckResult;
    Ctrl-C raises CheckInterrupted with the result so far. progress: see Checker.explore;
    reduce: the search's reductions (names of REDUCTIONS; () for none)."""
    reduce_mask(reduce)                 # an unknown name: refused before the machine is built
    c = Checker(vendor, preset, params, cpu_model, cpus, vcpus, steps, injections, vms=vms)
    t0 = time.perf_counter()
    v, found, events, states, depth, nwalks = c.explore(bound, max_states, walks, walk_len,
                                                        seed, seconds, progress,
                                                        reduce=reduce or ())
    elapsed = time.perf_counter() - t0
    exits = c.last_exits
    if v is not None:
        found = c.shrink(found, v)
        v = c.attribute(found)
    verdict = "violation" if v else "pass" if depth >= bound and not c.last_interrupted \
        else "incomplete"
    result = CheckResult(vendor, c.m.preset, c.m.params, verdict, v, found if v else [],
                         events, states, depth, nwalks, elapsed, config=c.config,
                         exits=exits, bound=bound, walks_asked=walks,
                         interrupted=c.last_interrupted, closed=c.last_closed,
                         slept=c.last_slept)
    if c.last_interrupted:
        raise CheckInterrupted(result)
    return result


def reduce_mask(reduce):
    """The PK_REDUCE_* mask of `reduce`: an iterable of names of REDUCTIONS (empty, or
    None, for the plain search); InvalidConfiguration naming an unknown one, or one
    without what it needs (REDUCTION_NEEDS)."""
    if isinstance(reduce, str):
        reduce = (reduce,)
    mask = 0
    for name in reduce or ():
        if name not in REDUCTIONS:
            raise InvalidConfiguration(f"unknown reduction {name!r}; known: "
                                       f"{', '.join(REDUCTIONS)}")
        mask |= REDUCTIONS[name]
    for name, (need, why) in REDUCTION_NEEDS.items():
        if mask & REDUCTIONS[name] and not mask & REDUCTIONS[need]:
            raise InvalidConfiguration(why)
    return mask


def _int_arg(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidConfiguration(f"{name} must be an integer {lo}..{hi}, got {value!r}")
    return value


_CONFIG_KEYS = {"vendor", "preset", "params", "cpu_model", "cpus", "vcpus", "steps",
                "injections", "run_budget", "vms", "halt"}
_VIOLATION_KEYS = {"obs", "cpu", "reg", "expected", "actual", "task", "count", "cause"}


def _bad(why):
    return InvalidConfiguration(f"not a replayable check file: {why}")


def load_saved(data):
    """The (config, steps, saved violation) of a file CheckResult.save() wrote, checked
    whole: format version, the machine it describes, every step's vCPU and pCPU index,
    kind and injection; InvalidConfiguration saying what is wrong otherwise."""
    if not isinstance(data, dict):
        raise _bad(f"expected a JSON object, got {type(data).__name__}")
    if data.get("format") != FORMAT:
        raise _bad(f"format version {data.get('format')!r}, this pykvm reads {FORMAT} "
                   f"(write it again with pykvm check --save)")
    config = data.get("config")
    if not isinstance(config, dict) or not set(config) <= _CONFIG_KEYS or "vendor" not in config:
        raise _bad(f"config must be an object with keys among {sorted(_CONFIG_KEYS)}")
    cpus = config.get("cpus", 2)
    vcpus = config.get("vcpus", 1)
    vms = config.get("vms", 1)
    _int_arg("config.cpus", cpus, 1, 8)
    _int_arg("config.vms", vms, 1, 2)
    _int_arg("config.vcpus", vcpus, 1, MAX_VCPUS + 1 - vms)
    if not isinstance(config.get("halt", True), bool):
        raise _bad(f"config.halt must be true or false, got {config['halt']!r}")
    _int_arg("config.run_budget", config.get("run_budget", 1), 1, 2**64 - 1)
    for key in ("vendor", "preset", "cpu_model"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise _bad(f"config.{key} must be a string, got {config[key]!r}")
    params = config.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise _bad(f"config.params must map names to values, got {params!r}")
    for key in ("steps", "injections"):
        if config.get(key) is not None and (not isinstance(config[key], list) or not all(
                isinstance(x, str) for x in config[key])):
            raise _bad(f"config.{key} must be a list of names, got {config[key]!r}")
    steps = data.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        raise _bad(f"steps must be a list of 1..{MAX_STEPS} steps")
    out = []
    for i, s in enumerate(steps, 1):
        if not isinstance(s, dict) or not set(s) <= {"kind", "vcpu", "cpu", "inject", "at",
                                                     "arg"}:
            raise _bad(f"step {i} must be an object with kind, vcpu, cpu, inject, at, arg")
        if s.get("kind") not in STEP_KINDS:
            raise _bad(f"step {i}: kind {s.get('kind')!r} is none of {', '.join(STEP_KINDS)}")
        if s.get("inject", "") not in INJECTS:
            raise _bad(f"step {i}: inject {s.get('inject')!r} is none of {INJECTS[1:]}")
        vcpu, cpu, at, arg = (s.get("vcpu", 0), s.get("cpu", 0), s.get("at", 0),
                              s.get("arg", 0))
        nr = vcpus + vms - 1            # the vCPUs of both VMs
        arg_hi = len(TASK_CHANGES) - 1 if s["kind"] == "vmm_task" else 0
        for name, v, hi in (("vcpu", vcpu, nr - 1), ("cpu", cpu, cpus - 1),
                            ("at", at, 2**32 - 1), ("arg", arg, arg_hi)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
                raise _bad(f"step {i}: {name} {v!r} is not in 0..{hi} (the file's machine "
                           f"has {nr} vCPU(s) on {cpus} CPU(s))")
        out.append(Step(s["kind"], vcpu, cpu, s.get("inject", ""), at, arg))
    saved = data.get("violation")
    if saved is not None and (not isinstance(saved, dict) or not set(saved) <= _VIOLATION_KEYS
                              or not isinstance(saved.get("reg"), str)
                              or not isinstance(saved.get("obs"), str)):
        raise _bad("violation must be null or an object naming reg and obs")
    return config, out, saved


def replay(data):
    """Reproduce a saved check (the dict of CheckResult.to_json(), or a path): the file
    is checked first (load_saved), then its steps run from the initial state, and the
    result says whether the saved violation came back (CheckResult.reproduced())."""
    if isinstance(data, str):
        try:
            with open(data) as f:
                data = json.load(f)
        except json.JSONDecodeError as e:
            raise _bad(f"{data}: not JSON ({e})") from None
    config, steps, saved = load_saved(data)
    try:
        c = Checker(**config)
    except (TypeError, OverflowError) as e:
        raise _bad(f"config: {e}") from None
    _, recs = c.replay(steps, trace=True)
    v = c.attribute(steps)
    exits = sum(1 for r in recs if r[0] == "kvm_exit")     # the replay's own VM-exits
    return CheckResult(c.config["vendor"], c.m.preset, c.m.params,
                       "violation" if v else "pass", v, steps, len(steps), 0, 0, 0, 0.0,
                       config=c.config, exits=exits, _trace=recs, saved_violation=saved,
                       replayed=True)


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
