"""The simulated machine: Machine -> Vm -> Vcpu, the same shape as the /dev/kvm backend.

    m = pykvm.Machine(cpus=2, vendor="svm", cpu_model="zen3")
    vm = m.create_vm()
    vcpu = vm.create_vcpu()
    vcpu.load(image)                         # pykvm.guest image, or raw code bytes
    vcpu.set_msrs({MSR_KERNEL_GS_BASE: 0x1234})   # -> 1, the count processed
    ex = vcpu.run()                          # a pykvm.exits type
    m.costs()                                # operations and cycles by path
"""
import errno
import mmap
import threading
import weakref

from . import exits as X
from ._lib import OPS, PATHS, PRICED_MSRS, ensure, ffi, lib
from ._weak import WeakList
from .errors import InvalidConfiguration, InvalidMemory, InvalidMsr, PykvmError
from .log import get_logger
from .regs import (Regs, Segment, DTable, Sregs, checked_regs, checked_sregs, msr_index,
                   msr_value, uint)
from .vcpu_base import VcpuBase, answer_bytes
from .params import resolve as resolve_params
from .vendors import get_vendor

# Vcpu.run()'s hot path, bound once.
_run_once = lib.pk_sim_run_once
_new = object.__new__
_Io = X.Io
_EXIT_IO, _EXIT_IO_IN = X.KVM_EXIT_IO, X.KVM_EXIT_IO_IN
_RUN_FAILED = lib.PK_RUN_PACKED_FAILED
_U64_MAX = 2**64 - 1

log = get_logger("pykvm")

PAGE_SIZE = 4096
MAX_CPUS = 8
MAX_MEMSLOTS = 8
# KVM's limits (include/asm/kvm_host.h): vCPUs per VM, vCPU ids, MSRs per KVM_GET/SET_MSRS.
KVM_MAX_VCPUS = 1024
KVM_MAX_VCPU_IDS = 4 * KVM_MAX_VCPUS
MAX_IO_MSRS = 256
KVM_MAX_CPUID_ENTRIES = 256
# Default instruction budget of one run(): a guest that never exits ends with Intr.
DEFAULT_RUN_BUDGET = 50_000_000

# pk_regs.gpr is in x86 encoding order.
_GPR_ORDER = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
# pk_sregs.seg is in VCPU_SREG_* order.
_SREG_ORDER = ("es", "cs", "ss", "ds", "fs", "gs", "tr", "ldt")
_CPUID_FIELDS = ("function", "index", "flags", "eax", "ebx", "ecx", "edx")
_SEG_FIELDS = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g",
               "avl", "unusable")


class Machine:
    """A simulated x86-64 machine with KVM loaded (one vendor module).

    Threads: a Machine is used as a VMM uses KVM, one thread per vCPU being the normal
    pattern; its VMs and vCPUs may be driven from several threads at once. The rule is
    the kernel's: a pCPU runs one thing at a time. Each call into the simulated KVM runs
    as the vCPU's thread in the kernel on its pCPU, from entry to the return to user
    mode; calls meant for one pCPU are serialized in the order they arrive (a FIFO
    runqueue), each keeping the pCPU until it returns to user mode -- an exit to
    userspace, or the end of its instruction budget, the time slice that a host timer
    tick ends -- and the scheduler switches tasks between them as a context switch does
    (sched_out/sched_in, TIF_USER_RETURN_NOTIFY moving to the next task). vCPUs on
    different pCPUs run in parallel (the C code runs without the GIL). Calls on one vCPU
    are serialized (vcpu->mutex). A check() or a Checker owns its machine: do not drive
    that machine from other threads while it explores.

    Lifetime: close() (or a with block) frees the machine and every VM on it; so does
    dropping the last reference. A VM (and its vCPUs, their threads and its guest memory)
    is freed when it is closed or garbage-collected.
    """

    def __init__(self, cpus=2, vendor="vmx", cpu_model=None, profile=None, preset=None,
                 params=None):
        """`cpus` pCPUs with the `vendor` module ("vmx" or "svm", or a plugin's name) loaded.

        profile: what each operation costs, so that costs() reports cycles: a built-in
            profile name ("skylake-sp", "epyc-zen"), a path to a .toml profile, a loaded
            pykvm.profiles.Profile, or a raw {"op": {...}, "rdmsr": {...}, "wrmsr": {...}}
            table. None (the default) takes the vendor's own profile
            (pykvm.profiles.default_profile); False prices nothing (0 cycles).
        cpu_model: one of the vendor's CPU models (`pykvm list cpus`). None takes the one
            the profile prices if the vendor has it, else the vendor's first.
        preset: a kernel era of the vendor (`pykvm list presets`); None: upstream.
        params: module parameters on top of the preset, {"[module.]name": value}.
        """
        if not isinstance(cpus, int) or not 1 <= cpus <= MAX_CPUS:
            raise InvalidConfiguration(f"cpus must be 1..{MAX_CPUS}, got {cpus!r}")
        self.vendor = get_vendor(vendor)
        self.profile = _load_profile(self.vendor, profile)
        models = self.vendor.cpu_models
        from .vendors import CpuModel
        if isinstance(cpu_model, CpuModel):     # a model of one's own (e.g. without FSGSBASE)
            name, model = "custom", cpu_model
        else:
            name = cpu_model or _default_cpu_model(self.vendor, self.profile)
            if name not in models:
                raise InvalidConfiguration(
                    f"{vendor} has no CPU model {name!r}; it has {', '.join(models)}")
            model = models[name]
        self.cpu_model_name = name
        self.cpu_model = model
        if self.cpu_model.vendor != self.vendor.cpu_vendor:
            raise InvalidConfiguration(
                f"{vendor} needs an {self.vendor.cpu_vendor} CPU, {name} is {self.cpu_model.vendor}")
        m = lib.pk_machine_create(cpus, self.cpu_model.to_c(ffi))
        if m == ffi.NULL:
            raise MemoryError(f"could not create the machine: "
                              f"{ffi.string(lib.pk_last_error()).decode()}")
        self._m = ffi.gc(m, lib.pk_machine_destroy)
        self._vms = WeakList()
        self._vm_finalizers = set()       # every VM's, until it has run: see close()
        self._lock = threading.Lock()
        self.nr_cpus = cpus
        presets = self.vendor.presets
        if preset is not None and preset not in presets:
            raise InvalidConfiguration(
                f"{vendor} has no preset {preset!r}; it has {', '.join(presets)}")
        self.preset = preset or next(iter(presets), None)
        # Parsed as the kernel parses module parameters (pykvm.params); the preset first,
        # then what the caller sets on top.
        self.params = {**resolve_params(self.vendor, presets.get(self.preset, {})),
                       **resolve_params(self.vendor, params)}
        self.vendor.load(self, self.params)
        if self.profile is not None:
            self.set_profile(self.profile)
        elif isinstance(profile, dict):
            self.set_profile(profile)
        log.debug("machine", cpus=cpus, vendor=vendor, cpu_model=name)

    @staticmethod
    def kvm(**kw):
        """The host's /dev/kvm, with the same VM/vCPU API (pykvm.devkvm.KvmMachine)."""
        from .devkvm import KvmMachine
        return KvmMachine(**kw)

    def create_vm(self):
        return Vm(self)

    @property
    def vms(self):
        """The VMs of this machine still referenced somewhere (a dropped VM is freed)."""
        return self._vms.alive()

    def _handle(self):
        if self._m is None:
            raise PykvmError("the machine is closed")
        return self._m

    def close(self):
        """Free every VM of the machine, then the machine itself. Idempotent. A VM dropped
        but not collected yet is freed here too: no VM outlives its machine's memory."""
        for vm in self._vms.alive():
            vm.close()
        with self._lock:
            if self._m is None:
                return
            for fin in list(self._vm_finalizers):
                fin()
            self._vm_finalizers.clear()
            m, self._m = self._m, None
        ffi.release(m)

    @property
    def closed(self):
        return self._m is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def memory(self):
        """The simulated kernel's memory in bytes: in_use (allocated now), high_water (the
        extent ever used), committed (made usable), reserved (what it may grow to)."""
        vals = [ffi.new("uint64_t *") for _ in range(4)]
        lib.pk_machine_kmem(self._handle(), *vals)
        return dict(zip(("in_use", "high_water", "committed", "reserved"),
                        (v[0] for v in vals)))

    # ---- costs -----------------------------------------------------------------------
    def set_profile(self, profile):
        """Price operations from now on with `profile`: a name, a .toml path, a Profile,
        or a raw table {"op": {"WRMSR": 200, ...}, "wrmsr": {"SPEC_CTRL": 495}}."""
        if isinstance(profile, dict):
            self.profile = None
        else:
            self.profile = _load_profile(self.vendor, profile)
            profile = self.profile.costs
        slot = {name: i for i, (name, _) in enumerate(PRICED_MSRS)}
        tables = ((0, "op", {n: i for i, n in enumerate(OPS)}), (1, "rdmsr", slot),
                  (2, "wrmsr", slot))
        for _, table, names in tables:
            for key in profile.get(table, {}):
                if key not in names:
                    raise InvalidConfiguration(f"profile {table}: unknown name {key!r}")
        # The new table replaces the old one whole: what it leaves out costs 0.
        m = self._handle()
        for kind, table, names in tables:
            given = profile.get(table, {})
            for key, i in names.items():
                lib.pk_profile_set(m, kind, i, int(given.get(key, 0)))

    def costs(self):
        """{path: {"ops": {op: count}, "cycles": n, "msrs": {"WRMSR SPEC_CTRL": n}}},
        only non-zero entries."""
        out = {}
        m = self._handle()
        for p, pname in enumerate(PATHS):
            ops = {o: lib.pk_cost_ops(m, p, i) for i, o in enumerate(OPS)}
            ops = {k: v for k, v in ops.items() if v}
            msrs = {}
            for w, verb in ((0, "RDMSR"), (1, "WRMSR")):
                for s in range(len(PRICED_MSRS) + 1):
                    n = lib.pk_cost_msr_ops(m, p, w, s)
                    if n:
                        name = PRICED_MSRS[s][0] if s < len(PRICED_MSRS) else "other"
                        msrs[f"{verb} {name}"] = n
            cycles = lib.pk_cost_cycles(m, p)
            if ops or cycles:
                out[pname] = {"ops": ops, "cycles": cycles, "msrs": msrs}
        return out

    def get_supported_cpuid(self):
        """KVM_GET_SUPPORTED_CPUID, as pykvm.devkvm.CpuidEntry objects."""
        from .devkvm.system import CpuidEntry
        e = ffi.new("struct kvm_cpuid_entry2[]", 32)
        n = ensure(lib.pk_get_supported_cpuid(self._handle(), e, 32), "KVM_GET_SUPPORTED_CPUID")
        return [CpuidEntry(**{f: getattr(x, f) for f in _CPUID_FIELDS}) for x in e[0:n]]

    # ---- what KVM offers (the /dev/kvm ioctls) ------------------------------------------
    def check_extension(self, cap):
        """KVM_CHECK_EXTENSION: 0 if unsupported, else a capability-specific value.
        `cap` is a KVM_CAP_* number or name ("X86_USER_SPACE_MSR")."""
        return ensure(lib.pk_check_extension(self._handle(), _cap_number(cap)),
                      f"KVM_CHECK_EXTENSION({cap})")

    def capabilities(self):
        """{KVM_CAP_* name: KVM_CHECK_EXTENSION value} for the capabilities pykvm names."""
        from .devkvm import uapi
        return {name: self.check_extension(cap) for name, cap in uapi.CAPS.items()}

    def _msr_list(self, fn, what):
        n = ffi.new("uint32_t *", 0)
        r = fn(self._handle(), ffi.NULL, n)
        if r not in (0, -7):            # -E2BIG: the length is in *n
            ensure(r, what)
        indices = ffi.new("uint32_t[]", max(1, n[0]))
        ensure(fn(self._handle(), indices, n), what)
        return list(indices[0:n[0]])

    def get_msr_index_list(self):
        """KVM_GET_MSR_INDEX_LIST: the MSRs KVM_GET/SET_MSRS save and restore (FS/GS base
        are not in it: they travel in SREGS)."""
        return self._msr_list(lib.pk_get_msr_index_list, "KVM_GET_MSR_INDEX_LIST")

    def get_msr_feature_index_list(self):
        """KVM_GET_MSR_FEATURE_INDEX_LIST: the MSRs that describe features, as CPUID does."""
        return self._msr_list(lib.pk_get_msr_feature_index_list,
                              "KVM_GET_MSR_FEATURE_INDEX_LIST")

    def get_feature_msrs(self, indices):
        """KVM_GET_MSRS on /dev/kvm: (count, {index: value}); stops at the first failure."""
        indices = list(indices)
        e = ffi.new("struct kvm_msr_entry[]", max(1, len(indices)))
        for i, idx in enumerate(indices):
            e[i].index = _msr_index(idx)
        n = ensure(lib.pk_get_feature_msrs(self._handle(), e, len(indices)), "KVM_GET_MSRS (features)")
        return n, {indices[i]: e[i].data for i in range(n)}

    def get_mce_cap_supported(self):
        """KVM_X86_GET_MCE_CAP_SUPPORTED: the MCG_CAP bits KVM_X86_SETUP_MCE accepts."""
        cap = ffi.new("uint64_t *")
        ensure(lib.pk_get_mce_cap_supported(self._handle(), cap), "KVM_X86_GET_MCE_CAP_SUPPORTED")
        return cap[0]

    def reset_costs(self):
        lib.pk_machine_reset_costs(self._handle())

    @property
    def host_bugs(self):
        """Faults of the host's non-_safe MSR accesses and VMX instruction failures (WARNs)."""
        return lib.pk_machine_host_bugs(self._handle())

    def check(self):
        """The oracle's verdict over everything that ran: None, or the first Violation
        (with the number of violations seen)."""
        from .oracle import Violation
        first = ffi.new("struct pk_violation *")
        count = ffi.new("uint64_t *")
        lib.pk_oracle_result(self._handle(), first, count)
        return Violation.from_c(first, count[0], self) if count[0] else None

    @property
    def has_hv_timer(self):
        """Whether the loaded KVM has a hypervisor timer for the LAPIC's TSC deadline (the
        VMX preemption timer): what the TSC-deadline fast path needs."""
        return bool(lib.pk_kvm_has_hv_timer(self._handle()))

    def run_other_task(self, cpu):
        """Another host process gets pCPU `cpu` (preempting the task there), enters the
        kernel and returns to user mode."""
        ensure(lib.pk_host_run_other(self._handle(), self._cpu(cpu)), "run_other_task")

    def _cpu(self, cpu):
        if not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < self.nr_cpus:
            raise InvalidConfiguration(f"cpu must be 0..{self.nr_cpus - 1}, got {cpu!r}")
        return cpu

    def host_user_insns(self, cpu):
        """The task in user mode on pCPU `cpu` executes RDTSCP, RDPID, RDFSBASE,
        RDGSBASE and a SYSCALL that returns with SYSRETQ: what a wrong TSC_AUX, LSTAR,
        STAR, SYSCALL_MASK or FS/GS base does to a host program (see check())."""
        cpu = self._cpu(cpu)
        ensure(lib.pk_host_user_insns(self._handle(), cpu) and -22,
               f"CPU {cpu} is not in user mode")

    def run_kthread(self, cpu):
        """A kernel thread (a kworker) preempts the task on pCPU `cpu` and gives the CPU
        back: no task returns to user mode in between (unless the preempted task was in
        user mode, which then returns to it)."""
        cpu = self._cpu(cpu)
        ensure(lib.pk_host_run_kthread(self._handle(), cpu),
               f"running a kernel thread on CPU {cpu}")

    def cpu_tsc(self, cpu):
        """pCPU `cpu`'s TSC: the simulated clock (2.1 GHz), which advances only while
        the CPU waits (halt polling, idle)."""
        return lib.pk_host_cpu_tsc(self._handle(), self._cpu(cpu))

    def read_cpu_msr(self, cpu, index):
        """What pCPU `cpu` holds in MSR `index` right now (hardware view)."""
        cpu, index = self._cpu(cpu), msr_index(index)
        v = ffi.new("uint64_t *")
        if lib.pk_cpu_read_msr(self._handle(), cpu, index, v):
            lib.pk_last_error()
            raise InvalidMsr(index, f"pCPU {cpu} has no MSR {index:#x} (RDMSR faults)")
        return v[0]

    def per_cpu_offset(self, cpu):
        """The host kernel's per-cpu base of pCPU `cpu` (its GS base in kernel mode)."""
        v = ffi.new("uint64_t *")
        ensure(lib.pk_host_per_cpu_offset(self._handle(), self._cpu(cpu), v),
               "per_cpu_offset", InvalidConfiguration)
        return v[0]

    def disable_virtualization(self, cpu):
        """hardware_disable on one CPU (CPU offline, module unload, reboot IPI)."""
        cpu = self._cpu(cpu)
        ensure(lib.pk_kvm_disable_virtualization_cpu(self._handle(), cpu),
               f"disabling VMX/SVM on CPU {cpu}")

    def __repr__(self):
        return f"<Machine {self.nr_cpus} CPUs, {self.vendor.kernel_module} on {self.cpu_model_name}>"


def _load_profile(vendor, profile):
    """The Profile a Machine prices with (None for a raw table or for profile=False)."""
    from . import profiles
    if profile is False or isinstance(profile, dict):
        return None
    if profile is None:
        profile = profiles.default_profile(vendor.name)
    p = profiles.load_profile(profile)
    if p.vendor != vendor.cpu_vendor:
        raise InvalidConfiguration(
            f"profile {p.name} prices an {p.vendor} CPU; {vendor.name} runs on "
            f"{vendor.cpu_vendor} (`pykvm list profiles` lists them)")
    return p


def _default_cpu_model(vendor, profile):
    """The CPU model the profile prices, if the vendor has it; else the vendor's first."""
    if profile is not None and profile.cpu_model in vendor.cpu_models:
        return profile.cpu_model
    return next(iter(vendor.cpu_models))


class _Slot:
    def __init__(self, slot, gpa, size, mapping):
        self.slot, self.gpa, self.size, self.mapping = slot, gpa, size, mapping

    def contains(self, gpa, size=1):
        return self.gpa <= gpa and gpa + size <= self.gpa + self.size


def _free_vm(machine_handle, kvm, slots):
    """kvm_destroy_vm, then the guest memory. Holds the machine until it has run."""
    lib.pk_destroy_vm(kvm)
    for s in slots:
        ffi.release(s._hva)
        s.mapping.close()
    slots.clear()


class Vm:
    """A VM on the simulated machine (Machine.create_vm). close() or dropping it frees
    the VM, its vCPUs (KVM frees vCPUs with their VM) and its guest memory."""

    def __init__(self, machine):
        from .devkvm.vm import GuestMemory
        self.machine = machine
        p = ffi.new("struct kvm **")
        with machine._lock:
            ensure(lib.pk_create_vm(machine._handle(), p), "KVM_CREATE_VM",
                   InvalidConfiguration)
        self._kvm = p[0]
        self.slots = []
        self._vcpus = WeakList()
        self._lock = threading.Lock()       # creation and memory; held briefly by close()
        self._closing = False
        self.memory = GuestMemory(self.slots)
        self._finalizer = weakref.finalize(self, _free_vm, machine._m, self._kvm, self.slots)
        with machine._lock:
            machine._vm_finalizers = {f for f in machine._vm_finalizers if f.alive}
            machine._vm_finalizers.add(self._finalizer)
        machine._vms.add(self)

    @property
    def vcpus(self):
        """The vCPU objects of this VM still referenced somewhere."""
        return self._vcpus.alive()

    def _handle(self):
        if self._kvm is None or self._closing:
            raise PykvmError("the VM is closed")
        return self._kvm

    def close(self):
        """Free the VM: its vCPUs stop (a running one is signalled and its run ends at the
        next timer tick), then the VM, the vCPUs and the guest memory go. Idempotent. From
        the moment it starts, nothing new is created in the VM."""
        with self._lock:
            if self._kvm is None or self._closing:
                return
            self._closing = True
            vcpus = self._vcpus.alive()
        for v in vcpus:
            v.kick()
        for v in vcpus:
            v._invalidate()
        with self._lock:
            self._kvm = None
        self._finalizer()
        self.machine._vms.discard(self)

    @property
    def closed(self):
        return self._kvm is None or self._closing

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add_memory(self, gpa, size, *, slot=None):
        """Guest-physical memory [gpa, gpa+size): page-aligned, no overlap."""
        for name, v in (("gpa", gpa), ("size", size)):
            if not isinstance(v, int) or v < 0 or v % PAGE_SIZE or v >= 1 << 64:
                raise InvalidMemory(f"{name} must be a page-aligned 64-bit integer, got {v!r}")
        if size == 0:
            raise InvalidMemory("size must be > 0")
        if gpa + size > 1 << 64:
            raise InvalidMemory(f"[{gpa:#x}, {gpa + size:#x}) wraps around")
        with self._lock:
            kvm = self._handle()
            used = {s.slot for s in self.slots}
            if slot is None:
                slot = next(i for i in range(MAX_MEMSLOTS + 1) if i not in used)
            if not isinstance(slot, int) or not 0 <= slot < MAX_MEMSLOTS or slot in used:
                raise InvalidMemory(f"slot {slot!r} is in use or beyond the {MAX_MEMSLOTS} slots")
            for s in self.slots:
                if gpa < s.gpa + s.size and s.gpa < gpa + size:
                    raise InvalidMemory(f"[{gpa:#x}, {gpa + size:#x}) overlaps slot {s.slot}")
            try:
                # private anonymous memory, as a VMM's guest RAM usually is: no other
                # process writes it, so the interpreter's decode cache can learn from
                # the host kernel which pages were written (csrc/arch/exec_track.c)
                mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
            except (OverflowError, OSError) as e:
                raise InvalidMemory(f"no host memory for {size:#x} bytes of guest memory: "
                                    f"{e}") from None
            hva = ffi.from_buffer(mapping)
            try:
                ensure(lib.pk_vm_set_memslot(kvm, slot, gpa, size, hva),
                       f"KVM_SET_USER_MEMORY_REGION slot {slot}", InvalidMemory)
            except BaseException:
                ffi.release(hva)
                mapping.close()
                raise
            s = _Slot(slot, gpa, size, mapping)
            s._hva = hva  # keeps the buffer pinned while the VM references it
            self.slots.append(s)
            return s

    def _ensure_memory(self, size):
        if not any(s.contains(0, size) for s in self.slots):
            self.add_memory(0, (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE)

    # ---- capabilities, irqchip, MSR policy ---------------------------------------------
    def check_extension(self, cap):
        """KVM_CHECK_EXTENSION on the VM."""
        with self._lock:
            return ensure(lib.pk_vm_check_extension(self._handle(), _cap_number(cap)),
                          f"KVM_CHECK_EXTENSION({cap})")

    def enable_cap(self, cap, *args, flags=0):
        """KVM_ENABLE_CAP on the VM with up to four arguments."""
        if len(args) > 4:
            raise InvalidConfiguration("KVM_ENABLE_CAP takes at most 4 arguments")
        c = ffi.new("struct kvm_enable_cap *")
        c.cap = _cap_number(cap)
        c.flags = flags
        for i, a in enumerate(args):
            c.args[i] = a & (2**64 - 1)
        with self._lock:
            ensure(lib.pk_vm_enable_cap(self._handle(), c), f"KVM_ENABLE_CAP({cap})",
                   InvalidConfiguration)

    def enable_user_msr_exits(self, reasons=(X.KVM_MSR_EXIT_REASON_INVAL |
                                             X.KVM_MSR_EXIT_REASON_UNKNOWN |
                                             X.KVM_MSR_EXIT_REASON_FILTER)):
        """KVM_CAP_X86_USER_SPACE_MSR: failed guest RDMSR/WRMSR of these kinds exit to
        userspace as RdMsr/WrMsr (set `.data` or `.error` before the next run)."""
        self.enable_cap(lib.KVM_CAP_X86_USER_SPACE_MSR, reasons)

    def set_msr_filter(self, ranges, *, default_allow=True, flags=None):
        """KVM_X86_SET_MSR_FILTER with up to 16 pykvm.devkvm.MsrFilterRange; [] with
        default_allow clears the filter. `flags` sets struct kvm_msr_filter.flags as
        given (default: KVM_MSR_FILTER_DEFAULT_ALLOW or _DENY from `default_allow`)."""
        from .devkvm.vm import msr_filter_flags
        ranges = list(ranges)
        if len(ranges) > lib.KVM_MSR_FILTER_MAX_RANGES:
            raise InvalidConfiguration(f"at most {lib.KVM_MSR_FILTER_MAX_RANGES} filter ranges")
        f = ffi.new("struct kvm_msr_filter *")
        f.flags = msr_filter_flags(default_allow, flags)
        keep = []       # the bitmaps must stay alive until the call returns
        for i, r in enumerate(ranges):
            bm = ffi.new("uint8_t[]", r.kernel_bitmap())
            keep.append(bm)
            f.ranges[i].flags = r.flags
            f.ranges[i].nmsrs = r.nmsrs
            f.ranges[i].base = r.base
            f.ranges[i].bitmap = bm
        with self._lock:
            ensure(lib.pk_vm_set_msr_filter(self._handle(), f), "KVM_X86_SET_MSR_FILTER",
                   InvalidConfiguration)

    def deny_msrs(self, indices, *, read=True, write=True):
        """An MSR filter that denies `indices` (one range each) and allows the rest."""
        from .devkvm.vm import MsrFilterRange
        flags = (lib.KVM_MSR_FILTER_READ if read else 0) | \
                (lib.KVM_MSR_FILTER_WRITE if write else 0)
        self.set_msr_filter([MsrFilterRange(flags, i, 1, b"\0") for i in indices])

    def create_irqchip(self):
        """KVM_CREATE_IRQCHIP before any vCPU: each vCPU gets an in-kernel LAPIC (the
        PIC and IOAPIC are not modelled), so a guest HLT halts the vCPU in KVM (polling,
        then blocking until its LAPIC timer or a kick) instead of exiting to userspace.
        APs wait for INIT/SIPI: set_mp_state(KVM_MP_STATE_RUNNABLE) starts them."""
        with self._lock:
            ensure(lib.pk_vm_create_irqchip(self._handle()), "KVM_CREATE_IRQCHIP",
                   InvalidConfiguration)

    def enable_split_irqchip(self, ioapic_pins=24):
        """KVM_CAP_SPLIT_IRQCHIP: the LAPICs in KVM, PIC and IOAPIC left to userspace."""
        self.enable_cap(lib.KVM_CAP_SPLIT_IRQCHIP, ioapic_pins)

    def create_vcpu(self, vcpu_id=None, *, cpu=None):
        """KVM_CREATE_VCPU: a vCPU with id `vcpu_id` (its APIC ID; default: the lowest
        unused one; ids live as long as the VM, as in KVM) whose thread runs on pCPU
        `cpu` (default: round robin)."""
        if cpu is not None:
            cpu = self.machine._cpu(cpu)
        if vcpu_id is not None and (not isinstance(vcpu_id, int) or isinstance(vcpu_id, bool)
                                    or vcpu_id < 0):
            raise InvalidConfiguration(f"vcpu_id must be an int >= 0, got {vcpu_id!r}")
        return Vcpu(self, -1 if cpu is None else cpu, -1 if vcpu_id is None else vcpu_id)


def _pio_data(run, n):
    """The model keeps port I/O data in kvm_run itself (pio_data), not the page after."""
    return bytearray(ffi.buffer(run.pio_data, min(n, len(run.pio_data))))


class Vcpu(VcpuBase):
    """A vCPU: registers, MSRs, run() -> typed exit. One thread at a time per vCPU (its
    calls are serialized); kick() may come from any thread."""

    def __init__(self, vm, cpu, vcpu_id=-1):
        self.vm = vm
        self._m = vm.machine._m
        p = ffi.new("struct kvm_vcpu **")
        if vcpu_id >= KVM_MAX_VCPU_IDS:
            vcpu_id = min(vcpu_id, 2**31 - 1)
        self._lock = threading.RLock()
        self._alive = threading.Lock()
        self._pending = None
        self.image = None
        with vm._lock:              # a VM closing meanwhile sees this vCPU, or refuses it
            ensure(lib.pk_create_vcpu(vm._handle(), cpu, vcpu_id, p), "KVM_CREATE_VCPU",
                   InvalidConfiguration)
            self._vcpu = p[0]
            self.id = lib.pk_vcpu_id(self._vcpu)
            self._run = lib.pk_vcpu_run_struct(self._vcpu)
            self._pio = ffi.buffer(self._run.pio_data)  # an IN/OUT exit's data, sliced
            vm._vcpus.add(self)

    def _handle(self):
        if self._vcpu is None:
            raise PykvmError(f"vCPU {self.id}: its VM is closed")
        return self._vcpu

    def _invalidate(self):
        """The VM goes away: wait for a call in progress, then refuse any other."""
        with self._lock, self._alive:
            self._vcpu = None
            self._run = None
            self._pio = None

    def kick(self):
        """Signal the vCPU's thread (kvm_vcpu_kick): a run in progress, on any thread,
        ends at the next host timer tick with Intr."""
        with self._alive:
            if self._vcpu is not None:
                lib.pk_vcpu_kick(self._vcpu)

    # ---- registers -------------------------------------------------------------------
    def get_regs(self):
        r = ffi.new("struct pk_regs *")
        with self._lock:
            ensure(lib.pk_vcpu_get_regs(self._handle(), r), "KVM_GET_REGS")
        return Regs(**{n: r.gpr[i] for i, n in enumerate(_GPR_ORDER)}, rip=r.rip, rflags=r.rflags)

    def set_regs(self, regs):
        """KVM_SET_REGS. Every value must fit in 64 bits (negative ones are taken in two's
        complement); anything else is refused before it reaches KVM."""
        vals = checked_regs(regs)
        r = ffi.new("struct pk_regs *")
        for i, n in enumerate(_GPR_ORDER):
            r.gpr[i] = vals[n]
        r.rip, r.rflags = vals["rip"], vals["rflags"]
        with self._lock:
            ensure(lib.pk_vcpu_set_regs(self._handle(), r), "KVM_SET_REGS", InvalidConfiguration)

    def get_sregs(self):
        s = ffi.new("struct pk_sregs *")
        with self._lock:
            ensure(lib.pk_vcpu_get_sregs(self._handle(), s), "KVM_GET_SREGS")
        segs = {n: Segment(**{f: getattr(s.seg[i], f) for f in _SEG_FIELDS})
                for i, n in enumerate(_SREG_ORDER)}
        return Sregs(**segs, gdt=DTable(s.gdt.address, s.gdt.size),
                     idt=DTable(s.idt.address, s.idt.size), cr0=s.cr0, cr2=s.cr2, cr3=s.cr3,
                     cr4=s.cr4, efer=s.efer, apic_base=s.apic_base)

    def set_sregs(self, sregs):
        """KVM_SET_SREGS, refused whole (EINVAL) where upstream's kvm_is_valid_sregs() or
        kvm_apic_set_base() refuses it; field values wider than their C fields never get
        that far."""
        sregs = checked_sregs(sregs)
        s = ffi.new("struct pk_sregs *")
        for i, n in enumerate(_SREG_ORDER):
            seg = getattr(sregs, n)
            for f in _SEG_FIELDS:
                setattr(s.seg[i], f, getattr(seg, f))
        s.gdt.address, s.gdt.size = sregs.gdt.base, sregs.gdt.limit
        s.idt.address, s.idt.size = sregs.idt.base, sregs.idt.limit
        for f in ("cr0", "cr2", "cr3", "cr4", "efer", "apic_base"):
            setattr(s, f, getattr(sregs, f))
        with self._lock:
            ensure(lib.pk_vcpu_set_sregs(self._handle(), s), "KVM_SET_SREGS",
                   InvalidConfiguration)

    # ---- MSRs (counts like KVM_GET/SET_MSRS) -----------------------------------------
    def get_msrs(self, indices):
        """(count, {index: value}) for the first `count` indices; stops at the first failure."""
        indices = [msr_index(i) for i in indices]
        e = ffi.new("struct kvm_msr_entry[]", max(1, len(indices)))
        for i, idx in enumerate(indices):
            e[i].index = idx
        with self._lock:
            n = ensure(lib.pk_vcpu_get_msrs(self._handle(), e, len(indices)), "KVM_GET_MSRS",
                       InvalidConfiguration)
        return n, {indices[i]: e[i].data for i in range(n)}

    def set_msrs(self, values):
        """KVM_SET_MSRS: the number of entries processed (stops at the first failure). A
        value that does not fit in 64 bits is refused (InvalidMsr), never truncated."""
        items = [(msr_index(i), v) for i, v in dict(values).items()]
        items = [(i, msr_value(i, v)) for i, v in items]
        e = ffi.new("struct kvm_msr_entry[]", max(1, len(items)))
        for i, (idx, val) in enumerate(items):
            e[i].index = idx
            e[i].data = val
        with self._lock:
            return ensure(lib.pk_vcpu_set_msrs(self._handle(), e, len(items)), "KVM_SET_MSRS",
                          InvalidConfiguration)

    def get_msr(self, index):
        """One MSR, or InvalidMsr naming the index."""
        n, vals = self.get_msrs([index])
        if n != 1:
            raise InvalidMsr(index, f"KVM_GET_MSRS refused MSR {index:#x}")
        return vals[index]

    def set_msr(self, index, value):
        if self.set_msrs({index: value}) != 1:
            raise InvalidMsr(index, f"KVM_SET_MSRS refused MSR {index:#x} = {value:#x}")

    # ---- CPUID -----------------------------------------------------------------------
    def set_cpuid(self, entries):
        """KVM_SET_CPUID2 with CpuidEntry objects (pykvm.devkvm.CpuidEntry): at most 256
        entries (E2BIG); after the first run only the same table again (EINVAL)."""
        entries = list(entries)
        e = ffi.new("struct kvm_cpuid_entry2[]", max(1, len(entries)))
        for i, t in enumerate(entries):
            for f in _CPUID_FIELDS:
                setattr(e[i], f, uint(getattr(t, f), 32, f"CPUID entry {i}: {f}"))
        with self._lock:
            ensure(lib.pk_vcpu_set_cpuid(self._handle(), e, len(entries)), "KVM_SET_CPUID2",
                   InvalidConfiguration)

    def get_cpuid(self):
        """KVM_GET_CPUID2: the vCPU's CPUID entries as KVM holds them (the supported set
        unless set_cpuid changed them), with the bits KVM keeps up to date at runtime."""
        from .devkvm.system import CpuidEntry
        n = ffi.new("int *", KVM_MAX_CPUID_ENTRIES)
        e = ffi.new("struct kvm_cpuid_entry2[]", KVM_MAX_CPUID_ENTRIES)
        with self._lock:
            ensure(lib.pk_vcpu_get_cpuid(self._handle(), e, n), "KVM_GET_CPUID2")
        return [CpuidEntry(**{f: getattr(x, f) for f in _CPUID_FIELDS}) for x in e[0:n[0]]]

    # ---- machine checks, ONE_REG, MP state ---------------------------------------------
    def setup_mce(self, mcg_cap):
        """KVM_X86_SETUP_MCE: the guest's IA32_MCG_CAP (bank count in bits 7:0)."""
        with self._lock:
            ensure(lib.pk_vcpu_setup_mce(self._handle(), mcg_cap & (2**64 - 1)),
                   "KVM_X86_SETUP_MCE", InvalidConfiguration)

    def get_one_reg(self, reg_id):
        """KVM_GET_ONE_REG of a u64 register (uapi.KVM_X86_REG_MSR(index) for an MSR)."""
        v = ffi.new("uint64_t *")
        with self._lock:
            ensure(lib.pk_vcpu_get_one_reg(self._handle(), reg_id & (2**64 - 1), v),
                   f"KVM_GET_ONE_REG({reg_id:#x})", InvalidConfiguration)
        return v[0]

    def set_one_reg(self, reg_id, value):
        """KVM_SET_ONE_REG of a u64 register."""
        with self._lock:
            ensure(lib.pk_vcpu_set_one_reg(self._handle(), reg_id & (2**64 - 1),
                                           value & (2**64 - 1)),
                   f"KVM_SET_ONE_REG({reg_id:#x})", InvalidConfiguration)

    def get_reg_list(self):
        """KVM_GET_REG_LIST: the ids of the registers ONE_REG has beyond the MSRs."""
        n = ffi.new("uint64_t *", 0)
        with self._lock:
            vcpu = self._handle()
            r = lib.pk_vcpu_get_reg_list(vcpu, n, ffi.NULL)
            if r not in (0, -errno.E2BIG):      # E2BIG: the length is in *n
                ensure(r, "KVM_GET_REG_LIST")
            regs = ffi.new("uint64_t[]", max(1, n[0]))
            ensure(lib.pk_vcpu_get_reg_list(vcpu, n, regs), "KVM_GET_REG_LIST")
        return list(regs[0:n[0]])

    def get_mp_state(self):
        """KVM_GET_MP_STATE: a KVM_MP_STATE_* number."""
        s = ffi.new("struct kvm_mp_state *")
        with self._lock:
            ensure(lib.pk_vcpu_get_mp_state(self._handle(), s), "KVM_GET_MP_STATE")
        return s.mp_state

    def set_mp_state(self, state):
        """KVM_SET_MP_STATE (e.g. KVM_MP_STATE_RUNNABLE to start an AP)."""
        s = ffi.new("struct kvm_mp_state *", {"mp_state": state})
        with self._lock:
            ensure(lib.pk_vcpu_set_mp_state(self._handle(), s), f"KVM_SET_MP_STATE({state})",
                   InvalidConfiguration)

    # ---- loading and running ---------------------------------------------------------
    def load(self, image):
        with self._lock:
            return super().load(image)

    def _complete_pending(self):
        pend, self._pending = self._pending, None
        data = answer_bytes(pend)
        if data is not None:
            dest = self._run.pio_data if isinstance(pend, X.Io) else self._run.mmio.data
            ffi.memmove(dest, data, len(data))
        elif isinstance(pend, (X.RdMsr, X.WrMsr)):
            self._run.msr.error = 1 if pend.error else 0
            if isinstance(pend, X.RdMsr):
                self._run.msr.data = pend.data & (2**64 - 1)

    @staticmethod
    def _budget(max_insns):
        if max_insns is None:
            return 0
        if not isinstance(max_insns, int) or isinstance(max_insns, bool) or \
                not 0 <= max_insns < 1 << 64:
            raise InvalidConfiguration(f"max_insns must be an int 0..2**64-1 (0: no limit), "
                                       f"got {max_insns!r}")
        return max_insns

    def run(self, max_insns=DEFAULT_RUN_BUDGET, return_to_user=True, inject=None):
        """KVM_RUN until an exit to userspace; returns a pykvm.exits type. `max_insns`
        bounds guest instructions (a host timer signal: Intr) so a runaway guest ends;
        0 or None: no bound (kick() from another thread ends it, with Intr).
        With return_to_user=False the vCPU thread stops on its way out of the kernel,
        before user-return notifiers run; `return_to_user()` completes it.
        `inject`: a pykvm.events.Inject, a host event placed in this run (whether it
        fired: `last_injection_fired`); it belongs to this thread's run, never to
        another thread's run on the same pCPU."""
        # The hot path of every Python-driven exit. One C call runs and reads the exit
        # back (pk_sim_run_once); an I/O exit is built without a call to Io.__init__
        # (same fields, same class); only an exit that takes an answer (IN, MMIO read,
        # RDMSR/WRMSR) is kept pending for the next run.
        if max_insns.__class__ is int and 0 <= max_insns <= _U64_MAX:
            budget = max_insns      # the common case, checked inline: same rule as _budget
        else:
            budget = self._budget(max_insns)
        # acquire/release rather than `with`: an RLock's context manager costs about
        # 200 ns more per run here, a tenth of a Python-driven exit.
        lock = self._lock
        lock.acquire()
        try:
            vcpu = self._vcpu
            if vcpu is None:
                vcpu = self._handle()   # raises: the VM is closed
            if not self.vm.slots:
                self._check_runnable()
            if self._pending is not None:
                self._complete_pending()
            if inject is None:
                info = _run_once(vcpu, budget, return_to_user is False)
            else:
                from . import events
                events.arm(self._m, lib.pk_vcpu_cpu(vcpu), inject, budget)
                try:
                    info = _run_once(vcpu, budget, return_to_user is False)
                finally:
                    self.last_injection_fired = bool(lib.pk_inject_fired(self._m))
                    lib.pk_inject_disarm(self._m)
            kind = info & 0xFF
            if kind == _EXIT_IO:
                size = (info >> 9) & 0xF
                ex = _new(_Io)
                ex.reason = _EXIT_IO
                ex.direction = direction = (info >> 8) & 1
                ex.size = size
                ex.port = (info >> 16) & 0xFFFF
                ex.count = count = info >> 32
                ex.data = bytearray(self._pio[:size * count])
                if direction == _EXIT_IO_IN:
                    self._pending = ex
                return ex
            if kind == _RUN_FAILED:
                # KVM_RUN failed without an exit (EAGAIN: an AP woken but still waiting).
                ensure(-(info >> 32), "KVM_RUN")
            ex = self._decode_exit()
            self._pending = ex
            return ex
        finally:
            lock.release()

    def _decode_exit(self):
        return X.decode_kvm_run(self._run, _pio_data)

    def run_preempted(self, after=1, max_insns=DEFAULT_RUN_BUDGET, by="task"):
        """KVM_RUN in which the vCPU thread is preempted once, at the first preemptible
        point from its `after`-th host instruction on: by="task", another host process
        runs on its pCPU and returns to user mode; by="kthread", a kernel thread runs
        there and nothing returns to user mode. Returns (exit, preempted?)."""
        if not isinstance(after, int) or isinstance(after, bool) or not 1 <= after < 2**32:
            raise InvalidConfiguration(f"after must be an int 1..2**32-1, got {after!r}")
        kinds = {"task": lib.PK_INJ_PREEMPT, "kthread": lib.PK_INJ_PREEMPT_KTHREAD}
        if by not in kinds:
            raise InvalidConfiguration(f"by must be one of {', '.join(kinds)}, got {by!r}")
        budget = self._budget(max_insns)
        return self._run_reporting(
            lambda vcpu, flag: lib.pk_vcpu_run_preempted_by(vcpu, budget, after, kinds[by],
                                                            flag))

    def run_rescheduled(self, by="task", max_insns=DEFAULT_RUN_BUDGET):
        """KVM_RUN during which another task becomes runnable on the vCPU thread's pCPU
        (woken by an interrupt while the guest runs): the thread yields to it at its first
        reschedule point, after an exit handled in the kernel, with the guest state
        loaded. by="task": the pCPU's user process, which returns to user mode; by=
        "kthread": a kernel worker, which does not. Returns (exit, preempted?)."""
        if by not in ("task", "kthread"):
            raise InvalidConfiguration(f"by must be 'task' or 'kthread', got {by!r}")
        budget = self._budget(max_insns)
        return self._run_reporting(
            lambda vcpu, flag: lib.pk_vcpu_run_rescheduled(vcpu, budget, by == "kthread",
                                                           flag))

    def _run_reporting(self, run):
        """A KVM_RUN variant `run(vcpu, bool *)` that reports whether its event happened:
        (exit, happened?)."""
        with self._lock:
            vcpu = self._handle()
            self._check_runnable()
            self._complete_pending()
            flag = ffi.new("bool *")
            ensure(run(vcpu, flag), "KVM_RUN")
            ex = self._decode_exit()
            self._pending = ex
            return ex, bool(flag[0])

    def return_to_user(self):
        """Finish a run(return_to_user=False): the thread reaches user mode."""
        with self._lock:
            ensure(lib.pk_vcpu_return_to_user(self._handle()), "returning to user mode")

    def run_loop(self, devices=None, max_exits=0, max_insns=DEFAULT_RUN_BUDGET):
        """KVM_RUN from C, again and again: port I/O to `devices` (a PortDevices) is
        answered there without coming back to Python. Returns RunLoopResult after any
        other exit, or with exit None once `max_exits` (0 = no limit) were handled."""
        from .devkvm.runloop import PortDevices
        from .devkvm.vcpu import RunLoopResult
        if devices is not None and not isinstance(devices, PortDevices):
            raise TypeError(f"devices must be PortDevices, got {devices!r}")
        if not isinstance(max_exits, int) or isinstance(max_exits, bool) or \
                not 0 <= max_exits < 1 << 64:
            raise InvalidConfiguration(f"max_exits must be an int >= 0, got {max_exits!r}")
        budget = self._budget(max_insns)
        with self._lock:
            vcpu = self._handle()
            self._check_runnable()
            self._complete_pending()
            res = ffi.new("struct pk_vmm_loop_result *")
            devs = devices._devs if devices is not None else ffi.NULL
            lib.pk_sim_run_loop(vcpu, devs, max_exits, budget, res)
            if res.stop == lib.PK_VMM_STOP_BUDGET:
                return RunLoopResult(res.handled, None)
            ex = self._decode_exit()
            self._pending = ex
            return RunLoopResult(res.handled, ex)

    # ---- scheduling and stats --------------------------------------------------------
    @property
    def cpu(self):
        """The pCPU the vCPU thread runs on."""
        return lib.pk_vcpu_cpu(self._handle())

    def change_task(self, how):
        """The vCPU's thread, in user mode, changes its own state between ioctls:
        "arch_prctl" (ARCH_SET_FS/ARCH_SET_GS), "wrfsbase" (WRFSBASE/WRGSBASE in user
        mode, which the kernel learns at its next context switch) or "set_tsc"
        (prctl(PR_SET_TSC): CR4.TSD while it runs)."""
        hows = ("arch_prctl", "wrfsbase", "set_tsc")
        if how not in hows:
            raise InvalidConfiguration(f"how must be one of {hows}, got {how!r}")
        with self._lock:
            vcpu = self._handle()
            ensure(lib.pk_host_task_change(self._m, lib.pk_vcpu_task(vcpu), hows.index(how))
                   and -22, "changing the vCPU thread's state")

    def kick_every(self, period_ns):
        """Another vCPU (on another pCPU, not simulated) kicks this one (KVM_HC_KICK_CPU)
        every `period_ns` of this vCPU's pCPU clock, which runs only while it waits: each
        halt is woken `period_ns` after it began. 0 stops the kicks."""
        if not isinstance(period_ns, int) or not 0 <= period_ns < 2**63:
            raise InvalidConfiguration(f"period_ns must be an int >= 0, got {period_ns!r}")
        with self._lock:
            ensure(lib.pk_vcpu_kick_every(self._handle(), period_ns), "kicking the vCPU")

    def kick_after(self, ns):
        """One such kick, `ns` from now by this vCPU's pCPU clock (replaces kick_every)."""
        if not isinstance(ns, int) or not 0 <= ns < 2**63:
            raise InvalidConfiguration(f"ns must be an int >= 0, got {ns!r}")
        with self._lock:
            ensure(lib.pk_vcpu_kick_after(self._handle(), ns), "kicking the vCPU")

    @property
    def halt_poll_ns(self):
        """The vCPU's current halt-polling window (it grows and shrinks with its halts)."""
        return lib.pk_vcpu_halt_poll_ns(self._handle())

    def migrate(self, cpu):
        """Move the vCPU thread to pCPU `cpu` (from its next ioctl on)."""
        cpu = self.vm.machine._cpu(cpu)
        with self._lock:
            ensure(lib.pk_vcpu_migrate(self._handle(), cpu), "migrating the vCPU thread")

    def stats(self):
        s = ffi.new("struct kvm_vcpu_stat *")
        lib.pk_vcpu_get_stat(self._handle(), s)
        return {f: getattr(s, f) for f in ("exits", "fastpath_exits", "userspace_exits",
                                           "io_exits", "mmio_exits", "halt_exits", "msr_exits",
                                           "cpuid_exits", "irq_exits", "preemptions", "migrations",
                                           "halt_successful_poll", "halt_attempted_poll",
                                           "halt_wakeup")}


def _cap_number(cap):
    """A KVM_CAP_* number from a number or a name ("X86_USER_SPACE_MSR")."""
    if isinstance(cap, str):
        from .devkvm import uapi
        name = cap if cap.startswith("KVM_CAP_") else "KVM_CAP_" + cap.upper()
        if name not in uapi.CAPS:
            raise InvalidConfiguration(f"unknown capability {cap!r}")
        return uapi.CAPS[name]
    return cap


def _msr_index(idx):
    if not isinstance(idx, int) or not 0 <= idx <= 0xFFFFFFFF:
        raise InvalidMsr(idx if isinstance(idx, int) else -1, f"MSR index must be a u32, got {idx!r}")
    return idx
