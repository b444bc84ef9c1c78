"""Typed vCPU exits, one per KVM_EXIT_* reason an x86 KVM can give (linux/kvm.h
numbering), the same classes for every backend. `Vcpu.run()` returns one of these;
`Unsupported` carries any other reason (another architecture's), so the caller decides."""
from dataclasses import dataclass, field

# linux/kvm.h
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IOAPIC_EOI = 26
KVM_EXIT_HYPERV = 27
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_EXIT_AP_RESET_HOLD = 32
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_XEN = 34
KVM_EXIT_NOTIFY = 37
KVM_EXIT_MEMORY_FAULT = 39
KVM_EXIT_TDX = 40

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

# kvm_run.msr.reason of an MSR exit; also KVM_CAP_X86_USER_SPACE_MSR's argument, saying
# which failed guest accesses go to userspace.
KVM_MSR_EXIT_REASON_INVAL = 1 << 0      # KVM refused the access (it would be a #GP)
KVM_MSR_EXIT_REASON_UNKNOWN = 1 << 1    # KVM does not know the MSR
KVM_MSR_EXIT_REASON_FILTER = 1 << 2     # the VM's MSR filter denies the access
KVM_MSR_EXIT_REASON_VALID_MASK = 0x7
MSR_EXIT_REASON_NAMES = {KVM_MSR_EXIT_REASON_INVAL: "INVAL",
                         KVM_MSR_EXIT_REASON_UNKNOWN: "UNKNOWN",
                         KVM_MSR_EXIT_REASON_FILTER: "FILTER"}


@dataclass(slots=True)
class Exit:
    """Base of every exit; `reason` is the KVM_EXIT_* number."""
    reason: int = field(init=False, default=KVM_EXIT_UNKNOWN)


@dataclass(slots=True)
class Io(Exit):
    """Corresponds to KVM_EXIT_IO. For an IN, set `data` (bytes of size*count) before
    the next run; for an OUT, `data` holds what the guest wrote."""
    reason: int = field(init=False, default=KVM_EXIT_IO)
    direction: int
    size: int
    port: int
    count: int
    data: bytearray

    @property
    def is_in(self):
        return self.direction == KVM_EXIT_IO_IN

    @property
    def value(self):
        """The OUT value (or current IN buffer) as an unsigned integer."""
        return int.from_bytes(bytes(self.data[: self.size]), "little")


@dataclass(slots=True)
class Mmio(Exit):
    """Corresponds to KVM_EXIT_MMIO. For a read, set `data` before the next run."""
    reason: int = field(init=False, default=KVM_EXIT_MMIO)
    phys_addr: int
    data: bytearray
    len: int
    is_write: bool


@dataclass(slots=True)
class Hlt(Exit):
    """Corresponds to KVM_EXIT_HLT."""
    reason: int = field(init=False, default=KVM_EXIT_HLT)


@dataclass(slots=True)
class Shutdown(Exit):
    """Corresponds to KVM_EXIT_SHUTDOWN (triple fault)."""
    reason: int = field(init=False, default=KVM_EXIT_SHUTDOWN)


@dataclass(slots=True)
class Hypercall(Exit):
    """Corresponds to KVM_EXIT_HYPERCALL."""
    reason: int = field(init=False, default=KVM_EXIT_HYPERCALL)
    nr: int
    args: tuple


@dataclass(slots=True)
class FailEntry(Exit):
    """Corresponds to KVM_EXIT_FAIL_ENTRY."""
    reason: int = field(init=False, default=KVM_EXIT_FAIL_ENTRY)
    hardware_entry_failure_reason: int
    cpu: int = 0


@dataclass(slots=True)
class Intr(Exit):
    """Corresponds to KVM_EXIT_INTR: KVM_RUN returned -EINTR (a signal, or the run's
    instruction budget on the simulated machine)."""
    reason: int = field(init=False, default=KVM_EXIT_INTR)


@dataclass(slots=True)
class InternalError(Exit):
    """Corresponds to KVM_EXIT_INTERNAL_ERROR."""
    reason: int = field(init=False, default=KVM_EXIT_INTERNAL_ERROR)
    suberror: int
    data: tuple = ()


@dataclass(slots=True)
class RdMsr(Exit):
    """Corresponds to KVM_EXIT_X86_RDMSR: a guest RDMSR KVM did not complete, handed to
    userspace (KVM_CAP_X86_USER_SPACE_MSR). `msr_reason` says why (KVM_MSR_EXIT_REASON_*;
    `reason` stays the KVM_EXIT_* number, as for every exit). Before the next run set
    `data` to the value the guest reads, or `error` to 1 to give the guest a #GP."""
    reason: int = field(init=False, default=KVM_EXIT_X86_RDMSR)
    index: int
    data: int = 0
    error: int = 0
    msr_reason: int = 0


@dataclass(slots=True)
class WrMsr(Exit):
    """Corresponds to KVM_EXIT_X86_WRMSR: `data` is what the guest wrote, `msr_reason`
    why KVM handed it over. Set `error` to 1 before the next run to give the guest a
    #GP; otherwise the WRMSR completes."""
    reason: int = field(init=False, default=KVM_EXIT_X86_WRMSR)
    index: int
    data: int = 0
    error: int = 0
    msr_reason: int = 0


@dataclass(slots=True)
class UnknownExit(Exit):
    """Corresponds to KVM_EXIT_UNKNOWN: `hardware_exit_reason` is the vendor's."""
    reason: int = field(init=False, default=KVM_EXIT_UNKNOWN)
    hardware_exit_reason: int = 0


@dataclass(slots=True)
class GuestException(Exit):
    """Corresponds to KVM_EXIT_EXCEPTION (an exception KVM hands to userspace)."""
    reason: int = field(init=False, default=KVM_EXIT_EXCEPTION)
    exception: int
    error_code: int = 0


@dataclass(slots=True)
class Debug(Exit):
    """Corresponds to KVM_EXIT_DEBUG (guest debugging): x86's struct kvm_debug_exit_arch."""
    reason: int = field(init=False, default=KVM_EXIT_DEBUG)
    exception: int
    pc: int = 0
    dr6: int = 0
    dr7: int = 0


def _no_payload(name, number, doc):
    """A dataclass for an exit that carries nothing in kvm_run."""
    ns = {"__doc__": doc, "__annotations__": {"reason": int},
          "__module__": __name__, "reason": field(init=False, default=number)}
    return dataclass(slots=True)(type(name, (Exit,), ns))


IrqWindowOpen = _no_payload("IrqWindowOpen", KVM_EXIT_IRQ_WINDOW_OPEN,
                            "Corresponds to KVM_EXIT_IRQ_WINDOW_OPEN: the guest can take "
                            "the interrupt userspace asked a window for.")
SetTpr = _no_payload("SetTpr", KVM_EXIT_SET_TPR, "Corresponds to KVM_EXIT_SET_TPR.")
TprAccess = _no_payload("TprAccess", KVM_EXIT_TPR_ACCESS,
                        "Corresponds to KVM_EXIT_TPR_ACCESS.")
Nmi = _no_payload("Nmi", KVM_EXIT_NMI, "Corresponds to KVM_EXIT_NMI.")
DirtyRingFull = _no_payload("DirtyRingFull", KVM_EXIT_DIRTY_RING_FULL,
                            "Corresponds to KVM_EXIT_DIRTY_RING_FULL: harvest the ring.")
ApResetHold = _no_payload("ApResetHold", KVM_EXIT_AP_RESET_HOLD,
                          "Corresponds to KVM_EXIT_AP_RESET_HOLD (SEV-ES AP parking).")
X86BusLock = _no_payload("X86BusLock", KVM_EXIT_X86_BUS_LOCK,
                         "Corresponds to KVM_EXIT_X86_BUS_LOCK: the guest took a bus "
                         "lock (KVM_CAP_X86_BUS_LOCK_EXIT).")


@dataclass(slots=True)
class SystemEvent(Exit):
    """Corresponds to KVM_EXIT_SYSTEM_EVENT: `type` is KVM_SYSTEM_EVENT_* (shutdown,
    reset, crash, ...), `data` its ndata words."""
    reason: int = field(init=False, default=KVM_EXIT_SYSTEM_EVENT)
    type: int
    data: tuple = ()


@dataclass(slots=True)
class IoapicEoi(Exit):
    """Corresponds to KVM_EXIT_IOAPIC_EOI (split irqchip): the vector the guest EOIed."""
    reason: int = field(init=False, default=KVM_EXIT_IOAPIC_EOI)
    vector: int


@dataclass(slots=True)
class Hyperv(Exit):
    """Corresponds to KVM_EXIT_HYPERV: `type` (KVM_EXIT_HYPERV_SYNIC/HCALL/...) and the
    raw bytes of struct kvm_hyperv_exit's union."""
    reason: int = field(init=False, default=KVM_EXIT_HYPERV)
    type: int
    raw: bytes = b""


@dataclass(slots=True)
class Xen(Exit):
    """Corresponds to KVM_EXIT_XEN: `type` (KVM_EXIT_XEN_HCALL) and the raw bytes of
    struct kvm_xen_exit's union."""
    reason: int = field(init=False, default=KVM_EXIT_XEN)
    type: int
    raw: bytes = b""


@dataclass(slots=True)
class Notify(Exit):
    """Corresponds to KVM_EXIT_NOTIFY (VMX notify VM exit); `flags` KVM_NOTIFY_CONTEXT_*."""
    reason: int = field(init=False, default=KVM_EXIT_NOTIFY)
    flags: int


@dataclass(slots=True)
class MemoryFault(Exit):
    """Corresponds to KVM_EXIT_MEMORY_FAULT: KVM could not resolve a guest access to
    [gpa, gpa + size); `flags` KVM_MEMORY_EXIT_FLAG_*."""
    reason: int = field(init=False, default=KVM_EXIT_MEMORY_FAULT)
    flags: int
    gpa: int
    size: int


@dataclass(slots=True)
class Tdx(Exit):
    """Corresponds to KVM_EXIT_TDX (a TDVMCALL for userspace): the raw bytes of
    struct kvm_run's tdx member."""
    reason: int = field(init=False, default=KVM_EXIT_TDX)
    raw: bytes = b""


@dataclass(slots=True)
class Unsupported(Exit):
    """Any exit reason pykvm does not decode: the raw number, for the caller."""
    raw_reason: int

    def __post_init__(self):
        self.reason = self.raw_reason


EXIT_NAMES = {
    KVM_EXIT_UNKNOWN: "UNKNOWN", KVM_EXIT_EXCEPTION: "EXCEPTION", KVM_EXIT_IO: "IO",
    KVM_EXIT_HYPERCALL: "HYPERCALL", KVM_EXIT_DEBUG: "DEBUG", KVM_EXIT_HLT: "HLT",
    KVM_EXIT_MMIO: "MMIO", KVM_EXIT_IRQ_WINDOW_OPEN: "IRQ_WINDOW_OPEN",
    KVM_EXIT_SHUTDOWN: "SHUTDOWN", KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY", KVM_EXIT_INTR: "INTR",
    KVM_EXIT_SET_TPR: "SET_TPR", KVM_EXIT_TPR_ACCESS: "TPR_ACCESS", KVM_EXIT_NMI: "NMI",
    KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR", KVM_EXIT_SYSTEM_EVENT: "SYSTEM_EVENT",
    KVM_EXIT_IOAPIC_EOI: "IOAPIC_EOI", KVM_EXIT_HYPERV: "HYPERV",
    KVM_EXIT_X86_RDMSR: "X86_RDMSR", KVM_EXIT_X86_WRMSR: "X86_WRMSR",
    KVM_EXIT_DIRTY_RING_FULL: "DIRTY_RING_FULL", KVM_EXIT_AP_RESET_HOLD: "AP_RESET_HOLD",
    KVM_EXIT_X86_BUS_LOCK: "X86_BUS_LOCK", KVM_EXIT_XEN: "XEN", KVM_EXIT_NOTIFY: "NOTIFY",
    KVM_EXIT_MEMORY_FAULT: "MEMORY_FAULT", KVM_EXIT_TDX: "TDX",
}


def exit_name(reason):
    """'IO (2)' style name used in messages that name both sides."""
    return f"{EXIT_NAMES.get(reason, 'UNKNOWN')} ({reason})"


def decode_kvm_run(run, io_data, other=None):
    """The typed exit a struct kvm_run holds: the one decoder of both backends.

    `run` is a cffi `struct kvm_run *`: the simulated machine's (include/linux/kvm.h) or
    the /dev/kvm vCPU mapping seen through the system's <linux/kvm.h> (pykvm._kvm_uapi);
    both have the header's field names. `io_data(run, n)` gives the n bytes of port I/O
    data as a bytearray (/dev/kvm puts them at run.io.data_offset, the model in
    run.pio_data). `other(reason)` decodes the remaining reasons, those that take no answer
    from userspace; without it they are Unsupported."""
    reason = run.exit_reason
    if reason == KVM_EXIT_IO:
        io = run.io
        return Io(io.direction, io.size, io.port, io.count, io_data(run, io.size * io.count))
    if reason == KVM_EXIT_MMIO:
        mmio = run.mmio
        n = min(mmio.len, len(mmio.data))
        return Mmio(mmio.phys_addr, bytearray(mmio.data[0:n]), mmio.len, bool(mmio.is_write))
    if reason == KVM_EXIT_HLT:
        return Hlt()
    if reason == KVM_EXIT_SHUTDOWN:
        return Shutdown()
    if reason == KVM_EXIT_INTR:
        return Intr()
    if reason == KVM_EXIT_FAIL_ENTRY:
        return FailEntry(run.fail_entry.hardware_entry_failure_reason, run.fail_entry.cpu)
    if reason == KVM_EXIT_INTERNAL_ERROR:
        internal = run.internal
        n = min(internal.ndata, len(internal.data))
        return InternalError(internal.suberror, tuple(internal.data[0:n]))
    if reason == KVM_EXIT_X86_RDMSR:
        return RdMsr(run.msr.index, msr_reason=run.msr.reason)
    if reason == KVM_EXIT_X86_WRMSR:
        return WrMsr(run.msr.index, run.msr.data, msr_reason=run.msr.reason)
    if reason == KVM_EXIT_HYPERCALL:
        return Hypercall(run.hypercall.nr, tuple(run.hypercall.args[0:6]))
    return other(reason) if other is not None else Unsupported(reason)
