"""cffi builder (API mode, out of line) for pykvm._kvm_uapi: the /dev/kvm ABI as the
system's <linux/kvm.h> defines it.

How this stays in sync with the kernel: nothing below states a layout or a number. Every
struct is declared with `...;`, so cffi asks the C compiler, which has just read
<linux/kvm.h>, for its size and for each named field's offset; cffi also checks at build
time that each named field exists with the size of the type given here (a wrong type or a
field the header lacks fails the build, it cannot go wrong silently). Every ioctl number and
constant is `#define NAME ...`: the compiler evaluates the header's own expression
(_IOR(KVMIO, 0x81, struct kvm_regs), ...). Only the field names Python reads appear, and only
the members of kvm_run's exit union that pykvm decodes, named through __typeof__ so that the
anonymous structs of the header get a type cffi can lay out.

A host without the header (no linux-libc-dev / kernel-headers) builds pykvm without this
module (setup.py asks have_kvm_header()); pykvm.devkvm then says so when imported instead of
using a layout of its own.
"""
import os
import subprocess
import sys
import tempfile

from cffi import FFI

HEADER = "linux/kvm.h"

# The numbers pykvm uses, by their header names: ioctls, capabilities, flags.
_DEFINES = """
KVMIO KVM_API_VERSION
KVM_GET_API_VERSION KVM_CREATE_VM KVM_GET_MSR_INDEX_LIST KVM_CHECK_EXTENSION
KVM_GET_VCPU_MMAP_SIZE KVM_GET_SUPPORTED_CPUID KVM_GET_MSR_FEATURE_INDEX_LIST
KVM_X86_GET_MCE_CAP_SUPPORTED
KVM_CREATE_VCPU KVM_CREATE_IRQCHIP KVM_SET_USER_MEMORY_REGION KVM_ENABLE_CAP
KVM_X86_SET_MSR_FILTER
KVM_RUN KVM_GET_REGS KVM_SET_REGS KVM_GET_SREGS KVM_SET_SREGS KVM_GET_MSRS KVM_SET_MSRS
KVM_SET_CPUID2 KVM_GET_CPUID2 KVM_GET_MP_STATE KVM_SET_MP_STATE KVM_X86_SETUP_MCE
KVM_GET_ONE_REG KVM_SET_ONE_REG KVM_GET_REG_LIST
KVM_CAP_IRQCHIP KVM_CAP_HLT KVM_CAP_USER_MEMORY KVM_CAP_SET_TSS_ADDR KVM_CAP_EXT_CPUID
KVM_CAP_NR_VCPUS KVM_CAP_NR_MEMSLOTS KVM_CAP_MP_STATE KVM_CAP_MCE KVM_CAP_TSC_CONTROL
KVM_CAP_MAX_VCPUS KVM_CAP_ONE_REG KVM_CAP_TSC_DEADLINE_TIMER KVM_CAP_SPLIT_IRQCHIP
KVM_CAP_IMMEDIATE_EXIT KVM_CAP_GET_MSR_FEATURES KVM_CAP_MSR_PLATFORM_INFO
KVM_CAP_X86_USER_SPACE_MSR KVM_CAP_X86_MSR_FILTER
KVM_MSR_FILTER_READ KVM_MSR_FILTER_WRITE KVM_MSR_FILTER_DEFAULT_ALLOW
KVM_MSR_FILTER_DEFAULT_DENY KVM_MSR_FILTER_MAX_BITMAP_SIZE KVM_MSR_FILTER_MAX_RANGES
KVM_MSR_EXIT_REASON_INVAL KVM_MSR_EXIT_REASON_UNKNOWN KVM_MSR_EXIT_REASON_FILTER
KVM_MP_STATE_RUNNABLE KVM_MP_STATE_UNINITIALIZED KVM_MP_STATE_INIT_RECEIVED
KVM_MP_STATE_HALTED KVM_MP_STATE_SIPI_RECEIVED KVM_MP_STATE_AP_RESET_HOLD
KVM_REG_X86 KVM_REG_SIZE_U64
KVM_EXIT_IO KVM_EXIT_HYPERCALL KVM_EXIT_HLT KVM_EXIT_MMIO KVM_EXIT_SHUTDOWN
KVM_EXIT_FAIL_ENTRY KVM_EXIT_INTR KVM_EXIT_INTERNAL_ERROR KVM_EXIT_X86_RDMSR
KVM_EXIT_X86_WRMSR KVM_EXIT_IO_IN KVM_EXIT_IO_OUT
""".split()

# Struct declarations: field names and C types only; `...;` lets the compiler place them.
# Field order is the order pykvm packs/unpacks (the header's order).
_STRUCTS = """
/* the header's integer types: the compiler gives their size and signedness */
typedef int... __u8;
typedef int... __u16;
typedef int... __u32;
typedef int... __u64;
struct kvm_regs {
    __u64 rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    __u64 r8, r9, r10, r11, r12, r13, r14, r15;
    __u64 rip, rflags;
    ...;
};
struct kvm_segment {
    __u64 base; __u32 limit; __u16 selector;
    __u8 type, present, dpl, db, s, l, g, avl, unusable;
    ...;
};
struct kvm_dtable { __u64 base; __u16 limit; ...; };
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    __u64 cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    __u64 interrupt_bitmap[...];
    ...;
};
struct kvm_msrs { __u32 nmsrs, pad; ...; };
struct kvm_msr_entry { __u32 index, reserved; __u64 data; ...; };
struct kvm_msr_list { __u32 nmsrs; ...; };
struct kvm_cpuid2 { __u32 nent, padding; ...; };
struct kvm_cpuid_entry2 {
    __u32 function, index, flags, eax, ebx, ecx, edx;
    ...;
};
struct kvm_userspace_memory_region {
    __u32 slot, flags; __u64 guest_phys_addr, memory_size, userspace_addr;
    ...;
};
struct kvm_enable_cap { __u32 cap, flags; __u64 args[...]; ...; };
struct kvm_msr_filter_range { __u32 flags, nmsrs, base; __u8 *bitmap; ...; };
struct kvm_msr_filter { __u32 flags; struct kvm_msr_filter_range ranges[...]; ...; };
struct kvm_one_reg { __u64 id, addr; ...; };
struct kvm_reg_list { __u64 n; ...; };
struct kvm_mp_state { __u32 mp_state; ...; };
typedef struct { __u8 direction, size; __u16 port; __u32 count;
                 __u64 data_offset; ...; } pk_kvm_run_io;
typedef struct { __u64 phys_addr; __u8 data[...]; __u32 len; __u8 is_write;
                 ...; } pk_kvm_run_mmio;
typedef struct { __u64 hardware_entry_failure_reason; __u32 cpu; ...; }
        pk_kvm_run_fail_entry;
typedef struct { __u32 suberror, ndata; __u64 data[...]; ...; } pk_kvm_run_internal;
typedef struct { __u8 error; __u32 reason, index; __u64 data; ...; } pk_kvm_run_msr;
typedef struct { __u64 nr; __u64 args[...]; __u64 ret; __u32 longmode; ...; }
        pk_kvm_run_hypercall;
/* The exit union's members as plain fields: the compiler gives each its offset (they all
   start where the union does), so a cffi `struct kvm_run *` over the vCPU's mapping reads
   run->io.port just as C does. */
struct kvm_run {
    __u8 request_interrupt_window, immediate_exit;
    __u32 exit_reason;
    pk_kvm_run_fail_entry fail_entry;
    pk_kvm_run_io io;
    pk_kvm_run_mmio mmio;
    pk_kvm_run_hypercall hypercall;
    pk_kvm_run_internal internal;
    pk_kvm_run_msr msr;
    ...;
};
"""

# The C side: the header, and a type name for each anonymous member of the exit union.
_SOURCE = """
#include <stddef.h>
#include <linux/kvm.h>
typedef __typeof__(((struct kvm_run *)0)->io) pk_kvm_run_io;
typedef __typeof__(((struct kvm_run *)0)->mmio) pk_kvm_run_mmio;
typedef __typeof__(((struct kvm_run *)0)->fail_entry) pk_kvm_run_fail_entry;
typedef __typeof__(((struct kvm_run *)0)->internal) pk_kvm_run_internal;
typedef __typeof__(((struct kvm_run *)0)->msr) pk_kvm_run_msr;
typedef __typeof__(((struct kvm_run *)0)->hypercall) pk_kvm_run_hypercall;
"""


def cdef_source():
    return "".join(f"#define {name} ...\n" for name in _DEFINES) + _STRUCTS


def have_kvm_header(cc=None):
    """Whether the C compiler finds <linux/kvm.h> (the preprocessor alone decides)."""
    cc = cc or os.environ.get("CC", "cc")
    with tempfile.NamedTemporaryFile("w", suffix=".c") as f:
        f.write(f"#include <{HEADER}>\n")
        f.flush()
        try:
            r = subprocess.run([cc, "-E", f.name], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False)
        except OSError:
            return False
    return r.returncode == 0


def make_ffi():
    ffi = FFI()
    ffi.cdef(cdef_source())
    ffi.set_source("pykvm._kvm_uapi", _SOURCE, extra_compile_args=["-std=gnu11"])
    return ffi


ffi = make_ffi()

if __name__ == "__main__":
    if not have_kvm_header():
        sys.exit(f"<{HEADER}> not found: install the kernel's userspace headers "
                 f"(linux-libc-dev on Debian/Ubuntu, kernel-headers on Fedora)")
    ffi.compile(tmpdir=os.environ.get("PYKVM_BUILD_OUT",
                                      os.path.dirname(os.path.dirname(__file__)) or "."),
                verbose=True)
