/* SPDX-License-Identifier: MIT */
/* Helpers shared by x86.c and the vendors (kernel: arch/x86/kvm/x86.h, cpuid.h). */
#ifndef __KVM_X86_H
#define __KVM_X86_H

#include "asm/kvm_host.h"

/* CPUID bits the world switch and KVM's checks care about (kernel: X86_FEATURE_*). */
#define CPUID_1_ECX_VMX			BIT(5)
#define CPUID_1_ECX_PCID		BIT(17)
#define CPUID_1_ECX_XSAVE		BIT(26)
#define CPUID_1_ECX_X2APIC		BIT(21)
#define CPUID_7_EBX_SMEP		BIT(7)
#define CPUID_7_EBX_SMAP		BIT(20)
#define CPUID_7_ECX_UMIP		BIT(2)
#define CPUID_7_ECX_PKU			BIT(3)
#define CPUID_7_ECX_SHSTK		BIT(7)
#define CPUID_7_ECX_LA57		BIT(16)
#define CPUID_7_EDX_IBT			BIT(20)
#define CPUID_7_1_EAX_LAM		BIT(26)
#define CPUID_8000_0001_ECX_SVM		BIT(2)
#define CPUID_8000_0001_EDX_NX		BIT(20)
#define CPUID_7_ECX_RDPID		BIT(22)
#define CPUID_7_EDX_SPEC_CTRL		BIT(26)	/* IBRS + IBPB */
#define CPUID_7_EDX_STIBP		BIT(27)
#define CPUID_7_EDX_SSBD		BIT(31)
#define CPUID_7_EBX_FSGSBASE		BIT(0)
#define CPUID_7_EBX_RTM			BIT(11)
#define CPUID_8000_0001_EDX_RDTSCP	BIT(27)
#define CPUID_8000_0001_EDX_LM		BIT(29)
#define CPUID_8000_0001_EDX_SYSCALL	BIT(11)
#define CPUID_8000_0008_EBX_IBPB	BIT(12)
#define CPUID_8000_0008_EBX_IBRS	BIT(14)
#define CPUID_8000_0008_EBX_STIBP	BIT(15)
#define CPUID_8000_0008_EBX_SSBD	BIT(24)

const struct kvm_cpuid_entry2 *kvm_find_cpuid_entry(struct kvm_vcpu *vcpu, u32 function, u32 index);
int kvm_get_supported_cpuid(struct kvm_cpuid_entry2 *entries, int max);

/*
 * CR4 bits KVM knows at all (kernel: CR4_RESERVED_BITS in asm/kvm_host.h); on top of
 * these, each feature the guest's CPUID lacks reserves its bit (__cr4_reserved_bits).
 */
#define CR4_RESERVED_BITS						\
	(~(u64)(X86_CR4_VME | X86_CR4_PVI | X86_CR4_TSD | X86_CR4_DE |	\
		X86_CR4_PSE | X86_CR4_PAE | X86_CR4_MCE | X86_CR4_PGE |	\
		X86_CR4_PCE | X86_CR4_OSFXSR | X86_CR4_PCIDE |		\
		X86_CR4_OSXSAVE | X86_CR4_SMEP | X86_CR4_FSGSBASE |	\
		X86_CR4_OSXMMEXCPT | X86_CR4_LA57 | X86_CR4_VMXE |	\
		X86_CR4_SMAP | X86_CR4_PKE | X86_CR4_UMIP |		\
		X86_CR4_LAM_SUP | X86_CR4_CET))

/* Bits hi..lo set (kernel: rsvd_bits()). */
static inline u64 rsvd_bits(int lo, int hi)
{
	return hi < lo ? 0 : ((~0ULL) >> (63 - hi)) & ~((1ULL << lo) - 1);
}

/* kernel: kvm_vcpu_is_legal_gpa() / kvm_vcpu_is_legal_cr3() (LAM bits aside). */
static inline bool kvm_vcpu_is_legal_gpa(struct kvm_vcpu *vcpu, u64 gpa)
{
	return !(gpa & vcpu->arch.reserved_gpa_bits);
}

static inline bool kvm_vcpu_has_run(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.last_vmentry_cpu != -1;
}

bool kvm_valid_efer(struct kvm_vcpu *vcpu, u64 efer);
void kvm_enable_efer_bits(u64 mask);
int kvm_apic_set_base(struct kvm_vcpu *vcpu, u64 value, bool host_initiated);

/* SPEC_CTRL bits the guest may set (kernel: kvm_spec_ctrl_valid_bits()). */
static inline bool kvm_spec_ctrl_test_value(struct kvm_vcpu *vcpu, u64 value)
{
	u64 valid = 0;

	if (vcpu->arch.cap_spec_ctrl)
		valid |= SPEC_CTRL_IBRS;
	if (vcpu->arch.cap_stibp)
		valid |= SPEC_CTRL_STIBP;
	if (vcpu->arch.cap_ssbd)
		valid |= SPEC_CTRL_SSBD;
	return !(value & ~valid);
}

static inline bool guest_has_spec_ctrl_msr(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.cap_spec_ctrl || vcpu->arch.cap_stibp || vcpu->arch.cap_ssbd;
}

#endif
