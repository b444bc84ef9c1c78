// SPDX-License-Identifier: MIT
/*
 * The VM-entry/VM-exit path (kernel: arch/x86/kvm/vmx/vmenter.S and
 * vmx_spec_ctrl_restore_host() in vmx.c). In the kernel this is assembly because
 * nothing between the SPEC_CTRL switch and VMLAUNCH, nor between VM-exit and the RSB fill
 * and SPEC_CTRL restore, may RET or branch indirectly; the model keeps that order.
 */
#include "vmx.h"

/**
 * __vmx_vcpu_run - run a vCPU via a transition to VMX guest mode
 * @vmx:	the vCPU
 * @flags:	VMX_RUN_VMRESUME: VMRESUME instead of VMLAUNCH;
 *		VMX_RUN_SAVE_SPEC_CTRL: save the guest's SPEC_CTRL after VM-exit
 *
 * Returns: false on VM-exit, true on VM-fail.
 */
bool __vmx_vcpu_run(struct vcpu_vmx *vmx, unsigned int flags)
{
	struct kvm_vcpu *vcpu = &vmx->vcpu;
	struct vmcs_host_state *hs = &vmx->loaded_vmcs->host_state;
	struct pk_cpu *cpu = this_cpu();
	u64 host_rsp = 0xffffc90000000000ULL + ((u64)vcpu->vcpu_id << 14);
	u64 host_spec_ctrl = kvm_host_spec_ctrl();
	int fail;

	if (unlikely(host_rsp != hs->rsp)) {
		vmcs_writel(HOST_RSP, host_rsp);
		hs->rsp = host_rsp;
	}
	/*
	 * Load the guest's SPEC_CTRL if it differs from x86_spec_ctrl_current (with legacy
	 * kernel IBRS that includes IBRS); no RET or indirect branch from here to VM-entry.
	 */
	if (vmx->spec_ctrl != host_spec_ctrl)
		wrmsrl(MSR_IA32_SPEC_CTRL, vmx->spec_ctrl);

	/* Guest GPRs into the CPU (RSP comes from the VMCS). */
#pragma GCC unroll 16	/* straight-line moves, like vmenter.S */
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		if (i != VCPU_REGS_RSP)
			cpu->regs[i] = vcpu->arch.regs[i];

	fail = (flags & VMX_RUN_VMRESUME) ? pk_vmresume() : pk_vmlaunch();

	/* vmx_vmexit: save guest GPRs, then make RET safe before the first one. */
#pragma GCC unroll 16
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		if (i != VCPU_REGS_RSP)
			vcpu->arch.regs[i] = cpu->regs[i];
	pk_fill_return_buffer();
	if (vmx_param()->spec_ctrl_in_vmenter)
		vmx_spec_ctrl_restore_host(vmx, flags);
	return fail != 0;
}

/*
 * Save the guest's SPEC_CTRL if it owns it, and put the host value back (kernel:
 * vmx_spec_ctrl_restore_host, torvalds/linux vmx.c at 8ecb10bcbfa3; the legacy-IBRS
 * case is bea7e31a5cac "KVM: VMX: Fix IBRS handling after vmexit"). With legacy kernel
 * IBRS (X86_FEATURE_KERNEL_IBRS) the IBRS bit must be written after every transition
 * from a less privileged predictor mode, so the host value is written after every exit,
 * whether or not it differs from the guest's; otherwise only when it differs.
 */
void vmx_spec_ctrl_restore_host(struct vcpu_vmx *vmx, unsigned int flags)
{
	u64 hostval = kvm_host_spec_ctrl();

	if (flags & VMX_RUN_SAVE_SPEC_CTRL)
		vmx->spec_ctrl = rdmsrl(MSR_IA32_SPEC_CTRL);
	if (vmx_param()->forget_spec_ctrl)
		return;
	if (pk_host_kernel_ibrs(this_machine()) || vmx->spec_ctrl != hostval)
		wrmsrl(MSR_IA32_SPEC_CTRL, hostval);
}
