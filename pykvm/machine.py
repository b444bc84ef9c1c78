"""The simulated machine: Machine -> Vm -> Vcpu, the same shape as the /dev/kvm backend.

    m = pykvm.Machine(cpus=2, vendor="svm", cpu_model="zen3")
    vm = m.create_vm()
    vcpu = vm.create_vcpu()
    vcpu.load(image)                         # pykvm.guest image, or raw code bytes
    vcpu.set_msrs({MSR_KERNEL_GS_BASE: 0x1234})   # -> 1, the count processed
    ex = vcpu.run()                          # a pykvm.exits type
    m.costs()                                # operations and cycles by path
"""
import mmap

from . import exits as X
from ._lib import OPS, PATHS, PRICED_MSRS, ensure, ffi, lib
from .errors import InvalidConfiguration, InvalidMemory, InvalidMsr
from .log import get_logger
from .regs import Regs, Segment, DTable, Sregs
from .vcpu_base import VcpuBase, answer_bytes
from .params import resolve as resolve_params
from .vendors import get_vendor

# Vcpu.run()'s hot path, bound once.
_run_once = lib.pk_sim_run_once
_new = object.__new__
_Io = X.Io
_EXIT_IO, _EXIT_IO_IN = X.KVM_EXIT_IO, X.KVM_EXIT_IO_IN

log = get_logger("pykvm")

PAGE_SIZE = 4096
MAX_CPUS = 8
MAX_MEMSLOTS = 8
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
    """A simulated x86-64 machine with KVM loaded (one vendor module)."""

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
            raise MemoryError("could not allocate the machine")
        self._m = ffi.gc(m, lib.pk_machine_destroy)
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
        self.vms = []
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
        for kind, table, names in tables:
            given = profile.get(table, {})
            for key, i in names.items():
                lib.pk_profile_set(self._m, kind, i, int(given.get(key, 0)))

    def costs(self):
        """{path: {"ops": {op: count}, "cycles": n, "msrs": {"WRMSR SPEC_CTRL": n}}},
        only non-zero entries."""
        out = {}
        for p, pname in enumerate(PATHS):
            ops = {o: lib.pk_cost_ops(self._m, p, i) for i, o in enumerate(OPS)}
            ops = {k: v for k, v in ops.items() if v}
            msrs = {}
            for w, verb in ((0, "RDMSR"), (1, "WRMSR")):
                for s in range(len(PRICED_MSRS) + 1):
                    n = lib.pk_cost_msr_ops(self._m, p, w, s)
                    if n:
                        name = PRICED_MSRS[s][0] if s < len(PRICED_MSRS) else "other"
                        msrs[f"{verb} {name}"] = n
            cycles = lib.pk_cost_cycles(self._m, p)
            if ops or cycles:
                out[pname] = {"ops": ops, "cycles": cycles, "msrs": msrs}
        return out

    def get_supported_cpuid(self):
        """KVM_GET_SUPPORTED_CPUID, as pykvm.devkvm.CpuidEntry objects."""
        from .devkvm.system import CpuidEntry
        e = ffi.new("struct kvm_cpuid_entry2[]", 32)
        n = ensure(lib.pk_get_supported_cpuid(self._m, e, 32), "KVM_GET_SUPPORTED_CPUID")
        return [CpuidEntry(**{f: getattr(x, f) for f in _CPUID_FIELDS}) for x in e[0:n]]

    def reset_costs(self):
        lib.pk_machine_reset_costs(self._m)

    @property
    def host_bugs(self):
        """Faults of the host's non-_safe MSR accesses and VMX instruction failures (WARNs)."""
        return lib.pk_machine_host_bugs(self._m)

    def check(self):
        """The oracle's verdict over everything that ran: None, or the first Violation
        (with the number of violations seen)."""
        from .oracle import Violation
        first = ffi.new("struct pk_violation *")
        count = ffi.new("uint64_t *")
        lib.pk_oracle_result(self._m, first, count)
        return Violation.from_c(first, count[0], self) if count[0] else None

    @property
    def has_hv_timer(self):
        """Whether the loaded KVM has a hypervisor timer for the LAPIC's TSC deadline (the
        VMX preemption timer): what the TSC-deadline fast path needs."""
        return bool(lib.pk_kvm_has_hv_timer(self._m))

    def run_other_task(self, cpu):
        """Another host process gets pCPU `cpu` (preempting the task there), enters the
        kernel and returns to user mode."""
        if not 0 <= cpu < self.nr_cpus:
            raise InvalidConfiguration(f"cpu {cpu} out of range 0..{self.nr_cpus - 1}")
        lib.pk_host_run_other(self._m, cpu)

    def host_user_insns(self, cpu):
        """The task in user mode on pCPU `cpu` executes RDTSCP, RDPID, RDFSBASE,
        RDGSBASE and a SYSCALL that returns with SYSRETQ: what a wrong TSC_AUX, LSTAR,
        STAR, SYSCALL_MASK or FS/GS base does to a host program (see check())."""
        if not 0 <= cpu < self.nr_cpus:
            raise InvalidConfiguration(f"cpu {cpu} out of range 0..{self.nr_cpus - 1}")
        ensure(lib.pk_host_user_insns(self._m, cpu) and -22, f"CPU {cpu} is not in user mode")
    def run_kthread(self, cpu):
        """A kernel thread (a kworker) preempts the task on pCPU `cpu` and gives the CPU
        back: no task returns to user mode in between (unless the preempted task was in
        user mode, which then returns to it)."""
        if not 0 <= cpu < self.nr_cpus:
            raise InvalidConfiguration(f"cpu {cpu} out of range 0..{self.nr_cpus - 1}")
        ensure(lib.pk_host_run_kthread(self._m, cpu), f"running a kernel thread on CPU {cpu}")

    def cpu_tsc(self, cpu):
        """pCPU `cpu`'s TSC: the simulated clock (2.1 GHz), which advances only while
        the CPU waits (halt polling, idle)."""
        if not 0 <= cpu < self.nr_cpus:
            raise InvalidConfiguration(f"cpu {cpu} out of range 0..{self.nr_cpus - 1}")
        return lib.pk_host_cpu_tsc(self._m, cpu)

    def read_cpu_msr(self, cpu, index):
        """What pCPU `cpu` holds in MSR `index` right now (hardware view)."""
        v = ffi.new("uint64_t *")
        if lib.pk_cpu_read_msr(self._m, cpu, index, v):
            raise InvalidMsr(index, f"pCPU {cpu} has no MSR {index:#x}")
        return v[0]

    def per_cpu_offset(self, cpu):
        return lib.pk_host_per_cpu_offset(self._m, cpu)

    def disable_virtualization(self, cpu):
        """hardware_disable on one CPU (CPU offline, module unload, reboot IPI)."""
        ensure(lib.pk_kvm_disable_virtualization_cpu(self._m, cpu), f"disabling VMX/SVM on CPU {cpu}")

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


class Vm:
    """A VM on the simulated machine (Machine.create_vm)."""

    def __init__(self, machine):
        from .devkvm.vm import GuestMemory
        self.machine = machine
        p = ffi.new("struct kvm **")
        ensure(lib.pk_create_vm(machine._m, p), "KVM_CREATE_VM", InvalidConfiguration)
        self._kvm = p[0]
        self.slots = []
        self.vcpus = []
        self.memory = GuestMemory(self)
        machine.vms.append(self)

    def add_memory(self, gpa, size, *, slot=None):
        """Guest-physical memory [gpa, gpa+size): page-aligned, no overlap."""
        for name, v in (("gpa", gpa), ("size", size)):
            if not isinstance(v, int) or v < 0 or v % PAGE_SIZE:
                raise InvalidMemory(f"{name} must be a page-aligned non-negative int, got {v!r}")
        if size == 0:
            raise InvalidMemory("size must be > 0")
        used = {s.slot for s in self.slots}
        if slot is None:
            slot = next(i for i in range(MAX_MEMSLOTS + 1) if i not in used)
        if slot >= MAX_MEMSLOTS or slot in used:
            raise InvalidMemory(f"slot {slot} is in use or beyond the {MAX_MEMSLOTS} slots")
        for s in self.slots:
            if gpa < s.gpa + s.size and s.gpa < gpa + size:
                raise InvalidMemory(f"[{gpa:#x}, {gpa + size:#x}) overlaps slot {s.slot}")
        mapping = mmap.mmap(-1, size)
        hva = ffi.from_buffer(mapping)
        ensure(lib.pk_vm_set_memslot(self._kvm, slot, gpa, size, hva),
               f"KVM_SET_USER_MEMORY_REGION slot {slot}", InvalidMemory)
        s = _Slot(slot, gpa, size, mapping)
        s._hva = hva  # keeps the buffer pinned while the VM references it
        self.slots.append(s)
        return s

    def create_irqchip(self):
        """KVM_CREATE_IRQCHIP: the LAPIC in the kernel, so a guest HLT halts the vCPU in
        KVM (polling, then blocking) instead of exiting to userspace. Before any vCPU."""
        ensure(lib.pk_vm_create_irqchip(self._kvm), "KVM_CREATE_IRQCHIP", InvalidConfiguration)

    def _ensure_memory(self, size):
        if not any(s.contains(0, size) for s in self.slots):
            self.add_memory(0, (size + PAGE_SIZE - 1) // PAGE_SIZE * PAGE_SIZE)

    def create_vcpu(self, cpu=None):
        """A vCPU whose thread runs on pCPU `cpu` (default: round robin)."""
        if cpu is not None and not 0 <= cpu < self.machine.nr_cpus:
            raise InvalidConfiguration(f"cpu {cpu} out of range 0..{self.machine.nr_cpus - 1}")
        v = Vcpu(self, -1 if cpu is None else cpu)
        self.vcpus.append(v)
        return v


class Vcpu(VcpuBase):
    """A vCPU: registers, MSRs, run() -> typed exit."""

    def __init__(self, vm, cpu):
        self.vm = vm
        self._m = vm.machine._m
        p = ffi.new("struct kvm_vcpu **")
        ensure(lib.pk_create_vcpu(vm._kvm, cpu, p), "KVM_CREATE_VCPU", InvalidConfiguration)
        self._vcpu = p[0]
        self._run = lib.pk_vcpu_run_struct(self._vcpu)
        self._pio = ffi.buffer(self._run.pio_data)     # an IN/OUT exit's data, sliced
        self._pending = None
        self._cpuid = None
        self.image = None

    # ---- registers -------------------------------------------------------------------
    def get_regs(self):
        r = ffi.new("struct pk_regs *")
        lib.pk_vcpu_get_regs(self._vcpu, r)
        return Regs(**{n: r.gpr[i] for i, n in enumerate(_GPR_ORDER)}, rip=r.rip, rflags=r.rflags)

    def set_regs(self, regs):
        r = ffi.new("struct pk_regs *")
        for i, n in enumerate(_GPR_ORDER):
            r.gpr[i] = getattr(regs, n) & (2**64 - 1)
        r.rip = regs.rip & (2**64 - 1)
        r.rflags = regs.rflags & (2**64 - 1)
        lib.pk_vcpu_set_regs(self._vcpu, r)

    def get_sregs(self):
        s = ffi.new("struct pk_sregs *")
        lib.pk_vcpu_get_sregs(self._vcpu, s)
        segs = {n: Segment(**{f: getattr(s.seg[i], f) for f in _SEG_FIELDS})
                for i, n in enumerate(_SREG_ORDER)}
        return Sregs(**segs, gdt=DTable(s.gdt.address, s.gdt.size),
                     idt=DTable(s.idt.address, s.idt.size), cr0=s.cr0, cr2=s.cr2, cr3=s.cr3,
                     cr4=s.cr4, efer=s.efer, apic_base=s.apic_base)

    def set_sregs(self, sregs):
        s = ffi.new("struct pk_sregs *")
        for i, n in enumerate(_SREG_ORDER):
            seg = getattr(sregs, n)
            for f in _SEG_FIELDS:
                setattr(s.seg[i], f, getattr(seg, f))
        s.gdt.address, s.gdt.size = sregs.gdt.base, sregs.gdt.limit
        s.idt.address, s.idt.size = sregs.idt.base, sregs.idt.limit
        for f in ("cr0", "cr2", "cr3", "cr4", "efer", "apic_base"):
            setattr(s, f, getattr(sregs, f))
        ensure(lib.pk_vcpu_set_sregs(self._vcpu, s), "KVM_SET_SREGS", InvalidConfiguration)

    # ---- MSRs (counts like KVM_GET/SET_MSRS) -----------------------------------------
    def get_msrs(self, indices):
        """(count, {index: value}) for the first `count` indices; stops at the first failure."""
        indices = list(indices)
        e = ffi.new("struct kvm_msr_entry[]", max(1, len(indices)))
        for i, idx in enumerate(indices):
            e[i].index = _msr_index(idx)
        n = lib.pk_vcpu_get_msrs(self._vcpu, e, len(indices))
        return n, {indices[i]: e[i].data for i in range(n)}

    def set_msrs(self, values):
        """KVM_SET_MSRS: the number of entries processed (stops at the first failure)."""
        items = list(values.items())
        e = ffi.new("struct kvm_msr_entry[]", max(1, len(items)))
        for i, (idx, val) in enumerate(items):
            e[i].index = _msr_index(idx)
            e[i].data = val & (2**64 - 1)
        return lib.pk_vcpu_set_msrs(self._vcpu, e, len(items))

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
        """KVM_SET_CPUID2 with CpuidEntry objects (pykvm.devkvm.CpuidEntry)."""
        entries = list(entries)
        e = ffi.new("struct kvm_cpuid_entry2[]", max(1, len(entries)))
        for i, t in enumerate(entries):
            for f in _CPUID_FIELDS:
                setattr(e[i], f, getattr(t, f))
        ensure(lib.pk_vcpu_set_cpuid(self._vcpu, e, len(entries)), "KVM_SET_CPUID2",
               InvalidConfiguration)
        self._cpuid = entries

    def get_cpuid(self):
        """The vCPU's CPUID entries (the supported set unless set_cpuid changed them)."""
        if self._cpuid is None:
            self._cpuid = self.vm.machine.get_supported_cpuid()
        return list(self._cpuid)

    # ---- loading and running ---------------------------------------------------------
    def _complete_pending(self):
        pend, self._pending = self._pending, None
        data = answer_bytes(pend)
        if data is not None:
            dest = self._run.pio_data if isinstance(pend, X.Io) else self._run.mmio.data
            ffi.memmove(dest, data, len(data))

    def run(self, max_insns=DEFAULT_RUN_BUDGET, return_to_user=True, inject=None):
        """KVM_RUN until an exit to userspace; returns a pykvm.exits type. `max_insns`
        bounds guest instructions (a host timer signal: Intr) so a runaway guest ends.
        With return_to_user=False the vCPU thread stops on its way out of the kernel,
        before user-return notifiers run; `return_to_user()` completes it.
        `inject`: a pykvm.events.Inject, a host event placed in this run (whether it
        fired: `last_injection_fired`)."""
        # The hot path of every Python-driven exit. One C call runs and reads the exit
        # back (pk_sim_run_once); an I/O exit is built without a call to Io.__init__
        # (same fields, same class); only an exit that takes an answer (IN, MMIO read)
        # is kept pending for the next run.
        if self._pending is not None:
            self._complete_pending()
        if inject is None:
            info = _run_once(self._vcpu, max_insns or 0, return_to_user is False)
        else:
            from . import events
            events.arm(self._m, self.cpu, inject, max_insns or 0)
            try:
                info = _run_once(self._vcpu, max_insns or 0, return_to_user is False)
            finally:
                self.last_injection_fired = bool(lib.pk_inject_fired(self._m))
                lib.pk_inject_disarm(self._m)
        if info & 0xFF == _EXIT_IO:
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
        ex = self._decode_exit()
        if ex.reason == X.KVM_EXIT_MMIO and not ex.is_write:
            self._pending = ex
        return ex

    def _decode_exit(self):
        r = self._run
        reason = r.exit_reason
        if reason == X.KVM_EXIT_IO:
            n = r.io.size * r.io.count
            return X.Io(r.io.direction, r.io.size, r.io.port, r.io.count,
                        bytearray(ffi.buffer(r.pio_data, n)))
        if reason == X.KVM_EXIT_MMIO:
            return X.Mmio(r.mmio.phys_addr, bytearray(ffi.buffer(r.mmio.data, r.mmio.len)),
                          r.mmio.len, bool(r.mmio.is_write))
        if reason == X.KVM_EXIT_HLT:
            return X.Hlt()
        if reason == X.KVM_EXIT_SHUTDOWN:
            return X.Shutdown()
        if reason == X.KVM_EXIT_INTR:
            return X.Intr()
        if reason == X.KVM_EXIT_FAIL_ENTRY:
            return X.FailEntry(r.fail_entry.hardware_entry_failure_reason, r.fail_entry.cpu)
        if reason == X.KVM_EXIT_INTERNAL_ERROR:
            n = min(r.internal.ndata, 16)
            return X.InternalError(r.internal.suberror, tuple(r.internal.data[0:n]))
        return X.Unsupported(reason)

    def run_preempted(self, after=1, max_insns=DEFAULT_RUN_BUDGET, by="task"):
        """KVM_RUN in which the vCPU thread is preempted once, at the first preemptible
        point from its `after`-th host instruction on: by="task", another host process
        runs on its pCPU and returns to user mode; by="kthread", a kernel thread runs
        there and nothing returns to user mode. Returns (exit, preempted?)."""
        if not isinstance(after, int) or after < 1:
            raise InvalidConfiguration(f"after must be an int >= 1, got {after!r}")
        kinds = {"task": lib.PK_INJ_PREEMPT, "kthread": lib.PK_INJ_PREEMPT_KTHREAD}
        if by not in kinds:
            raise InvalidConfiguration(f"by must be one of {', '.join(kinds)}, got {by!r}")
        self._complete_pending()
        flag = ffi.new("bool *")
        ensure(lib.pk_vcpu_run_preempted_by(self._vcpu, max_insns or 0, after, kinds[by],
                                            flag), "KVM_RUN")
        ex = self._decode_exit()
        self._pending = ex
        return ex, bool(flag[0])

    def run_rescheduled(self, by="task", max_insns=DEFAULT_RUN_BUDGET):
        """KVM_RUN during which another task becomes runnable on the vCPU thread's pCPU
        (woken by an interrupt while the guest runs): the thread yields to it at its first
        reschedule point, after an exit handled in the kernel, with the guest state
        loaded. by="task": the pCPU's user process, which returns to user mode; by=
        "kthread": a kernel worker, which does not. Returns (exit, preempted?)."""
        if by not in ("task", "kthread"):
            raise InvalidConfiguration(f"by must be 'task' or 'kthread', got {by!r}")
        self._complete_pending()
        flag = ffi.new("bool *")
        ensure(lib.pk_vcpu_run_rescheduled(self._vcpu, max_insns or 0, by == "kthread",
                                           flag), "KVM_RUN")
        ex = self._decode_exit()
        self._pending = ex
        return ex, bool(flag[0])

    def return_to_user(self):
        """Finish a run(return_to_user=False): the thread reaches user mode."""
        ensure(lib.pk_vcpu_return_to_user(self._vcpu), "returning to user mode")

    def run_loop(self, devices=None, max_exits=0, max_insns=DEFAULT_RUN_BUDGET):
        """KVM_RUN from C, again and again: port I/O to `devices` (a PortDevices) is
        answered there without coming back to Python. Returns RunLoopResult after any
        other exit, or with exit None once `max_exits` (0 = no limit) were handled."""
        from .devkvm.runloop import PortDevices
        from .devkvm.vcpu import RunLoopResult
        if devices is not None and not isinstance(devices, PortDevices):
            raise TypeError(f"devices must be PortDevices, got {devices!r}")
        if not isinstance(max_exits, int) or max_exits < 0:
            raise InvalidConfiguration(f"max_exits must be an int >= 0, got {max_exits!r}")
        self._complete_pending()
        res = ffi.new("struct pk_vmm_loop_result *")
        devs = devices._devs if devices is not None else ffi.NULL
        lib.pk_sim_run_loop(self._vcpu, devs, max_exits, max_insns or 0, res)
        if res.stop == lib.PK_VMM_STOP_BUDGET:
            return RunLoopResult(res.handled, None)
        ex = self._decode_exit()
        self._pending = ex
        return RunLoopResult(res.handled, ex)

    # ---- scheduling and stats --------------------------------------------------------
    @property
    def cpu(self):
        """The pCPU the vCPU thread runs on."""
        return lib.pk_vcpu_cpu(self._vcpu)

    def change_task(self, how):
        """The vCPU's thread, in user mode, changes its own state between ioctls:
        "arch_prctl" (ARCH_SET_FS/ARCH_SET_GS), "wrfsbase" (WRFSBASE/WRGSBASE in user
        mode, which the kernel learns at its next context switch) or "set_tsc"
        (prctl(PR_SET_TSC): CR4.TSD while it runs)."""
        hows = ("arch_prctl", "wrfsbase", "set_tsc")
        if how not in hows:
            raise InvalidConfiguration(f"how must be one of {hows}, got {how!r}")
        ensure(lib.pk_host_task_change(self._m, lib.pk_vcpu_task(self._vcpu), hows.index(how))
               and -22, "changing the vCPU thread's state")
    def kick_every(self, period_ns):
        """Another vCPU (on another pCPU, not simulated) kicks this one (KVM_HC_KICK_CPU)
        every `period_ns` of this vCPU's pCPU clock, which runs only while it waits: each
        halt is woken `period_ns` after it began. 0 stops the kicks."""
        if not isinstance(period_ns, int) or not 0 <= period_ns < 2**63:
            raise InvalidConfiguration(f"period_ns must be an int >= 0, got {period_ns!r}")
        ensure(lib.pk_vcpu_kick_every(self._vcpu, period_ns), "kicking the vCPU")

    def kick_after(self, ns):
        """One such kick, `ns` from now by this vCPU's pCPU clock (replaces kick_every)."""
        if not isinstance(ns, int) or not 0 <= ns < 2**63:
            raise InvalidConfiguration(f"ns must be an int >= 0, got {ns!r}")
        ensure(lib.pk_vcpu_kick_after(self._vcpu, ns), "kicking the vCPU")

    @property
    def halt_poll_ns(self):
        """The vCPU's current halt-polling window (it grows and shrinks with its halts)."""
        return lib.pk_vcpu_halt_poll_ns(self._vcpu)

    def migrate(self, cpu):
        """Move the vCPU thread to pCPU `cpu` (from its next ioctl on)."""
        if not 0 <= cpu < self.vm.machine.nr_cpus:
            raise InvalidConfiguration(f"cpu {cpu} out of range")
        ensure(lib.pk_vcpu_migrate(self._vcpu, cpu), "migrating the vCPU thread")

    def stats(self):
        s = ffi.new("struct kvm_vcpu_stat *")
        lib.pk_vcpu_get_stat(self._vcpu, s)
        return {f: getattr(s, f) for f in ("exits", "fastpath_exits", "userspace_exits",
                                           "io_exits", "mmio_exits", "halt_exits", "msr_exits",
                                           "cpuid_exits", "irq_exits", "preemptions", "migrations",
                                           "halt_successful_poll", "halt_attempted_poll",
                                           "halt_wakeup")}


def _msr_index(idx):
    if not isinstance(idx, int) or not 0 <= idx <= 0xFFFFFFFF:
        raise InvalidMsr(idx if isinstance(idx, int) else -1, f"MSR index must be a u32, got {idx!r}")
    return idx
