"""The test-only hardware API (tests/csrc/hwtest.c), built into a module of its own.

The shipped module (pykvm._pykvm) carries no test entry points. This builds
tests/csrc/hwtest.c alone, with cffi declarations for pykvm's whole API plus the test
ones (both from the headers' cffi sections), and loads it after pykvm: every symbol it
does not define resolves against pykvm's C module, loaded with RTLD_GLOBAL, so the tests
drive the very machine code pykvm ships. The build is cached under build/hwtest/ by a
hash of its inputs; PYKVM_SANITIZE=1 builds it instrumented, like the module it joins.

    from hwtest import ffi, lib     # lib: pykvm's API and the pk_hwtest_* entry points
"""
import hashlib
import importlib.util
import os
import pathlib
import sys

import pykvm._lib  # noqa: F401  (pykvm's C module first, its symbols global)

ROOT = pathlib.Path(__file__).resolve().parent.parent
HERE = pathlib.Path(__file__).resolve().parent / "csrc"
NAME = "_pykvm_hwtest"


def _builder():
    spec = importlib.util.spec_from_file_location("pykvm_build", ROOT / "pykvm" / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _inputs():
    files = sorted(HERE.glob("*")) + sorted((ROOT / "include").rglob("*.h"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    h.update(os.environ.get("PYKVM_SANITIZE", "").encode())
    h.update(pykvm._lib.__file__.encode())
    return h.hexdigest()[:16]


def _build(out):
    from cffi import FFI
    b = _builder()
    ffi = FFI()
    ffi.cdef(b.cdef_source() + b._cffi_sections("hwtest.h", (HERE / "hwtest.h").read_text()))
    ffi.set_source(NAME, f'#include "{b.API_HEADER}"\n#include "hwtest.h"\n',
                   sources=[str(HERE / "hwtest.c")],
                   include_dirs=[str(HERE), str(b.INCLUDE), str(b.CSRC)],
                   extra_compile_args=b._cflags(), extra_link_args=b._ldflags())
    return ffi.compile(tmpdir=str(out))


def _load():
    out = ROOT / "build" / "hwtest" / _inputs()
    found = sorted(out.glob(f"{NAME}*.so"))
    path = found[0] if found else pathlib.Path(_build(out))
    spec = importlib.util.spec_from_file_location(NAME, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[NAME] = mod
    spec.loader.exec_module(mod)
    return mod


_mod = _load()
ffi, lib = _mod.ffi, _mod.lib
