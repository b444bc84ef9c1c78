"""cffi builder (API mode, out of line) for pykvm._pykvm.

The C sources are every .c file under csrc/. The declarations Python sees come from the
headers themselves: every part of include/pykvm/api.h, and of the headers it includes,
that sits between a `/* cffi:begin */` and a `/* cffi:end */` line, taken in include
order (a header's includes before the header). Nothing is restated by hand, so the
binding cannot drift from the C it binds.

Environment:
  PYKVM_SANITIZE=1   build with AddressSanitizer + UBSan (python must preload libasan:
                     see tests/test_sanitizers.py)
  PYKVM_DEBUG=1      -O0 -g
  PYKVM_BUILD_OUT    with `python pykvm/_build.py`: where the module goes (default: in place)
"""
import os
import pathlib
import re

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
INCLUDE = ROOT / "include"
API_HEADER = "pykvm/api.h"
CFFI_BEGIN, CFFI_END = "/* cffi:begin */", "/* cffi:end */"
VERSION = "0.1.0"


def _sources(absolute):
    # setuptools wants paths relative to setup.py; cffi's own compile() runs in its tmpdir.
    return sorted(str(p if absolute else p.relative_to(ROOT)) for p in CSRC.rglob("*.c"))


def _cflags():
    flags = ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
             "-Werror=implicit-function-declaration",
             "-Wno-missing-field-initializers", "-fno-strict-aliasing",
             f'-DPYKVM_VERSION="{VERSION}"']
    if os.environ.get("PYKVM_SANITIZE"):
        flags += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    elif os.environ.get("PYKVM_DEBUG"):
        flags += ["-O0", "-g"]
    else:
        flags += ["-O2"]
    # Calls between the module's own functions bind to them, not through the PLT (as
    # libpython itself is built); plugins still find every symbol (RTLD_GLOBAL).
    flags += ["-fno-semantic-interposition"]
    return flags


def _ldflags():
    if os.environ.get("PYKVM_SANITIZE"):
        return ["-fsanitize=address,undefined", "-Wl,-Bsymbolic-functions"]
    return ["-Wl,-Bsymbolic-functions"]


def _includes(text):
    """The project headers a header includes ("..." form), in order."""
    return re.findall(r'^#\s*include\s+"([^"]+)"', text, re.M)


def _cffi_sections(name, text):
    """The text between cffi:begin and cffi:end lines of one header."""
    out, inside = [], False
    for n, line in enumerate(text.splitlines(), 1):
        mark = line.strip()
        if mark in (CFFI_BEGIN, CFFI_END):
            if (mark == CFFI_BEGIN) == inside:
                raise ValueError(f"include/{name}:{n}: unbalanced {mark}")
            inside = not inside
        elif inside:
            out.append(line)
    if inside:
        raise ValueError(f"include/{name}: {CFFI_BEGIN} without {CFFI_END}")
    return "\n".join(out)


def cdef_source(root_header=API_HEADER, include=INCLUDE):
    """The cdef: the marked sections of `root_header` and everything it includes, each
    header after the headers it includes, each header once."""
    parts, seen = [], set()

    def visit(name):
        if name in seen:
            return
        seen.add(name)
        path = include / name
        if not path.exists():       # a header of csrc/ or the system, not ours
            return
        text = path.read_text()
        for dep in _includes(text):
            visit(dep)
        section = _cffi_sections(name, text)
        if section.strip():
            parts.append(f"/* include/{name} */\n{section}\n")

    visit(root_header)
    return "".join(parts)


def make_ffi(absolute_sources=False):
    ffi = FFI()
    ffi.cdef(cdef_source())
    ffi.set_source(
        "pykvm._pykvm",
        f'#include "{API_HEADER}"\n',
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
