"""The /dev/kvm ABI comes from the system's <linux/kvm.h> through cffi (pykvm._kvm_uapi):
sizes, offsets and ioctl numbers are the ones a C program compiled against the same header
sees, and the builder restates no layout."""
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from pykvm import exits as X
from pykvm.errors import KvmUnavailable

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _builder():
    spec = importlib.util.spec_from_file_location("pykvm_build_uapi",
                                                  ROOT / "pykvm" / "_build_uapi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


needs_header = pytest.mark.skipif(not _builder().have_kvm_header(),
                                  reason="<linux/kvm.h> is not installed on this host")

# (what, C expression): each is printed by a C program built against the header and
# compared with what pykvm.devkvm.uapi says.
_PROBES = [
    ("sizeof kvm_regs", "sizeof(struct kvm_regs)"),
    ("sizeof kvm_segment", "sizeof(struct kvm_segment)"),
    ("sizeof kvm_sregs", "sizeof(struct kvm_sregs)"),
    ("sizeof kvm_msr_entry", "sizeof(struct kvm_msr_entry)"),
    ("sizeof kvm_cpuid_entry2", "sizeof(struct kvm_cpuid_entry2)"),
    ("sizeof kvm_userspace_memory_region", "sizeof(struct kvm_userspace_memory_region)"),
    ("sizeof kvm_enable_cap", "sizeof(struct kvm_enable_cap)"),
    ("sizeof kvm_msr_filter", "sizeof(struct kvm_msr_filter)"),
    ("sregs.cr0", "offsetof(struct kvm_sregs, cr0)"),
    ("sregs.idt", "offsetof(struct kvm_sregs, idt)"),
    ("run.immediate_exit", "offsetof(struct kvm_run, immediate_exit)"),
    ("run.exit_reason", "offsetof(struct kvm_run, exit_reason)"),
    ("run.io", "offsetof(struct kvm_run, io)"),
    ("run.mmio.data", "offsetof(struct kvm_run, mmio.data)"),
    ("run.msr.data", "offsetof(struct kvm_run, msr.data)"),
    ("run.internal.data", "offsetof(struct kvm_run, internal.data)"),
    ("KVM_RUN", "KVM_RUN"),
    ("KVM_GET_REGS", "KVM_GET_REGS"),
    ("KVM_SET_SREGS", "KVM_SET_SREGS"),
    ("KVM_GET_MSRS", "KVM_GET_MSRS"),
    ("KVM_X86_SET_MSR_FILTER", "KVM_X86_SET_MSR_FILTER"),
    ("KVM_CAP_X86_MSR_FILTER", "KVM_CAP_X86_MSR_FILTER"),
]


@pytest.fixture(scope="module")
def header_says(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to ask the header")
    d = tmp_path_factory.mktemp("probe")
    body = "".join(f'    printf("%s=%llu\\n", "{w}", (unsigned long long)({e}));\n'
                   for w, e in _PROBES)
    (d / "probe.c").write_text("#include <stdio.h>\n#include <stddef.h>\n"
                               "#include <linux/kvm.h>\nint main(void)\n{\n"
                               f"{body}    return 0;\n}}\n")
    subprocess.run([cc, "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    out = subprocess.run([str(d / "probe")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split("=") for line in out.splitlines())}


@needs_header
def test_layouts_and_numbers_are_the_headers(header_says):
    from pykvm.devkvm import uapi
    ours = {
        "sizeof kvm_regs": uapi.kvm_regs.size,
        "sizeof kvm_segment": uapi.kvm_segment.size,
        "sizeof kvm_sregs": uapi.KVM_SREGS_SIZE,
        "sizeof kvm_msr_entry": uapi.kvm_msr_entry.size,
        "sizeof kvm_cpuid_entry2": uapi.kvm_cpuid_entry2.size,
        "sizeof kvm_userspace_memory_region": uapi.kvm_userspace_memory_region.size,
        "sizeof kvm_enable_cap": uapi.kvm_enable_cap.size,
        "sizeof kvm_msr_filter": uapi.kvm_msr_filter.size,
        "sregs.cr0": uapi.KVM_SREGS_OFFSETS["cr0"],
        "sregs.idt": uapi.KVM_SREGS_OFFSETS["idt"],
        "run.immediate_exit": uapi.KVM_RUN_IMMEDIATE_EXIT,
        "run.exit_reason": uapi.KVM_RUN_EXIT_REASON,
        "run.io": uapi.KVM_RUN_EXIT,
        "run.mmio.data": uapi.KVM_RUN_MMIO_DATA,
        "run.msr.data": uapi.KVM_RUN_MSR_DATA,
        "run.internal.data": uapi.KVM_RUN_INTERNAL_DATA,
        "KVM_RUN": uapi.KVM_RUN,
        "KVM_GET_REGS": uapi.KVM_GET_REGS,
        "KVM_SET_SREGS": uapi.KVM_SET_SREGS,
        "KVM_GET_MSRS": uapi.KVM_GET_MSRS,
        "KVM_X86_SET_MSR_FILTER": uapi.KVM_X86_SET_MSR_FILTER,
        "KVM_CAP_X86_MSR_FILTER": uapi.KVM_CAP_X86_MSR_FILTER,
    }
    assert ours == header_says


@needs_header
def test_ffi_and_struct_formats_agree_field_by_field():
    """Each struct.Struct pykvm packs with puts every field at the header's offset."""
    from pykvm.devkvm import uapi
    ffi = uapi.ffi
    seg = dict(zip(("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l",
                    "g", "avl", "unusable"), range(1, 13)))
    buf = uapi.kvm_segment.pack(*seg.values())
    c = ffi.new("struct kvm_segment *")
    ffi.memmove(c, buf, len(buf))
    assert {k: getattr(c, k) for k in seg} == seg
    run = bytearray(4096)
    uapi.kvm_run_io.pack_into(run, uapi.KVM_RUN_EXIT, 1, 4, 0x3F8, 2, 0x1000)
    r = ffi.cast("struct kvm_run *", ffi.from_buffer(run))
    io = ffi.cast("pk_kvm_run_io *", ffi.from_buffer(run) + uapi.KVM_RUN_EXIT)
    assert (io.direction, io.size, io.port, io.count, io.data_offset) == (1, 4, 0x3F8, 2, 0x1000)
    run[uapi.KVM_RUN_EXIT_REASON:uapi.KVM_RUN_EXIT_REASON + 4] = (29).to_bytes(4, "little")
    assert r.exit_reason == 29


@needs_header
def test_exit_codes_shared_with_the_simulated_machine_are_the_headers():
    from pykvm.devkvm import uapi
    for name in ("KVM_EXIT_IO", "KVM_EXIT_HYPERCALL", "KVM_EXIT_HLT", "KVM_EXIT_MMIO",
                 "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTR",
                 "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_X86_RDMSR", "KVM_EXIT_X86_WRMSR",
                 "KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT", "KVM_MSR_EXIT_REASON_INVAL",
                 "KVM_MSR_EXIT_REASON_UNKNOWN", "KVM_MSR_EXIT_REASON_FILTER"):
        assert getattr(X, name) == getattr(uapi.lib, name), name


def test_the_builder_states_no_layout():
    """Struct declarations carry names and types, never a size, offset or array length:
    every struct ends in `...;` and no number appears outside the __uN type names."""
    b = _builder()
    structs = b._STRUCTS
    assert not re.findall(r"(?<!__u)\b\d+\b", structs)
    decls = re.findall(r"(?:struct \w+|typedef struct) \{(.*?)\}", structs, re.S)
    assert decls and all(d.rstrip().endswith("...;") for d in decls)
    assert all(line.endswith("...") for line in b.cdef_source().splitlines()
               if line.startswith("#define"))


def test_without_the_header_module_devkvm_says_why(monkeypatch):
    """A pykvm built where <linux/kvm.h> was missing refuses the ABI names with the fix,
    and keeps the one-reg id helpers the simulated machine uses."""
    monkeypatch.setitem(sys.modules, "pykvm._kvm_uapi", None)   # import fails
    spec = importlib.util.spec_from_file_location("uapi_without_header",
                                                  ROOT / "pykvm" / "devkvm" / "uapi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(KvmUnavailable, match="linux/kvm.h"):
        mod.KVM_RUN
    with pytest.raises(KvmUnavailable, match="linux-libc-dev"):
        mod.kvm_regs
    assert mod.KVM_X86_REG_MSR(0x174) >> 60 == 2          # KVM_REG_X86


def test_the_simulated_kvm_header_agrees_with_the_systems():
    """include/linux/kvm.h (the simulated KVM's copy of the ABI, used where no system
    header is needed) gives the numbers the system's <linux/kvm.h> gives."""
    from pykvm._lib import lib
    from pykvm.devkvm import uapi
    for name in ("KVM_MP_STATE_RUNNABLE", "KVM_MP_STATE_UNINITIALIZED",
                 "KVM_MSR_FILTER_READ", "KVM_MSR_FILTER_WRITE",
                 "KVM_MSR_FILTER_MAX_BITMAP_SIZE", "KVM_MSR_EXIT_REASON_INVAL",
                 "KVM_MSR_EXIT_REASON_UNKNOWN", "KVM_MSR_EXIT_REASON_FILTER"):
        assert getattr(lib, name) == getattr(uapi, name), name
