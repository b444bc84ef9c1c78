/* SPDX-License-Identifier: MIT */
/*
 * The VMX functions behind vt_x86_ops (kernel: arch/x86/kvm/vmx/x86_ops.h): vmx.c
 * implements them, main.c puts them in the ops table.
 */
#ifndef __KVM_X86_VMX_X86_OPS_H
#define __KVM_X86_VMX_X86_OPS_H

#include "vmx.h"

extern const struct pk_param vmx_param_table[];	/* ends with an empty entry */

void vmx_cache_reg(struct kvm_vcpu *vcpu, int reg);
void vmx_disable_virtualization_cpu(void);
int vmx_enable_virtualization_cpu(void);
int vmx_get_cpl(struct kvm_vcpu *vcpu);
void vmx_get_cs_db_l_bits(struct kvm_vcpu *vcpu, int *db, int *l);
void vmx_get_exit_info(struct kvm_vcpu *vcpu, u32 *reason, u64 *info1, u64 *info2);
void vmx_get_gdt(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
void vmx_get_idt(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
int vmx_get_msr(struct kvm_vcpu *vcpu, struct msr_data *msr_info);
u32 vmx_get_interrupt_shadow(struct kvm_vcpu *vcpu);
u64 vmx_get_rflags(struct kvm_vcpu *vcpu);
void vmx_get_segment(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg);
int vmx_handle_exit(struct kvm_vcpu *vcpu, fastpath_t exit_fastpath);
bool vmx_has_emulated_msr(struct kvm *kvm, u32 index);
void vmx_handle_exit_irqoff(struct kvm_vcpu *vcpu);
int vmx_hardware_setup(void);
void vmx_inject_exception(struct kvm_vcpu *vcpu);
void vmx_prepare_switch_to_guest(struct kvm_vcpu *vcpu);
void vmx_recalc_msr_intercepts(struct kvm_vcpu *vcpu);
void vmx_set_cr0(struct kvm_vcpu *vcpu, u64 cr0);
void vmx_set_cr4(struct kvm_vcpu *vcpu, u64 cr4);
int vmx_set_efer(struct kvm_vcpu *vcpu, u64 efer);
void vmx_set_gdt(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
int vmx_set_hv_timer(struct kvm_vcpu *vcpu, u64 guest_deadline_tsc, bool *expired);
void vmx_cancel_hv_timer(struct kvm_vcpu *vcpu);
void vmx_set_idt(struct kvm_vcpu *vcpu, struct desc_ptr *dt);
void vmx_set_interrupt_shadow(struct kvm_vcpu *vcpu, int mask);
int vmx_set_msr(struct kvm_vcpu *vcpu, struct msr_data *msr_info);
void vmx_set_rflags(struct kvm_vcpu *vcpu, u64 rflags);
void vmx_set_segment(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg);
int vmx_skip_emulated_instruction(struct kvm_vcpu *vcpu);
void vmx_vcpu_after_set_cpuid(struct kvm_vcpu *vcpu);
int vmx_vcpu_create(struct kvm_vcpu *vcpu);
void vmx_vcpu_free(struct kvm_vcpu *vcpu);
bool vmx_is_valid_cr0(struct kvm_vcpu *vcpu, u64 cr0);
bool vmx_is_valid_cr4(struct kvm_vcpu *vcpu, u64 cr4);
void vmx_vcpu_load(struct kvm_vcpu *vcpu, int cpu);
int vmx_vcpu_pre_run(struct kvm_vcpu *vcpu);
void vmx_vcpu_put(struct kvm_vcpu *vcpu);
void vmx_vcpu_reset(struct kvm_vcpu *vcpu, bool init_event);
fastpath_t vmx_vcpu_run(struct kvm_vcpu *vcpu, u64 run_flags);
int vmx_vm_init(struct kvm *kvm);

#endif
