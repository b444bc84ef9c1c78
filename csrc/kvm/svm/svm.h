/* SPDX-License-Identifier: MIT */
/* SVM vCPU and per-CPU state (kernel: arch/x86/kvm/svm/svm.h). */
#ifndef __SVM_SVM_H
#define __SVM_SVM_H

#include "asm/svm.h"
#include "../x86.h"

#define SVM_NESTED_CTL_NP_ENABLE	BIT(0)

/* Per CPU (kernel: struct svm_cpu_data): the host save area VMSAVE/VMLOAD use. */
struct svm_cpu_data {
	struct vmcb *current_vmcb;
	struct vmcb save_area;		/* host FS/GS/TR/LDTR/KERNEL_GS_BASE/SYSCALL MSRs */
	u8 hsave[4096] __attribute__((aligned(4096)));	/* VM_HSAVE_PA: VMRUN's own */
};

/* kvm_amd.* parameters: strategies from the kernel's history, and forgetful variants. */
struct svm_params {
	bool vmsave_host_state;
	bool host_vmload_in_vmenter;
	bool host_gs_wrgsbase;
	bool tsc_aux_user_return;
	bool spec_ctrl_in_vmenter;
	bool bug_gs_base_after_stgi;
	bool forget_host_vmload;
	bool forget_spec_ctrl;
	bool bug_guest_state_loaded_kept_across_put;
};

/* Host state kept by hand before VMSAVE/VMLOAD did it (pre-e79b91bb3c91). */
struct svm_host_save {
	u64 gs_base, fs_base, kernel_gs_base, star, lstar, cstar, sfmask;
	u64 sysenter_cs, sysenter_esp, sysenter_eip, tsc_aux;
	u16 fs, gs, ldt;
};

struct svm_global {
	struct svm_params params;
	int tsc_aux_uret_slot;
	struct svm_cpu_data *svm_data[PK_MAX_CPUS];	/* DEFINE_PER_CPU(svm_data), per online CPU */
};

struct vcpu_svm {
	struct kvm_vcpu vcpu;
	struct vmcb *vmcb;
	bool guest_state_loaded;
	u64 next_rip;
	u64 tsc_aux;
	u64 spec_ctrl;
	u32 sysenter_esp_hi, sysenter_eip_hi;
	u8 *msrpm;
	struct svm_host_save host;	/* only with vmsave_host_state = 0 */

	struct vmcb vmcb01 __attribute__((aligned(4096)));
	u8 msrpm_pages[MSRPM_SIZE] __attribute__((aligned(4096)));
};

static inline struct vcpu_svm *to_svm(struct kvm_vcpu *vcpu)
{
	return container_of(vcpu, struct vcpu_svm, vcpu);
}

static inline struct svm_global *svm_global(void)
{
	return this_machine()->vendor_global;
}

static inline const struct svm_params *svm_param(void)
{
	return &svm_global()->params;
}

static inline struct svm_cpu_data *svm_this_cpu_data(void)
{
	return svm_global()->svm_data[smp_processor_id()];
}

static inline bool svm_msr_write_intercepted(struct vcpu_svm *svm, u32 msr);
void __svm_vcpu_run(struct vcpu_svm *svm, bool spec_ctrl_intercepted);
void svm_spec_ctrl_set_guest(struct vcpu_svm *svm);
void svm_spec_ctrl_restore_host(struct vcpu_svm *svm, bool spec_ctrl_intercepted);
u32 svm_msrpm_offset(u32 msr);

static inline bool svm_msr_write_intercepted(struct vcpu_svm *svm, u32 msr)
{
	u32 offset = svm_msrpm_offset(msr);
	u32 bit_write = 2 * (msr & 0x0f) + 1;

	if (offset == ~0U)
		return true;
	return ((u32 *)svm->msrpm)[offset] & BIT(bit_write);
}

#endif
