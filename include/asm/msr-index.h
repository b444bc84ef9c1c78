/* SPDX-License-Identifier: MIT */
/*
 * MSR indices, named as in the kernel's arch/x86/include/asm/msr-index.h.
 * Written from the Intel SDM vol. 4 and the AMD APM vol. 2.
 */
#ifndef _ASM_X86_MSR_INDEX_H
#define _ASM_X86_MSR_INDEX_H

/* Pentium-era machine-check address/type: read as 0 by KVM. */
#define MSR_IA32_P5_MC_ADDR		0x00000000
#define MSR_IA32_P5_MC_TYPE		0x00000001
#define MSR_IA32_TSC			0x00000010
#define MSR_IA32_APICBASE		0x0000001b
#define MSR_IA32_APICBASE_BSP		BIT(8)
#define X2APIC_ENABLE			BIT(10)
#define MSR_IA32_APICBASE_ENABLE	BIT(11)
#define MSR_IA32_APICBASE_BASE		(0xfffffULL << 12)

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

#define MSR_IA32_UCODE_REV		0x0000008b

#define MSR_PLATFORM_INFO		0x000000ce
#define MSR_PLATFORM_INFO_CPUID_FAULT	BIT_ULL(31)

#define MSR_IA32_ARCH_CAPABILITIES	0x0000010a
#define MSR_IA32_FLUSH_CMD		0x0000010b
#define L1D_FLUSH			BIT(0)

#define MSR_IA32_SYSENTER_CS		0x00000174
#define MSR_IA32_SYSENTER_ESP		0x00000175
#define MSR_IA32_SYSENTER_EIP		0x00000176

/* Machine check global registers and banks (SDM vol. 3B, 16.3). */
#define MSR_IA32_MCG_CAP		0x00000179
#define MCG_BANKCNT_MASK		0xffULL
#define MCG_CTL_P			BIT_ULL(8)	/* MCG_CTL present */
#define MCG_EXT_P			BIT_ULL(9)
#define MCG_CMCI_P			BIT_ULL(10)	/* corrected machine-check interrupt */
#define MCG_SER_P			BIT_ULL(24)	/* software error recovery */
#define MCG_LMCE_P			BIT_ULL(27)	/* local machine check */
#define MSR_IA32_MCG_STATUS		0x0000017a
#define MSR_IA32_MCG_CTL		0x0000017b

#define MSR_IA32_MISC_ENABLE		0x000001a0
/* Bits 7 (perf monitoring available), 11 (BTS unavailable), 12 (PEBS unavailable) are RO. */
#define MSR_IA32_MISC_ENABLE_RO_MASK	0x00001880ULL

#define MSR_IA32_POWER_CTL		0x000001fc
#define MSR_IA32_DEBUGCTLMSR		0x000001d9

#define MSR_IA32_MC0_CTL2		0x00000280
#define MSR_IA32_MCx_CTL2(x)		(MSR_IA32_MC0_CTL2 + (x))
#define MCI_CTL2_CMCI_EN		BIT_ULL(30)
#define MCI_CTL2_CMCI_THRESHOLD_MASK	0x7fffULL
/* Bank i: CTL, STATUS, ADDR, MISC at 0x400 + 4i ... 0x403 + 4i. */
#define MSR_IA32_MC0_CTL		0x00000400
#define MSR_IA32_MC0_STATUS		0x00000401
#define MSR_IA32_MC0_ADDR		0x00000402
#define MSR_IA32_MC0_MISC		0x00000403
#define MSR_IA32_MCx_CTL(x)		(MSR_IA32_MC0_CTL + 4 * (x))
#define MSR_IA32_MCx_STATUS(x)		(MSR_IA32_MC0_STATUS + 4 * (x))
#define MSR_IA32_MCx_ADDR(x)		(MSR_IA32_MC0_ADDR + 4 * (x))
#define MSR_IA32_MCx_MISC(x)		(MSR_IA32_MC0_MISC + 4 * (x))

#define MSR_IA32_PERF_CAPABILITIES	0x00000345
#define MSR_IA32_CR_PAT			0x00000277
#define MSR_IA32_TSX_CTRL		0x00000122
#define TSX_CTRL_RTM_DISABLE		BIT(0)
#define TSX_CTRL_CPUID_CLEAR		BIT(1)
#define MSR_IA32_TSC_DEADLINE		0x000006e0

/* CET (shadow stacks, indirect-branch tracking). */
#define MSR_IA32_U_CET			0x000006a0
#define MSR_IA32_S_CET			0x000006a2
#define MSR_IA32_PL0_SSP		0x000006a4
#define MSR_IA32_PL1_SSP		0x000006a5
#define MSR_IA32_PL2_SSP		0x000006a6
#define MSR_IA32_PL3_SSP		0x000006a7
#define MSR_IA32_INT_SSP_TAB		0x000006a8

/* x2APIC registers: MSR 0x800 + (xAPIC MMIO offset >> 4). */
#define APIC_BASE_MSR			0x00000800

#define MSR_IA32_XSS			0x00000da0

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
#define MSR_K7_HWCR			0xc0010015

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
