"""Host events a scenario places itself: the checker's events without its explorer.

    import pykvm
    from pykvm import guest
    from pykvm.events import Inject

    m = pykvm.Machine(cpus=1, vendor="vmx")
    vcpu = m.create_vm().create_vcpu(cpu=0)
    vcpu.load(guest.program(lambda a: (a.sync(), a.sync(), a.done())))
    other = m.create_vm().create_vcpu(cpu=0)          # another VM's vCPU
    other.load(guest.program(lambda a: (a.sync(), a.done())))
    vcpu.run(inject=Inject("nmi", "VCPU_RUN:VMLAUNCH"))       # at a named host point
    vcpu.run(inject=Inject("preempt_vm", "HANDLE_EXIT:*", other=other))
    assert vcpu.last_injection_fired and m.check() is None     # the oracle saw nothing

An event fires once, before the chosen host instruction of that run on the vCPU's pCPU,
and only if the kernel takes it there (csrc/host/events.c): an NMI or machine check
anywhere in host mode, an interrupt-borne one ("disable_ipi", "softirq", "cr3" as a
LAM-enable IPI) with IRQs on, a preemption ("preempt", "preempt_vm", "cr3" as text_poke)
where the vCPU thread is preemptible. `Vcpu.run` returns whether it fired in
`vcpu.last_injection_fired`.

A host point is named ``PATH:INSTRUCTION[ MSR][#n]``: the n-th (default first) time the
path (``VCPU_RUN``, ``PREPARE_SWITCH``, ... as in Machine.costs(), or ``*`` for any)
executes the instruction (``WRMSR``, ``VMRESUME``, ``SWAPGS``, ... or ``*`` for the n-th
host point of the path; ``window`` for a point between two plain stores), optionally
naming the MSR an RDMSR/WRMSR accesses. `pykvm.check.Checker.point_names` lists a run's.
"""
import re
from dataclasses import dataclass

from ._lib import MSR_SLOTS, OPS, PATHS, ffi, lib
from .errors import InvalidConfiguration

KINDS = ("nmi", "disable_ipi", "preempt", "mc", "preempt_kthread", "softirq", "cr3",
         "preempt_vm")
WINDOW = "window"
_NAME = re.compile(r"^\s*([A-Z_*]+)\s*:\s*([A-Za-z_*]+)(?:\s+([A-Za-z_0-9]+))?\s*(?:#(\d+))?\s*$")


@dataclass(frozen=True)
class HostPoint:
    """One host point of a run: its 1-based index, path, instruction and MSR (or 0)."""
    index: int
    path: str
    op: str
    msr: int = 0

    @property
    def name(self):
        msr = next((n for n, i in MSR_SLOTS if i == self.msr), f"{self.msr:#x}") if self.msr else ""
        return f"{self.path}:{self.op}" + (f" {msr}" if msr else "")


@dataclass(frozen=True)
class Inject:
    """An event `kind` before host instruction `at` (1-based int) or at a named point."""
    kind: str
    at: object = 1
    other: object = None        # "preempt_vm": the Vcpu (of another VM) that preempts

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidConfiguration(f"unknown host event {self.kind!r}; known: {KINDS}")
        if isinstance(self.at, bool) or not isinstance(self.at, (int, str)) or \
                (isinstance(self.at, int) and self.at < 1):
            raise InvalidConfiguration(f"at must be an int >= 1 or a point name, got {self.at!r}")
        if self.kind == "preempt_vm" and self.other is None:
            raise InvalidConfiguration("preempt_vm needs other=<a vCPU of another VM>")


def parse_point(name):
    """(path index or ~0, op index or -1 for any, msr, nth) of a point name."""
    m = _NAME.match(name)
    if not m:
        raise InvalidConfiguration(f"bad host point name {name!r}: want PATH:INSTRUCTION[ MSR][#n]")
    path, op, msr, nth = m.groups()
    if path != "*" and path not in PATHS:
        raise InvalidConfiguration(f"unknown path {path!r}; known: {', '.join(PATHS)}")
    ops = {o.upper(): i for i, o in enumerate(OPS)}
    ops[WINDOW.upper()] = len(OPS)
    if op != "*" and op.upper() not in ops:
        raise InvalidConfiguration(f"unknown instruction {op!r}; known: {', '.join(OPS)}, {WINDOW}")
    index = 0
    if msr:
        names = {n.upper(): i for n, i in MSR_SLOTS}
        if msr.upper() in names:
            index = names[msr.upper()]
        else:
            try:
                index = int(msr, 0)
            except ValueError:
                raise InvalidConfiguration(f"unknown MSR {msr!r} in {name!r}") from None
    return (0xFFFFFFFF if path == "*" else PATHS.index(path),
            -1 if op == "*" else ops[op.upper()], index, int(nth or 1))


def arm(machine_ptr, cpu, inject, budget):
    """Arm `inject` on pCPU `cpu` of a C machine for the next run."""
    kind = KINDS.index(inject.kind) + 1
    lib.pk_inject_set_other_vcpu(machine_ptr, inject.other._vcpu if inject.other else ffi.NULL,
                                 budget)
    if isinstance(inject.at, int):
        lib.pk_inject_arm(machine_ptr, cpu, inject.at, kind)
        return
    path, op, msr, nth = parse_point(inject.at)
    if op < 0:
        if path == 0xFFFFFFFF:
            lib.pk_inject_arm(machine_ptr, cpu, nth, kind)
            return
        op = 0xFFFF    # any instruction of the path: matched below by the C side
    lib.pk_inject_arm_named(machine_ptr, cpu, kind, path, op, msr, nth)


def point_log():
    return ffi.new("struct pk_point_log *")


def points_of(log):
    return [HostPoint(i + 1, PATHS[r.path] if r.path < len(PATHS) else str(r.path),
                      OPS[r.op] if r.op < len(OPS) else WINDOW, r.msr)
            for i, r in enumerate(log.rec[0:log.n])]
