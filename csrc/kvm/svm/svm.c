// SPDX-License-Identifier: MIT
/*
 * The SVM vendor module (kernel: arch/x86/kvm/svm/svm.c). Host state is switched by
 * VMSAVE/VMLOAD of a per-CPU save area; TSC_AUX through user return; SPEC_CTRL in the
 * vmenter path (WORLD-SWITCH.md section 5).
 */
#include "svm.h"
#include "pykvm/module.h"

/* ---- module parameters (kvm_amd.*); upstream values are the defaults ---- */

static const struct pk_param svm_param_table[] = {
	PK_PARAM(struct svm_params, vmsave_host_state, true,
		 "host FS/GS/TR/LDTR, KERNEL_GS_BASE, SYSCALL and SYSENTER MSRs by VMSAVE/VMLOAD "
		 "(e79b91bb3c91, Dec 2020); 0: RDMSR each on load, WRMSR each on put, GS_BASE after "
		 "every exit"),
	PK_PARAM(struct svm_params, host_vmload_in_vmenter, true,
		 "the host VMLOAD in __svm_vcpu_run right after VMSAVE (e287bd005ad9, Nov 2022: "
		 "\"KVM: SVM: restore host save area from assembly\"); 0: in C "
		 "before STGI (\"VMLOAD before STGI\", Dec 2020 review)"),
	PK_PARAM(struct svm_params, host_gs_wrgsbase, false,
		 "WRGSBASE the host GS base before STGI and VMLOAD the rest on put (the other "
		 "Dec 2020 proposal)"),
	PK_PARAM(struct svm_params, tsc_aux_user_return, true,
		 "host TSC_AUX restored on return to user mode (844d69c26d83, Apr 2021: \"KVM: SVM: "
		 "Delay restoration of host MSR_TSC_AUX until return to userspace\"); 0: WRMSR on "
		 "load and put"),
	PK_PARAM(struct svm_params, spec_ctrl_in_vmenter, true,
		 "guest/host SPEC_CTRL switched in __svm_vcpu_run (9f2febf3f04d, Nov 2022: \"KVM: "
		 "SVM: move MSR_IA32_SPEC_CTRL save/restore to assembly\"); 0: in C around it, "
		 "the host value back only after its RET"),
	PK_PARAM(struct svm_params, bug_gs_base_after_stgi, false,
		 "with vmsave_host_state = 0: restore the host GS base after STGI, so an NMI held "
		 "since CLGI runs with the guest's (Dec 2020 review)"),
	PK_PARAM(struct svm_params, forget_host_vmload, false,
		 "never VMLOAD the host save area: host FS/GS/KERNEL_GS_BASE/SYSCALL MSRs stay the guest's"),
	PK_PARAM(struct svm_params, forget_spec_ctrl, false, "never restore the host SPEC_CTRL"),
	PK_PARAM(struct svm_params, bug_guest_state_loaded_kept_across_put, false,
		 "a 'loaded' flag kept across put: svm_vcpu_put() leaves guest_state_loaded set, "
		 "so the next entry skips the VMSAVE of the host save area (on a new CPU: never "
		 "saved) and the guest TSC_AUX reload"),
	{ }		/* end */
};

/* ---- MSR permission map (APM 15.11; kernel: svm_msrpm_offset) ---- */

static const u32 msrpm_ranges[] = { 0, 0xc0000000, 0xc0010000 };

/* Offset in u32 units of the word holding `msr`'s two bits, or ~0 if it has none. */
u32 svm_msrpm_offset(u32 msr)
{
	for (u32 i = 0; i < ARRAY_SIZE(msrpm_ranges); i++) {
		if (msr < msrpm_ranges[i] || msr >= msrpm_ranges[i] + MSRPM_MSRS_PER_RANGE)
			continue;
		/* 16 MSRs per u32; each range is 2 KiB = 512 u32s. */
		return (msr - msrpm_ranges[i]) / 16 + i * (MSRPM_RANGE_BYTES / 4);
	}
	return ~0U;
}

/*
 * read/write: intercept that access. An access the VM's MSR filter denies stays
 * intercepted so KVM can apply the filter (kernel: svm_set_intercept_for_msr).
 */
static void set_msr_interception(struct vcpu_svm *svm, u32 msr, bool read, bool write)
{
	u32 offset = svm_msrpm_offset(msr);
	u32 bit_read = 2 * (msr & 0x0f), bit_write = bit_read + 1;
	u32 *w;

	if (offset == ~0U)
		return;
	if (!read && !kvm_msr_allowed(&svm->vcpu, msr, KVM_MSR_FILTER_READ))
		read = true;
	if (!write && !kvm_msr_allowed(&svm->vcpu, msr, KVM_MSR_FILTER_WRITE))
		write = true;
	w = &((u32 *)svm->msrpm)[offset];
	*w = read ? (*w | BIT(bit_read)) : (*w & ~BIT(bit_read));
	*w = write ? (*w | BIT(bit_write)) : (*w & ~BIT(bit_write));
}

static void svm_set_intercept(struct vcpu_svm *svm, int bit)
{
	svm->vmcb->control.intercepts[bit / 32] |= BIT(bit % 32);
}

static void svm_clr_intercept(struct vcpu_svm *svm, int bit)
{
	svm->vmcb->control.intercepts[bit / 32] &= ~BIT(bit % 32);
}

/* ---- setup, enable/disable ---- */

static int svm_hardware_setup(void)
{
	const struct pk_cpu_model *cm = &this_machine()->model;

	struct pk_machine *m = this_machine();

	/* svm_cpu_init(): the per-CPU host save areas, for the CPUs the machine has. */
	for (u32 cpu = 0; cpu < m->nr_cpus; cpu++) {
		svm_global()->svm_data[cpu] = pk_kzalloc(m, sizeof(struct svm_cpu_data), 4096);
		if (!svm_global()->svm_data[cpu])
			return -ENOMEM;
	}
	/* nested=1 (upstream's default): EFER.SVME is not reserved, though the model runs no
	 * nested guests; a guest still needs SVM in its CPUID to set it (__kvm_valid_efer). */
	kvm_enable_efer_bits(EFER_SVME);
	svm_global()->tsc_aux_uret_slot = -1;
	if (cm->has_rdtscp || cm->has_rdpid)
		svm_global()->tsc_aux_uret_slot = kvm_add_user_return_msr(MSR_TSC_AUX);
	return 0;
}

static int svm_enable_virtualization_cpu(void)
{
	struct svm_cpu_data *sd = svm_this_cpu_data();

	wrmsrl(MSR_EFER, rdmsrl(MSR_EFER) | EFER_SVME);
	wrmsrl(MSR_VM_HSAVE_PA, __pa(sd->hsave));
	return 0;
}

static void svm_disable_virtualization_cpu(void)
{
	wrmsrl(MSR_VM_HSAVE_PA, 0);
	wrmsrl(MSR_EFER, rdmsrl(MSR_EFER) & ~(u64)EFER_SVME);
}

static int svm_vm_init(struct kvm *kvm)
{
	return 0;
}

static void init_vmcb(struct vcpu_svm *svm)
{
	struct vmcb_control_area *control = &svm->vmcb->control;
	struct vmcb_save_area *save = &svm->vmcb->save;

	memset(svm->vmcb, 0, sizeof(*svm->vmcb));
	svm_set_intercept(svm, INTERCEPT_INTR);
	svm_set_intercept(svm, INTERCEPT_NMI);
	svm_set_intercept(svm, INTERCEPT_CPUID);
	svm_set_intercept(svm, INTERCEPT_HLT);
	svm_set_intercept(svm, INTERCEPT_IOIO_PROT);
	svm_set_intercept(svm, INTERCEPT_MSR_PROT);
	svm_set_intercept(svm, INTERCEPT_SHUTDOWN);
	svm_set_intercept(svm, INTERCEPT_VMRUN);
	svm_set_intercept(svm, INTERCEPT_VMMCALL);
	svm_set_intercept(svm, INTERCEPT_VMLOAD);
	svm_set_intercept(svm, INTERCEPT_VMSAVE);
	svm_set_intercept(svm, INTERCEPT_STGI);
	svm_set_intercept(svm, INTERCEPT_CLGI);
	control->msrpm_base_pa = __pa(svm->msrpm);
	control->nested_ctl = SVM_NESTED_CTL_NP_ENABLE;
	control->nested_cr3 = __pa(&svm->vcpu.kvm->memslots);
	control->asid = 1;
	save->g_pat = 0x0007040600070406ULL;
	save->efer = EFER_SVME;
	save->rflags = X86_EFLAGS_FIXED;
	save->rip = 0xfff0;
}

/* Moved by VMLOAD/VMSAVE: the guest may own them outright (direct_access_msrs). */
static void svm_pass_through_own_msrs(struct vcpu_svm *svm)
{
	set_msr_interception(svm, MSR_STAR, false, false);
	set_msr_interception(svm, MSR_LSTAR, false, false);
	set_msr_interception(svm, MSR_CSTAR, false, false);
	set_msr_interception(svm, MSR_SYSCALL_MASK, false, false);
	set_msr_interception(svm, MSR_KERNEL_GS_BASE, false, false);
	set_msr_interception(svm, MSR_FS_BASE, false, false);
	set_msr_interception(svm, MSR_GS_BASE, false, false);
	set_msr_interception(svm, MSR_IA32_SYSENTER_CS, false, false);
	set_msr_interception(svm, MSR_IA32_SYSENTER_ESP, false, false);
	set_msr_interception(svm, MSR_IA32_SYSENTER_EIP, false, false);
}

static int svm_vcpu_create(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	svm->vmcb = &svm->vmcb01;
	svm->msrpm = svm->msrpm_pages;
	memset(svm->msrpm, 0xff, MSRPM_SIZE);
	svm_pass_through_own_msrs(svm);
	vcpu->arch.regs_avail = ~0U;	/* RSP/RIP are synced with the VMCB around each run */
	return 0;
}

/* kernel: svm_clear_current_vmcb(): no CPU may take a freed VMCB for its current one. */
static void svm_clear_current_vmcb(struct vmcb *vmcb)
{
	struct pk_machine *m = this_machine();

	for (u32 cpu = 0; cpu < m->nr_cpus; cpu++) {
		struct vmcb *expected = vmcb;

		__atomic_compare_exchange_n(&svm_global()->svm_data[cpu]->current_vmcb, &expected,
					    NULL, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
}

static void svm_vcpu_free(struct kvm_vcpu *vcpu)
{
	svm_clear_current_vmcb(to_svm(vcpu)->vmcb);
}

static void svm_vcpu_reset(struct kvm_vcpu *vcpu, bool init_event)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	init_vmcb(svm);
	vcpu->arch.pat = svm->vmcb->save.g_pat;
	vcpu->arch.ia32_misc_enable_msr = BIT_ULL(11) | BIT_ULL(12);
	vcpu->arch.apic_base = 0xfee00000ULL | BIT_ULL(11) | (vcpu->vcpu_id ? 0 : BIT_ULL(8));
	vcpu->arch.regs[VCPU_REGS_RIP] = 0xfff0;
	svm->tsc_aux = 0;
	svm->spec_ctrl = 0;
}

/* ---- the host-state switch ---- */

/* Before VMSAVE/VMLOAD of host state: every register by hand (pre-e79b91bb3c91). */
static const u32 svm_host_save_msrs[] = {
	MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_KERNEL_GS_BASE, MSR_FS_BASE,
	MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
};

static u64 *svm_host_save_slot(struct svm_host_save *h, u32 msr)
{
	switch (msr) {
	case MSR_STAR: return &h->star;
	case MSR_LSTAR: return &h->lstar;
	case MSR_CSTAR: return &h->cstar;
	case MSR_SYSCALL_MASK: return &h->sfmask;
	case MSR_KERNEL_GS_BASE: return &h->kernel_gs_base;
	case MSR_FS_BASE: return &h->fs_base;
	case MSR_IA32_SYSENTER_CS: return &h->sysenter_cs;
	case MSR_IA32_SYSENTER_ESP: return &h->sysenter_esp;
	default: return &h->sysenter_eip;
	}
}

static void svm_vcpu_load(struct kvm_vcpu *vcpu, int cpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	struct svm_cpu_data *sd = svm_global()->svm_data[cpu];
	struct svm_host_save *h = &svm->host;

	if (READ_ONCE(sd->current_vmcb) != svm->vmcb)
		WRITE_ONCE(sd->current_vmcb, svm->vmcb);
	if (!svm_param()->vmsave_host_state) {
		h->fs = savesegment(VCPU_SREG_FS);
		h->gs = savesegment(VCPU_SREG_GS);
		h->ldt = savesegment(VCPU_SREG_LDTR);
		h->gs_base = rdmsrl(MSR_GS_BASE);
		for (unsigned int i = 0; i < ARRAY_SIZE(svm_host_save_msrs); i++)
			*svm_host_save_slot(h, svm_host_save_msrs[i]) = rdmsrl(svm_host_save_msrs[i]);
	}
	if (!svm_param()->tsc_aux_user_return && svm_global()->tsc_aux_uret_slot >= 0) {
		h->tsc_aux = rdmsrl(MSR_TSC_AUX);
		wrmsrl(MSR_TSC_AUX, svm->tsc_aux);
	}
}

static void svm_prepare_switch_to_guest(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	struct svm_cpu_data *sd = svm_this_cpu_data();
	int slot = svm_global()->tsc_aux_uret_slot;

	if (svm->guest_state_loaded)
		return;
	/* Host FS/GS/TR/LDTR, KERNEL_GS_BASE and the SYSCALL MSRs, restored by the VMLOAD after #VMEXIT. */
	if (svm_param()->vmsave_host_state)
		pk_vmsave(__pa(&sd->save_area));
	/* The WRGSBASE-before-STGI scheme needs the value to write back. */
	if (svm_param()->host_gs_wrgsbase)
		svm->host.gs_base = rdgsbase();
	if (slot >= 0 && svm_param()->tsc_aux_user_return)
		kvm_set_user_return_msr(slot, svm->tsc_aux, -1ULL);
	svm->guest_state_loaded = true;
}

/*
 * Upstream: only the flag. Host state comes back through the VMLOAD after every #VMEXIT
 * and TSC_AUX on return to user mode; the older schemes below add their own work.
 */
static void svm_prepare_host_switch(struct kvm_vcpu *vcpu)
{
	if (!svm_param()->bug_guest_state_loaded_kept_across_put)
		to_svm(vcpu)->guest_state_loaded = false;
}

static void svm_vcpu_put(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	struct svm_host_save *h = &svm->host;

	/* WRGSBASE-before-STGI scheme: the rest of the host state comes back now. */
	if (svm->guest_state_loaded && svm_param()->vmsave_host_state &&
	    svm_param()->host_gs_wrgsbase && !svm_param()->forget_host_vmload)
		pk_vmload(__pa(&svm_this_cpu_data()->save_area));
	if (!svm_param()->vmsave_host_state) {
		native_lldt(h->ldt);
		loadsegment(VCPU_SREG_FS, h->fs);
		wrmsrl(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
		load_gs_index(h->gs);
		for (unsigned int i = 0; i < ARRAY_SIZE(svm_host_save_msrs); i++)
			wrmsrl(svm_host_save_msrs[i], *svm_host_save_slot(h, svm_host_save_msrs[i]));
	}
	if (!svm_param()->tsc_aux_user_return && svm_global()->tsc_aux_uret_slot >= 0)
		wrmsrl(MSR_TSC_AUX, h->tsc_aux);
	svm_prepare_host_switch(vcpu);
}

/* ---- registers and segments ---- */

static struct vmcb_seg *svm_seg(struct kvm_vcpu *vcpu, int seg)
{
	struct vmcb_save_area *save = &to_svm(vcpu)->vmcb->save;

	switch (seg) {
	case VCPU_SREG_CS: return &save->cs;
	case VCPU_SREG_DS: return &save->ds;
	case VCPU_SREG_ES: return &save->es;
	case VCPU_SREG_FS: return &save->fs;
	case VCPU_SREG_GS: return &save->gs;
	case VCPU_SREG_SS: return &save->ss;
	case VCPU_SREG_TR: return &save->tr;
	default: return &save->ldtr;
	}
}

static void svm_get_segment(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg)
{
	struct vmcb_seg *s = svm_seg(vcpu, seg);

	var->base = s->base;
	var->limit = s->limit;
	var->selector = s->selector;
	var->type = s->attrib & 15;
	var->s = (s->attrib >> 4) & 1;
	var->dpl = (s->attrib >> 5) & 3;
	var->present = (s->attrib >> 7) & 1;
	var->avl = (s->attrib >> 8) & 1;
	var->l = (s->attrib >> 9) & 1;
	var->db = (s->attrib >> 10) & 1;
	var->g = (s->attrib >> 11) & 1;
	var->unusable = !var->present;
}

static void svm_set_segment(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg)
{
	struct vmcb_seg *s = svm_seg(vcpu, seg);

	s->base = var->base;
	s->limit = var->limit;
	s->selector = var->selector;
	s->attrib = 0;
	if (!var->unusable)
		s->attrib = (var->type & 15) | ((var->s & 1) << 4) | ((var->dpl & 3) << 5) |
			    ((var->present & 1) << 7) | ((var->avl & 1) << 8) | ((var->l & 1) << 9) |
			    ((var->db & 1) << 10) | ((var->g & 1) << 11);
	if (seg == VCPU_SREG_SS)
		to_svm(vcpu)->vmcb->save.cpl = var->dpl;
}

static void svm_get_idt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	dt->size = to_svm(vcpu)->vmcb->save.idtr.limit;
	dt->address = to_svm(vcpu)->vmcb->save.idtr.base;
}

static void svm_set_idt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	to_svm(vcpu)->vmcb->save.idtr.limit = dt->size;
	to_svm(vcpu)->vmcb->save.idtr.base = dt->address;
}

static void svm_get_gdt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	dt->size = to_svm(vcpu)->vmcb->save.gdtr.limit;
	dt->address = to_svm(vcpu)->vmcb->save.gdtr.base;
}

static void svm_set_gdt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	to_svm(vcpu)->vmcb->save.gdtr.limit = dt->size;
	to_svm(vcpu)->vmcb->save.gdtr.base = dt->address;
}

static int svm_set_efer(struct kvm_vcpu *vcpu, u64 efer)
{
	vcpu->arch.efer = efer;
	/* The guest runs with SVME set (VMRUN requires it); it does not see it. */
	to_svm(vcpu)->vmcb->save.efer = efer | EFER_SVME;
	return 0;
}

/*
 * kernel: svm_is_valid_cr0() / svm_is_valid_cr4(): SVM adds nothing to the common checks
 * (kvm_is_valid_cr0/cr4 in x86.c) for a guest that is not nested.
 */
static bool svm_is_valid_cr0(struct kvm_vcpu *vcpu, u64 cr0)
{
	return true;
}

static bool svm_is_valid_cr4(struct kvm_vcpu *vcpu, u64 cr4)
{
	return true;
}

static void svm_set_cr0(struct kvm_vcpu *vcpu, u64 cr0)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	if ((vcpu->arch.efer & EFER_LME) && (cr0 & X86_CR0_PG) && !(vcpu->arch.efer & EFER_LMA)) {
		vcpu->arch.efer |= EFER_LMA;
		svm->vmcb->save.efer |= EFER_LMA | EFER_LME;
	}
	vcpu->arch.cr0 = cr0;
	svm->vmcb->save.cr0 = cr0;
	svm->vmcb->save.cr3 = vcpu->arch.cr3;
}

static void svm_set_cr4(struct kvm_vcpu *vcpu, u64 cr4)
{
	vcpu->arch.cr4 = cr4;
	to_svm(vcpu)->vmcb->save.cr4 = cr4;
}

static u64 svm_get_rflags(struct kvm_vcpu *vcpu) { return to_svm(vcpu)->vmcb->save.rflags; }
/* The VMCB holds these in memory: reading them costs no instruction (unlike a VMREAD). */
static int svm_get_cpl(struct kvm_vcpu *vcpu) { return to_svm(vcpu)->vmcb->save.cpl; }
static void svm_get_cs_db_l_bits(struct kvm_vcpu *vcpu, int *db, int *l)
{
	u16 attrib = to_svm(vcpu)->vmcb->save.cs.attrib;

	*db = (attrib >> 10) & 1;
	*l = (attrib >> 9) & 1;
}
#define SVM_INTERRUPT_SHADOW_MASK	BIT(0)
static u32 svm_get_interrupt_shadow(struct kvm_vcpu *vcpu)
{
	return (to_svm(vcpu)->vmcb->control.int_state & SVM_INTERRUPT_SHADOW_MASK) ?
	       KVM_X86_SHADOW_INT_STI | KVM_X86_SHADOW_INT_MOV_SS : 0;
}
static void svm_set_interrupt_shadow(struct kvm_vcpu *vcpu, int mask)
{
	struct vmcb_control_area *c = &to_svm(vcpu)->vmcb->control;

	c->int_state = mask ? (c->int_state | SVM_INTERRUPT_SHADOW_MASK)
			    : (c->int_state & ~SVM_INTERRUPT_SHADOW_MASK);
}
static void svm_set_rflags(struct kvm_vcpu *vcpu, u64 rflags) { to_svm(vcpu)->vmcb->save.rflags = rflags; }
static void svm_cache_reg(struct kvm_vcpu *vcpu, int reg) { vcpu->arch.regs_avail |= BIT(reg); }

static int svm_skip_emulated_instruction(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);

	/* NRIPS: the CPU told us where the instruction ends. */
	if (svm->vmcb->control.next_rip != 0)
		svm->next_rip = svm->vmcb->control.next_rip;
	kvm_rip_write(vcpu, svm->next_rip);
	svm_set_interrupt_shadow(vcpu, 0);
	return 1;
}

static void svm_inject_exception(struct kvm_vcpu *vcpu)
{
	struct kvm_queued_exception *ex = &vcpu->arch.exception;
	struct vcpu_svm *svm = to_svm(vcpu);

	svm->vmcb->control.event_inj = ex->vector | SVM_EVTINJ_VALID | SVM_EVTINJ_TYPE_EXEPT |
				       (ex->has_error_code ? SVM_EVTINJ_VALID_ERR : 0);
	svm->vmcb->control.event_inj_err = ex->error_code;
}

static void svm_vcpu_after_set_cpuid(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	bool intel = vcpu->arch.cap_intel_compatible;

	/* An Intel-compatible guest keeps SYSENTER bits 63:32, which the CPU drops. */
	set_msr_interception(svm, MSR_IA32_SYSENTER_EIP, intel, intel);
	set_msr_interception(svm, MSR_IA32_SYSENTER_ESP, intel, intel);
	/* Both ways: a later KVM_SET_CPUID2 may take IBPB away (guest_has_pred_cmd_msr). */
	set_msr_interception(svm, MSR_IA32_PRED_CMD, true, !vcpu->arch.cap_ibpb);
	if (vcpu->arch.cap_rdtscp)
		svm_clr_intercept(svm, INTERCEPT_RDTSCP);
	else
		svm_set_intercept(svm, INTERCEPT_RDTSCP);
}

/*
 * After an MSR filter or CPUID change (kernel: svm_recalc_msr_intercepts): the same
 * decisions as at creation and after KVM_SET_CPUID2, taken again under the filter now in
 * force. SPEC_CTRL stays the guest's once it has used it (written non-zero).
 */
static void svm_recalc_msr_intercepts(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	bool spec_ctrl_owned = !svm_msr_write_intercepted(svm, MSR_IA32_SPEC_CTRL);

	svm_pass_through_own_msrs(svm);
	svm_vcpu_after_set_cpuid(vcpu);
	set_msr_interception(svm, MSR_IA32_SPEC_CTRL, !spec_ctrl_owned, !spec_ctrl_owned);
}

/* Every MSR of KVM's emulated list is emulated for SVM guests too. */
static bool svm_has_emulated_msr(struct kvm *kvm, u32 index)
{
	return true;
}

/* ---- MSRs ---- */

static int svm_get_msr(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	struct vmcb_save_area *save = &svm->vmcb->save;

	switch (msr_info->index) {
	case MSR_STAR: msr_info->data = save->star; return 0;
	case MSR_LSTAR: msr_info->data = save->lstar; return 0;
	case MSR_CSTAR: msr_info->data = save->cstar; return 0;
	case MSR_SYSCALL_MASK: msr_info->data = save->sfmask; return 0;
	case MSR_KERNEL_GS_BASE: msr_info->data = save->kernel_gs_base; return 0;
	case MSR_FS_BASE: msr_info->data = save->fs.base; return 0;
	case MSR_GS_BASE: msr_info->data = save->gs.base; return 0;
	case MSR_IA32_SYSENTER_CS: msr_info->data = save->sysenter_cs; return 0;
	case MSR_IA32_SYSENTER_EIP:
		msr_info->data = (u32)save->sysenter_eip | ((u64)svm->sysenter_eip_hi << 32);
		return 0;
	case MSR_IA32_SYSENTER_ESP:
		msr_info->data = (u32)save->sysenter_esp | ((u64)svm->sysenter_esp_hi << 32);
		return 0;
	case MSR_TSC_AUX: msr_info->data = svm->tsc_aux; return 0;
	case MSR_IA32_CR_PAT: msr_info->data = save->g_pat; return 0;
	case MSR_IA32_SPEC_CTRL:
		if (!msr_info->host_initiated && !guest_has_spec_ctrl_msr(vcpu))
			return 1;
		msr_info->data = this_machine()->model.has_v_spec_ctrl ? save->spec_ctrl : svm->spec_ctrl;
		return 0;
	default:
		return kvm_get_msr_common(vcpu, msr_info);
	}
}

static int svm_set_msr(struct kvm_vcpu *vcpu, struct msr_data *msr)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	struct vmcb_save_area *save = &svm->vmcb->save;
	u64 data = msr->data;
	int ret;

	switch (msr->index) {
	case MSR_STAR: save->star = data; return 0;
	case MSR_LSTAR: save->lstar = data; return 0;
	case MSR_CSTAR: save->cstar = data; return 0;
	case MSR_SYSCALL_MASK: save->sfmask = (u32)data; return 0;
	case MSR_KERNEL_GS_BASE: save->kernel_gs_base = data; return 0;
	case MSR_FS_BASE: save->fs.base = data; return 0;
	case MSR_GS_BASE: save->gs.base = data; return 0;
	case MSR_IA32_SYSENTER_CS: save->sysenter_cs = data; return 0;
	case MSR_IA32_SYSENTER_EIP:
		save->sysenter_eip = (u32)data;
		svm->sysenter_eip_hi = vcpu->arch.cap_intel_compatible ? data >> 32 : 0;
		return 0;
	case MSR_IA32_SYSENTER_ESP:
		save->sysenter_esp = (u32)data;
		svm->sysenter_esp_hi = vcpu->arch.cap_intel_compatible ? data >> 32 : 0;
		return 0;
	case MSR_TSC_AUX:
		/*
		 * Before "Delay restoration of host MSR_TSC_AUX until return to userspace"
		 * (2021) the guest's value was in hardware whenever the vCPU was loaded:
		 * "This is rare, so we update the MSR here" (svm_set_msr, v5.10).
		 */
		if (!svm_param()->tsc_aux_user_return) {
			svm->tsc_aux = data;
			wrmsrl(MSR_TSC_AUX, data);
			return 0;
		}
		/* Changed rarely and never read by the host directly: switch it via user return. */
		preempt_disable();
		ret = kvm_set_user_return_msr(svm_global()->tsc_aux_uret_slot, data, -1ULL);
		preempt_enable();
		if (ret)
			return 1;
		svm->tsc_aux = data;
		return 0;
	case MSR_IA32_CR_PAT:
		if (kvm_set_msr_common(vcpu, msr))
			return 1;
		save->g_pat = data;
		return 0;
	case MSR_IA32_SPEC_CTRL:
		if (!msr->host_initiated && !guest_has_spec_ctrl_msr(vcpu))
			return 1;
		if (!kvm_spec_ctrl_test_value(vcpu, data))
			return 1;
		if (this_machine()->model.has_v_spec_ctrl)
			save->spec_ctrl = data;
		else
			svm->spec_ctrl = data;
		if (!data)
			return 0;
		/* The guest uses it: let it write directly; __svm_vcpu_run saves it on exit. */
		set_msr_interception(svm, MSR_IA32_SPEC_CTRL, false, false);
		return 0;
	default:
		return kvm_set_msr_common(vcpu, msr);
	}
}

/* ---- run ---- */

static int svm_vcpu_pre_run(struct kvm_vcpu *vcpu)
{
	return 1;
}

static fastpath_t svm_exit_handlers_fastpath(struct kvm_vcpu *vcpu)
{
	struct vmcb_control_area *control = &to_svm(vcpu)->vmcb->control;

	if (control->exit_code == SVM_EXIT_MSR && control->exit_info_1)
		return handle_fastpath_set_msr_irqoff(vcpu);
	return EXIT_FASTPATH_NONE;
}

/*
 * Where the host GS base comes back when the vmenter path did not VMLOAD the host save
 * area: one of the schemes of the Dec 2020 review, or the pre-2020 WRMSR GS_BASE.
 */
static void svm_restore_host_gs_before_stgi(struct vcpu_svm *svm)
{
	const struct svm_params *p = svm_param();

	if (!p->vmsave_host_state) {
		/* Pre-2020: the TSS descriptor is busy again after VMRUN; reload_tss(). */
		native_ltr(__TSS_SEL);
		if (!p->bug_gs_base_after_stgi)
			wrmsrl(MSR_GS_BASE, svm->host.gs_base);
		return;
	}
	if (p->forget_host_vmload)
		return;
	if (p->host_gs_wrgsbase)
		wrgsbase(svm->host.gs_base);
	else if (!p->host_vmload_in_vmenter)
		pk_vmload(__pa(&svm_global()->svm_data[this_cpu()->id]->save_area));
}

/* __svm_vcpu_run is the vmenter path; svm_vcpu_run brackets this with the guest-state
 * window (guest_state_enter_irqoff() .. guest_state_exit_irqoff(), pykvm/host.h). */
static void svm_vcpu_enter_exit(struct kvm_vcpu *vcpu, bool spec_ctrl_intercepted)
{
	__svm_vcpu_run(to_svm(vcpu), spec_ctrl_intercepted);
	pk_observe_ret(this_cpu());		/* __svm_vcpu_run's RET */
}

static fastpath_t svm_vcpu_run(struct kvm_vcpu *vcpu, u64 run_flags)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	bool spec_ctrl_intercepted = svm_msr_write_intercepted(svm, MSR_IA32_SPEC_CTRL);

	svm->vmcb->save.rax = vcpu->arch.regs[VCPU_REGS_RAX];
	svm->vmcb->save.rsp = vcpu->arch.regs[VCPU_REGS_RSP];
	svm->vmcb->save.rip = vcpu->arch.regs[VCPU_REGS_RIP];
	svm->vmcb->save.cr2 = vcpu->arch.cr2;

	/* NMIs and IRQs are held from here to STGI. */
	pk_clgi();
	if (!svm_param()->spec_ctrl_in_vmenter)
		svm_spec_ctrl_set_guest(svm);
	/* The guest-state window; the host VMLOAD was inside it before 2022 too. */
	guest_state_enter_irqoff();
	svm_vcpu_enter_exit(vcpu, spec_ctrl_intercepted);
	if (!svm_param()->spec_ctrl_in_vmenter)
		svm_spec_ctrl_restore_host(svm, spec_ctrl_intercepted);
	svm_restore_host_gs_before_stgi(svm);
	guest_state_exit_irqoff();

	vcpu->arch.cr2 = svm->vmcb->save.cr2;
	vcpu->arch.regs[VCPU_REGS_RAX] = svm->vmcb->save.rax;
	vcpu->arch.regs[VCPU_REGS_RSP] = svm->vmcb->save.rsp;
	vcpu->arch.regs[VCPU_REGS_RIP] = svm->vmcb->save.rip;
	/* Held NMIs are taken here: they must find the host GS base already loaded. */
	pk_stgi();
	if (!svm_param()->vmsave_host_state && svm_param()->bug_gs_base_after_stgi)
		wrmsrl(MSR_GS_BASE, svm->host.gs_base);
	svm->next_rip = 0;
	{
		u32 old = pk_path_enter(this_machine(), PK_PATH_FASTPATH);
		fastpath_t r = svm_exit_handlers_fastpath(vcpu);

		pk_path_leave(this_machine(), old);
		return r;
	}
}

static void svm_get_exit_info(struct kvm_vcpu *vcpu, u32 *reason, u64 *info1, u64 *info2)
{
	struct vmcb_control_area *control = &to_svm(vcpu)->vmcb->control;

	*reason = control->exit_code;
	*info1 = control->exit_info_1;
	*info2 = control->exit_info_2;
}

static void svm_handle_exit_irqoff(struct kvm_vcpu *vcpu)
{
	if (to_svm(vcpu)->vmcb->control.exit_code == SVM_EXIT_INTR)
		pk_host_timer_interrupt();
}

/* ---- exit handlers: 1 = handled in the kernel, 0 = exit to userspace ---- */

static int io_interception(struct kvm_vcpu *vcpu)
{
	struct vcpu_svm *svm = to_svm(vcpu);
	u32 io_info = svm->vmcb->control.exit_info_1;
	int size, in = io_info & SVM_IOIO_TYPE_MASK;
	u16 port = io_info >> SVM_IOIO_PORT_SHIFT;

	if (io_info & SVM_IOIO_STR_MASK)
		return kvm_handle_unexpected_exit(vcpu, SVM_EXIT_IOIO);
	size = (io_info & SVM_IOIO_SIZE_MASK) >> SVM_IOIO_SIZE_SHIFT;
	size = size == 4 ? 4 : size == 2 ? 2 : 1;
	svm->next_rip = svm->vmcb->control.exit_info_2;
	return kvm_fast_pio(vcpu, size, port, in);
}

static int msr_interception(struct kvm_vcpu *vcpu)
{
	if (to_svm(vcpu)->vmcb->control.exit_info_1)
		return kvm_emulate_wrmsr(vcpu);
	return kvm_emulate_rdmsr(vcpu);
}

static int intr_interception(struct kvm_vcpu *vcpu) { return kvm_handle_external_interrupt(vcpu); }
/* A host NMI caused the exit; it is taken at STGI, nothing to do here. */
static int nmi_interception(struct kvm_vcpu *vcpu) { return 1; }
static int cpuid_interception(struct kvm_vcpu *vcpu) { return kvm_emulate_cpuid(vcpu); }
static int halt_interception(struct kvm_vcpu *vcpu) { return kvm_emulate_halt(vcpu); }
static int vmmcall_interception(struct kvm_vcpu *vcpu) { return kvm_emulate_hypercall(vcpu); }
static int shutdown_interception(struct kvm_vcpu *vcpu)
{
	/* The VMCB is undefined after a shutdown intercept: reinitialise it. */
	init_vmcb(to_svm(vcpu));
	return kvm_handle_triple_fault(vcpu);
}
static int npf_interception(struct kvm_vcpu *vcpu) { return kvm_handle_mmio(vcpu, &this_cpu()->ev); }
static int kvm_handle_invalid_op(struct kvm_vcpu *vcpu)
{
	kvm_queue_exception(vcpu, X86_TRAP_UD);
	return 1;
}

#define SVM_NR_EXIT_HANDLERS (SVM_EXIT_NPF + 1)
static int (*const svm_exit_handlers[SVM_NR_EXIT_HANDLERS])(struct kvm_vcpu *vcpu) = {
	[SVM_EXIT_INTR]		= intr_interception,
	[SVM_EXIT_NMI]		= nmi_interception,
	[SVM_EXIT_CPUID]	= cpuid_interception,
	[SVM_EXIT_HLT]		= halt_interception,
	[SVM_EXIT_IOIO]		= io_interception,
	[SVM_EXIT_MSR]		= msr_interception,
	[SVM_EXIT_SHUTDOWN]	= shutdown_interception,
	[SVM_EXIT_VMMCALL]	= vmmcall_interception,
	[SVM_EXIT_RDTSCP]	= kvm_handle_invalid_op,
	[SVM_EXIT_NPF]		= npf_interception,
};

/*
 * kernel: svm_handle_exit() (svm.c): CR0/CR3 synced from the VMCB, the checks, then
 * svm_invoke_exit_handler(); its software is one SW_HANDLE_EXIT.
 */
static int svm_handle_exit(struct kvm_vcpu *vcpu, fastpath_t exit_fastpath)
{
	u32 exit_code = to_svm(vcpu)->vmcb->control.exit_code;

	pk_sw(PK_OP_SW_HANDLE_EXIT);
	if (exit_fastpath == EXIT_FASTPATH_EXIT_HANDLED)
		return 1;
	if (exit_code == SVM_EXIT_ERR) {
		vcpu->run.exit_reason = KVM_EXIT_FAIL_ENTRY;
		vcpu->run.fail_entry.hardware_entry_failure_reason = exit_code;
		vcpu->run.fail_entry.cpu = vcpu->arch.last_vmentry_cpu;
		return 0;
	}
	if (exit_code >= SVM_NR_EXIT_HANDLERS || !svm_exit_handlers[exit_code])
		return kvm_handle_unexpected_exit(vcpu, exit_code);
	return svm_exit_handlers[exit_code](vcpu);
}

static const struct kvm_x86_ops svm_x86_ops = {
	.name = "kvm_amd",
	.vm_size = sizeof(struct kvm),
	.vcpu_size = sizeof(struct vcpu_svm),

	.enable_virtualization_cpu = svm_enable_virtualization_cpu,
	.disable_virtualization_cpu = svm_disable_virtualization_cpu,

	.vm_init = svm_vm_init,
	.vcpu_create = svm_vcpu_create,
	.vcpu_free = svm_vcpu_free,
	.vcpu_reset = svm_vcpu_reset,

	.prepare_switch_to_guest = svm_prepare_switch_to_guest,
	.vcpu_load = svm_vcpu_load,
	.vcpu_put = svm_vcpu_put,

	.get_msr = svm_get_msr,
	.set_msr = svm_set_msr,
	.get_segment = svm_get_segment,
	.set_segment = svm_set_segment,
	.get_idt = svm_get_idt,
	.set_idt = svm_set_idt,
	.get_gdt = svm_get_gdt,
	.set_gdt = svm_set_gdt,
	.is_valid_cr0 = svm_is_valid_cr0,
	.set_cr0 = svm_set_cr0,
	.is_valid_cr4 = svm_is_valid_cr4,
	.set_cr4 = svm_set_cr4,
	.set_efer = svm_set_efer,
	.get_rflags = svm_get_rflags,
	.set_rflags = svm_set_rflags,
	.cache_reg = svm_cache_reg,

	.vcpu_pre_run = svm_vcpu_pre_run,
	.vcpu_run = svm_vcpu_run,
	.handle_exit = svm_handle_exit,
	.skip_emulated_instruction = svm_skip_emulated_instruction,
	.inject_exception = svm_inject_exception,
	.handle_exit_irqoff = svm_handle_exit_irqoff,
	.get_exit_info = svm_get_exit_info,
	.vcpu_after_set_cpuid = svm_vcpu_after_set_cpuid,
	.recalc_intercepts = svm_recalc_msr_intercepts,
	.complete_emulated_msr = kvm_complete_insn_gp,
	.has_emulated_msr = svm_has_emulated_msr,
	.get_cpl = svm_get_cpl,
	.get_cs_db_l_bits = svm_get_cs_db_l_bits,
	.get_interrupt_shadow = svm_get_interrupt_shadow,
	.set_interrupt_shadow = svm_set_interrupt_shadow,
	/* No hypervisor timer on SVM: the TSC-deadline fast path is VMX's (kernel: the same). */
};

static const struct kvm_x86_init_ops svm_init_ops = {
	.hardware_setup = svm_hardware_setup,
	.runtime_ops = &svm_x86_ops,
	.global_size = sizeof(struct svm_global),
	.module = "kvm_amd",
	.params_offset = offsetof(struct svm_global, params),
};

/* svm_init(): the vendor setup, then kvm_init() for the generic part (upstream keeps
 * SVM's ops table and module_init at the end of svm.c; there is no svm/main.c). */
static int svm_init(struct pk_machine *m, const char *params)
{
	int r = kvm_x86_vendor_init(m, &svm_init_ops, params);

	return r ? r : kvm_init(m);
}

static struct pk_module svm_module = {
	.name = "kvm_amd",
	.alias = "svm",
	.kp = svm_param_table,
	.init = svm_init,
};
module_init(svm_module);
