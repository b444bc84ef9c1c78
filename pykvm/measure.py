"""`pykvm profile measure`: a cost profile of this host, measured through its /dev/kvm.

Guest micro-benchmarks run on the host's real KVM (pykvm.devkvm, guest code built with
pykvm.guest): a loop of K iterations of one operation between two RDTSCs, handed back to
the host with a port exit after each batch, which the host times too
(time.perf_counter_ns around the C run loop). Operations:

- instructions a guest runs without exiting on VMX/SVM hosts: RDMSR/WRMSR of the MSRs the
  host lets the guest read or write (probed first: one that faults is left out), SWAPGS,
  RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE, LFENCE, MOV to a segment register and to CR2,
  SIDT/LIDT/LGDT, the kernel's RSB-filling sequence, RDTSCP (probed: unsupported on some
  hosts, then reported as such);
- round trips: CPUID and VMCALL/VMMCALL (handled in the kernel), HLT and OUT (exits to
  userspace; OUT answered by the C run loop, and once more by a Python loop like HLT's).

Each benchmark runs at two loop lengths (so the fixed cost of a batch drops out) until its
median is stable: after every batch the order-statistic 95% interval of the median is
computed, and it stops once that interval is within `rel_ci` of the median (or at
`max_samples`, or when its share of the time budget is spent; the profile says which).

Every measurement is a linear equation in unknown costs: an instruction benchmark is its
operation plus the loop's own guest instructions (op.GUEST_INSN); a round trip is what
pykvm's model executes for that exit (the per-event operation counts of the matching
workload on the simulated vendor, pykvm.study.measure), plus nuisance terms (the batch's
fixed cost, the Python loop's per-run cost). The unknowns are solved with non-negative
least squares (scipy.optimize.nnls); a singular-value decomposition of the design says
which unknowns the measurements identify and which only in combination (they always occur
together); those are split as the base profile splits them and graded `estimate`.
Figures no measurement touches fall back to the base profile, marked as such.

    from pykvm import measure
    result = measure.measure_host(budget=60)
    result.write_profile("measured.toml")          # loads with pykvm.profiles.load_profile

The profile says what it measured: CPU, KVM module (kvm_intel, kvm_amd or kvm_pvm), kernel,
date, TSC frequency, and per figure its samples and spread. On a software KVM (kvm_pvm)
every guest instruction is emulated, so its figures describe that module, not the CPU.
"""
from __future__ import annotations

import datetime
import errno
import json
import os
import platform
import signal
import struct
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import exits as X
from . import guest
from .errors import InvalidConfiguration, KvmIoctlError, PykvmError
from .guest import qword

__all__ = ["Bench", "Measurement", "Solution", "MeasureResult", "HostInfo", "host_info",
           "benches", "measure_host", "solve", "median_ci", "NUISANCE", "MeasureError"]

K_ADDR = guest.USER_DATA                   # u32: iterations per batch, set by the host
SAMPLE_ADDR = guest.USER_DATA + 8          # u64: TSC cycles of the batch's loop
PROBE_ADDR = guest.USER_DATA + 0x100       # MSR probe results: (rd vector, wr vector) x n
BODY_PORT = 0xE2                           # the OUT being measured (answered in C)
END_PORT = 0xE3                            # end of a batch: no device, back to Python
WATCHDOG_S = 1.0                           # a batch making no progress for this long
TARGET_BATCH_CYCLES = 400_000              # loop length aimed at per batch
MIN_SAMPLES = 8

# Unknowns that are not profile figures: the fixed cost of one batch as each clock sees
# it, the Python loop's own cost per KVM_RUN, RDTSCP (no profile key prices it).
NUISANCE = ("guest.batch_fixed[BENCH]", "host.batch_fixed[BENCH]", "host.python_per_run",
            "insn.RDTSCP")

MSR_FS_BASE, MSR_GS_BASE = 0xC0000100, 0xC0000101
# MSRs written back with their own value: harmless to the guest and the host. The others
# (APICBASE, MISC_ENABLE, VM_HSAVE_PA, DEBUGCTL, TSC_DEADLINE, ...) are only read.
_WRITABLE = {"EFER", "STAR", "LSTAR", "CSTAR", "SYSCALL_MASK", "KERNEL_GS_BASE", "TSC_AUX",
             "SPEC_CTRL", "SYSENTER_CS", "SYSENTER_ESP", "SYSENTER_EIP", "PAT", "FS_BASE",
             "GS_BASE"}


class MeasureError(PykvmError, RuntimeError):
    """A measurement that could not be made; says which and why."""


# ---- the host -----------------------------------------------------------------------

@dataclass
class HostInfo:
    cpu: str                 # /proc/cpuinfo model name
    cpu_vendor: str          # "intel" | "amd"
    mhz: float | None        # /proc/cpuinfo "cpu MHz" (a hint; the TSC is calibrated)
    kvm_module: str          # kvm_intel | kvm_amd | kvm_pvm | unknown
    kvm_modules: tuple
    kernel: str              # uname release
    machine: str
    date: str                # ISO date of the measurement

    @property
    def software_kvm(self):
        return self.kvm_module == "kvm_pvm"


def _cpuinfo(path="/proc/cpuinfo"):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, sep, v = line.partition(":")
                if not sep:
                    if out:
                        break           # the first processor is enough
                    continue
                out.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    return out


def host_info(cpuinfo_path="/proc/cpuinfo"):
    """What this host is: CPU (from /proc/cpuinfo), KVM module, kernel, today's date."""
    from .devkvm import vendor_modules
    ci = _cpuinfo(cpuinfo_path)
    vid = ci.get("vendor_id", "")
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "amd"}.get(vid)
    if vendor is None:
        raise MeasureError(f"{cpuinfo_path}: vendor_id {vid or '(none)'} is neither Intel "
                           f"nor AMD; pykvm's profiles price one of the two")
    try:
        mhz = float(ci["cpu MHz"])
    except (KeyError, ValueError):
        mhz = None
    mods = vendor_modules()
    return HostInfo(cpu=ci.get("model name", "unknown"), cpu_vendor=vendor, mhz=mhz,
                    kvm_module=mods[0] if mods else "unknown", kvm_modules=tuple(mods),
                    kernel=platform.release(), machine=platform.machine(),
                    date=datetime.date.today().isoformat())


# ---- benchmarks ---------------------------------------------------------------------

@dataclass(frozen=True)
class Bench:
    """One guest micro-benchmark. Per loop iteration it costs `terms` (column ->
    coefficient) plus `guest_insns` plain guest instructions (the loop's DEC/JNZ included),
    plus, for a round trip, what the model's `workload` executes per event."""
    name: str
    kind: str                     # "insn", "rdmsr", "wrmsr", "exit"
    body: object                  # (asm) -> None: one iteration's operation
    prologue: object = None       # (asm) -> None, before the timed loop
    terms: tuple = ()             # ((column, coefficient), ...)
    guest_insns: int = 2
    workload: str | None = None   # round trips: the model workload of one iteration
    driver: str = "c"             # "c": the C run loop; "python": a Python KVM_RUN loop
    probe: bool = False           # may be unsupported: probe it first
    msr: int | None = None

    def terms_dict(self):
        return dict(self.terms)


def _load_msr(index):
    def pro(a):
        a.mov("ecx", index)
        a.rdmsr()                 # EDX:EAX = the current value, written back as is
    return pro


def _rsb_fill(a):
    """The kernel's return-stack-buffer fill on VM exit (__FILL_RETURN_BUFFER, x86_64,
    RSB_CLEAR_LOOPS = 32: 16 rounds of two CALLs, each over a speculation trap, then the
    stack put back; an LFENCE at the end), written out again here."""
    a.mov("eax", 16)
    top = a.here()
    c1, c2 = a.label(), a.label()
    a.call(c1)
    a.int3()
    a.bind(c1)
    a.call(c2)
    a.int3()
    a.bind(c2)
    a.add("rsp", 16)
    a.dec("eax")
    a.jnz(top)
    a.lfence()


def _desc_ptr(store):
    def pro(a):
        a.emit(store, guest.mem(guest.USER_DATA + 0x80))   # SIDT/SGDT: reload the same
    return pro


def _insn_benches():
    K = guest.KERNEL_DS
    return [
        Bench("loop", "insn", lambda a: None),
        Bench("swapgs", "insn", lambda a: a.swapgs(), terms=(("op.SWAPGS", 1),)),
        Bench("rdfsbase", "insn", lambda a: a.rdfsbase("rax"), terms=(("op.RDFSBASE", 1),)),
        Bench("rdgsbase", "insn", lambda a: a.rdgsbase("rax"), terms=(("op.RDGSBASE", 1),)),
        Bench("wrfsbase", "insn", lambda a: a.wrfsbase("rbx"),
              prologue=lambda a: a.rdfsbase("rbx"), terms=(("op.WRFSBASE", 1),)),
        Bench("wrgsbase", "insn", lambda a: a.wrgsbase("rbx"),
              prologue=lambda a: a.rdgsbase("rbx"), terms=(("op.WRGSBASE", 1),)),
        Bench("lfence", "insn", lambda a: a.lfence(), terms=(("op.LFENCE", 1),)),
        Bench("mov_sreg", "insn", lambda a: a.mov("ds", "eax"),
              prologue=lambda a: a.mov("eax", K), terms=(("op.MOV_SREG", 1),)),
        Bench("mov_cr2", "insn", lambda a: a.mov("cr2", "rax"),
              prologue=lambda a: a.xor("eax", "eax"), terms=(("op.MOV_TO_CR", 1),)),
        Bench("sidt", "insn", lambda a: a.sidt(guest.mem(guest.USER_DATA + 0x80)),
              terms=(("op.SIDT", 1),)),
        Bench("lidt", "insn", lambda a: a.lidt(guest.mem(guest.USER_DATA + 0x80)),
              prologue=_desc_ptr("sidt"), terms=(("op.LIDT", 1),)),
        Bench("lgdt", "insn", lambda a: a.lgdt(guest.mem(guest.USER_DATA + 0x80)),
              prologue=_desc_ptr("sgdt"), terms=(("op.LGDT", 1),)),
        # MOV EAX + 16 x (2 CALL, ADD, DEC, JNZ) + LFENCE: the sequence is the figure.
        Bench("rsb_fill", "insn", _rsb_fill, terms=(("op.RSB_FILL", 1),)),
        Bench("rdtscp", "insn", lambda a: a.rdtscp(), terms=(("insn.RDTSCP", 1),),
              probe=True),
    ]


def _exit_benches(hypercall):
    return [
        Bench("cpuid", "exit", lambda a: (a.xor("eax", "eax"), a.cpuid()), guest_insns=3,
              workload="cpuid"),
        Bench(hypercall, "exit", lambda a: (a.xor("eax", "eax"), getattr(a, hypercall)()),
              guest_insns=3, workload="vmcall", probe=True),
        Bench("out", "exit", lambda a: a.out(BODY_PORT, "al"), workload="pio"),
        Bench("out_python", "exit", lambda a: a.out(BODY_PORT, "al"), workload="pio",
              driver="python", terms=(("host.python_per_run", 1),)),
        Bench("hlt", "exit", lambda a: a.hlt(), workload="hlt", driver="python",
              terms=(("host.python_per_run", 1),)),
    ]


def msr_candidates():
    """[(name, index, writable)]: the model's MSR slots, and FS/GS base (priced by the
    op.RDMSR/op.WRMSR default, as every MSR without a slot)."""
    from ._lib import MSR_SLOTS
    out = [(n, i, n in _WRITABLE) for n, i in MSR_SLOTS]
    out += [("FS_BASE", MSR_FS_BASE, True), ("GS_BASE", MSR_GS_BASE, True)]
    return out


def _msr_column(verb, name):
    from ._lib import MSR_SLOTS
    slots = {n for n, _ in MSR_SLOTS}
    return f"{verb}.{name}" if name in slots else f"op.{verb.upper()}"


def _msr_benches(probed):
    out = []
    for name, index, rd_ok, wr_ok in probed:
        if rd_ok:
            out.append(Bench(f"rdmsr.{name}", "rdmsr", lambda a: a.rdmsr(),
                             prologue=lambda a, i=index: a.mov("ecx", i),
                             terms=((_msr_column("rdmsr", name), 1),), msr=index))
        if wr_ok:
            out.append(Bench(f"wrmsr.{name}", "wrmsr", lambda a: a.wrmsr(),
                             prologue=_load_msr(index),
                             terms=((_msr_column("wrmsr", name), 1),), msr=index))
    return out


def hypercall_for(info):
    """The hypercall instruction of the host's KVM: VMMCALL on AMD, VMCALL on Intel."""
    return "vmmcall" if info.cpu_vendor == "amd" else "vmcall"


def benches(info, probed_msrs=()):
    """Every benchmark for this host, instructions first."""
    return _insn_benches() + _msr_benches(probed_msrs) + _exit_benches(hypercall_for(info))


# ---- guest programs -----------------------------------------------------------------

def _rdtsc_to(a, reg):
    a.rdtsc()
    a.shl("rdx", 32)
    a.or_("rax", "rdx")
    if reg != "rax":
        a.mov(reg, "rax")


def bench_image(b):
    """The guest of one benchmark: prologue, then forever: read K, RDTSC, K iterations of
    the body, RDTSC, store the difference, OUT END_PORT (the batch is over)."""
    def program(a):
        if b.prologue:
            b.prologue(a)
        top = a.here("top")
        a.mov("r13d", guest.dword(K_ADDR))
        _rdtsc_to(a, "r8")
        loop = a.here("loop")
        b.body(a)
        a.dec("r13d")
        a.jnz(loop)
        _rdtsc_to(a, "rax")
        a.sub("rax", "r8")
        a.mov(qword(SAMPLE_ADDR), "rax")
        a.out(END_PORT, "al")
        a.jmp(top)
    return guest.program(program)


def probe_image(cands):
    """RDMSR each candidate, and WRMSR the value back where allowed, faults caught; the
    vectors land at PROBE_ADDR (rd, wr) per candidate."""
    def program(a):
        for i, (_name, index, writable) in enumerate(cands):
            a.rdmsr_safe(index)
            a.mov(qword(PROBE_ADDR + 16 * i), guest.SAFE_VECTOR_REG)
            a.mov(qword(PROBE_ADDR + 16 * i + 8), guest.NO_VECTOR + 1)
            if writable:
                skip = a.label()
                a.cmp(guest.SAFE_VECTOR_REG, guest.NO_VECTOR)
                a.jne(skip)
                a.wrmsr_safe()
                a.mov(qword(PROBE_ADDR + 16 * i + 8), guest.SAFE_VECTOR_REG)
                a.bind(skip)
                a.nop()
        a.out(END_PORT, "al")
        a.hlt()
    return guest.program(program)


# ---- running on /dev/kvm ------------------------------------------------------------

class _Watchdog:
    """Interrupts a KVM_RUN that makes no progress: SIGALRM after `seconds` (KVM_RUN
    returns EINTR). Only in the main thread (where Python delivers signals); elsewhere a
    stuck guest would block, so benchmarks that need it are skipped there."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.usable = threading.current_thread() is threading.main_thread()
        self._old = None

    def __enter__(self):
        if self.usable:
            self._old = signal.signal(signal.SIGALRM, lambda *a: None)
            self.arm()
        return self

    def arm(self):
        """Start the countdown again (before each batch)."""
        if self.usable:
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        if self.usable:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


class _Runner:
    """One benchmark's VM and vCPU; `batch(K)` runs one batch and returns
    (guest TSC cycles of the loop, host ns around the run loop)."""

    def __init__(self, machine, b):
        from .devkvm import PortDevices
        self.b = b
        self.vm = machine.create_vm()
        self.vcpu = self.vm.create_vcpu()
        self.image = bench_image(b)
        self.vcpu.load(self.image)
        self.devs = PortDevices()
        self.devs.add_sink(BODY_PORT)
        self._lib = self.vcpu._lib
        self._fd = self.vcpu.fd

    def close(self):
        self.vm.close()

    def _describe(self, ex):
        return guest.describe_exit(ex) if ex is not None else "no exit"

    def batch(self, k, watchdog=None):
        mem = self.vm.memory
        mem.write(K_ADDR, struct.pack("<I", k))
        if watchdog is not None:
            watchdog.arm()
        if self.b.driver == "c":
            t0 = time.perf_counter_ns()
            r = self.vcpu.run_loop(self.devs, max_exits=0)
            t1 = time.perf_counter_ns()
            ex = r.exit
        else:
            t0 = time.perf_counter_ns()
            ex = self._python_loop()
            t1 = time.perf_counter_ns()
        if not (isinstance(ex, X.Io) and ex.port == END_PORT):
            if isinstance(ex, X.Intr) and watchdog is not None and watchdog.usable:
                rip = self.vcpu.get_regs().rip
                raise MeasureError(f"{self.b.name}: the guest made no progress in "
                                   f"{watchdog.seconds:g} s (RIP {rip:#x})")
            what = self._describe(ex)
            if isinstance(ex, X.Io) and ex.port == guest.UCALL_PORT:
                try:
                    what = str(guest.get_ucall(self.vcpu, ex, self.image))
                except PykvmError as e:          # the guest's report, as an error
                    what = str(e)
            raise MeasureError(f"{self.b.name}: wanted the batch's OUT to port "
                               f"{END_PORT:#x}, got {what}")
        return struct.unpack("<Q", mem.read(SAMPLE_ADDR, 8))[0], t1 - t0

    def _python_loop(self):
        """KVM_RUN from Python, one cffi call per run, HLT and OUT BODY_PORT taken and
        re-entered; returns the first other exit (typed)."""
        lib, fd, run = self._lib, self._fd, self.vcpu._run
        hlt, io = X.KVM_EXIT_HLT, X.KVM_EXIT_IO
        unpack = struct.unpack_from
        while True:
            rc = lib.pk_vmm_kvm_run(fd)
            if rc < 0:
                if rc == -errno.EINTR:
                    return X.Intr()
                raise KvmIoctlError(-rc, f"{self.b.name}: KVM_RUN")
            reason = unpack("<I", run, 8)[0]
            if reason == hlt:
                continue
            if reason == io and unpack("<H", run, 34)[0] == BODY_PORT:
                continue
            return self.vcpu._decode_exit()


def median_ci(samples, z=1.96):
    """(median, lo, hi): the sample median and the order-statistic ~95% interval of the
    population median (ranks n/2 -+ z*sqrt(n)/2, clamped)."""
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        raise ValueError("no samples")
    med = float(np.median(x))
    h = z * np.sqrt(n) / 2
    lo = int(max(0, np.floor(n / 2 - h)))
    hi = int(min(n - 1, np.ceil(n / 2 + h) - 1))
    return med, float(x[lo]), float(x[hi])


@dataclass
class Measurement:
    """One benchmark at one loop length: per-batch samples of both clocks."""
    bench: str
    k: int
    guest_cycles: list = field(default_factory=list)   # TSC cycles per batch
    host_ns: list = field(default_factory=list)        # ns per batch
    stop: str = ""                                     # why sampling stopped

    def per_iter(self, which="guest", tsc_ghz=None):
        """(median, lo, hi) per iteration, in TSC cycles."""
        xs = self.guest_cycles if which == "guest" else [
            ns * tsc_ghz for ns in self.host_ns]
        med, lo, hi = median_ci(xs)
        return med / self.k, lo / self.k, hi / self.k

    def settled(self, rel_ci):
        if len(self.guest_cycles) < MIN_SAMPLES:
            return False
        for xs in (self.guest_cycles, self.host_ns):
            med, lo, hi = median_ci(xs)
            if med <= 0 or (hi - lo) / 2 > rel_ci * med:
                return False
        return True


def _probe_msrs(machine, watchdog_s):
    cands = msr_candidates()
    vm = machine.create_vm()
    try:
        vcpu = vm.create_vcpu()
        vcpu.load(probe_image(cands))
        with _Watchdog(watchdog_s):
            ex = vcpu.run_loop(None, max_exits=0).exit
        if not (isinstance(ex, X.Io) and ex.port == END_PORT):
            raise MeasureError(f"MSR probe: wanted the OUT to port {END_PORT:#x}, got "
                               f"{guest.describe_exit(ex) if ex else 'no exit'}")
        raw = vm.memory.read(PROBE_ADDR, 16 * len(cands))
    finally:
        vm.close()
    out = []
    for i, (name, index, _w) in enumerate(cands):
        rd, wr = struct.unpack_from("<QQ", raw, 16 * i)
        out.append((name, index, rd == guest.NO_VECTOR, wr == guest.NO_VECTOR))
    return out


def _plan_k(per_iter_cycles):
    k = int(TARGET_BATCH_CYCLES / max(per_iter_cycles, 1.0))
    return max(2, min(k, 200_000))


def run_benches(machine, bench_list, budget=60.0, rel_ci=0.02, max_samples=200,
                progress=None, watchdog_s=WATCHDOG_S):
    """Measurements of every benchmark at two loop lengths, and {bench: why} for those
    that could not run. progress(done, total, what) after each batch."""
    per_bench = budget / max(1, len(bench_list))
    total = len(bench_list) * 2 * max_samples
    done = 0
    results, unsupported = [], {}
    for b in bench_list:
        try:
            r = _Runner(machine, b)
        except PykvmError as e:
            unsupported[b.name] = f"could not start: {e}"
            total -= 2 * max_samples
            continue
        wd = _Watchdog(watchdog_s)
        try:
            wd.__enter__()
            try:
                if b.probe and not wd.usable:
                    raise MeasureError(f"{b.name}: may hang this host's KVM and no "
                                       f"watchdog is possible outside the main thread")
                g, _ = r.batch(2, wd)          # warm-up, and the probe of what may hang
                g, _ = r.batch(4, wd)
            except MeasureError as e:
                unsupported[b.name] = str(e)
                total -= 2 * max_samples
                continue
            k1 = _plan_k(g / 4)
            t_end = time.monotonic() + per_bench
            for k in (k1, 2 * k1):
                m = Measurement(b.name, k)
                t_k = time.monotonic() + max(0.0, (t_end - time.monotonic()) / 2)
                while True:
                    gc, ns = r.batch(k, wd)
                    m.guest_cycles.append(gc)
                    m.host_ns.append(ns)
                    done += 1
                    if progress:
                        progress(done, total, f"{b.name} K={k}")
                    n = len(m.guest_cycles)
                    if m.settled(rel_ci):
                        m.stop = f"settled: median within +-{100 * rel_ci:g}% (95%) " \
                                 f"after {n} batches"
                    elif n >= max_samples:
                        m.stop = f"not settled: {max_samples} batches taken"
                    elif time.monotonic() >= t_k and n >= MIN_SAMPLES:
                        m.stop = f"not settled: its time budget spent after {n} batches"
                    if m.stop:
                        total -= max_samples - n
                        break
                results.append(m)
        finally:
            wd.__exit__()
            r.close()
    return results, unsupported


def calibrate_tsc(measurements):
    """GHz of the guest's TSC against the host's clock: a robust (Theil-Sen) fit of host
    ns against guest cycles over every batch; the batch's fixed cost is the intercept."""
    from scipy.stats import theilslopes
    g = np.concatenate([np.asarray(m.guest_cycles, float) for m in measurements])
    h = np.concatenate([np.asarray(m.host_ns, float) for m in measurements])
    if len(g) > 1500:                    # Theil-Sen is quadratic: an even subsample
        idx = np.linspace(0, len(g) - 1, 1500).astype(int)
        g, h = g[idx], h[idx]
    if len(g) < 3 or np.ptp(g) == 0:
        raise MeasureError("cannot calibrate the TSC: too few batches of different lengths")
    slope, intercept, lo, hi = theilslopes(h, g)
    return 1.0 / slope, intercept, (1.0 / hi if hi > 0 else None, 1.0 / lo if lo > 0 else None)


# ---- the equations ------------------------------------------------------------------

def model_terms(variant, workload, base):
    """{column: count per event} of `workload` on the simulated `variant`, priced as
    Profile.attribute prices it: a per-MSR column where `base` has one, else the op."""
    from . import study
    row = study.measure(variant, workload, base)
    if row.skipped:
        raise MeasureError(f"model row {variant} {workload}: {row.skipped}")
    out = {}
    for p, ops in row.path_ops.items():
        ops = dict(ops)
        for key, n in row.path_msrs.get(p, {}).items():
            verb, msr = key.split(" ", 1)
            ops[verb] = ops.get(verb, 0) - n
            e = base.pricing_entry(verb, msr)
            col = e.key if e is not None else f"op.{verb}"
            out[col] = out.get(col, 0) + n
        for op, n in ops.items():
            if n:
                e = base.pricing_entry(op)
                col = e.key if e is not None else f"op.{op}"
                out[col] = out.get(col, 0) + n
    return {k: v for k, v in out.items() if abs(v) > 1e-12}


@dataclass
class Equation:
    """One row: `value` (cycles per iteration) = sum(coef * unknown), with `sigma`."""
    name: str
    clock: str                # "guest" | "host"
    value: float
    sigma: float
    coefs: dict


def equations(measurements, bench_list, tsc_ghz, variant, base, exit_threshold=0.5,
              software_kvm=False):
    """Rows for the solver, and the instruction benchmarks left out ({bench: why}):
    those that exit on this host, and on a software KVM (kvm_pvm) all but the loop, whose
    guest instructions are emulated there while the host's switch path runs natively."""
    by = {b.name: b for b in bench_list}
    model = {}
    for b in bench_list:
        if b.workload and b.workload not in model:
            model[b.workload] = model_terms(variant, b.workload, base)
    # An "instruction" that costs as much as half a CPUID round trip (each net of its
    # loop's plain guest instructions) exits to the host here: its figure would be a
    # round trip's, not the instruction's. (On kvm_pvm the guest kernel runs
    # deprivileged, so every privileged instruction traps.)
    def per_iter(name):
        """Per iteration, the batch's fixed cost taken out: the difference of its two
        loop lengths (the longest alone if it has one)."""
        ms = sorted((m for m in measurements if m.bench == name), key=lambda m: m.k)
        if not ms:
            return None
        if len(ms) == 1 or ms[-1].k == ms[0].k:
            return ms[-1].per_iter()[0]
        a, b = ms[0], ms[-1]
        return (b.per_iter()[0] * b.k - a.per_iter()[0] * a.k) / (b.k - a.k)
    loop = per_iter("loop")
    g = loop / 2 if loop is not None else 0.0
    cpuid = per_iter("cpuid")
    cpuid_own = cpuid - by["cpuid"].guest_insns * g if cpuid is not None else None
    left_out, rows = {}, []
    for m in measurements:
        b = by[m.bench]
        coefs = dict(b.terms_dict())
        coefs["op.GUEST_INSN"] = coefs.get("op.GUEST_INSN", 0) + b.guest_insns
        if b.workload:
            for k, v in model[b.workload].items():
                coefs[k] = coefs.get(k, 0) + v
        elif software_kvm and b.name != "loop":
            left_out[b.name] = ("a software KVM emulates the guest's instruction: its "
                                f"{per_iter(b.name) - b.guest_insns * g:,.0f} cycles are "
                                "the emulator's, not what the host's switch path pays")
            continue
        elif cpuid_own and b.name not in ("loop", "rsb_fill"):
            own = per_iter(b.name) - b.guest_insns * g
            if own > exit_threshold * cpuid_own:
                left_out[b.name] = (f"{own:,.0f} cycles net of the loop, as much as "
                                    f"{own / cpuid_own:.1f} x a CPUID round trip "
                                    f"({cpuid_own:,.0f}): it exits to the host here")
                continue
        for clock in ("guest", "host"):
            med, lo, hi = m.per_iter(clock, tsc_ghz)
            c = dict(coefs)
            # Each benchmark's batch has its own fixed cost (entry, the batch's exit,
            # the first iterations' warm-up): one unknown per benchmark and clock, fixed
            # by its two loop lengths.
            c[f"{clock}.batch_fixed[{b.name}]"] = 1.0 / m.k
            sigma = max((hi - lo) / 2, 0.005 * abs(med), 0.01)
            rows.append(Equation(f"{m.bench} K={m.k} ({clock})", clock, med, sigma, c))
    return rows, left_out


# ---- solving ------------------------------------------------------------------------

@dataclass
class Solution:
    columns: list
    values: dict                    # column -> cycles
    identified: dict                # column -> bool
    groups: list                    # [[columns]] identified only together
    rank: int
    bound: list                     # identified columns held at 0 by non-negativity
    interval: dict = field(default_factory=dict)   # column -> (p5, p95) from the bootstrap
    residuals: dict = field(default_factory=dict)  # equation -> (value - fit) / value


def _identifiability(A, tol=1e-9):
    """(rank, identified[j], groups): column j is identified when no direction of A's
    null space moves it; columns sharing a null-space direction form a group."""
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    An = A / norms
    _u, s, vt = np.linalg.svd(An, full_matrices=True)
    smax = s[0] if len(s) else 0.0
    rank = int(np.sum(s > tol * max(smax, 1e-300)))
    null = vt[rank:]                        # rows span the null space
    n = A.shape[1]
    ident = [bool(np.all(np.abs(null[:, j]) < 1e-7)) if len(null) else True
             for j in range(n)]
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    for v in null:
        idx = [j for j in range(n) if abs(v[j]) >= 1e-7]
        for j in idx[1:]:
            parent[find(j)] = find(idx[0])
    groups = {}
    for j in range(n):
        if not ident[j]:
            groups.setdefault(find(j), []).append(j)
    return rank, ident, list(groups.values())


def _nnls(A, b, sigma):
    """Non-negative least squares of the rows weighted by 1/sigma. Unknowns the rows
    identify come out unique; the others are settled by `_split_groups`."""
    from scipy.optimize import nnls
    x, _ = nnls(A / sigma[:, None], b / sigma, maxiter=50 * A.shape[1])
    return x


def _split_groups(A, b, sigma, x, ident, x0):
    """The unknowns the rows identify only in combination: the closest figures to the
    base profile's (least relative entropy) that fit the rows, which has the form
    x_j = x0_j * exp(sum_i lambda_i A_ij): unknowns that occur together in a row scale
    together, in the base's proportions. Identified unknowns keep their NNLS values."""
    from scipy.optimize import least_squares
    js = [j for j in range(len(x)) if not ident[j] and x0[j] > 0]
    if not js:
        return x
    fixed = x.copy()
    fixed[js] = 0.0
    rows = np.nonzero(np.any(A[:, js] != 0, axis=1))[0]
    Ag = A[np.ix_(rows, js)]
    rest = (b - A @ fixed)[rows]
    sg = sigma[rows]
    x0g = x0[js]

    def xg(lam):
        return x0g * np.exp(np.clip(Ag.T @ lam, -60.0, 60.0))

    def resid(lam):
        return np.concatenate([(Ag @ xg(lam) - rest) / sg, 1e-6 * lam])
    lam = least_squares(resid, np.zeros(len(rows)), method="trf").x
    out = x.copy()
    out[js] = xg(lam)
    return out


def solve(eqs, prior=None, bootstrap=None):
    """Solve `eqs` ([Equation]) for their unknowns: NNLS (scipy.optimize.nnls) for what
    they identify; what they identify only in combination is split in the proportions of
    `prior` ({column: cycles}, the base profile; `_split_groups`). `bootstrap`: resampled
    equation-value vectors, each solved again for 90% intervals."""
    prior = prior or {}
    cols = sorted({c for e in eqs for c in e.coefs})
    ci = {c: j for j, c in enumerate(cols)}
    A = np.zeros((len(eqs), len(cols)))
    for i, e in enumerate(eqs):
        for c, v in e.coefs.items():
            A[i, ci[c]] = v
    b = np.array([e.value for e in eqs])
    sigma = np.array([e.sigma for e in eqs])
    x0 = np.array([float(prior.get(c, 0.0)) for c in cols])
    rank, ident, groups = _identifiability(A / sigma[:, None])
    x = _split_groups(A, b, sigma, _nnls(A, b, sigma), ident, x0)
    # Non-negativity binding an identified unknown: its unconstrained estimate is < 0.
    bound = [cols[j] for j in range(len(cols)) if ident[j] and x[j] == 0.0]
    fit = A @ x
    sol = Solution(columns=cols, values={c: float(x[ci[c]]) for c in cols},
                   identified={c: ident[ci[c]] for c in cols},
                   groups=[[cols[j] for j in g] for g in groups], rank=rank, bound=bound,
                   residuals={e.name: float((e.value - fit[i]) / e.value) if e.value else 0.0
                              for i, e in enumerate(eqs)})
    if bootstrap:
        xs = np.array([_split_groups(A, np.asarray(bb), sigma,
                                     _nnls(A, np.asarray(bb), sigma), ident, x0)
                       for bb in bootstrap])
        lo, hi = np.percentile(xs, [5, 95], axis=0)
        sol.interval = {c: (float(lo[ci[c]]), float(hi[ci[c]])) for c in cols}
    return sol


def _bootstrap_values(measurements, eqs, tsc_ghz, n, rng):
    """n resampled value vectors for `eqs`: each measurement's batches resampled with
    replacement, the median taken again."""
    by = {(m.bench, m.k): m for m in measurements}
    out = []
    for _ in range(n):
        vals = []
        cache = {}
        for e in eqs:
            bench, rest = e.name.split(" K=", 1)
            k = int(rest.split(" ", 1)[0])
            key = (bench, k, e.clock)
            if key not in cache:
                m = by[(bench, k)]
                xs = np.asarray(m.guest_cycles if e.clock == "guest" else
                                [ns * tsc_ghz for ns in m.host_ns], float)
                cache[key] = float(np.median(rng.choice(xs, size=len(xs)))) / k
            vals.append(cache[key])
        out.append(vals)
    return out


# ---- the whole measurement ----------------------------------------------------------

@dataclass
class MeasureResult:
    info: HostInfo
    variant: str
    base: object                     # the base Profile
    tsc_ghz: float
    tsc_interval: tuple
    measurements: list
    unsupported: dict
    left_out: dict
    equations: list
    solution: Solution
    msrs: list                       # [(name, index, readable, writable)]
    seconds: float = 0.0

    # -- the profile --
    def figures(self):
        """{key: dict(cycles, grade, source, note)} for every priced key the profile
        will hold: measured, estimated from a measured combination, or the base's."""
        from ._lib import MSR_SLOTS, OPS
        slots = {n for n, _ in MSR_SLOTS}
        sol, info = self.solution, self.info
        what = (f"pykvm profile measure, {info.date}, {info.cpu} through {info.kvm_module} "
                f"(Linux {info.kernel})")
        uses = {}
        for e in self.equations:
            for c in e.coefs:
                uses.setdefault(c, set()).add(e.name.split(" K=")[0])
        group_of = {c: g for g in sol.groups for c in g}
        out = {}
        for c in sol.columns:
            table, _, name = c.partition(".")
            if table not in ("op", "rdmsr", "wrmsr"):
                continue
            if table == "op" and name not in OPS or table != "op" and name not in slots:
                continue
            v = sol.values[c]
            lo, hi = sol.interval.get(c, (v, v))
            benchs = ", ".join(sorted(uses.get(c, ())))
            cycles = int(round(v))
            if table != "op" and cycles == 0:
                continue       # 0 means "no per-MSR figure" to the machine: use op.*
            if sol.identified[c]:
                note = (f"Solved by NNLS from this host's benchmarks ({benchs}); bootstrap "
                        f"90% interval {lo:,.0f}-{hi:,.0f} cycles.")
                if c in sol.bound:
                    note += " Held at 0 by non-negativity: the data put it below 0."
                out[c] = dict(cycles=cycles, grade="measured", source=what, note=note)
            else:
                others = [g for g in group_of.get(c, []) if g != c]
                note = (f"This host's benchmarks ({benchs}) measure it only together with "
                        f"{', '.join(others) or 'nuisance terms'} (they always occur "
                        f"together); the combination is measured, the split follows base "
                        f"profile {self.base.name}. Bootstrap 90% interval "
                        f"{lo:,.0f}-{hi:,.0f} cycles.")
                out[c] = dict(cycles=cycles, grade="estimate", source=what, note=note)
        for key, e in self.base.entries.items():
            if key in out:
                continue
            note = (f"Fallback: no benchmark on this host measures it; copied from base "
                    f"profile {self.base.name} ({e.grade}). {e.note}").strip()
            out[key] = dict(cycles=e.cycles, grade=e.grade, source=e.source, note=note,
                            basis=[b for b in e.basis])
        return out

    def profile_text(self, name="measured"):
        info = self.info
        figs = self.figures()
        kvm_note = (" kvm_pvm is software virtualization: every guest instruction is "
                    "emulated, so these figures describe that module on this CPU, not the "
                    "CPU's VMX/SVM." if info.software_kvm else "")
        desc = (f"Measured {info.date} by pykvm profile measure on {info.cpu} "
                f"({info.cpu_vendor}) through {info.kvm_module}, Linux {info.kernel}, "
                f"TSC {self.tsc_ghz:.3f} GHz; round trips priced with the model of "
                f"{self.variant}; unmeasured figures from {self.base.name}.{kvm_note}")
        lines = [
            "# Cost profile measured on this host by `pykvm profile measure` (grade "
            "measured).",
            f"# CPU: {info.cpu}",
            f"# KVM module: {info.kvm_module} (loaded: {', '.join(info.kvm_modules) or 'none'})",
            f"# Kernel: Linux {info.kernel} ({info.machine})",
            f"# Date: {info.date}",
            f"# TSC: {self.tsc_ghz:.4f} GHz (guest RDTSC against the host's clock)",
            f"# Model of the round trips: {self.variant}; base profile: {self.base.name}",
            f"# Raw measurements, equations and identifiability: the .json beside this "
            f"file.",
        ]
        if info.software_kvm:
            lines.append("# kvm_pvm emulates every guest instruction in software: the "
                         "figures are that module's, not the CPU's.")
        lines += ["", "[profile]", f"name = {_q(name)}", f"vendor = {_q(info.cpu_vendor)}",
                  f"cpu = {_q(info.cpu + ' via ' + info.kvm_module)}"]
        if self.base.cpu_model:
            lines.append(f"cpu_model = {_q(self.base.cpu_model)}")
        lines.append(f"description = {_q(desc)}")
        for key in sorted(figs, key=lambda k: (k.split('.')[0] != "op", k)):
            f = figs[key]
            lines += ["", f"[{key}]", f"cycles = {f['cycles']}", f"grade = {_q(f['grade'])}",
                      f"source = {_q(f['source'])}"]
            if f.get("note"):
                lines.append(f"note = {_q(f['note'])}")
            if f.get("basis"):
                lines.append("basis = [" + ", ".join(_q(b) for b in f["basis"]) + "]")
        return "\n".join(lines) + "\n"

    def write_profile(self, path, name="measured", json_path=None):
        """Write the profile TOML (and the raw data as JSON beside it); returns paths."""
        path = os.fspath(path)
        with open(path, "w") as f:
            f.write(self.profile_text(name))
        json_path = json_path or os.path.splitext(path)[0] + ".json"
        with open(json_path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path, json_path

    def to_dict(self):
        sol = self.solution
        return {
            "host": asdict(self.info), "variant": self.variant, "base": self.base.name,
            "seconds": round(self.seconds, 2),
            "tsc_ghz": self.tsc_ghz, "tsc_ghz_interval": self.tsc_interval,
            "unsupported": self.unsupported, "left_out_exits_here": self.left_out,
            "msrs": [{"name": n, "index": hex(i), "readable": r, "writable": w}
                     for n, i, r, w in self.msrs],
            "measurements": [
                {"bench": m.bench, "k": m.k, "stop": m.stop, "batches": len(m.guest_cycles),
                 "guest_per_iter": m.per_iter("guest"),
                 "host_per_iter": m.per_iter("host", self.tsc_ghz),
                 "guest_cycles": m.guest_cycles, "host_ns": m.host_ns}
                for m in self.measurements],
            "equations": [asdict(e) for e in self.equations],
            "solution": {"rank": sol.rank, "columns": sol.columns, "values": sol.values,
                         "identified": sol.identified, "groups": sol.groups,
                         "bound": sol.bound, "interval": sol.interval,
                         "residuals": sol.residuals},
        }

    def not_identified(self):
        return [c for c in self.solution.columns if not self.solution.identified[c]]


def _q(s):
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(s), ensure_ascii=False)


def default_variant(info):
    """The simulated vendor whose operation counts price this host's round trips."""
    if info.kvm_module == "kvm_intel":
        return "vmx:upstream"
    if info.kvm_module == "kvm_amd":
        return "svm:upstream"
    return "svm:upstream" if info.cpu_vendor == "amd" else "vmx:upstream"


def measure_host(budget=60.0, rel_ci=0.02, max_samples=200, base=None, variant=None,
                 only=None, bootstrap=200, progress=None, kvm_path=None, seed=0):
    """Measure this host. `only`: benchmark names to run (default: all). Returns a
    MeasureResult (write_profile() writes the TOML)."""
    from . import profiles as P
    from .devkvm import KvmMachine
    from .study import Variant
    t0 = time.monotonic()
    info = host_info()
    variant = variant or default_variant(info)
    vendor = Variant.parse(variant).vendor
    base = P.load_profile(base or P.default_profile(vendor))
    if base.vendor != info.cpu_vendor:
        raise InvalidConfiguration(f"base profile {base.name} prices an {base.vendor} CPU; "
                                   f"this host's is {info.cpu_vendor}")
    with (KvmMachine(kvm_path) if kvm_path else KvmMachine()) as machine:
        probed = _probe_msrs(machine, WATCHDOG_S)
        bl = benches(info, probed)
        if only:
            unknown = set(only) - {b.name for b in bl}
            if unknown:
                raise InvalidConfiguration(f"no benchmark {', '.join(sorted(unknown))}; "
                                           f"known: {', '.join(b.name for b in bl)}")
            need = set(only) | {"loop", "cpuid"}
            bl = [b for b in bl if b.name in need]
        ms, unsupported = run_benches(machine, bl, budget, rel_ci, max_samples, progress)
    if not ms:
        raise MeasureError("no benchmark ran: " + "; ".join(
            f"{k}: {v}" for k, v in unsupported.items()))
    ghz, _icpt, interval = calibrate_tsc(ms)
    eqs, left_out = equations(ms, bl, ghz, variant, base, software_kvm=info.software_kvm)
    rng = np.random.default_rng(seed)
    boot = _bootstrap_values(ms, eqs, ghz, bootstrap, rng) if bootstrap else None
    prior = {k: float(e.cycles) for k, e in base.entries.items()}
    sol = solve(eqs, prior, boot)
    return MeasureResult(info=info, variant=variant, base=base, tsc_ghz=ghz,
                         tsc_interval=interval, measurements=ms, unsupported=unsupported,
                         left_out=left_out, equations=eqs, solution=sol, msrs=probed,
                         seconds=time.monotonic() - t0)
