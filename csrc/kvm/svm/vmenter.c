// SPDX-License-Identifier: MIT
/*
 * The VMRUN path (kernel: arch/x86/kvm/svm/vmenter.S, __svm_vcpu_run, after the 2022
 * series that moved SPEC_CTRL handling into assembly). Per-cpu data and RETs are unsafe
 * from VMRUN until the host VMLOAD and the SPEC_CTRL restore are done, so they come
 * first after #VMEXIT.
 */
#include "svm.h"

/**
 * __svm_vcpu_run - run a vCPU via a transition to SVM guest mode
 * @svm:			the vCPU
 * @spec_ctrl_intercepted:	guest SPEC_CTRL writes exit (so it need not be saved)
 */
void __svm_vcpu_run(struct vcpu_svm *svm, bool spec_ctrl_intercepted)
{
	struct kvm_vcpu *vcpu = &svm->vcpu;
	struct pk_cpu *cpu = this_cpu();
	struct svm_cpu_data *sd = svm_this_cpu_data();
	u64 vmcb_pa = __pa(svm->vmcb);

	/* Guest SPEC_CTRL, unless the hardware switches it (V_SPEC_CTRL). */
	if (svm_param()->spec_ctrl_in_vmenter)
		svm_spec_ctrl_set_guest(svm);

	/* Guest FS/GS/TR/LDTR, KERNEL_GS_BASE, SYSCALL and SYSENTER MSRs. */
	pk_vmload(vmcb_pa);
#pragma GCC unroll 16	/* straight-line moves, like vmenter.S */
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		if (i != VCPU_REGS_RAX && i != VCPU_REGS_RSP)
			cpu->regs[i] = vcpu->arch.regs[i];

	/* VMRUN itself faulted (SVM off under us): no guest ran, report a failed entry. */
	if (pk_vmrun(vmcb_pa)) {
		pk_host_bug(this_machine());
		svm->vmcb->control.exit_code = SVM_EXIT_ERR;
	}

#pragma GCC unroll 16
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		if (i != VCPU_REGS_RAX && i != VCPU_REGS_RSP)
			vcpu->arch.regs[i] = cpu->regs[i];
	/* The guest's own WRMSRs to the VMLOAD set land in the VMCB here. */
	pk_vmsave(vmcb_pa);
	/* "Restores GSBASE, allowing access to percpu data." */
	if (svm_param()->vmsave_host_state && svm_param()->host_vmload_in_vmenter &&
	    !svm_param()->host_gs_wrgsbase && !svm_param()->forget_host_vmload)
		pk_vmload(__pa(&sd->save_area));
	pk_fill_return_buffer();
	if (svm_param()->spec_ctrl_in_vmenter)
		svm_spec_ctrl_restore_host(svm, spec_ctrl_intercepted);
}

void svm_spec_ctrl_set_guest(struct vcpu_svm *svm)
{
	if (!this_machine()->model.has_v_spec_ctrl && svm->spec_ctrl != kvm_host_spec_ctrl())
		wrmsrl(MSR_IA32_SPEC_CTRL, svm->spec_ctrl);
}

/* Save the guest's SPEC_CTRL if it owns it; put the host's back if different. */
void svm_spec_ctrl_restore_host(struct vcpu_svm *svm, bool spec_ctrl_intercepted)
{
	u64 host_spec_ctrl = kvm_host_spec_ctrl();

	if (this_machine()->model.has_v_spec_ctrl)
		return;
	if (!spec_ctrl_intercepted)
		svm->spec_ctrl = rdmsrl(MSR_IA32_SPEC_CTRL);
	if (svm->spec_ctrl != host_spec_ctrl && !svm_param()->forget_spec_ctrl)
		wrmsrl(MSR_IA32_SPEC_CTRL, host_spec_ctrl);
}
