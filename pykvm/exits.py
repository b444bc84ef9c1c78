"""Typed vCPU exits, one per KVM_EXIT_* reason (linux/kvm.h numbering), the same classes
for every backend. `Vcpu.run()` returns one of these; `Unsupported` carries any reason
pykvm does not decode, so the caller decides."""
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
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30

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


@dataclass
class Exit:
    """Base of every exit; `reason` is the KVM_EXIT_* number."""
    reason: int = field(init=False, default=KVM_EXIT_UNKNOWN)


@dataclass
class Io(Exit):
    """Corresponds to KVM_EXIT_IO. For an IN, set `data` (bytes of size*count) before
    the next run; for an OUT, `data` holds what the guest wrote."""
    direction: int
    size: int
    port: int
    count: int
    data: bytearray

    def __post_init__(self):
        self.reason = KVM_EXIT_IO

    @property
    def is_in(self):
        return self.direction == KVM_EXIT_IO_IN

    @property
    def value(self):
        """The OUT value (or current IN buffer) as an unsigned integer."""
        return int.from_bytes(bytes(self.data[: self.size]), "little")


@dataclass
class Mmio(Exit):
    """Corresponds to KVM_EXIT_MMIO. For a read, set `data` before the next run."""
    phys_addr: int
    data: bytearray
    len: int
    is_write: bool

    def __post_init__(self):
        self.reason = KVM_EXIT_MMIO


@dataclass
class Hlt(Exit):
    """Corresponds to KVM_EXIT_HLT."""

    def __post_init__(self):
        self.reason = KVM_EXIT_HLT


@dataclass
class Shutdown(Exit):
    """Corresponds to KVM_EXIT_SHUTDOWN (triple fault)."""

    def __post_init__(self):
        self.reason = KVM_EXIT_SHUTDOWN


@dataclass
class Hypercall(Exit):
    """Corresponds to KVM_EXIT_HYPERCALL."""
    nr: int
    args: tuple

    def __post_init__(self):
        self.reason = KVM_EXIT_HYPERCALL


@dataclass
class FailEntry(Exit):
    """Corresponds to KVM_EXIT_FAIL_ENTRY."""
    hardware_entry_failure_reason: int
    cpu: int = 0

    def __post_init__(self):
        self.reason = KVM_EXIT_FAIL_ENTRY


@dataclass
class Intr(Exit):
    """Corresponds to KVM_EXIT_INTR: KVM_RUN returned -EINTR (a signal, or the run's
    instruction budget on the simulated machine)."""

    def __post_init__(self):
        self.reason = KVM_EXIT_INTR


@dataclass
class InternalError(Exit):
    """Corresponds to KVM_EXIT_INTERNAL_ERROR."""
    suberror: int
    data: tuple = ()

    def __post_init__(self):
        self.reason = KVM_EXIT_INTERNAL_ERROR


@dataclass
class RdMsr(Exit):
    """Corresponds to KVM_EXIT_X86_RDMSR: a guest RDMSR KVM did not complete, handed to
    userspace (KVM_CAP_X86_USER_SPACE_MSR). `msr_reason` says why (KVM_MSR_EXIT_REASON_*;
    `reason` stays the KVM_EXIT_* number, as for every exit). Before the next run set
    `data` to the value the guest reads, or `error` to 1 to give the guest a #GP."""
    index: int
    data: int = 0
    error: int = 0
    msr_reason: int = 0

    def __post_init__(self):
        self.reason = KVM_EXIT_X86_RDMSR


@dataclass
class WrMsr(Exit):
    """Corresponds to KVM_EXIT_X86_WRMSR: `data` is what the guest wrote, `msr_reason`
    why KVM handed it over. Set `error` to 1 before the next run to give the guest a
    #GP; otherwise the WRMSR completes."""
    index: int
    data: int = 0
    error: int = 0
    msr_reason: int = 0

    def __post_init__(self):
        self.reason = KVM_EXIT_X86_WRMSR


@dataclass
class Unsupported(Exit):
    """Any exit reason pykvm does not decode: the raw number, for the caller."""
    raw_reason: int

    def __post_init__(self):
        self.reason = self.raw_reason


EXIT_NAMES = {
    KVM_EXIT_UNKNOWN: "UNKNOWN", KVM_EXIT_EXCEPTION: "EXCEPTION", KVM_EXIT_IO: "IO",
    KVM_EXIT_HYPERCALL: "HYPERCALL", KVM_EXIT_DEBUG: "DEBUG", KVM_EXIT_HLT: "HLT",
    KVM_EXIT_MMIO: "MMIO", KVM_EXIT_SHUTDOWN: "SHUTDOWN", KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY",
    KVM_EXIT_INTR: "INTR", KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR",
    KVM_EXIT_X86_RDMSR: "X86_RDMSR", KVM_EXIT_X86_WRMSR: "X86_WRMSR",
}


def exit_name(reason):
    """'IO (2)' style name used in messages that name both sides."""
    return f"{EXIT_NAMES.get(reason, 'UNKNOWN')} ({reason})"
