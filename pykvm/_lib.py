"""The compiled C module, checked once at import."""
import os
import sys

from . import errors

# Loaded with its symbols global, as the kernel exports symbols to modules: a vendor
# plugin's own C extension (loaded later) links against KVM's common code and registers
# itself with the module loader (include/pykvm/module.h).
_flags = sys.getdlopenflags()
sys.setdlopenflags(_flags | os.RTLD_GLOBAL)
try:
    from ._pykvm import ffi, lib
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "pykvm's C module is not built. Install pykvm with pip (it compiles csrc/ with "
        "cffi), e.g. `pip install .` in a fresh virtual environment.") from e
finally:
    sys.setdlopenflags(_flags)

VERSION = "0.1.0"
_built = ffi.string(lib.pk_version()).decode()
if _built != VERSION:  # pragma: no cover
    raise ImportError(
        f"pykvm's C module is version {_built}, the Python package {VERSION}: a stale "
        "build. Reinstall pykvm in a fresh virtual environment.")


def ensure(ret, what, exc=errors.PykvmError):
    """Raise `exc` naming `what` when a C call returned a negative errno, with the reason
    the C side recorded for it (pk_last_error), if any. The exception's `errno` is that
    errno, as a KvmIoctlError's is for the host's /dev/kvm."""
    if ret < 0:
        import errno
        name = errno.errorcode.get(-ret, str(-ret))
        why = ffi.string(lib.pk_last_error()).decode()
        err = exc(f"{what}: {why + ' ' if why else ''}({name}: {os.strerror(-ret)})")
        err.errno = -ret
        raise err
    return ret


OPS = [ffi.string(lib.pk_op_name(i)).decode() for i in range(lib.pk_nr_ops())]
PATHS = [ffi.string(lib.pk_path_name(i)).decode() for i in range(lib.pk_nr_paths())]
# MSRs priced on their own ([rdmsr.NAME]/[wrmsr.NAME] in a profile, "WRMSR NAME" in the
# costs): the MSR-file slots first (MSR_SLOTS), then FS_BASE, GS_BASE, TSC, PRED_CMD and
# FLUSH_CMD, which have no slot. Any other MSR is counted as "other".
PRICED_MSRS = [(ffi.string(lib.pk_msr_name(i)).decode(), lib.pk_msr_index(i))
               for i in range(lib.pk_nr_priced_msrs())]
MSR_SLOTS = PRICED_MSRS[:lib.pk_nr_msrs()]
