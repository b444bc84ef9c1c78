/* SPDX-License-Identifier: MIT */
/*
 * The guest CPUID model (kernel: arch/x86/kvm/cpuid.h and reverse_cpuid.h): KVM's own
 * feature words (kvm_cpu_caps), the guest's (vcpu->arch.cpu_caps), and the lookups.
 */
#ifndef __KVM_CPUID_H
#define __KVM_CPUID_H

#include "asm/kvm_host.h"

#define KVM_CPUID_FLAG_SIGNIFCANT_INDEX	BIT(0)

enum cpuid_regs { CPUID_EAX, CPUID_EBX, CPUID_ECX, CPUID_EDX };

/* Where each feature word lives (kernel: reverse_cpuid[]). */
struct cpuid_reg {
	u32 function;
	u32 index;
	int reg;
};

static const struct cpuid_reg reverse_cpuid[NR_KVM_CPU_CAPS] = {
	[CPUID_1_EDX]		= { 1, 0, CPUID_EDX },
	[CPUID_1_ECX]		= { 1, 0, CPUID_ECX },
	[CPUID_7_0_EBX]		= { 7, 0, CPUID_EBX },
	[CPUID_7_ECX]		= { 7, 0, CPUID_ECX },
	[CPUID_7_EDX]		= { 7, 0, CPUID_EDX },
	[CPUID_8000_0001_ECX]	= { 0x80000001, 0, CPUID_ECX },
	[CPUID_8000_0001_EDX]	= { 0x80000001, 0, CPUID_EDX },
	[CPUID_8000_0008_EBX]	= { 0x80000008, 0, CPUID_EBX },
	[CPUID_7_1_EAX]		= { 7, 1, CPUID_EAX },
};

/* A feature is word * 32 + bit, as the kernel's X86_FEATURE_* are. */
#define X86_FEATURE(word, bit)		((word) * 32 + (bit))

#define X86_FEATURE_FPU			X86_FEATURE(CPUID_1_EDX, 0)
#define X86_FEATURE_VME			X86_FEATURE(CPUID_1_EDX, 1)
#define X86_FEATURE_DE			X86_FEATURE(CPUID_1_EDX, 2)
#define X86_FEATURE_PSE			X86_FEATURE(CPUID_1_EDX, 3)
#define X86_FEATURE_TSC			X86_FEATURE(CPUID_1_EDX, 4)
#define X86_FEATURE_MSR			X86_FEATURE(CPUID_1_EDX, 5)
#define X86_FEATURE_PAE			X86_FEATURE(CPUID_1_EDX, 6)
#define X86_FEATURE_MCE			X86_FEATURE(CPUID_1_EDX, 7)
#define X86_FEATURE_CX8			X86_FEATURE(CPUID_1_EDX, 8)
#define X86_FEATURE_APIC		X86_FEATURE(CPUID_1_EDX, 9)
#define X86_FEATURE_SEP			X86_FEATURE(CPUID_1_EDX, 11)
#define X86_FEATURE_MTRR		X86_FEATURE(CPUID_1_EDX, 12)
#define X86_FEATURE_PGE			X86_FEATURE(CPUID_1_EDX, 13)
#define X86_FEATURE_MCA			X86_FEATURE(CPUID_1_EDX, 14)
#define X86_FEATURE_CMOV		X86_FEATURE(CPUID_1_EDX, 15)
#define X86_FEATURE_PAT			X86_FEATURE(CPUID_1_EDX, 16)
#define X86_FEATURE_PSE36		X86_FEATURE(CPUID_1_EDX, 17)
#define X86_FEATURE_CLFLUSH		X86_FEATURE(CPUID_1_EDX, 19)
#define X86_FEATURE_MMX			X86_FEATURE(CPUID_1_EDX, 23)
#define X86_FEATURE_FXSR		X86_FEATURE(CPUID_1_EDX, 24)
#define X86_FEATURE_XMM			X86_FEATURE(CPUID_1_EDX, 25)
#define X86_FEATURE_XMM2		X86_FEATURE(CPUID_1_EDX, 26)

#define X86_FEATURE_XMM3		X86_FEATURE(CPUID_1_ECX, 0)
#define X86_FEATURE_VMX			X86_FEATURE(CPUID_1_ECX, 5)
#define X86_FEATURE_CX16		X86_FEATURE(CPUID_1_ECX, 13)
#define X86_FEATURE_PCID		X86_FEATURE(CPUID_1_ECX, 17)
#define X86_FEATURE_X2APIC		X86_FEATURE(CPUID_1_ECX, 21)
#define X86_FEATURE_TSC_DEADLINE_TIMER	X86_FEATURE(CPUID_1_ECX, 24)
#define X86_FEATURE_XSAVE		X86_FEATURE(CPUID_1_ECX, 26)
#define X86_FEATURE_HYPERVISOR		X86_FEATURE(CPUID_1_ECX, 31)

#define X86_FEATURE_FSGSBASE		X86_FEATURE(CPUID_7_0_EBX, 0)
#define X86_FEATURE_SMEP		X86_FEATURE(CPUID_7_0_EBX, 7)
#define X86_FEATURE_RTM			X86_FEATURE(CPUID_7_0_EBX, 11)
#define X86_FEATURE_SMAP		X86_FEATURE(CPUID_7_0_EBX, 20)

#define X86_FEATURE_UMIP		X86_FEATURE(CPUID_7_ECX, 2)
#define X86_FEATURE_PKU			X86_FEATURE(CPUID_7_ECX, 3)
#define X86_FEATURE_SHSTK		X86_FEATURE(CPUID_7_ECX, 7)
#define X86_FEATURE_LA57		X86_FEATURE(CPUID_7_ECX, 16)
#define X86_FEATURE_RDPID		X86_FEATURE(CPUID_7_ECX, 22)

#define X86_FEATURE_IBT			X86_FEATURE(CPUID_7_EDX, 20)
#define X86_FEATURE_SPEC_CTRL		X86_FEATURE(CPUID_7_EDX, 26)	/* IBRS + IBPB */
#define X86_FEATURE_INTEL_STIBP		X86_FEATURE(CPUID_7_EDX, 27)
#define X86_FEATURE_FLUSH_L1D		X86_FEATURE(CPUID_7_EDX, 28)
#define X86_FEATURE_SPEC_CTRL_SSBD	X86_FEATURE(CPUID_7_EDX, 31)

#define X86_FEATURE_LAHF_LM		X86_FEATURE(CPUID_8000_0001_ECX, 0)
#define X86_FEATURE_SVM			X86_FEATURE(CPUID_8000_0001_ECX, 2)

#define X86_FEATURE_SYSCALL		X86_FEATURE(CPUID_8000_0001_EDX, 11)
#define X86_FEATURE_NX			X86_FEATURE(CPUID_8000_0001_EDX, 20)
#define X86_FEATURE_RDTSCP		X86_FEATURE(CPUID_8000_0001_EDX, 27)
#define X86_FEATURE_LM			X86_FEATURE(CPUID_8000_0001_EDX, 29)

#define X86_FEATURE_AMD_IBPB		X86_FEATURE(CPUID_8000_0008_EBX, 12)
#define X86_FEATURE_AMD_IBRS		X86_FEATURE(CPUID_8000_0008_EBX, 14)
#define X86_FEATURE_AMD_STIBP		X86_FEATURE(CPUID_8000_0008_EBX, 15)
#define X86_FEATURE_AMD_SSBD		X86_FEATURE(CPUID_8000_0008_EBX, 24)

#define X86_FEATURE_LAM			X86_FEATURE(CPUID_7_1_EAX, 26)

#define feature_bit(f)			BIT((f) & 31)

/* What KVM supports on this machine (kernel: kvm_cpu_cap_has()). */
static inline bool kvm_cpu_cap_has(unsigned int feature)
{
	return kvm_global()->kvm_cpu_caps[feature / 32] & feature_bit(feature);
}

/* What this guest may use: supported by KVM and set in its CPUID (guest_cpu_cap_has()). */
static inline bool guest_cpu_cap_has(struct kvm_vcpu *vcpu, unsigned int feature)
{
	return vcpu->arch.cpu_caps[feature / 32] & feature_bit(feature);
}

/* Guest vendor checks (kernel: guest_cpuid_is_amd_compatible() and friends). */
bool guest_cpuid_is_amd_compatible(struct kvm_vcpu *vcpu);
static inline bool guest_cpuid_is_intel_compatible(struct kvm_vcpu *vcpu)
{
	return !guest_cpuid_is_amd_compatible(vcpu);
}

const struct kvm_cpuid_entry2 *kvm_find_cpuid_entry_index(struct kvm_vcpu *vcpu,
							   u32 function, u32 index);
const struct kvm_cpuid_entry2 *kvm_find_cpuid_entry(struct kvm_vcpu *vcpu, u32 function);

void kvm_set_cpu_caps(void);
int kvm_get_supported_cpuid(struct kvm_cpuid_entry2 *entries, int max);
int kvm_vcpu_ioctl_set_cpuid2(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *e, int n);
int kvm_vcpu_ioctl_get_cpuid2(struct kvm_vcpu *vcpu, struct kvm_cpuid_entry2 *e, int *n);
void kvm_update_cpuid_runtime(struct kvm_vcpu *vcpu);
int cpuid_query_maxphyaddr(struct kvm_vcpu *vcpu);
u64 kvm_vcpu_reserved_gpa_bits_raw(struct kvm_vcpu *vcpu);
int kvm_emulate_cpuid(struct kvm_vcpu *vcpu);

#endif
