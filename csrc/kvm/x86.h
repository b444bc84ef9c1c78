/* SPDX-License-Identifier: MIT */
/* Helpers shared by x86.c and the vendors (kernel: arch/x86/kvm/x86.h). */
#ifndef __KVM_X86_H
#define __KVM_X86_H

#include "asm/kvm_host.h"

#include "cpuid.h"

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
