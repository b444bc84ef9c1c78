"""cffi builder for leaky_vmx._leaky: leaky.c, compiled against pykvm's headers.

It builds on the VMX module, so it needs pykvm's source tree (csrc/kvm/vmx/x86_ops.h):
PYKVM_SRC names it (default: the tree this example sits in). The symbols it uses are
resolved when it loads, from pykvm's C module (loaded with RTLD_GLOBAL)."""
import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
SRC = pathlib.Path(os.environ.get("PYKVM_SRC", HERE.parents[3]))

ffi = FFI()
ffi.cdef("int leaky_vmx_registered(void);")
ffi.set_source("leaky_vmx._leaky", '#include "leaky.c"\n',
               include_dirs=[str(HERE), str(SRC / "include"), str(SRC / "csrc")],
               extra_compile_args=["-std=gnu11", "-Wno-unused-parameter"])
