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
    """Corresponds to KVM_EXIT_X86_RDMSR (userspace MSR exits). Set `data`, or `error`
    to inject #GP, before the next run."""
    reason: int = field(init=False, default=KVM_EXIT_X86_RDMSR)
    index: int
    data: int = 0
    error: int = 0


@dataclass(slots=True)
class WrMsr(Exit):
    """Corresponds to KVM_EXIT_X86_WRMSR. Set `error` to inject #GP."""
    reason: int = field(init=False, default=KVM_EXIT_X86_WRMSR)
    index: int
    data: int = 0
    error: int = 0


@dataclass(slots=True)
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
