/* SPDX-License-Identifier: MIT */
/*
 * SVM definitions: the VMCB layout, intercept bits, exit codes and event-injection format
 * with the offsets and numbers of the AMD APM vol. 2 appendix B / C, named as in the
 * kernel's arch/x86/include/asm/svm.h and uapi/asm/svm.h.
 */
#ifndef _ASM_X86_SVM_H
#define _ASM_X86_SVM_H

#include "pykvm/types.h"

/* Intercept bit numbers: 32 per intercept word (APM table B-1). */
enum intercept_words { INTERCEPT_CR = 0, INTERCEPT_DR, INTERCEPT_EXCEPTION,
		       INTERCEPT_WORD3, INTERCEPT_WORD4, INTERCEPT_WORD5, MAX_INTERCEPT };
enum {
	INTERCEPT_INTR = 3 * 32,
	INTERCEPT_NMI,
	INTERCEPT_SMI,
	INTERCEPT_INIT,
	INTERCEPT_VINTR,
	INTERCEPT_CPUID = 3 * 32 + 18,
	INTERCEPT_HLT = 3 * 32 + 24,
	INTERCEPT_IOIO_PROT = 3 * 32 + 27,
	INTERCEPT_MSR_PROT = 3 * 32 + 28,
	INTERCEPT_SHUTDOWN = 3 * 32 + 31,
	INTERCEPT_VMRUN = 4 * 32,
	INTERCEPT_VMMCALL,
	INTERCEPT_VMLOAD,
	INTERCEPT_VMSAVE,
	INTERCEPT_STGI,
	INTERCEPT_CLGI,
	INTERCEPT_SKINIT,
	INTERCEPT_RDTSCP,
};

struct __attribute__((packed)) vmcb_control_area {
	u32 intercepts[MAX_INTERCEPT];		/* 0x000 */
	u32 reserved_1[15 - MAX_INTERCEPT];
	u16 pause_filter_thresh;		/* 0x03c */
	u16 pause_filter_count;
	u64 iopm_base_pa;			/* 0x040 */
	u64 msrpm_base_pa;			/* 0x048 */
	u64 tsc_offset;				/* 0x050 */
	u32 asid;				/* 0x058 */
	u8 tlb_ctl;
	u8 reserved_2[3];
	u32 int_ctl;				/* 0x060 */
	u32 int_vector;
	u32 int_state;
	u8 reserved_3[4];
	u32 exit_code;				/* 0x070 */
	u32 exit_code_hi;
	u64 exit_info_1;			/* 0x078 */
	u64 exit_info_2;			/* 0x080 */
	u32 exit_int_info;			/* 0x088 */
	u32 exit_int_info_err;
	u64 nested_ctl;				/* 0x090 */
	u64 avic_vapic_bar;
	u64 ghcb_gpa;
	u32 event_inj;				/* 0x0a8 */
	u32 event_inj_err;
	u64 nested_cr3;				/* 0x0b0 */
	u64 virt_ext;
	u32 clean;				/* 0x0c0 */
	u32 reserved_5;
	u64 next_rip;				/* 0x0c8 */
	u8 insn_len;				/* 0x0d0 */
	u8 insn_bytes[15];
	u8 reserved_6[0x400 - 0x0e0];
};

struct __attribute__((packed)) vmcb_seg {
	u16 selector;
	u16 attrib;	/* APM "compressed" attribute format: type/S/DPL/P/AVL/L/DB/G */
	u32 limit;
	u64 base;
};

struct __attribute__((packed)) vmcb_save_area {
	struct vmcb_seg es, cs, ss, ds, fs, gs;	/* 0x000 */
	struct vmcb_seg gdtr, ldtr, idtr, tr;	/* 0x060 */
	u8 reserved_1[42];
	u8 vmpl;				/* 0x0ca */
	u8 cpl;					/* 0x0cb */
	u8 reserved_2[4];
	u64 efer;				/* 0x0d0 */
	u8 reserved_3[112];
	u64 cr4;				/* 0x148 */
	u64 cr3;
	u64 cr0;
	u64 dr7;
	u64 dr6;
	u64 rflags;				/* 0x170 */
	u64 rip;				/* 0x178 */
	u8 reserved_4[88];
	u64 rsp;				/* 0x1d8 */
	u64 s_cet;
	u64 ssp;
	u64 isst_addr;
	u64 rax;				/* 0x1f8 */
	u64 star;				/* 0x200 */
	u64 lstar;
	u64 cstar;
	u64 sfmask;
	u64 kernel_gs_base;			/* 0x220 */
	u64 sysenter_cs;
	u64 sysenter_esp;
	u64 sysenter_eip;
	u64 cr2;				/* 0x240 */
	u8 reserved_6[32];
	u64 g_pat;				/* 0x268 */
	u64 dbgctl;
	u64 br_from;
	u64 br_to;
	u64 last_excp_from;
	u64 last_excp_to;
	u8 reserved_7[72];
	u64 spec_ctrl;				/* 0x2e0: guest SPEC_CTRL with V_SPEC_CTRL */
	u8 reserved_8[0xc00 - 0x2e8];
};

struct vmcb {
	struct vmcb_control_area control;
	struct vmcb_save_area save;
} __attribute__((aligned(4096)));

_Static_assert(offsetof(struct vmcb_control_area, exit_code) == 0x70, "VMCB exit_code");
_Static_assert(offsetof(struct vmcb_control_area, event_inj) == 0xa8, "VMCB event_inj");
_Static_assert(sizeof(struct vmcb_control_area) == 0x400, "VMCB control area size");
_Static_assert(offsetof(struct vmcb_save_area, efer) == 0xd0, "VMCB efer");
_Static_assert(offsetof(struct vmcb_save_area, rflags) == 0x170, "VMCB rflags");
_Static_assert(offsetof(struct vmcb_save_area, rsp) == 0x1d8, "VMCB rsp");
_Static_assert(offsetof(struct vmcb_save_area, kernel_gs_base) == 0x220, "VMCB kgsbase");
_Static_assert(offsetof(struct vmcb_save_area, g_pat) == 0x268, "VMCB g_pat");
_Static_assert(offsetof(struct vmcb_save_area, spec_ctrl) == 0x2e0, "VMCB spec_ctrl");
_Static_assert(sizeof(struct vmcb) == 4096, "VMCB is one page");

/* Exit codes (APM appendix C) */
#define SVM_EXIT_EXCP_BASE	0x040
#define SVM_EXIT_INTR		0x060
#define SVM_EXIT_NMI		0x061
#define SVM_EXIT_CPUID		0x072
#define SVM_EXIT_HLT		0x078
#define SVM_EXIT_IOIO		0x07b
#define SVM_EXIT_MSR		0x07c
#define SVM_EXIT_SHUTDOWN	0x07f
#define SVM_EXIT_VMRUN		0x080
#define SVM_EXIT_VMMCALL	0x081
#define SVM_EXIT_RDTSCP		0x087
#define SVM_EXIT_NPF		0x400
#define SVM_EXIT_ERR		(-1U)

/* IOIO exit_info_1 (APM 15.10.2) */
#define SVM_IOIO_TYPE_MASK	BIT(0)	/* 1 = IN */
#define SVM_IOIO_STR_MASK	BIT(2)
#define SVM_IOIO_REP_MASK	BIT(3)
#define SVM_IOIO_SIZE_SHIFT	4
#define SVM_IOIO_SIZE_MASK	(7U << SVM_IOIO_SIZE_SHIFT)
#define SVM_IOIO_PORT_SHIFT	16

/* Event injection (APM 15.20) */
#define SVM_EVTINJ_VEC_MASK	0xffU
#define SVM_EVTINJ_TYPE_EXEPT	(3U << 8)
#define SVM_EVTINJ_TYPE_NMI	(2U << 8)
#define SVM_EVTINJ_VALID_ERR	BIT(11)
#define SVM_EVTINJ_VALID	BIT(31)

/* The MSR permission map: three 2 KiB ranges, 2 bits per MSR (APM 15.11). */
#define MSRPM_SIZE		0x2000
#define MSRPM_RANGE_BYTES	0x800
#define MSRPM_MSRS_PER_RANGE	0x2000

#endif
