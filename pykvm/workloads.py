"""Named workloads: a real guest program plus host behaviour, run a fixed number of
iterations, reporting how many of each world-switch event happened.

    import pykvm
    from pykvm import workloads
    m = pykvm.Machine(cpus=2, vendor="vmx")
    s = workloads.get("pio").start(m)         # VM, vCPU on pCPU 1, guest loaded, warmed up
    m.reset_costs()
    ev = s.run(100)                           # 100 OUT exits to userspace, handled in C
    ev["userspace_exits"]                     # 100
    m.costs()                                 # what they cost, by path

Events (keys of the dict `Session.run` returns, all deltas over that call):

    iterations        what the call was asked for
    userspace_exits   KVM_RUN returned to the VMM (KVM stat)
    kernel_exits      exits KVM handled in the kernel and re-entered through
                      vcpu_enter_guest (KVM stat exits - userspace_exits)
    fastpath_exits    exits handled with IRQs off and re-entered without prepare/put
    preemptions       another task took the vCPU thread's pCPU (counted by the runner)
    kvm_preemptions   of those, the ones KVM saw (kvm_sched_out: inside vcpu_load/put)
    migrations        the vCPU was loaded on a different pCPU (KVM stat)
    guest_switches    task switches the guest made on its own (counted by the runner)

Each workload has a `primary` event, what one iteration is made of, and a `method` saying
how a study isolates its cost: "scale" (the cost of run(2n) minus run(n): fixed per-call
overhead, such as the one exit that hands a batch back to the host, cancels) or "extra"
(that, minus the same measured with extra=False: the same iterations without the host
behaviour under study, i.e. without the other task or without migrating). pykvm.study
does the arithmetic; `Session.run` only runs and counts.

The guest is what a Linux guest looks like to the switch: long mode, SYSCALL enabled,
its own STAR/LSTAR/SYSCALL_MASK and TSC_AUX (GUEST_MSRS below). TSC_AUX is the guest's
CPU number for getcpu(); the one chosen differs from every pCPU's, as it does for most
vCPUs of a real host, so each entry after a return to user mode writes it.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import exits as X
from . import guest
from .errors import InvalidConfiguration, PykvmError
from .guest import layout as L

__all__ = ["Workload", "Session", "WorkloadError", "WORKLOADS", "EVENTS", "get", "names",
           "GUEST_MSRS"]

MSR_STAR, MSR_LSTAR, MSR_SYSCALL_MASK = 0xC0000081, 0xC0000082, 0xC0000084
MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_TSC_AUX = 0xC0000101, 0xC0000102, 0xC0000103
MSR_TSC_DEADLINE = 0x6E0

SINK_PORT = 0xE1                  # OUT here: an exit to userspace the C loop answers
MMIO_ADDR = 0x4000_0000           # outside every memory slot: an MMIO exit
COUNT_ADDR = L.USER_DATA          # u32: batch size, written by the host before each batch
EXITS_PER_MIGRATION = 4           # migrate: exits to userspace on each pCPU between moves
# overcommit: the preemption waits for the first preemptible point from this host
# instruction on. The instructions before the guest state is loaded are: vcpu_load's
# (VMX: RDMSR DEBUGCTL) and the FPU swap's (XSAVES, XRSTORS), none preemptible, then the
# completion of the last OUT (VMX: VMREAD of the instruction length and the interrupt
# shadow), preemptible. From the 6th on, the first preemptible point is after the CPUID
# exit on every preset (tests/test_study.py checks the preemption puts loaded state).
OVERCOMMIT_AFTER = 6
GUEST_TSC_AUX = 7                 # getcpu() of "vCPU 7": no pCPU of a small host has it
GUEST_SYSCALL_MASK = 0x47700      # Linux's: TF|DF|IF|IOPL|AC|NT
GUEST_KERNEL_GS = 0xFFFF888000200000   # the guest kernel's per-cpu base (GS in kernel mode)
GUEST_TASK_GS = 0x00007F0000001000     # user GS base of guest task 0; task 1 is +0x1000
# What the guest's boot set up; LSTAR is replaced by the guest's own entry point.
GUEST_MSRS = {MSR_STAR: L.GUEST_STAR, MSR_LSTAR: L.CODE_START,
              MSR_SYSCALL_MASK: GUEST_SYSCALL_MASK, MSR_TSC_AUX: GUEST_TSC_AUX}

EVENTS = ("iterations", "userspace_exits", "kernel_exits", "fastpath_exits", "preemptions",
          "kvm_preemptions", "migrations", "guest_switches")


class WorkloadError(PykvmError, RuntimeError):
    """The guest or the host did something the workload did not expect; says what."""


# ---- guest programs -----------------------------------------------------------------

def _loop(body):
    """A guest that repeats `body(a)` forever; each repetition exits once."""
    def build(a, vendor):
        top = a.here("top")
        body(a, vendor)
        a.jmp(top)
    return build


def _batched(prologue, body):
    """A guest that reads a count n from COUNT_ADDR, runs `body` n times, then OUTs to
    SINK_PORT (one exit to userspace per batch) and starts over."""
    def build(a, vendor):
        prologue(a, vendor)
        top = a.here("top")
        a.mov("r12d", guest.dword(COUNT_ADDR))
        inner = a.here("inner")
        body(a, vendor)
        a.dec("r12d")
        a.jnz(inner)
        a.out(SINK_PORT, "al")
        a.jmp(top)
    return build


def _hlt(a, vendor):
    a.hlt()                                   # no in-kernel LAPIC: HLT exits to userspace


def _out(a, vendor):
    a.out(SINK_PORT, "al")


def _cpuid_out(a, vendor):
    _cpuid(a, vendor)
    _out(a, vendor)


def _mmio_prologue(a, vendor):
    a.mov("rbx", MMIO_ADDR)


def _mmio(a, vendor):
    a.mov(guest.dword(guest.mem("rbx")), "eax")


def _tsc_deadline_prologue(a, vendor):
    a.mov("ecx", MSR_TSC_DEADLINE)
    a.xor("eax", "eax")
    a.mov("edx", 1)


def _wrmsr(a, vendor):
    a.wrmsr()                                 # TSC_DEADLINE: the WRMSR fast path


def _cpuid(a, vendor):
    a.xor("eax", "eax")
    a.cpuid()


def _vmcall(a, vendor):
    # The vendor's own hypercall instruction (KVM patches the other one in a real guest).
    a.vmmcall() if vendor == "svm" else a.vmcall()


def _nothing(a, vendor):
    pass


def _ctxsw(a, vendor):
    """One guest task switch and back: schedule() puts the next task's user GS base in
    KERNEL_GS_BASE (the inactive base in kernel mode), SWAPGS + SYSRETQ to the task, which
    checks its GS base and makes a system call; the entry SWAPGSes back and checks the
    kernel's. R13 counts switches (task = R13 & 1); R14 holds the task's GS base."""
    a.mov("eax", "r13d")
    a.and_("eax", 1)
    a.shl("eax", 12)
    a.mov("r14", GUEST_TASK_GS)
    a.add("r14", "rax")
    a.mov("rax", "r14")
    a.mov("rdx", "r14")
    a.shr("rdx", 32)
    a.mov("ecx", MSR_KERNEL_GS_BASE)
    a.wrmsr()
    a.mov("rcx", a["user_entry"])
    a.mov("r11", L.USER_RFLAGS)
    a.swapgs()
    a.sysretq()
    a.bind(a["user_entry"])                   # CPL3
    a.rdgsbase("rax")
    a.assert_eq("rax", "r14", "the task sees its own user GS base")
    a.syscall()
    a.bind(a["syscall_entry"])                # CPL0, from LSTAR
    a.swapgs()
    a.rdgsbase("rax")
    a.assert_eq("rax", GUEST_KERNEL_GS, "the guest kernel sees its per-cpu base")
    a.inc("r13d")


def _ctxsw_prologue(a, vendor):
    a.label("user_entry")
    a.label("syscall_entry")
    a.mov("rax", GUEST_KERNEL_GS)             # the kernel's GS base while in kernel mode
    a.wrgsbase("rax")
    a.xor("r13d", "r13d")


# ---- host behaviour -----------------------------------------------------------------

def _run_sink(s, n):
    """n exits on SINK_PORT, answered by the C loop."""
    r = s.vcpu.run_loop(s.devices, max_exits=n)
    if r.exit is not None or r.handled != n:
        s.fail(r.exit, f"wanted {n} OUTs to port {SINK_PORT:#x}, handled {r.handled}")


def _run_python(expect):
    def run(s, n):
        for _ in range(n):
            ex = s.vcpu.run()
            if not isinstance(ex, expect):
                s.fail(ex, f"wanted {expect.__name__}")
    return run


def _run_batch(s, n):
    """One batch of n guest operations, handed back with one OUT."""
    s.vm.memory.write(COUNT_ADDR, n.to_bytes(4, "little"))
    _run_sink(s, 1)
    return {}


def _counted(key):
    def run(s, n, extra=True):
        _run_batch(s, n)
        return {key: n}
    return run


def _overcommit(s, n, extra=True):
    """An overcommitted pCPU: during each KVM_RUN another host task preempts the vCPU
    thread right after its in-kernel CPUID exit, with the guest state loaded
    (kvm_sched_out -> vcpu_put, the task returns to user mode, kvm_sched_in ->
    vcpu_load, prepare again), and the guest then exits to userspace.
    Without `extra`, the runs are not preempted."""
    preempted = 0
    for _ in range(n):
        if extra:
            # At the first preemptible point from the OVERCOMMIT_AFTER-th host instruction
            # on: past the completion of the last OUT, so the preemption finds the guest
            # state loaded (after the CPUID exit).
            ex, hit = s.vcpu.run_preempted(OVERCOMMIT_AFTER)
            preempted += hit
        else:
            ex = s.vcpu.run()
        if not isinstance(ex, X.Io) or ex.port != SINK_PORT:
            s.fail(ex, f"wanted an OUT to port {SINK_PORT:#x}")
    return {"preemptions": preempted}


def _migrate(s, n, extra=True):
    """The vCPU thread moves to the other pCPU (and back the next time), then makes
    EXITS_PER_MIGRATION exits to userspace there. Without `extra`, it stays."""
    for _ in range(n):
        if extra:
            s.vcpu.migrate(s.other_cpu if s.vcpu.cpu == s.home_cpu else s.home_cpu)
        _run_sink(s, EXITS_PER_MIGRATION)
    return {}


# ---- the registry -------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    """A named workload. `start(machine)` gives a Session that runs iterations."""
    name: str
    summary: str
    primary: str                  # the event one iteration is made of
    method: str                   # "scale" or "extra" (module docstring)
    promises: tuple               # events it produces on every run
    program: object               # (asm, vendor) -> None
    iterate: object               # (session, n[, extra]) -> runner-side events
    default_n: int = 32
    needs: tuple = ()             # Machine attributes it depends on
    requires: object = None       # machine -> (ok, reason): what the loaded KVM must do

    def available(self, machine):
        """(ok, reason): whether this pykvm's Machine can run the workload."""
        missing = [n for n in self.needs if not hasattr(machine, n)]
        if missing:
            return False, f"needs Machine.{', Machine.'.join(missing)} (not in this pykvm)"
        if self.requires is not None:
            ok, why = self.requires(machine)
            if not ok:
                return False, why
        if self.method == "extra" and self.primary == "migrations" and machine.nr_cpus < 2:
            return False, "needs 2 pCPUs"
        return True, ""

    def image(self, vendor):
        """The guest image for `vendor` ("vmx", "svm")."""
        p = guest.Program()
        self.program(p.asm, vendor)
        img = p.build()
        img.msrs = dict(GUEST_MSRS)
        if "syscall_entry" in img.symbols:
            img.msrs[MSR_LSTAR] = img.symbols["syscall_entry"]
        return img

    def start(self, machine, cpu=None, warmup=2):
        """A VM with one vCPU whose thread runs on `cpu` (default: the last pCPU), the
        guest loaded and `warmup` iterations run (first VMLAUNCH/VMPTRLD and the like)."""
        ok, why = self.available(machine)
        if not ok:
            raise InvalidConfiguration(f"workload {self.name}: {why}")
        s = Session(self, machine, machine.nr_cpus - 1 if cpu is None else cpu)
        if warmup:
            s.run(warmup)
        return s


class Session:
    """One workload running on one machine: `run(n)` runs n iterations and returns the
    events (module docstring) that happened during the call."""

    def __init__(self, workload, machine, cpu):
        from .devkvm.runloop import PortDevices
        self.workload = workload
        self.machine = machine
        self.vendor = machine.vendor.name
        self.home_cpu = cpu
        self.other_cpu = (cpu + 1) % machine.nr_cpus
        self.vm = machine.create_vm()
        self.vcpu = self.vm.create_vcpu(cpu=cpu)
        self.image = workload.image(self.vendor)
        self.vcpu.load(self.image)
        self.devices = PortDevices()
        self.devices.add_sink(SINK_PORT)

    def run(self, n, extra=True):
        """n iterations (with the workload's host behaviour unless extra=False)."""
        if not isinstance(n, int) or n < 1:
            raise InvalidConfiguration(f"iterations must be an int >= 1, got {n!r}")
        before = self.vcpu.stats()
        if self.workload.method == "extra":
            mine = self.workload.iterate(self, n, extra)
        else:
            mine = self.workload.iterate(self, n) or {}
        after = self.vcpu.stats()
        d = {k: after[k] - before[k] for k in after}
        ev = dict.fromkeys(EVENTS, 0)
        ev.update(iterations=n, userspace_exits=d["userspace_exits"],
                  kernel_exits=d["exits"] - d["userspace_exits"],
                  fastpath_exits=d["fastpath_exits"], kvm_preemptions=d["preemptions"],
                  migrations=d["migrations"])
        ev.update(mine)
        return ev

    def fail(self, ex, wanted):
        """Raise for an unexpected exit; a guest assertion comes out with its message."""
        if isinstance(ex, X.Io) and ex.port == guest.UCALL_PORT:
            guest.get_ucall(self.vcpu, ex, self.image).check()
        raise WorkloadError(f"workload {self.workload.name} on {self.vendor}: {wanted}, got "
                            f"{guest.describe_exit(ex) if ex is not None else 'no exit'}")

    def __repr__(self):
        return f"<Session {self.workload.name} on {self.machine!r}, pCPU {self.vcpu.cpu}>"


def _hv_timer(machine):
    """The TSC-deadline fast path needs a hypervisor timer (kernel:
    handle_fastpath_set_tscdeadline -> kvm_can_use_hv_timer). SVM has none: there the
    WRMSR takes the full in-kernel exit path."""
    if machine.has_hv_timer:
        return True, ""
    return False, (f"{machine.vendor.name} has no hypervisor timer (VMX preemption timer): "
                   f"KVM handles WRMSR TSC_DEADLINE as a full in-kernel exit, no fast path")


def _w(name, summary, primary, method, promises, program, iterate, **kw):
    return Workload(name, summary, primary, method, tuple(promises), program, iterate, **kw)


WORKLOADS = {w.name: w for w in (
    _w("hlt", "HLT loop: every HLT exits to userspace (no in-kernel LAPIC)",
       "userspace_exits", "scale", ["userspace_exits"], _loop(_hlt), _run_python(X.Hlt)),
    _w("cpuid", "CPUID loop: exits handled in the kernel, one OUT per batch",
       "kernel_exits", "scale", ["kernel_exits", "userspace_exits"],
       _batched(_nothing, _cpuid), _run_batch),
    _w("vmcall", "VMCALL/VMMCALL loop: hypercalls handled in the kernel, one OUT per batch",
       "kernel_exits", "scale", ["kernel_exits", "userspace_exits"],
       _batched(_nothing, _vmcall), _run_batch),
    _w("pio", "OUT loop: port exits to userspace, answered by the C run loop",
       "userspace_exits", "scale", ["userspace_exits"], _loop(_out),
       lambda s, n: _run_sink(s, n), default_n=64),
    _w("mmio", "MMIO store loop: exits to userspace, answered from Python",
       "userspace_exits", "scale", ["userspace_exits"],
       lambda a, v: (_mmio_prologue(a, v), _loop(_mmio)(a, v)), _run_python(X.Mmio)),
    _w("fastpath", "WRMSR TSC_DEADLINE loop: the fast path, one OUT per batch",
       "fastpath_exits", "scale", ["fastpath_exits", "userspace_exits"],
       _batched(_tsc_deadline_prologue, _wrmsr), _run_batch, default_n=64,
       requires=_hv_timer),
    _w("guest-ctxsw", "the guest switches its own tasks (WRMSR KERNEL_GS_BASE, SWAPGS, "
       "SYSRETQ/SYSCALL), one OUT per batch", "guest_switches", "scale",
       ["guest_switches", "userspace_exits"], _batched(_ctxsw_prologue, _ctxsw),
       _counted("guest_switches")),
    _w("overcommit", "another task preempts the vCPU thread inside every KVM_RUN",
       "preemptions", "extra", ["preemptions", "userspace_exits"], _loop(_cpuid_out),
       _overcommit),
    _w("migrate", f"the vCPU thread moves between two pCPUs every {EXITS_PER_MIGRATION} "
       f"exits to userspace", "migrations", "extra", ["migrations", "userspace_exits"],
       _loop(_out), _migrate, default_n=16),
)}


def names():
    """Workload names, in the registry's order."""
    return list(WORKLOADS)


def get(name):
    """The workload called `name`."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise InvalidConfiguration(f"no workload {name!r}; known: {', '.join(WORKLOADS)}") \
            from None
