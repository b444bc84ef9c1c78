/* SPDX-License-Identifier: MIT */
/* Helpers shared by x86.c and the vendors (kernel: arch/x86/kvm/x86.h, cpuid.h). */
#ifndef __KVM_X86_H
#define __KVM_X86_H

#include "asm/kvm_host.h"

/* CPUID bits the world switch cares about (kernel: X86_FEATURE_*). */
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
