// SPDX-License-Identifier: MIT
/*
 * The kvm_intel module's entry (kernel: arch/x86/kvm/vmx/main.c): the ops table that
 * common code calls through, and module_init, which hands it to kvm_x86_vendor_init().
 * Upstream keeps vt_x86_ops here since the VMX/TDX dispatch split ("KVM: VMX: Move out
 * vmx_x86_ops to 'main.c' to dispatch VMX and TDX", v6.9); there is no TDX here, so every
 * op is the VMX function itself.
 */
#include "x86_ops.h"
#include "pykvm/module.h"

static const struct kvm_x86_ops vt_x86_ops = {
	.name = "kvm_intel",
	.vm_size = sizeof(struct kvm),
	.vcpu_size = sizeof(struct vcpu_vmx),

	.enable_virtualization_cpu = vmx_enable_virtualization_cpu,
	.disable_virtualization_cpu = vmx_disable_virtualization_cpu,

	.vm_init = vmx_vm_init,
	.vcpu_create = vmx_vcpu_create,
	.vcpu_free = vmx_vcpu_free,
	.vcpu_reset = vmx_vcpu_reset,

	.prepare_switch_to_guest = vmx_prepare_switch_to_guest,
	.vcpu_load = vmx_vcpu_load,
	.vcpu_put = vmx_vcpu_put,

	.get_msr = vmx_get_msr,
	.set_msr = vmx_set_msr,
	.get_segment = vmx_get_segment,
	.set_segment = vmx_set_segment,
	.get_idt = vmx_get_idt,
	.set_idt = vmx_set_idt,
	.get_gdt = vmx_get_gdt,
	.set_gdt = vmx_set_gdt,
	.is_valid_cr0 = vmx_is_valid_cr0,
	.set_cr0 = vmx_set_cr0,
	.is_valid_cr4 = vmx_is_valid_cr4,
	.set_cr4 = vmx_set_cr4,
	.set_efer = vmx_set_efer,
	.get_rflags = vmx_get_rflags,
	.set_rflags = vmx_set_rflags,
	.cache_reg = vmx_cache_reg,

	.vcpu_pre_run = vmx_vcpu_pre_run,
	.vcpu_run = vmx_vcpu_run,
	.handle_exit = vmx_handle_exit,
	.skip_emulated_instruction = vmx_skip_emulated_instruction,
	.inject_exception = vmx_inject_exception,
	.handle_exit_irqoff = vmx_handle_exit_irqoff,
	.get_exit_info = vmx_get_exit_info,
	.vcpu_after_set_cpuid = vmx_vcpu_after_set_cpuid,
	.recalc_intercepts = vmx_recalc_msr_intercepts,
	.complete_emulated_msr = kvm_complete_insn_gp,
	.has_emulated_msr = vmx_has_emulated_msr,
	.get_cpl = vmx_get_cpl,
	.get_cs_db_l_bits = vmx_get_cs_db_l_bits,
	.get_interrupt_shadow = vmx_get_interrupt_shadow,
	.set_interrupt_shadow = vmx_set_interrupt_shadow,
	.set_hv_timer = vmx_set_hv_timer,
	.cancel_hv_timer = vmx_cancel_hv_timer,
};

static const struct kvm_x86_init_ops vt_init_ops = {
	.hardware_setup = vmx_hardware_setup,
	.runtime_ops = &vt_x86_ops,
	.global_size = sizeof(struct vmx_global),
	.module = "kvm_intel",
	.params_offset = offsetof(struct vmx_global, params),
};

/* vt_init(): the vendor setup, then kvm_init() for the generic part. */
static int vt_init(struct pk_machine *m, const char *params)
{
	int r = kvm_x86_vendor_init(m, &vt_init_ops, params);

	return r ? r : kvm_init(m);
}

static struct pk_module vmx_module = {
	.name = "kvm_intel",
	.alias = "vmx",
	.kp = vmx_param_table,
	.init = vt_init,
};
module_init(vmx_module);
