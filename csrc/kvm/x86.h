/* SPDX-License-Identifier: MIT */
/* Helpers shared by x86.c and the vendors (kernel: arch/x86/kvm/x86.h). */
#ifndef __KVM_X86_H
#define __KVM_X86_H

#include "asm/kvm_host.h"

#include "cpuid.h"

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

/*
 * kernel: __cr4_reserved_bits() (x86.h), which takes the predicate; here it is always
 * the guest's (guest_cpu_cap_has), for vcpu->arch.cr4_guest_rsvd_bits.
 */
static inline u64 __cr4_reserved_bits(struct kvm_vcpu *vcpu)
{
	u64 reserved_bits = CR4_RESERVED_BITS;

	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_XSAVE))
		reserved_bits |= X86_CR4_OSXSAVE;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SMEP))
		reserved_bits |= X86_CR4_SMEP;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SMAP))
		reserved_bits |= X86_CR4_SMAP;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_FSGSBASE))
		reserved_bits |= X86_CR4_FSGSBASE;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_PKU))
		reserved_bits |= X86_CR4_PKE;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_LA57))
		reserved_bits |= X86_CR4_LA57;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_UMIP))
		reserved_bits |= X86_CR4_UMIP;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_VMX))
		reserved_bits |= X86_CR4_VMXE;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_PCID))
		reserved_bits |= X86_CR4_PCIDE;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_LAM))
		reserved_bits |= X86_CR4_LAM_SUP;
	if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK) &&
	    !guest_cpu_cap_has(vcpu, X86_FEATURE_IBT))
		reserved_bits |= X86_CR4_CET;
	return reserved_bits;
}

bool kvm_valid_efer(struct kvm_vcpu *vcpu, u64 efer);
void kvm_enable_efer_bits(u64 mask);

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

/* kernel: MSR_KVM_INTERNAL_GUEST_SSP, the index KVM_REG_GUEST_SSP maps to (x86.h). */
#define MSR_KVM_INTERNAL_GUEST_SSP	0x4b564dff

int kvm_arch_init_vm(struct kvm *kvm);
void kvm_arch_destroy_vm(struct kvm *kvm);
int kvm_arch_vcpu_create(struct kvm_vcpu *vcpu);
void kvm_vcpu_reset(struct kvm_vcpu *vcpu, bool init_event);
void kvm_init_msr_lists(void);
int kvm_get_msr_index_list(u32 *indices, u32 *n);
int kvm_get_msr_feature_index_list(u32 *indices, u32 *n);
int kvm_get_feature_msrs(struct kvm_msr_entry *entries, u32 n);
int kvm_vm_ioctl_check_extension(struct kvm *kvm, long ext);
int kvm_vm_ioctl_enable_cap(struct kvm *kvm, const struct kvm_enable_cap *cap);
int kvm_vm_ioctl_create_irqchip(struct kvm *kvm);
int kvm_vm_ioctl_set_msr_filter(struct kvm *kvm, const struct kvm_msr_filter *filter);
int kvm_vcpu_ioctl_x86_setup_mce(struct kvm_vcpu *vcpu, u64 mcg_cap);
int kvm_get_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 *val);
int kvm_set_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 val);
int kvm_get_reg_list(struct kvm_vcpu *vcpu, u64 *n, u64 *regs);
int kvm_arch_vcpu_ioctl_get_mpstate(struct kvm_vcpu *vcpu, struct kvm_mp_state *mp_state);
int kvm_arch_vcpu_ioctl_set_mpstate(struct kvm_vcpu *vcpu, const struct kvm_mp_state *mp_state);

#endif
