/* SPDX-License-Identifier: MIT */
/*
 * The one list of vendor ops (kernel: arch/x86/include/asm/kvm-x86-ops.h).
 * KVM_X86_OP: mandatory, checked when a vendor registers (kvm_x86_vendor_init).
 * KVM_X86_OP_OPTIONAL: may be NULL; callers check.
 */
#if !defined(KVM_X86_OP) || !defined(KVM_X86_OP_OPTIONAL)
#error "Define KVM_X86_OP and KVM_X86_OP_OPTIONAL before including kvm-x86-ops.h"
#endif

KVM_X86_OP(enable_virtualization_cpu)
KVM_X86_OP(disable_virtualization_cpu)
KVM_X86_OP(vm_init)
KVM_X86_OP(vcpu_create)
KVM_X86_OP(vcpu_free)
KVM_X86_OP(vcpu_reset)
KVM_X86_OP(prepare_switch_to_guest)
KVM_X86_OP(vcpu_load)
KVM_X86_OP(vcpu_put)
KVM_X86_OP(get_msr)
KVM_X86_OP(set_msr)
KVM_X86_OP(get_segment)
KVM_X86_OP(set_segment)
KVM_X86_OP(get_idt)
KVM_X86_OP(set_idt)
KVM_X86_OP(get_gdt)
KVM_X86_OP(set_gdt)
KVM_X86_OP(is_valid_cr0)
KVM_X86_OP(set_cr0)
KVM_X86_OP(is_valid_cr4)
KVM_X86_OP(set_cr4)
KVM_X86_OP(set_efer)
KVM_X86_OP(get_rflags)
KVM_X86_OP(set_rflags)
KVM_X86_OP(cache_reg)
KVM_X86_OP(vcpu_pre_run)
KVM_X86_OP(vcpu_run)
KVM_X86_OP(handle_exit)
KVM_X86_OP(skip_emulated_instruction)
KVM_X86_OP(inject_exception)
KVM_X86_OP(handle_exit_irqoff)
KVM_X86_OP(get_exit_info)
KVM_X86_OP(vcpu_after_set_cpuid)
KVM_X86_OP(recalc_intercepts)
KVM_X86_OP(complete_emulated_msr)
KVM_X86_OP(has_emulated_msr)
KVM_X86_OP(get_cpl)
KVM_X86_OP(get_cs_db_l_bits)
KVM_X86_OP(get_interrupt_shadow)
KVM_X86_OP(set_interrupt_shadow)
KVM_X86_OP_OPTIONAL(set_hv_timer)
KVM_X86_OP_OPTIONAL(cancel_hv_timer)

#undef KVM_X86_OP
#undef KVM_X86_OP_OPTIONAL
