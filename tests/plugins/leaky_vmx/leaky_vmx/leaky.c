// SPDX-License-Identifier: MIT
/*
 * kvm_leaky: the VMX ops, but vcpu_put never runs vmx_prepare_switch_to_host(), so the
 * guest's KERNEL_GS_BASE (and the selectors, and the GDT limit VM-exit left) stay in the
 * hardware when the vCPU thread goes back to user mode or another task runs. A bug
 * planted on purpose, to show a third-party vendor with C ops of its own running
 * through pykvm's conform and check.
 */
#include "kvm/vmx/x86_ops.h"
#include "pykvm/module.h"

static void leaky_vcpu_put(struct kvm_vcpu *vcpu)
{
}

static const struct kvm_x86_ops leaky_x86_ops = {
	.name = "kvm_leaky",
	.vm_size = sizeof(struct kvm),
	.vcpu_size = sizeof(struct vcpu_vmx),
	.enable_virtualization_cpu = vmx_enable_virtualization_cpu,
	.disable_virtualization_cpu = vmx_disable_virtualization_cpu,
	.vm_init = vmx_vm_init,
	.vcpu_create = vmx_vcpu_create,
	.vcpu_reset = vmx_vcpu_reset,
	.vcpu_free = vmx_vcpu_free,
	.prepare_switch_to_guest = vmx_prepare_switch_to_guest,
	.vcpu_load = vmx_vcpu_load,
	.vcpu_put = leaky_vcpu_put,
	.get_msr = vmx_get_msr,
	.set_msr = vmx_set_msr,
	.get_segment = vmx_get_segment,
	.set_segment = vmx_set_segment,
	.get_idt = vmx_get_idt,
	.set_idt = vmx_set_idt,
	.get_gdt = vmx_get_gdt,
	.set_gdt = vmx_set_gdt,
	.set_cr0 = vmx_set_cr0,
	.is_valid_cr0 = vmx_is_valid_cr0,
	.set_cr4 = vmx_set_cr4,
	.is_valid_cr4 = vmx_is_valid_cr4,
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

static const struct kvm_x86_init_ops leaky_init_ops = {
	.hardware_setup = vmx_hardware_setup,
	.runtime_ops = &leaky_x86_ops,
	.global_size = sizeof(struct vmx_global),
	.module = "kvm_leaky",
	.params_offset = offsetof(struct vmx_global, params),
};

static int leaky_init(struct pk_machine *m, const char *params)
{
	int r = kvm_x86_vendor_init(m, &leaky_init_ops, params);

	return r ? r : kvm_init(m);
}

/* kvm_intel's parameters, since its code runs underneath. */
static struct pk_module leaky_module = {
	.name = "kvm_leaky",
	.alias = "leaky",
	.kp = vmx_param_table,
	.init = leaky_init,
};
module_init(leaky_module);

int leaky_vmx_registered(void)
{
	return pk_find_module("leaky") == &leaky_module;
}
