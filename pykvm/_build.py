"""cffi builder (API mode, out of line) for pykvm._pykvm.

The C sources are every .c file under csrc/; the declarations Python sees are the
headers in pykvm/cdef/ (one per C area), concatenated in name order.

Environment:
  PYKVM_SANITIZE=1   build with AddressSanitizer + UBSan (python must preload libasan:
                     see tests/test_sanitizers.py)
  PYKVM_DEBUG=1      -O0 -g
  PYKVM_BUILD_OUT    with `python pykvm/_build.py`: where the module goes (default: in place)
"""
import os
import pathlib

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
INCLUDE = ROOT / "include"
CDEF = pathlib.Path(__file__).resolve().parent / "cdef"
VERSION = "0.1.0"


def _sources(absolute):
    # setuptools wants paths relative to setup.py; cffi's own compile() runs in its tmpdir.
    return sorted(str(p if absolute else p.relative_to(ROOT)) for p in CSRC.rglob("*.c"))


def _cflags():
    flags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
             "-Wno-missing-field-initializers", "-fno-strict-aliasing",
             f'-DPYKVM_VERSION="{VERSION}"']
    if os.environ.get("PYKVM_SANITIZE"):
        flags += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    elif os.environ.get("PYKVM_DEBUG"):
        flags += ["-O0", "-g"]
    else:
        flags += ["-O2"]
    return flags


def _ldflags():
    if os.environ.get("PYKVM_SANITIZE"):
        return ["-fsanitize=address,undefined"]
    return []


def make_ffi(absolute_sources=False):
    ffi = FFI()
    ffi.cdef("".join(p.read_text() for p in sorted(CDEF.glob("*.h"))))
    ffi.set_source(
        "pykvm._pykvm",
        '#include "pykvm/api.h"\n',
        sources=_sources(absolute_sources),
        include_dirs=[str(INCLUDE), str(CSRC)],
        extra_compile_args=_cflags(),
        extra_link_args=_ldflags(),
    )
    return ffi


ffi = make_ffi()

if __name__ == "__main__":
    # Local build next to the sources: python pykvm/_build.py
    make_ffi(absolute_sources=True).compile(
        tmpdir=os.environ.get("PYKVM_BUILD_OUT", str(ROOT)), verbose=True)
