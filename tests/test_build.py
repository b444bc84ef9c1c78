"""The C binding is declared once, in include/: pykvm/_build.py takes cffi's declarations
from the marked sections of the headers the module is compiled with."""
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _build():
    spec = importlib.util.spec_from_file_location("pykvm_build", ROOT / "pykvm" / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cdef_comes_from_the_headers_in_include_order():
    b = _build()
    src = b.cdef_source()
    # types.h's typedefs come before anything that uses them; api.h's own section last
    # among the headers it includes first.
    assert src.index("typedef uint64_t u64;") < src.index("struct pk_cpu_model {")
    assert src.index("include/pykvm/machine.h") < src.index("include/pykvm/api.h")
    assert "pk_vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns)" in src
    # Nothing outside the markers: inline helpers stay out.
    assert "static inline" not in src
    assert not (ROOT / "pykvm" / "cdef").exists()


def test_unbalanced_markers_are_refused(tmp_path):
    b = _build()
    (tmp_path / "a.h").write_text(f"{b.CFFI_BEGIN}\nint f(void);\n")
    with pytest.raises(ValueError, match="without"):
        b.cdef_source("a.h", tmp_path)
    (tmp_path / "b.h").write_text(f"{b.CFFI_END}\n")
    with pytest.raises(ValueError, match="unbalanced"):
        b.cdef_source("b.h", tmp_path)


def test_includes_are_followed_once(tmp_path):
    b = _build()
    (tmp_path / "t.h").write_text(f"{b.CFFI_BEGIN}\ntypedef int t;\n{b.CFFI_END}\n")
    (tmp_path / "u.h").write_text(f'#include "t.h"\n{b.CFFI_BEGIN}\nt u;\n{b.CFFI_END}\n')
    (tmp_path / "top.h").write_text(f'#include "t.h"\n#include "u.h"\n#include <stdint.h>\n')
    src = b.cdef_source("top.h", tmp_path)
    assert src.count("typedef int t;") == 1 and src.index("typedef int t;") < src.index("t u;")
