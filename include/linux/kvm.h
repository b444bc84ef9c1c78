/* SPDX-License-Identifier: MIT */
/* The userspace ABI shapes pykvm keeps (kernel: include/uapi/linux/kvm.h), trimmed. */
#ifndef _LINUX_KVM_H
#define _LINUX_KVM_H

#include "pykvm/types.h"

/* cffi:begin */
#define KVM_EXIT_UNKNOWN	0
#define KVM_EXIT_EXCEPTION	1
#define KVM_EXIT_IO		2
#define KVM_EXIT_HYPERCALL	3
#define KVM_EXIT_DEBUG		4
#define KVM_EXIT_HLT		5
#define KVM_EXIT_MMIO		6
#define KVM_EXIT_SHUTDOWN	8
#define KVM_EXIT_FAIL_ENTRY	9
#define KVM_EXIT_INTR		10
#define KVM_EXIT_INTERNAL_ERROR	17
#define KVM_EXIT_X86_RDMSR	29
#define KVM_EXIT_X86_WRMSR	30

/* kvm_run.msr.reason, and KVM_CAP_X86_USER_SPACE_MSR's argument: which failures exit. */
#define KVM_MSR_EXIT_REASON_INVAL	1	/* (1 << 0) the access faults (#GP) */
#define KVM_MSR_EXIT_REASON_UNKNOWN	2	/* (1 << 1) KVM does not know the MSR */
#define KVM_MSR_EXIT_REASON_FILTER	4	/* (1 << 2) an MSR filter denies it */
#define KVM_MSR_EXIT_REASON_VALID_MASK	7

#define KVM_INTERNAL_ERROR_EMULATION		1
#define KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON 4

#define KVM_EXIT_IO_IN	0
#define KVM_EXIT_IO_OUT	1

#define KVM_PIO_DATA_SIZE 64

struct kvm_run {
	u8 request_interrupt_window;
	u8 immediate_exit;
	u8 padding1[6];
	u32 exit_reason;
	u8 ready_for_interrupt_injection;
	u8 if_flag;
	u16 flags;
	u64 cr8;
	u64 apic_base;
	union {
		struct { u64 hardware_exit_reason; } hw;
		struct { u64 hardware_entry_failure_reason; u32 cpu; } fail_entry;
		struct { u32 exception; u32 error_code; } ex;
		struct {
			u8 direction;
			u8 size;
			u16 port;
			u32 count;
			u64 data_offset;	/* from the start of struct kvm_run */
		} io;
		struct {
			u64 phys_addr;
			u8 data[8];
			u32 len;
			u8 is_write;
		} mmio;
		struct { u64 nr; u64 args[6]; u64 ret; u64 flags; } hypercall;
		struct { u32 suberror; u32 ndata; u64 data[16]; } internal;
		struct { u8 error; u8 pad[7]; u32 reason; u32 index; u64 data; } msr;
		char padding[256];
	};
	/* KVM puts PIO data in the page after kvm_run; the model keeps it right here. */
	u8 pio_data[KVM_PIO_DATA_SIZE];
};
/* cffi:end */

/* cffi:begin */
struct kvm_msr_entry {
	u32 index;
	u32 reserved;
	u64 data;
};
/* cffi:end */

/* cffi:begin */
/* KVM_X86_SET_MSR_FILTER (include/uapi/linux/kvm.h) */
#define KVM_MSR_FILTER_MAX_BITMAP_SIZE	1536	/* 0x600 */
#define KVM_MSR_FILTER_READ		1
#define KVM_MSR_FILTER_WRITE		2
#define KVM_MSR_FILTER_RANGE_VALID_MASK	3
#define KVM_MSR_FILTER_MAX_RANGES	16
#define KVM_MSR_FILTER_DEFAULT_ALLOW	0
#define KVM_MSR_FILTER_DEFAULT_DENY	1
#define KVM_MSR_FILTER_VALID_MASK	1

struct kvm_msr_filter_range {
	u32 flags;
	u32 nmsrs;			/* number of MSRs in the bitmap */
	u32 base;			/* MSR index the bitmap starts at */
	u8 *bitmap;			/* a 1 bit allows the access, a 0 bit denies it */
};

struct kvm_msr_filter {
	u32 flags;
	struct kvm_msr_filter_range ranges[16];
};

/* KVM_GET_MP_STATE / KVM_SET_MP_STATE */
#define KVM_MP_STATE_RUNNABLE		0
#define KVM_MP_STATE_UNINITIALIZED	1
#define KVM_MP_STATE_INIT_RECEIVED	2
#define KVM_MP_STATE_HALTED		3
#define KVM_MP_STATE_SIPI_RECEIVED	4
#define KVM_MP_STATE_AP_RESET_HOLD	9

struct kvm_mp_state {
	u32 mp_state;
};

/* KVM_GET/SET_ONE_REG, KVM_GET_REG_LIST; x86 ids (arch/x86/include/uapi/asm/kvm.h) */
#define KVM_REG_ARCH_MASK		0xff00000000000000
#define KVM_REG_X86			0x2000000000000000
#define KVM_REG_SIZE_MASK		0x00f0000000000000
#define KVM_REG_SIZE_U64		0x0030000000000000
#define KVM_X86_REG_TYPE_MSR		2
#define KVM_X86_REG_TYPE_KVM		3
#define KVM_REG_GUEST_SSP		0	/* KVM-defined registers, from 0 */

struct kvm_one_reg {
	u64 id;
	u64 addr;			/* where the u64 value is read from / written to */
};

/* Capabilities (KVM_CHECK_EXTENSION) */
#define KVM_CAP_IRQCHIP			0
#define KVM_CAP_HLT			1
#define KVM_CAP_USER_MEMORY		3
#define KVM_CAP_SET_TSS_ADDR		4
#define KVM_CAP_EXT_CPUID		7
#define KVM_CAP_NR_VCPUS		9
#define KVM_CAP_NR_MEMSLOTS		10
#define KVM_CAP_MP_STATE		14
#define KVM_CAP_MCE			31
#define KVM_CAP_MAX_VCPUS		66
#define KVM_CAP_ONE_REG			70
#define KVM_CAP_TSC_DEADLINE_TIMER	72
#define KVM_CAP_SPLIT_IRQCHIP		121
#define KVM_CAP_IMMEDIATE_EXIT		136
#define KVM_CAP_GET_MSR_FEATURES	153
#define KVM_CAP_MSR_PLATFORM_INFO	159
#define KVM_CAP_X86_USER_SPACE_MSR	188
#define KVM_CAP_X86_MSR_FILTER		189

struct kvm_enable_cap {
	u32 cap;
	u32 flags;
	u64 args[4];
	u8 pad[64];
};
/* cffi:end */

/* cffi:begin */
struct kvm_cpuid_entry2 {
	u32 function;
	u32 index;
	u32 flags;
	u32 eax, ebx, ecx, edx;
	u32 padding[3];
};
/* cffi:end */

#endif
