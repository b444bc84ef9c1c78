"""Access to the built C module, and the one ioctl wrapper every call goes through."""
import fcntl

from pykvm.errors import KvmIoctlError, KvmUnavailable


def native():
    """(ffi, lib) of pykvm._pykvm; KvmUnavailable with the fix if it is not built."""
    try:
        from pykvm._pykvm import ffi, lib
    except ImportError as e:
        raise KvmUnavailable(f"pykvm._pykvm is not built ({e}): run "
                             f"`python pykvm/_build.py` or `pip install -e .`") from None
    return ffi, lib


def address_of(ffi, buf):
    """The address of a writable buffer (an mmap), without keeping it exported: the
    address stays valid as long as the mapping is open."""
    with ffi.from_buffer(buf) as p:
        return int(ffi.cast("uintptr_t", p))


def ioctl(fd, request, arg, what):
    """fcntl.ioctl; a bytearray argument is passed by pointer and updated in place.
    Any failure raises KvmIoctlError(errno, what)."""
    if fd is None or fd < 0:
        raise KvmIoctlError(9, f"{what}: file descriptor already closed")  # EBADF
    try:
        if isinstance(arg, bytearray):
            return fcntl.ioctl(fd, request, arg, True)
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise KvmIoctlError(e.errno, what) from None


class KvmFd:
    """What a KVM file (the system, a VM, a vCPU) does the same way: `fd` is None once
    closed; a `with` block closes it. Subclasses define close()."""

    @property
    def closed(self):
        return self.fd is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
