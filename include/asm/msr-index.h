/* SPDX-License-Identifier: MIT */
/*
 * MSR indices, named as in the kernel's arch/x86/include/asm/msr-index.h.
 * Written from the Intel SDM vol. 4 and the AMD APM vol. 2.
 */
#ifndef _ASM_X86_MSR_INDEX_H
#define _ASM_X86_MSR_INDEX_H

#define MSR_IA32_TSC			0x00000010
#define MSR_IA32_APICBASE		0x0000001b

#define MSR_IA32_SPEC_CTRL		0x00000048
#define SPEC_CTRL_IBRS_SHIFT		0
#define SPEC_CTRL_IBRS			BIT(SPEC_CTRL_IBRS_SHIFT)
#define SPEC_CTRL_STIBP_SHIFT		1
#define SPEC_CTRL_STIBP			BIT(SPEC_CTRL_STIBP_SHIFT)
#define SPEC_CTRL_SSBD_SHIFT		2
#define SPEC_CTRL_SSBD			BIT(SPEC_CTRL_SSBD_SHIFT)

#define MSR_IA32_PRED_CMD		0x00000049
#define PRED_CMD_IBPB_SHIFT		0
#define PRED_CMD_IBPB			BIT(PRED_CMD_IBPB_SHIFT)

#define MSR_IA32_FLUSH_CMD		0x0000010b
#define L1D_FLUSH			BIT(0)

#define MSR_IA32_SYSENTER_CS		0x00000174
#define MSR_IA32_SYSENTER_ESP		0x00000175
#define MSR_IA32_SYSENTER_EIP		0x00000176

#define MSR_IA32_MISC_ENABLE		0x000001a0
/* Bits 7 (perf monitoring available), 11 (BTS unavailable), 12 (PEBS unavailable) are RO. */
#define MSR_IA32_MISC_ENABLE_RO_MASK	0x00001880ULL

#define MSR_IA32_DEBUGCTLMSR		0x000001d9
#define MSR_IA32_CR_PAT			0x00000277
#define MSR_IA32_TSX_CTRL		0x00000122
#define TSX_CTRL_RTM_DISABLE		BIT(0)
#define TSX_CTRL_CPUID_CLEAR		BIT(1)
#define MSR_IA32_TSC_DEADLINE		0x000006e0

#define MSR_EFER			0xc0000080
#define MSR_STAR			0xc0000081
#define MSR_LSTAR			0xc0000082
#define MSR_CSTAR			0xc0000083
#define MSR_SYSCALL_MASK		0xc0000084
#define MSR_FS_BASE			0xc0000100
#define MSR_GS_BASE			0xc0000101
#define MSR_KERNEL_GS_BASE		0xc0000102
#define MSR_TSC_AUX			0xc0000103

#define MSR_VM_HSAVE_PA			0xc0010117
#define MSR_AMD64_VIRT_SPEC_CTRL	0xc001011f

/* EFER bits */
#define _EFER_SCE			0
#define _EFER_LME			8
#define _EFER_LMA			10
#define _EFER_NX			11
#define _EFER_SVME			12
#define EFER_SCE			BIT(_EFER_SCE)
#define EFER_LME			BIT(_EFER_LME)
#define EFER_LMA			BIT(_EFER_LMA)
#define EFER_NX				BIT(_EFER_NX)
#define EFER_SVME			BIT(_EFER_SVME)

#endif
