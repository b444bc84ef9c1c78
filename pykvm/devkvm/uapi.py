"""The /dev/kvm userspace ABI pykvm uses (include/uapi/linux/kvm.h, arch/x86/include/uapi/
asm/kvm.h), as ioctl numbers and `struct` formats. x86-64 only."""
import struct

from pykvm.exits import (KVM_MSR_EXIT_REASON_FILTER, KVM_MSR_EXIT_REASON_INVAL,  # noqa: F401
                         KVM_MSR_EXIT_REASON_UNKNOWN, KVM_MSR_EXIT_REASON_VALID_MASK)

# ---- ioctl numbers (asm-generic/ioctl.h) ---------------------------------------------
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _IOC(direction, nr, size):
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _IO(nr):
    return _IOC(_IOC_NONE, nr, 0)


def _IOR(nr, size):
    return _IOC(_IOC_READ, nr, size)


def _IOW(nr, size):
    return _IOC(_IOC_WRITE, nr, size)


def _IOWR(nr, size):
    return _IOC(_IOC_READ | _IOC_WRITE, nr, size)


KVMIO = 0xAE
KVM_API_VERSION = 12

# struct layouts, named after the C structs (little-endian, natural alignment)
kvm_regs = struct.Struct("<18Q")                          # struct kvm_regs
kvm_segment = struct.Struct("<QIHBBBBBBBBBx")             # struct kvm_segment
kvm_dtable = struct.Struct("<QH6x")                       # struct kvm_dtable
KVM_SREGS_SIZE = 8 * kvm_segment.size + 2 * kvm_dtable.size + 7 * 8 + 4 * 8   # 312
kvm_sregs_tail = struct.Struct("<7Q4Q")                   # cr0..apic_base, interrupt_bitmap
kvm_msrs = struct.Struct("<II")                           # nmsrs, pad
kvm_msr_entry = struct.Struct("<IIQ")                     # index, reserved, data
kvm_msr_list = struct.Struct("<I")                        # nmsrs
kvm_cpuid2 = struct.Struct("<II")                         # nent, padding
kvm_cpuid_entry2 = struct.Struct("<IIIIIII12x")           # function, index, flags, eax..edx
kvm_userspace_memory_region = struct.Struct("<IIQQQ")     # slot, flags, gpa, size, uaddr
kvm_enable_cap = struct.Struct("<II4Q64x")                # cap, flags, args[4], pad[64]
kvm_msr_filter_range = struct.Struct("<IIIxxxxQ")         # flags, nmsrs, base, bitmap ptr
KVM_MSR_FILTER_MAX_RANGES = 16
kvm_msr_filter = struct.Struct("<I4x" + "IIIxxxxQ" * KVM_MSR_FILTER_MAX_RANGES)  # flags, ranges
kvm_one_reg = struct.Struct("<QQ")                        # id, addr
kvm_reg_list = struct.Struct("<Q")                        # n, then reg[n]
kvm_mp_state = struct.Struct("<I")                        # mp_state
u64 = struct.Struct("<Q")

# /dev/kvm
KVM_GET_API_VERSION = _IO(0x00)
KVM_CREATE_VM = _IO(0x01)
KVM_GET_MSR_INDEX_LIST = _IOWR(0x02, kvm_msr_list.size)
KVM_CHECK_EXTENSION = _IO(0x03)
KVM_GET_VCPU_MMAP_SIZE = _IO(0x04)
KVM_GET_SUPPORTED_CPUID = _IOWR(0x05, kvm_cpuid2.size)
KVM_GET_MSR_FEATURE_INDEX_LIST = _IOWR(0x0A, kvm_msr_list.size)
KVM_X86_GET_MCE_CAP_SUPPORTED = _IOR(0x9D, 8)
KVM_GET_FEATURE_MSRS = _IOWR(0x88, kvm_msrs.size)     # KVM_GET_MSRS on /dev/kvm
# VM fd
KVM_CREATE_VCPU = _IO(0x41)
KVM_CREATE_IRQCHIP = _IO(0x60)
KVM_SET_USER_MEMORY_REGION = _IOW(0x46, kvm_userspace_memory_region.size)
KVM_ENABLE_CAP = _IOW(0xA3, kvm_enable_cap.size)
KVM_X86_SET_MSR_FILTER = _IOW(0xC6, kvm_msr_filter.size)
# vCPU fd
KVM_RUN = _IO(0x80)
KVM_GET_REGS = _IOR(0x81, kvm_regs.size)
KVM_SET_REGS = _IOW(0x82, kvm_regs.size)
KVM_GET_SREGS = _IOR(0x83, KVM_SREGS_SIZE)
KVM_SET_SREGS = _IOW(0x84, KVM_SREGS_SIZE)
KVM_GET_MSRS = _IOWR(0x88, kvm_msrs.size)
KVM_SET_MSRS = _IOW(0x89, kvm_msrs.size)
KVM_SET_CPUID2 = _IOW(0x90, kvm_cpuid2.size)
KVM_GET_CPUID2 = _IOWR(0x91, kvm_cpuid2.size)
KVM_GET_MP_STATE = _IOR(0x98, kvm_mp_state.size)
KVM_SET_MP_STATE = _IOW(0x99, kvm_mp_state.size)
KVM_X86_SETUP_MCE = _IOW(0x9C, 8)
KVM_GET_ONE_REG = _IOW(0xAB, kvm_one_reg.size)
KVM_SET_ONE_REG = _IOW(0xAC, kvm_one_reg.size)
KVM_GET_REG_LIST = _IOWR(0xB0, kvm_reg_list.size)

# Capabilities (KVM_CHECK_EXTENSION)
KVM_CAP_IRQCHIP = 0
KVM_CAP_HLT = 1
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_EXT_CPUID = 7
KVM_CAP_NR_VCPUS = 9
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_MP_STATE = 14
KVM_CAP_MCE = 31
KVM_CAP_TSC_CONTROL = 60
KVM_CAP_MAX_VCPUS = 66
KVM_CAP_ONE_REG = 70
KVM_CAP_TSC_DEADLINE_TIMER = 72
KVM_CAP_SPLIT_IRQCHIP = 121
KVM_CAP_IMMEDIATE_EXIT = 136
KVM_CAP_GET_MSR_FEATURES = 153
KVM_CAP_MSR_PLATFORM_INFO = 159
KVM_CAP_X86_USER_SPACE_MSR = 188
KVM_CAP_X86_MSR_FILTER = 189

CAPS = {name: val for name, val in globals().items() if name.startswith("KVM_CAP_")}

# KVM_X86_SET_MSR_FILTER
KVM_MSR_FILTER_READ = 1 << 0
KVM_MSR_FILTER_WRITE = 1 << 1
KVM_MSR_FILTER_DEFAULT_ALLOW = 0
KVM_MSR_FILTER_DEFAULT_DENY = 1
KVM_MSR_FILTER_MAX_BITMAP_SIZE = 0x600
KVM_MSR_FILTER_VALID_MASK = KVM_MSR_FILTER_DEFAULT_DENY
KVM_MSR_FILTER_RANGE_VALID_MASK = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE

# KVM_GET/SET_MP_STATE
KVM_MP_STATE_RUNNABLE = 0
KVM_MP_STATE_UNINITIALIZED = 1
KVM_MP_STATE_INIT_RECEIVED = 2
KVM_MP_STATE_HALTED = 3
KVM_MP_STATE_SIPI_RECEIVED = 4
KVM_MP_STATE_AP_RESET_HOLD = 9

# KVM_GET/SET_ONE_REG ids for x86 (arch/x86/include/uapi/asm/kvm.h)
KVM_REG_X86 = 0x2000000000000000
KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_X86_REG_TYPE_MSR = 2
KVM_X86_REG_TYPE_KVM = 3
KVM_REG_GUEST_SSP = 0


def KVM_X86_REG_MSR(index):
    """The ONE_REG id of MSR `index`."""
    return KVM_REG_X86 | (KVM_X86_REG_TYPE_MSR << 32) | KVM_REG_SIZE_U64 | index


def KVM_X86_REG_KVM(index):
    """The ONE_REG id of KVM-defined register `index` (KVM_REG_GUEST_SSP)."""
    size = KVM_REG_SIZE_U64 if index == KVM_REG_GUEST_SSP else 0
    return KVM_REG_X86 | (KVM_X86_REG_TYPE_KVM << 32) | size | index

# struct kvm_run: offsets from the start of the mapping (CONFORMANCE.md)
KVM_RUN_IMMEDIATE_EXIT = 1
KVM_RUN_EXIT_REASON = 8
KVM_RUN_EXIT = 32                       # the exit union
kvm_run_io = struct.Struct("<BBHIQ")        # direction, size, port, count, data_offset
kvm_run_mmio = struct.Struct("<Q8sIB")      # phys_addr, data[8], len, is_write
kvm_run_fail_entry = struct.Struct("<QI")   # hardware_entry_failure_reason, cpu
kvm_run_internal = struct.Struct("<II")     # suberror, ndata; then data[16] u64
kvm_run_msr = struct.Struct("<B7xIIQ")      # error, pad, reason, index, data
KVM_RUN_MSR_ERROR = KVM_RUN_EXIT
KVM_RUN_MSR_DATA = KVM_RUN_EXIT + 16
kvm_run_hypercall = struct.Struct("<Q6QQI")  # nr, args[6], ret, longmode
KVM_INTERNAL_ERROR_MAX_DATA = 16
