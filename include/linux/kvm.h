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

#define KVM_INTERNAL_ERROR_EMULATION		1
#define KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON 4

#define KVM_EXIT_IO_IN	0
#define KVM_EXIT_IO_OUT	1

/* for KVM_GET/SET_MP_STATE */
#define KVM_MP_STATE_RUNNABLE	0
#define KVM_MP_STATE_HALTED	3

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
struct kvm_cpuid_entry2 {
	u32 function;
	u32 index;
	u32 flags;
	u32 eax, ebx, ecx, edx;
	u32 padding[3];
};
/* cffi:end */

#endif
