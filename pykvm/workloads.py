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
    halts             HLTs that halted the vCPU inside KVM (in-kernel LAPIC; KVM stat)
    halt_polls        of those, the ones halt-polling ended without scheduling out (KVM stat)
    msr_ioctls        KVM_GET_MSRS + KVM_SET_MSRS pairs the VMM made (counted by the runner)
    vcpu_creations    KVM_CREATE_VCPU calls, each followed by the new vCPU's first run

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

Each workload's docstring (`Workload.doc`) says what it models and which strategy
parameters it exercises; `pykvm.workloads.describe()` lists them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from . import exits as X
from . import guest
from .errors import InvalidConfiguration, PykvmError
from .guest import layout as L

__all__ = ["Workload", "Session", "WorkloadError", "WORKLOADS", "EVENTS", "get", "names",
           "describe", "GUEST_MSRS"]

MSR_STAR, MSR_LSTAR, MSR_SYSCALL_MASK = 0xC0000081, 0xC0000082, 0xC0000084
MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_TSC_AUX = 0xC0000101, 0xC0000102, 0xC0000103
MSR_TSC_DEADLINE = 0x6E0

SINK_PORT = 0xE1                  # OUT here: an exit to userspace the C loop answers
MMIO_ADDR = 0x4000_0000           # outside every memory slot: an MMIO exit
COUNT_ADDR = L.USER_DATA          # u32: batch size, written by the host before each batch
EXITS_PER_MIGRATION = 4           # migrate: exits to userspace on each pCPU between moves
GUEST_TSC_AUX = 7                 # getcpu() of "vCPU 7": no pCPU of a small host has it
GUEST_SYSCALL_MASK = 0x47700      # Linux's: TF|DF|IF|IOPL|AC|NT
GUEST_KERNEL_GS = 0xFFFF888000200000   # the guest kernel's per-cpu base (GS in kernel mode)
GUEST_TASK_GS = 0x00007F0000001000     # user GS base of guest task 0; task 1 is +0x1000
# What the guest's boot set up; LSTAR is replaced by the guest's own entry point.
GUEST_MSRS = {MSR_STAR: L.GUEST_STAR, MSR_LSTAR: L.CODE_START,
              MSR_SYSCALL_MASK: GUEST_SYSCALL_MASK, MSR_TSC_AUX: GUEST_TSC_AUX}

EVENTS = ("iterations", "userspace_exits", "kernel_exits", "fastpath_exits", "preemptions",
          "kvm_preemptions", "migrations", "guest_switches", "halts", "halt_polls",
          "msr_ioctls", "vcpu_creations")

MSR_EFER = 0xC0000080
EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = 1 << 0, 1 << 8, 1 << 10, 1 << 11
# halt-idle: the guest's own timer, armed this far ahead of each HLT (TSC ticks at the
# simulated 2.1 GHz): 1 ms, longer than halt polling's default window (200 us), so every
# halt schedules out and the pCPU idles.
HALT_IDLE_TSC = 2_100_000
# halt-idle's LAPIC set-up (x2APIC MSRs: 0x800 + register offset / 16).
MSR_APICBASE, APIC_BASE_EXTD = 0x1B, 1 << 10
X2APIC_SPIV, X2APIC_LVTT = 0x80F, 0x832
APIC_SPIV_APIC_ENABLED, SPURIOUS_VECTOR = 1 << 8, 0xFF
APIC_LVT_TIMER_TSCDEADLINE, LOCAL_TIMER_VECTOR = 2 << 17, 0xEC    # Linux's vectors
# halt-kick: another vCPU kicks this one every 25 us: within the polling window once it
# has grown (10, 20, 40 us), so upstream polls each halt to its end.
HALT_KICK_NS = 25_000
# The MSRs a debugger or migration reads and writes back between runs.
MSR_IOCTL_SET = (MSR_KERNEL_GS_BASE, MSR_STAR, MSR_LSTAR, MSR_SYSCALL_MASK, MSR_TSC_AUX,
                 MSR_EFER)


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


def _halt(a, vendor):
    a.hlt()                                   # in-kernel LAPIC: the vCPU halts in KVM


def _lapic_timer_prologue(a, vendor):
    """What a Linux guest's LAPIC set-up does before its first idle: x2APIC mode
    (IA32_APIC_BASE.EXTD), the APIC software-enabled (SPIV), and the LVT timer entry
    unmasked in TSC-deadline mode with the local timer vector (lapic_next_deadline's
    mode). Three in-kernel exits, once, before the loop."""
    a.mov("ecx", MSR_APICBASE)
    a.rdmsr()
    a.or_("eax", APIC_BASE_EXTD)
    a.wrmsr()
    a.mov("ecx", X2APIC_SPIV)
    a.mov("eax", APIC_SPIV_APIC_ENABLED | SPURIOUS_VECTOR)
    a.xor("edx", "edx")
    a.wrmsr()
    a.mov("ecx", X2APIC_LVTT)
    a.mov("eax", APIC_LVT_TIMER_TSCDEADLINE | LOCAL_TIMER_VECTOR)
    a.wrmsr()


def _timer_halt(a, vendor):
    """What a guest's idle loop does with a TSC-deadline LAPIC: arm the timer
    HALT_IDLE_TSC ahead (WRMSR TSC_DEADLINE, a fast-path exit), then HLT."""
    a.rdtsc()
    a.shl("rdx", 32)
    a.or_("rax", "rdx")
    a.mov("rdx", HALT_IDLE_TSC)
    a.add("rax", "rdx")
    a.mov("rdx", "rax")
    a.shr("rdx", 32)
    a.mov("ecx", MSR_TSC_DEADLINE)
    a.wrmsr()
    a.hlt()


def _efer_write_out(a, vendor):
    """The guest rewrites its EFER (an intercepted WRMSR, handled in the kernel with
    the guest state loaded), then makes a port exit to userspace."""
    a.mov("ecx", MSR_EFER)
    a.rdmsr()
    a.wrmsr()
    _out(a, vendor)


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
            # The other task is woken while the guest runs; the vCPU thread yields to it
            # at the reschedule point after the CPUID exit, with the guest state loaded.
            ex, hit = s.vcpu.run_rescheduled(by="task")
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


def _kthread(s, n, extra=True):
    """As _overcommit, but the task that preempts the vCPU thread is a kernel thread:
    nothing returns to user mode until the vCPU thread itself does."""
    preempted = 0
    for _ in range(n):
        if extra:
            ex, hit = s.vcpu.run_rescheduled(by="kthread")
            preempted += hit
        else:
            ex = s.vcpu.run()
        if not isinstance(ex, X.Io) or ex.port != SINK_PORT:
            s.fail(ex, f"wanted an OUT to port {SINK_PORT:#x}")
    return {"preemptions": preempted}


def _msr_ioctls(s, n, extra=True):
    """After each exit to userspace the VMM reads MSR_IOCTL_SET (KVM_GET_MSRS) and
    writes the values back (KVM_SET_MSRS). Without `extra`, the exits alone."""
    for _ in range(n):
        _run_sink(s, 1)
        if extra:
            got, values = s.vcpu.get_msrs(MSR_IOCTL_SET)
            if got != len(MSR_IOCTL_SET) or s.vcpu.set_msrs(values) != got:
                raise WorkloadError(f"workload {s.workload.name} on {s.vendor}: KVM_GET/SET_MSRS "
                                    f"stopped at {got} of {len(MSR_IOCTL_SET)} MSRs")
    return {"msr_ioctls": n if extra else 0}


def _hotplug(s, n):
    """n new vCPUs, each created in the session's VM (a fresh VM once it holds
    KVM_MAX_VCPUS), loaded with the guest and run to its first exit to userspace."""
    for _ in range(n):
        if len(s.vm.vcpus) >= _lib().KVM_MAX_VCPUS:
            s.vm = s.machine.create_vm()
        vcpu = s.vm.create_vcpu(cpu=s.home_cpu)
        vcpu.load(s.image)
        r = vcpu.run_loop(s.devices, max_exits=1)
        if r.exit is not None or r.handled != 1:
            s.fail(r.exit, f"wanted the new vCPU's OUT to port {SINK_PORT:#x}")
    return {"vcpu_creations": n}


def _lib():
    from ._lib import lib
    return lib


def _kick_every(ns):
    def setup(s):
        s.vcpu.kick_every(ns)
    return setup


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
    doc: str = ""                 # what it models, which parameters it exercises
    irqchip: bool = False         # the VM gets an in-kernel LAPIC (KVM_CREATE_IRQCHIP)
    efer: int | None = None       # the guest's EFER, if not the standard image's
    setup: object = None          # (session) -> None, once the guest is loaded
    settle: int = 0               # iterations run at start, before the warm-up, so
                                  # state that adapts (halt polling) is steady

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
        if self.efer is not None:
            img.sregs = replace(img.sregs, efer=self.efer)
        return img

    def start(self, machine, cpu=None, warmup=2):
        """A VM with one vCPU whose thread runs on `cpu` (default: the last pCPU), the
        guest loaded and `warmup` iterations run (first VMLAUNCH/VMPTRLD and the like)."""
        ok, why = self.available(machine)
        if not ok:
            raise InvalidConfiguration(f"workload {self.name}: {why}")
        s = Session(self, machine, machine.nr_cpus - 1 if cpu is None else cpu)
        if self.settle:
            s.run(self.settle)
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
        if workload.irqchip:
            self.vm.create_irqchip()
        self.vcpu = self.vm.create_vcpu(cpu=cpu)
        self.image = workload.image(self.vendor)
        self.vcpu.load(self.image)
        self.devices = PortDevices()
        self.devices.add_sink(SINK_PORT)
        if workload.setup is not None:
            workload.setup(self)

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
                  migrations=d["migrations"],
                  halts=d["halt_exits"] if self.workload.irqchip else 0,
                  halt_polls=d["halt_successful_poll"])
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
       "userspace_exits", "scale", ["userspace_exits"], _loop(_hlt), _run_python(X.Hlt),
       doc="""A guest whose every HLT is a round trip to a VMM that emulates the LAPIC
in userspace (no KVM_CREATE_IRQCHIP): M. Roth's Dec 2020 KVM_RUN timing loop. Exercises
the whole userspace round trip: vcpu_load/put, prepare_switch_to_guest, the user-return
MSRs (kvm_intel.user_return_msrs, kvm_amd.tsc_aux_user_return), the host state the put
restores (kvm_amd.vmsave_host_state, host_gs_wrgsbase, kernel.vmm_32bit_gs), and
kvm_intel.lightweight_exit / host_msrs_snapshot in the oldest eras."""),
    _w("cpuid", "CPUID loop: exits handled in the kernel, one OUT per batch",
       "kernel_exits", "scale", ["kernel_exits", "userspace_exits"],
       _batched(_nothing, _cpuid), _run_batch,
       doc="""kvm-unit-tests' vmexit cpuid: in-kernel exits with the guest state left
loaded between them. Exercises what runs on every exit: the vmenter path (SPEC_CTRL,
kernel.kernel_ibrs), and in the first releases the host state switched around every
entry and exit (kvm_intel.lightweight_exit, host_msrs_snapshot)."""),
    _w("vmcall", "VMCALL/VMMCALL loop: hypercalls handled in the kernel, one OUT per batch",
       "kernel_exits", "scale", ["kernel_exits", "userspace_exits"],
       _batched(_nothing, _vmcall), _run_batch,
       doc="""kvm-unit-tests' vmexit vmcall: in-kernel hypercall exits; as cpuid, with the
vendor's own hypercall instruction."""),
    _w("pio", "OUT loop: port exits to userspace, answered by the C run loop",
       "userspace_exits", "scale", ["userspace_exits"], _loop(_out),
       lambda s, n: _run_sink(s, n), default_n=64,
       doc="""kvm-unit-tests' inl_from_qemu: port I/O handled by the VMM. Exercises the
userspace round trip as hlt does (user-return MSRs, vcpu_put's restore, the ioctl's kernel
entry and exit: kernel.kernel_ibrs), answered in C."""),
    _w("mmio", "MMIO store loop: exits to userspace, answered from Python",
       "userspace_exits", "scale", ["userspace_exits"],
       lambda a, v: (_mmio_prologue(a, v), _loop(_mmio)(a, v)), _run_python(X.Mmio),
       doc="""An emulated device register written by the guest: an MMIO exit to userspace
per store. Exercises the same parameters as pio."""),
    _w("fastpath", "WRMSR TSC_DEADLINE loop: the fast path, one OUT per batch",
       "fastpath_exits", "scale", ["fastpath_exits", "userspace_exits"],
       _batched(_tsc_deadline_prologue, _wrmsr), _run_batch, default_n=64,
       doc="""A guest reprogramming its TSC-deadline timer (kvm-unit-tests'
tscdeadline_immed without the timer interrupt): exits handled with IRQs off and
re-entered without prepare/put. Exercises the vmenter path only, and in the first
releases (kvm_intel.lightweight_exit=0) a host-state switch around each of them.""",
       requires=_hv_timer),
    _w("guest-ctxsw", "the guest switches its own tasks (WRMSR KERNEL_GS_BASE, SWAPGS, "
       "SYSRETQ/SYSCALL), one OUT per batch", "guest_switches", "scale",
       ["guest_switches", "userspace_exits"], _batched(_ctxsw_prologue, _ctxsw),
       _counted("guest_switches"),
       doc="""A guest kernel switching between user tasks with their own GS bases: it
writes KERNEL_GS_BASE itself. Free of exits while the MSR bitmap passes KERNEL_GS_BASE
through; without it (kvm_intel.msr_bitmaps=0, 2.6.23 and older) every write exits, and
before 678e315e78a7 (kvm_intel.lazy_kernel_gs_base=0) each such exit puts the whole host
state back."""),
    _w("overcommit", "another task preempts the vCPU thread inside every KVM_RUN",
       "preemptions", "extra", ["preemptions", "userspace_exits"], _loop(_cpuid_out),
       _overcommit,
       doc="""An overcommitted pCPU: another user process preempts the vCPU thread with
the guest state loaded, and returns to user mode (so the user-return MSRs are restored
for it). Exercises kvm_sched_out/kvm_sched_in: vcpu_put and vcpu_load, the user-return
restore (kvm_intel.user_return_msrs, kvm_amd.tsc_aux_user_return), the put's restore of
host state (kvm_amd.vmsave_host_state, host_gs_wrgsbase, kernel.vmm_32bit_gs)."""),
    _w("migrate", f"the vCPU thread moves between two pCPUs every {EXITS_PER_MIGRATION} "
       f"exits to userspace", "migrations", "extra", ["migrations", "userspace_exits"],
       _loop(_out), _migrate, default_n=16,
       doc="""The scheduler moving the vCPU thread to another pCPU: the VMCS follows it
(VMCLEAR there, VMPTRLD here, the per-CPU host fields rewritten; kvm_intel.
forget_host_tr_base and forget_host_sysenter_esp are what a bug there looks like)."""),
    _w("kthread", "a kernel thread preempts the vCPU thread inside every KVM_RUN",
       "preemptions", "extra", ["preemptions", "kvm_preemptions", "userspace_exits"],
       _loop(_cpuid_out), _kthread,
       doc="""The vCPU thread preempted, with the guest state loaded, by a kernel thread
(a kworker running a work item), which never returns to user mode: vcpu_put and
vcpu_load still run (kvm_sched_out/in), but the user-return MSRs stay the guest's, so
upstream writes none of them again. Before 26bb0981b3ff (kvm_intel.user_return_msrs=0)
the put restores them and the next entry loads them again: the "vcpu/idle/vcpu switch"
the 2009 commit made ~2,000 cycles cheaper. Also exercises kvm_amd.vmsave_host_state,
tsc_aux_user_return, host_gs_wrgsbase, kernel.vmm_32bit_gs."""),
    _w("halt-idle", "the guest arms its TSC-deadline timer 1 ms ahead and halts: the vCPU "
       "blocks and the pCPU idles until the timer", "halts", "scale",
       ["halts", "userspace_exits"], _batched(_lapic_timer_prologue, _timer_halt),
       _run_batch, irqchip=True, default_n=16, needs=("cpu_tsc",),
       doc="""An idle guest with an in-kernel LAPIC, set up as Linux sets it up (x2APIC
mode, the LVT timer in TSC-deadline mode): its idle loop programs the TSC-deadline timer
1 ms ahead and executes HLT. KVM halts the vCPU (kvm_vcpu_halt): the
wait is longer than kvm.halt_poll_ns allows, so it blocks (kvm_vcpu_block): the thread
schedules out to the pCPU's idle task (vcpu_put; no return to user mode), the timer moved
to a host hrtimer wakes it, it schedules back in (vcpu_load) and re-enters. Exercises
the vcpu -> idle -> vcpu switch: kvm_intel.user_return_msrs (26bb0981b3ff: "Improves
vcpu/idle/vcpu switches by about 2000 cycles"), the put/load of host state
(kvm_amd.vmsave_host_state, tsc_aux_user_return, host_gs_wrgsbase, kernel.vmm_32bit_gs),
and the fast path of the timer write (VMX only: SVM has no hypervisor timer, so there
the write is an ordinary in-kernel exit)."""),
    _w("halt-kick", f"halts woken by another vCPU's kick every {HALT_KICK_NS // 1000} us: "
       "halt polling catches them", "halts", "scale", ["halts", "halt_polls", "userspace_exits"],
       _batched(_nothing, _halt), _run_batch, irqchip=True, default_n=16, settle=8,
       setup=_kick_every(HALT_KICK_NS), needs=("cpu_tsc",),
       doc=f"""A vCPU that waits for another one (a paravirtual spinlock, a producer and
its consumer): it halts in KVM and another vCPU on another pCPU kicks it
(KVM_HC_KICK_CPU) {HALT_KICK_NS // 1000} us later. Upstream polls for the kick
(kvm.halt_poll_ns, with the per-vCPU window grown from 10 us by kvm_main.c's
grow_halt_poll_ns) and re-enters without scheduling out: no vcpu_put, no context switch.
With kvm.halt_poll_ns=0 every halt blocks, puts the vCPU and idles the pCPU, as in
halt-idle. The kicking vCPU's own exits are not simulated."""),
    _w("efer", "a guest with EFER.SCE clear (the host has it set) rewrites EFER, then "
       "exits to userspace", "userspace_exits", "scale", ["userspace_exits", "kernel_exits"],
       _loop(lambda a, v: (a.mov("eax", EFER_LME | EFER_LMA | EFER_NX), a.xor("edx", "edx"),
                           a.mov("ecx", MSR_EFER), a.wrmsr(), _out(a, v))),
       lambda s, n: _run_sink(s, n), efer=EFER_LME | EFER_LMA | EFER_NX,
       doc="""A 64-bit guest that does not use SYSCALL (EFER.SCE clear, a bit KVM must
switch in long mode) and writes its EFER at run time, then makes a port exit to
userspace. Exercises kvm_intel.efer_load_controls (EFER through the VMCS load-EFER
controls, or through the user-return MSRs: a WRMSR on entry and one on the return to
user mode) and kvm_intel.lazy_kernel_gs_base (before 678e315e78a7 vmx_set_efer put the
whole host state back on every EFER write: "Force kernel_gs_base reloading before EFER
changes"). No SYSCALL MSRs are switched for this guest."""),
    _w("msr-ioctl", "after each exit to userspace the VMM reads and writes back six MSRs "
       "with KVM_GET/SET_MSRS", "msr_ioctls", "extra", ["msr_ioctls", "userspace_exits"],
       _loop(_out), _msr_ioctls, default_n=16,
       doc="""A VMM that reads the guest's MSRs between runs and writes them back (a
debugger polling KERNEL_GS_BASE, migration saving and restoring state: QEMU does both on
the vCPU thread): KVM_GET_MSRS and KVM_SET_MSRS of KERNEL_GS_BASE, STAR, LSTAR,
SYSCALL_MASK, TSC_AUX and EFER, each ioctl a vcpu_load/vcpu_put without
prepare_switch_to_guest. Exercises how KVM writes a host-initiated MSR: through the
user-return MSRs (a WRMSR now and a restore at the ioctl's return;
kvm_intel.user_return_msrs, kvm_amd.tsc_aux_user_return) and EFER's VMCS controls
(kvm_intel.efer_load_controls). kvm_intel.lazy_kernel_gs_base has nothing to do here:
vcpu_put has already put the host state back, so the accessors read the cache either
way."""),
    _w("vcpu-hotplug", "a new vCPU is created (KVM_CREATE_VCPU), loaded and run to its "
       "first exit", "vcpu_creations", "scale", ["vcpu_creations"], _loop(_out), _hotplug,
       default_n=4,
       doc="""vCPU hotplug (or VM start-up): KVM_CREATE_VCPU, the VMM's register and MSR
set-up, and the new vCPU's first KVM_RUN. Exercises vcpu_create / vcpu_reset:
vmx_set_constant_host_state's HOST_IDTR_BASE (kvm_intel.global_host_idt: the IDT base
read once at setup, 2342080cd675, or by SIDT per vCPU), the first VMPTRLD and VMLAUNCH,
the IBPB when a different vCPU last ran on the pCPU."""),
)}


def describe():
    """{name: doc} of every workload: what it models, what it exercises."""
    return {name: w.doc for name, w in WORKLOADS.items()}


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
