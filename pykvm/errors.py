"""One exception hierarchy for pykvm. Each also derives from the builtin a caller would
naturally catch (ValueError, OSError, ...), so either can be caught."""
import builtins


class PykvmError(Exception):
    """Base of every pykvm error."""


class InvalidMsr(builtins.ValueError, PykvmError):
    """An MSR index the backend does not know, or a value it refuses."""

    def __init__(self, index, message=None):
        self.index = index
        super().__init__(message or f"MSR {index:#x} is not supported")


class InvalidConfiguration(builtins.ValueError, PykvmError):
    """An impossible machine, VM or vCPU configuration; the message says why."""


class UnknownVendor(builtins.LookupError, PykvmError):
    """No vendor plugin of that name in the entry-point group pykvm.vendors."""


class InvalidMemory(builtins.ValueError, PykvmError):
    """A guest-physical range outside every memory slot, or overlapping slots."""


class KvmIoctlError(builtins.OSError, PykvmError):
    """An ioctl on the host's /dev/kvm failed: carries errno and what was being done."""

    def __init__(self, errno, what):
        import errno as _errno
        import os
        name = _errno.errorcode.get(errno, str(errno))
        super().__init__(errno, f"{what}: {name} ({os.strerror(errno)})")
        self.what = what


class KvmUnavailable(builtins.OSError, PykvmError):
    """/dev/kvm is absent or cannot be opened."""


class GuestAssertion(builtins.AssertionError, PykvmError):
    """A guest program reported a failed check through the guest runtime."""
