// SPDX-License-Identifier: MIT
/*
 * The VMX vendor module (kernel: arch/x86/kvm/vmx/vmx.c). Function names are the
 * kernel's; the host-state switch follows upstream as WORLD-SWITCH.md section 4 describes.
 */
#include "x86_ops.h"
#include "pykvm/printk.h"
#include "pykvm/smp.h"

/* Module parameters (kernel: module_param in vmx.c); upstream values are the defaults. */
const struct pk_param vmx_param_table[] = {
	PK_PARAM(struct vmx_params, lazy_kernel_gs_base, true,
		 "guest KERNEL_GS_BASE through vmx_read/write_guest_kernel_gs_base (678e315e78a7); "
		 "0: a full host-state reload around every access"),
	PK_PARAM(struct vmx_params, global_host_idt, true,
		 "HOST_IDTR_BASE from the IDT base read once at setup (2342080cd675); 0: SIDT per vCPU"),
	PK_PARAM(struct vmx_params, user_return_msrs, true,
		 "host SYSCALL MSRs/TSC_AUX/EFER restored on return to user mode (26bb0981b3ff, "
		 "2.6.32); 0: as 2.6.31's vmx_save_host_state/vmx_load_host_state: every guest "
		 "value written on each load, read back and replaced by the host's on each put"),
	PK_PARAM(struct vmx_params, lightweight_exit, true,
		 "host state is switched back only when the vCPU is put (e6adf28365b2, 2007: "
		 "\"Avoid saving and restoring some host CPU state on lightweight vmexit\"); "
		 "0: around every VM-entry and VM-exit, as the first releases (2.6.20) did"),
	PK_PARAM(struct vmx_params, host_msrs_snapshot, true,
		 "the host values of the switched MSRs are read once (2345df8c555e, 2007: "
		 "\"Reduce unnecessary saving of host msrs\"); 0: RDMSR of each whenever the "
		 "guest values are loaded (needs user_return_msrs=0)"),
	PK_PARAM(struct vmx_params, msr_bitmaps, true,
		 "the MSR bitmap lets the guest use FS/GS/KERNEL_GS_BASE and the SYSENTER MSRs "
		 "without exits; 0: every RDMSR/WRMSR exits, as in drivers/kvm/vmx.c up to 2.6.23 "
		 "(torvalds/linux 002c7f7c32a6: no CPU_BASED_USE_MSR_BITMAPS)"),
	PK_PARAM(struct vmx_params, efer_load_controls, true,
		 "EFER through the VMCS load-EFER controls when the CPU has them; 0: user return"),
	PK_PARAM(struct vmx_params, spec_ctrl_in_vmenter, true,
		 "host SPEC_CTRL restored in the vmenter path before the first RET (fc02735b14ff); "
		 "0: in C after __vmx_vcpu_run returns"),
	PK_PARAM(struct vmx_params, forget_kernel_gs_base, false, "never restore the host KERNEL_GS_BASE"),
	PK_PARAM(struct vmx_params, forget_host_fs_base, false, "never update HOST_FS_BASE"),
	PK_PARAM(struct vmx_params, forget_host_gs_base, false, "never update HOST_GS_BASE"),
	PK_PARAM(struct vmx_params, forget_gdt_reload, false, "never reload the GDT after VM-exit's 0xffff limit"),
	PK_PARAM(struct vmx_params, forget_spec_ctrl, false, "never restore the host SPEC_CTRL"),
	PK_PARAM(struct vmx_params, bug_kgs_saved_after_load_gs_index, false,
		 "before c8770e7ba63b: the guest KERNEL_GS_BASE is read back after "
		 "load_gs_index(), which has replaced it (a 32-bit VMM: kernel.vmm_32bit_gs)"),
	PK_PARAM(struct vmx_params, forget_host_tr_base, false,
		 "never update HOST_TR_BASE when the VMCS moves to another CPU"),
	PK_PARAM(struct vmx_params, forget_host_sysenter_esp, false,
		 "never update HOST_IA32_SYSENTER_ESP when the VMCS moves to another CPU"),
	PK_PARAM(struct vmx_params, enable_pml, true,
		 "page-modification logging where the CPU has it (4.2+, \"KVM: VMX: Add PML support "
		 "in VMX\"): every handled exit "
		 "reads GUEST_PML_INDEX (vmx_flush_pml_buffer)"),
	PK_PARAM(struct vmx_params, enable_preemption_timer, true,
		 "the VMX preemption timer as the LAPIC's hypervisor timer (4.10+, \"kvm: vmx: hook "
		 "preemption timer support\"): what the "
		 "TSC-deadline fast path needs; armed, it costs a VMWRITE per VM-entry"),
	PK_PARAM_UINT(struct vmx_params, vmentry_l1d_flush, VMENTER_L1D_FLUSH_COND,
		 "L1TF: flush L1D before VM-entry on affected CPUs (4.19+, \"x86/KVM/VMX: Add module "
		 "argument for L1TF mitigation\"): 0 never, 1 cond "
		 "(the first entry of a KVM_RUN, after interrupts and emulation), 2 always"),
	PK_PARAM(struct vmx_params, bug_uret_loaded_kept_across_put, false,
		 "a 'loaded' flag kept across put: vmx_prepare_switch_to_host() leaves "
		 "guest_uret_msrs_loaded set, so after user return restores the host values the "
		 "next entry does not load the guest's"),
	PK_PARAM(struct vmx_params, bug_uret_reload_below_loaded_check, false,
		 "vmx_prepare_switch_to_guest() returns early while guest state is loaded before "
		 "reloading the user-return MSRs: a guest that sets EFER.SCE runs its SYSCALL "
		 "with the host's LSTAR/STAR/SYSCALL_MASK"),
	PK_PARAM(struct vmx_params, forget_host_cr3_refresh, false,
		 "HOST_CR3 written once with the constant host state, never refreshed before "
		 "VM-entry: a CR3 change without a reschedule leaves it stale"),
	PK_PARAM(struct vmx_params, forget_host_cr4_refresh, false,
		 "HOST_CR4 written once, never refreshed before VM-entry: prctl(PR_SET_TSC) "
		 "changing CR4.TSD leaves it stale"),
	PK_PARAM(struct vmx_params, bug_host_cr3_refresh_in_prepare, false,
		 "HOST_CR3/CR4 refreshed in vmx_prepare_switch_to_guest(), with IRQs still on, "
		 "instead of right before VM-entry: an IPI in between changes CR3"),
	PK_PARAM(struct vmx_params, forget_host_ds_es, false,
		 "DS not restored: vmx_prepare_switch_to_host() leaves DS/ES as VM-exit loaded "
		 "them (0) instead of the host's user selectors"),
	PK_PARAM(struct vmx_params, forget_ldt_reload, false,
		 "the host LDT not reloaded on put (VM-exit leaves LDTR unusable): a VMM with an "
		 "LDT (kernel.vmm_ldt) returns to user mode without it"),
	PK_PARAM(struct vmx_params, bug_no_current_save_fsgs, false,
		 "host FS/GS bases taken from thread.fsbase/gsbase without current_save_fsgs(): "
		 "stale once the VMM wrote them with WRFSBASE/WRGSBASE in user mode"),
	{ }		/* end */
};

/* User-return MSRs, registered in this order at setup (kernel: vmx_uret_msrs_list). */
static const u32 vmx_uret_msrs_list[] = {
	MSR_SYSCALL_MASK, MSR_LSTAR, MSR_CSTAR, MSR_EFER, MSR_TSC_AUX, MSR_STAR,
	MSR_IA32_TSX_CTRL,
};

/* ---- MSR bitmap ---- */

static void vmx_set_msr_bitmap(u8 *bitmap, u32 msr, bool read, bool write, bool intercept)
{
	u32 base, bit;

	if (msr <= 0x1fff) {
		base = 0;
		bit = msr;
	} else if (msr >= 0xc0000000 && msr <= 0xc0001fff) {
		base = VMX_MSR_BITMAP_READ_HIGH;
		bit = msr & 0x1fff;
	} else {
		return;		/* outside the bitmap: always intercepted */
	}
	if (read) {
		if (intercept)
			bitmap[base + bit / 8] |= BIT(bit % 8);
		else
			bitmap[base + bit / 8] &= ~BIT(bit % 8);
	}
	if (write) {
		if (intercept)
			bitmap[base + VMX_MSR_BITMAP_WRITE_LOW + bit / 8] |= BIT(bit % 8);
		else
			bitmap[base + VMX_MSR_BITMAP_WRITE_LOW + bit / 8] &= ~BIT(bit % 8);
	}
}

/*
 * Let the guest access an MSR directly, unless the VM's MSR filter denies that access:
 * then it stays intercepted so KVM can apply the filter (kernel:
 * vmx_disable_intercept_for_msr).
 */
static void vmx_disable_intercept_for_msr(struct vcpu_vmx *vmx, u32 msr, bool r, bool w)
{
	u8 *bitmap = vmx->vmcs01.msr_bitmap;

	if (r && !kvm_msr_allowed(&vmx->vcpu, msr, KVM_MSR_FILTER_READ)) {
		vmx_set_msr_bitmap(bitmap, msr, true, false, true);
		r = false;
	}
	if (w && !kvm_msr_allowed(&vmx->vcpu, msr, KVM_MSR_FILTER_WRITE)) {
		vmx_set_msr_bitmap(bitmap, msr, false, true, true);
		w = false;
	}
	vmx_set_msr_bitmap(bitmap, msr, r, w, false);
}

bool vmx_msr_write_intercepted(struct vcpu_vmx *vmx, u32 msr)
{
	u32 bit;

	/* Without "use MSR bitmaps" every WRMSR exits. */
	if (!vmx_param()->msr_bitmaps)
		return true;

	if (msr <= 0x1fff)
		bit = VMX_MSR_BITMAP_WRITE_LOW * 8 + msr;
	else if (msr >= 0xc0000000 && msr <= 0xc0001fff)
		bit = VMX_MSR_BITMAP_WRITE_HIGH * 8 + (msr & 0x1fff);
	else
		return true;
	return vmx->vmcs01.msr_bitmap[bit / 8] & BIT(bit % 8);
}

/* ---- setup, enable/disable ---- */

int vmx_hardware_setup(void)
{
	struct vmx_global *vg = vmx_global();
	struct pk_dtable dt;

	/* The host IDT is one global table: read its base once (commit 2342080cd675). */
	native_store_idt(&dt);
	vg->host_idt_base = dt.base;
	vg->cpu_has_load_efer = this_machine()->model.has_load_efer && vg->params.efer_load_controls;
	for (u32 cpu = 0; cpu < this_machine()->nr_cpus; cpu++)
		INIT_LIST_HEAD(&vg->loaded_vmcss_on_cpu[cpu]);
	vg->enable_pml = this_machine()->model.has_pml && vg->params.enable_pml;
	/* The static branch vmx_l1d_should_flush: only CPUs with L1TF flush at all. */
	vg->l1d_flush = this_machine()->model.bug_l1tf ?
			vg->params.vmentry_l1d_flush : VMENTER_L1D_FLUSH_NEVER;
	/* Without the preemption timer there is no hypervisor timer (kernel: the same). */
	if (!vg->params.enable_preemption_timer) {
		kvm_global()->ops.set_hv_timer = NULL;
		kvm_global()->ops.cancel_hv_timer = NULL;
	}
	if (vg->l1d_flush > VMENTER_L1D_FLUSH_ALWAYS)
		return pk_err(-EINVAL, "kvm_intel.vmentry_l1d_flush=%u: 0 never, 1 cond, 2 always",
			      vg->l1d_flush);
	/* The snapshot a user-return MSR slot keeps is the host value: nothing to re-read. */
	if (!vg->params.host_msrs_snapshot && vg->params.user_return_msrs)
		return pk_err(-EINVAL, "kvm_intel.host_msrs_snapshot=0 needs user_return_msrs=0 "
			      "(the user-return slots keep the host values they snapshot)");

	for (unsigned int i = 0; i < ARRAY_SIZE(vmx_uret_msrs_list); ++i)
		kvm_add_user_return_msr(vmx_uret_msrs_list[i]);
	/*
	 * Intel adds CMCI (MCi_CTL2, LVT CMCI). Upstream also adds MCG_LMCE_P, which needs
	 * IA32_FEATURE_CONTROL and MCG_EXT_CTL: not modelled, so not offered.
	 */
	kvm_global()->supported_mce_cap |= MCG_CMCI_P;
	return 0;
}

int vmx_enable_virtualization_cpu(void)
{
	return pk_vmxon() ? -EBUSY : 0;
}

/* VMCLEAR on the CPU where the VMCS is active (kernel: __loaded_vmcs_clear, an IPI). */
static void __loaded_vmcs_clear(void *arg)
{
	struct loaded_vmcs *lv = arg;
	struct vmx_global *vg = vmx_global();
	int cpu = smp_processor_id();

	/* A vCPU migration can race with CPU offline: another IPI may have cleared it. */
	if (lv->cpu != cpu)
		return;
	if (pk_vmclear(__pa(lv->vmcs)))
		pk_host_bug(this_machine());
	if (vg->current_vmcs[cpu] == lv->vmcs)
		vg->current_vmcs[cpu] = NULL;
	list_del(&lv->loaded_vmcss_on_cpu_link);
	WRITE_ONCE(lv->cpu, -1);
	lv->launched = false;
}

/* kernel: loaded_vmcs_clear(): an IPI to the CPU it is active on, if any. */
static void loaded_vmcs_clear(struct loaded_vmcs *lv)
{
	int cpu = READ_ONCE(lv->cpu);

	if (cpu != -1)
		smp_call_function_single(cpu, __loaded_vmcs_clear, lv);
}

void vmx_disable_virtualization_cpu(void)
{
	struct vmx_global *vg = vmx_global();
	int cpu = smp_processor_id();
	struct loaded_vmcs *v, *n;

	/* kernel: vmclear_local_loaded_vmcss() */
	list_for_each_entry_safe(v, n, &vg->loaded_vmcss_on_cpu[cpu], loaded_vmcss_on_cpu_link)
		__loaded_vmcs_clear(v);
	pk_vmxoff();
}

int vmx_vm_init(struct kvm *kvm)
{
	return 0;
}

/* ---- VMCS set-up ---- */

/* Host state that is the same on every entry (kernel: vmx_set_constant_host_state). */
static void vmx_set_constant_host_state(struct vcpu_vmx *vmx)
{
	struct pk_machine *m = this_machine();
	u64 cr0 = native_read_cr0(), cr3 = native_read_cr3(), cr4 = native_read_cr4();

	vmcs_writel(HOST_CR0, cr0);
	vmcs_writel(HOST_CR3, cr3);
	vmx->loaded_vmcs->host_state.cr3 = cr3;
	vmcs_writel(HOST_CR4, cr4);
	vmx->loaded_vmcs->host_state.cr4 = cr4;
	vmcs_write16(HOST_CS_SELECTOR, __KERNEL_CS);
	vmcs_write16(HOST_DS_SELECTOR, 0);
	vmcs_write16(HOST_ES_SELECTOR, 0);
	vmcs_write16(HOST_SS_SELECTOR, __KERNEL_DS);
	vmcs_write16(HOST_TR_SELECTOR, __TSS_SEL);
	if (vmx_param()->global_host_idt) {
		vmcs_writel(HOST_IDTR_BASE, vmx_global()->host_idt_base);
	} else {
		struct pk_dtable dt;

		native_store_idt(&dt);
		vmcs_writel(HOST_IDTR_BASE, dt.base);
	}
	vmcs_writel(HOST_RIP, 0xffffffff81040000ULL);	/* vmx_vmexit */
	vmcs_write32(HOST_IA32_SYSENTER_CS, __KERNEL_CS);
	vmcs_writel(HOST_IA32_SYSENTER_EIP, m->host.sysenter_eip);
	if (vmx_global()->cpu_has_load_efer)
		vmcs_write64(HOST_IA32_EFER, kvm_global()->host_efer);
	vmcs_write64(HOST_IA32_PAT, m->host.pat);
}

static void init_vmcs(struct vcpu_vmx *vmx)
{
	struct kvm *kvm = vmx->vcpu.kvm;
	u32 exit_ctl = VM_EXIT_HOST_ADDR_SPACE_SIZE | VM_EXIT_SAVE_IA32_PAT | VM_EXIT_LOAD_IA32_PAT;
	u32 entry_ctl = VM_ENTRY_LOAD_IA32_PAT;

	vmcs_write32(PIN_BASED_VM_EXEC_CONTROL, PIN_BASED_EXT_INTR_MASK | PIN_BASED_NMI_EXITING);
	vmcs_write32(CPU_BASED_VM_EXEC_CONTROL, CPU_BASED_HLT_EXITING | CPU_BASED_UNCOND_IO_EXITING |
		     (vmx_param()->msr_bitmaps ? CPU_BASED_USE_MSR_BITMAPS : 0) |
		     CPU_BASED_ACTIVATE_SECONDARY_CONTROLS);
	vmcs_write32(SECONDARY_VM_EXEC_CONTROL, SECONDARY_EXEC_ENABLE_EPT);
	vmcs_write64(MSR_BITMAP, __pa(vmx->vmcs01.msr_bitmap));
	vmcs_write64(EPT_POINTER, __pa(&kvm->memslots));
	vmcs_write64(VMCS_LINK_POINTER, -1ULL);
	vmcs_write32(EXCEPTION_BITMAP, 0);
	vmcs_write32(VM_EXIT_MSR_STORE_COUNT, 0);
	vmcs_write32(VM_EXIT_MSR_LOAD_COUNT, 0);
	vmcs_write64(VM_EXIT_MSR_LOAD_ADDR, __pa(vmx->msr_autoload.host.val));
	vmcs_write32(VM_ENTRY_MSR_LOAD_COUNT, 0);
	vmcs_write64(VM_ENTRY_MSR_LOAD_ADDR, __pa(vmx->msr_autoload.guest.val));
	vmcs_write32(VM_EXIT_CONTROLS, exit_ctl);
	vmcs_write32(VM_ENTRY_CONTROLS, entry_ctl);
	vmcs_write32(VM_ENTRY_INTR_INFO_FIELD, 0);
	vmx_set_constant_host_state(vmx);
	vmcs_writel(HOST_FS_BASE, 0);
	vmcs_writel(HOST_GS_BASE, 0);
	vmcs_write64(GUEST_IA32_PAT, 0x0007040600070406ULL);
	vmcs_write32(GUEST_ACTIVITY_STATE, GUEST_ACTIVITY_ACTIVE);
	/*
	 * An empty PML log (kernel: init_vmcs). The model's hardware does not log (no dirty
	 * logging runs), so the index stays there; KVM still reads it on every exit.
	 */
	if (vmx_global()->enable_pml)
		vmcs_write16(GUEST_PML_INDEX, PML_ENTITY_NUM - 1);
}

/* The guest owns these outright; FS/GS bases travel in the VMCS. */
static void vmx_pass_through_own_msrs(struct vcpu_vmx *vmx)
{
	vmx_disable_intercept_for_msr(vmx, MSR_FS_BASE, true, true);
	vmx_disable_intercept_for_msr(vmx, MSR_GS_BASE, true, true);
	vmx_disable_intercept_for_msr(vmx, MSR_KERNEL_GS_BASE, true, true);
	vmx_disable_intercept_for_msr(vmx, MSR_IA32_SYSENTER_CS, true, true);
	vmx_disable_intercept_for_msr(vmx, MSR_IA32_SYSENTER_ESP, true, true);
	vmx_disable_intercept_for_msr(vmx, MSR_IA32_SYSENTER_EIP, true, true);
}

int vmx_vcpu_create(struct kvm_vcpu *vcpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	vmx->vmcs01.vmcs = (struct pk_vmcs_region *)vmx->vmcs01_page;
	vmx->vmcs01.vmcs->revision_id = PK_VMCS_REVISION;
	/* A new VMCS must be VMCLEARed before its first VMPTRLD (kernel: loaded_vmcs_init). */
	if (pk_vmclear(__pa(vmx->vmcs01.vmcs)))
		pk_host_bug(this_machine());
	vmx->vmcs01.cpu = -1;
	vmx->hv_deadline_tsc = -1ULL;
	vmx->vmcs01.msr_bitmap = vmx->msr_bitmap_page;
	memset(vmx->vmcs01.msr_bitmap, 0xff, 4096);
	vmx->loaded_vmcs = &vmx->vmcs01;

	vmx_pass_through_own_msrs(vmx);

	for (int i = 0; i < kvm_global()->kvm_nr_uret_msrs; ++i)
		vmx->guest_uret_msrs[i].mask = -1ULL;
	return 0;
}

/* kernel: vmx_vcpu_free() -> free_loaded_vmcs(): VMCLEAR it where it is active. */
void vmx_vcpu_free(struct kvm_vcpu *vcpu)
{
	loaded_vmcs_clear(&to_vmx(vcpu)->vmcs01);
}

void vmx_vcpu_reset(struct kvm_vcpu *vcpu, bool init_event)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	init_vmcs(vmx);
	vcpu->arch.pat = 0x0007040600070406ULL;
	vcpu->arch.ia32_misc_enable_msr = BIT_ULL(11) | BIT_ULL(12);
	vcpu->arch.apic_base = 0xfee00000ULL | BIT_ULL(11) | (vcpu->vcpu_id ? 0 : BIT_ULL(8));
	kvm_rip_write(vcpu, 0xfff0);
	vmcs_writel(GUEST_RFLAGS, X86_EFLAGS_FIXED);
	vmx->msr_guest_kernel_gs_base = 0;
	vmx->spec_ctrl = 0;
}

/* ---- user-return MSRs ---- */

static struct vmx_uret_msr *vmx_find_uret_msr(struct vcpu_vmx *vmx, u32 msr)
{
	int i = kvm_find_user_return_msr(msr);

	return i < 0 ? NULL : &vmx->guest_uret_msrs[i];
}

static void vmx_setup_uret_msr(struct vcpu_vmx *vmx, u32 msr, bool load_into_hardware)
{
	struct vmx_uret_msr *uret = vmx_find_uret_msr(vmx, msr);

	if (uret)
		uret->load_into_hardware = load_into_hardware;
}

/*
 * EFER through user return unless the VMCS can switch it: the guest's SCE/LME/LMA are
 * ignored (the VMCS entry control and CR0 decide LMA/LME), SCE only outside long mode.
 * Returns whether EFER must be loaded at all (kernel: update_transition_efer).
 */
static bool update_transition_efer(struct vcpu_vmx *vmx)
{
	struct kvm_vcpu *vcpu = &vmx->vcpu;
	u64 guest_efer = vcpu->arch.efer;
	u64 host_efer = kvm_global()->host_efer;
	u64 ignore_bits = EFER_NX | EFER_SCE | EFER_LMA | EFER_LME;
	struct vmx_uret_msr *uret;

	if (vmx_global()->cpu_has_load_efer) {
		if (guest_efer != host_efer) {
			vmcs_write32(VM_ENTRY_CONTROLS, vmcs_read32(VM_ENTRY_CONTROLS) | VM_ENTRY_LOAD_IA32_EFER);
			vmcs_write32(VM_EXIT_CONTROLS, vmcs_read32(VM_EXIT_CONTROLS) | VM_EXIT_LOAD_IA32_EFER);
			vmcs_write64(GUEST_IA32_EFER, guest_efer);
		} else {
			vmcs_write32(VM_ENTRY_CONTROLS, vmcs_read32(VM_ENTRY_CONTROLS) & ~VM_ENTRY_LOAD_IA32_EFER);
			vmcs_write32(VM_EXIT_CONTROLS, vmcs_read32(VM_EXIT_CONTROLS) & ~VM_EXIT_LOAD_IA32_EFER);
		}
		return false;
	}
	/* SCE is meaningful only in long mode on Intel. */
	if (guest_efer & EFER_LMA)
		ignore_bits &= ~(u64)EFER_SCE;
	uret = vmx_find_uret_msr(vmx, MSR_EFER);
	if (!uret)
		return false;
	uret->data = guest_efer & ~ignore_bits;
	uret->mask = ~ignore_bits;
	/*
	 * Loaded even when equal to the host's, as upstream has done since the user-return
	 * MSRs: were the slot dropped when the guest's value came to equal the host's, the
	 * guest's previous value would stay in hardware until user return (a guest that sets
	 * EFER.SCE and executes SYSCALL in the same run got #UD). The 2.6 kernels before
	 * them skipped an equal EFER (every put restored the host's MSRs anyway).
	 */
	if (!vmx_param()->user_return_msrs)
		return ((guest_efer ^ host_efer) & ~ignore_bits) != 0;
	return true;
}

static void vmx_setup_uret_msrs(struct vcpu_vmx *vmx)
{
	struct kvm_vcpu *vcpu = &vmx->vcpu;
	bool load_syscall_msrs;

	/* The SYSCALL MSRs matter only to a 64-bit guest with SYSCALL enabled. */
	load_syscall_msrs = is_long_mode(vcpu) && (vcpu->arch.efer & EFER_SCE);
	vmx_setup_uret_msr(vmx, MSR_STAR, load_syscall_msrs);
	vmx_setup_uret_msr(vmx, MSR_LSTAR, load_syscall_msrs);
	vmx_setup_uret_msr(vmx, MSR_SYSCALL_MASK, load_syscall_msrs);
	vmx_setup_uret_msr(vmx, MSR_EFER, update_transition_efer(vmx));
	vmx_setup_uret_msr(vmx, MSR_TSC_AUX, vcpu->arch.cap_rdtscp || vcpu->arch.cap_rdpid);
	/* The guest may not change TSX_CTRL.CPUID_CLEAR. */
	vmx_setup_uret_msr(vmx, MSR_IA32_TSX_CTRL, this_machine()->model.has_rtm);
	{
		struct vmx_uret_msr *tsx = vmx_find_uret_msr(vmx, MSR_IA32_TSX_CTRL);
		if (tsx)
			tsx->mask = ~(u64)TSX_CTRL_CPUID_CLEAR;
	}
	/* The new set takes effect at the next prepare_switch_to_guest. */
	vmx->guest_uret_msrs_loaded = false;
}

static void vmx_load_guest_msrs(struct vcpu_vmx *vmx);

static int vmx_set_guest_uret_msr(struct vcpu_vmx *vmx, struct vmx_uret_msr *msr, u64 data)
{
	unsigned int slot = msr - vmx->guest_uret_msrs;
	int ret = 0;

	/* 2.6.31's vmx_set_msr: the new value, and every loaded one again if loaded. */
	if (!vmx_param()->user_return_msrs) {
		msr->data = data;
		if (vmx->guest_state_loaded)
			vmx_load_guest_msrs(vmx);
		return 0;
	}
	if (msr->load_into_hardware) {
		preempt_disable();
		ret = kvm_set_user_return_msr(slot, data, msr->mask);
		preempt_enable();
	}
	if (!ret)
		msr->data = data;
	return ret;
}

/* ---- the host-state switch ---- */

/*
 * HOST_CR3/CR4 right before VM-entry, IRQs off (vmx_vcpu_run): a CR3 change without a
 * reschedule (text_poke's temporary mm, an IPI rewriting CR3, a kthread's lazy mm) or a
 * CR4 change (prctl(PR_SET_TSC)) must not leave them stale.
 */
static void vmx_refresh_host_cr3_cr4(struct vcpu_vmx *vmx)
{
	struct vmcs_host_state *hs = &vmx->loaded_vmcs->host_state;
	u64 cr3, cr4;

	cr3 = __get_current_cr3_fast();
	if (unlikely(cr3 != hs->cr3) && !vmx_param()->forget_host_cr3_refresh) {
		vmcs_writel(HOST_CR3, cr3);
		hs->cr3 = cr3;
	}
	cr4 = cr4_read_shadow();
	if (unlikely(cr4 != hs->cr4) && !vmx_param()->forget_host_cr4_refresh) {
		vmcs_writel(HOST_CR4, cr4);
		hs->cr4 = cr4;
	}
}

/*
 * Before the user-return MSRs (2.6.31 and older): the guest's values are written on
 * every load, whatever the CPU holds (load_msrs(vmx->guest_msrs, save_nmsrs)), and on
 * every put read back and replaced by the host's (save_msrs + load_msrs of host_msrs).
 * The host values were read once per vCPU (2345df8c555e) or, before, on every load.
 */
static u64 vmx_old_msr_value(struct vcpu_vmx *vmx, int slot, u64 data)
{
	const struct vmx_uret_msr *u = &vmx->guest_uret_msrs[slot];

	return (data & u->mask) | (vmx->host_msrs[slot] & ~u->mask);
}

static void vmx_load_guest_msrs(struct vcpu_vmx *vmx)
{
	struct kvm_x86_global *g = kvm_global();
	int cpu = smp_processor_id();

	for (int i = 0; i < g->kvm_nr_uret_msrs; ++i) {
		if (!vmx->guest_uret_msrs[i].load_into_hardware)
			continue;
		wrmsrl(g->kvm_uret_msrs_list[i],
		       vmx_old_msr_value(vmx, i, vmx->guest_uret_msrs[i].data));
		/* Tell the per-CPU snapshot what the CPU holds (no notifier in this scheme). */
		g->user_return_msrs[cpu].values[i].curr =
			vmx_old_msr_value(vmx, i, vmx->guest_uret_msrs[i].data);
	}
}

static void vmx_save_host_msrs(struct vcpu_vmx *vmx)
{
	struct kvm_x86_global *g = kvm_global();
	int cpu = smp_processor_id();

	for (int i = 0; i < g->kvm_nr_uret_msrs; ++i) {
		if (!vmx->guest_uret_msrs[i].load_into_hardware)
			continue;
		if (vmx_param()->host_msrs_snapshot)
			vmx->host_msrs[i] = g->user_return_msrs[cpu].values[i].host;
		else
			vmx->host_msrs[i] = rdmsrl(g->kvm_uret_msrs_list[i]);
	}
}

static void vmx_load_host_msrs(struct vcpu_vmx *vmx)
{
	struct kvm_x86_global *g = kvm_global();
	int cpu = smp_processor_id();

	for (int i = 0; i < g->kvm_nr_uret_msrs; ++i) {
		u32 msr = g->kvm_uret_msrs_list[i];

		if (!vmx->guest_uret_msrs[i].load_into_hardware)
			continue;
		vmx->guest_uret_msrs[i].data = (rdmsrl(msr) & vmx->guest_uret_msrs[i].mask) |
					       (vmx->guest_uret_msrs[i].data &
						~vmx->guest_uret_msrs[i].mask);
		wrmsrl(msr, vmx->host_msrs[i]);
		g->user_return_msrs[cpu].values[i].curr = vmx->host_msrs[i];
	}
}

/*
 * The host FS/GS selectors and bases VM-exit will load, written only when they changed
 * since the last write to this VMCS. A selector with RPL or TI bits cannot be a VMCS host
 * selector: the VMCS gets 0 and the cache keeps the real one for vcpu_put to reload.
 */
void vmx_set_host_fs_gs(struct vmcs_host_state *host, u16 fs_sel, u16 gs_sel,
			u64 fs_base, u64 gs_base)
{
	if (unlikely(fs_sel != host->fs_sel)) {
		vmcs_write16(HOST_FS_SELECTOR, (fs_sel & 7) ? 0 : fs_sel);
		host->fs_sel = fs_sel;
	}
	if (unlikely(gs_sel != host->gs_sel)) {
		vmcs_write16(HOST_GS_SELECTOR, (gs_sel & 7) ? 0 : gs_sel);
		host->gs_sel = gs_sel;
	}
	if (unlikely(fs_base != host->fs_base) && !vmx_param()->forget_host_fs_base) {
		vmcs_writel(HOST_FS_BASE, fs_base);
		host->fs_base = fs_base;
	}
	if (unlikely(gs_base != host->gs_base) && !vmx_param()->forget_host_gs_base) {
		vmcs_writel(HOST_GS_BASE, gs_base);
		host->gs_base = gs_base;
	}
}

void vmx_prepare_switch_to_guest(struct kvm_vcpu *vcpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	struct pk_machine *m = this_machine();
	struct vmcs_host_state *host_state;
	int cpu = smp_processor_id();
	u16 fs_sel, gs_sel;
	u64 fs_base, gs_base;

	if (vmx_param()->bug_uret_reload_below_loaded_check && vmx->guest_state_loaded)
		return;
	if (vmx_param()->bug_host_cr3_refresh_in_prepare)
		vmx_refresh_host_cr3_cr4(vmx);
	if (!vmx_param()->user_return_msrs) {
		if (vmx->guest_state_loaded)
			return;
		vmx_save_host_msrs(vmx);
		vmx_load_guest_msrs(vmx);
		vmx->guest_uret_msrs_loaded = true;
	}
	/* Guest user-return MSRs go into hardware once per load; restored on user return. */
	if (!vmx->guest_uret_msrs_loaded) {
		vmx->guest_uret_msrs_loaded = true;
		for (int i = 0; i < kvm_global()->kvm_nr_uret_msrs; ++i) {
			if (!vmx->guest_uret_msrs[i].load_into_hardware)
				continue;
			kvm_set_user_return_msr(i, vmx->guest_uret_msrs[i].data,
						vmx->guest_uret_msrs[i].mask);
		}
	}
	if (vmx->guest_state_loaded)
		return;

	host_state = &vmx->loaded_vmcs->host_state;
	host_state->ldt_sel = savesegment(VCPU_SREG_LDTR);
	host_state->ds_sel = savesegment(VCPU_SREG_DS);
	host_state->es_sel = savesegment(VCPU_SREG_ES);
	gs_sel = savesegment(VCPU_SREG_GS);
	fs_sel = savesegment(VCPU_SREG_FS);
	if (vmx_param()->bug_no_current_save_fsgs) {
		fs_base = current_task()->fsbase;
		vmx->msr_host_kernel_gs_base = current_task()->gsbase;
	} else {
		/* current_save_fsgs(): in the kernel, the user's GS base is the inactive one. */
		fs_base = rdfsbase();
		vmx->msr_host_kernel_gs_base = x86_gsbase_read_inactive();
	}
	gs_base = m->host.per_cpu_offset[cpu];

	/* The guest's KERNEL_GS_BASE goes into hardware now; VM-exit does not touch it. */
	wrmsrl(MSR_KERNEL_GS_BASE, vmx->msr_guest_kernel_gs_base);

	vmx_set_host_fs_gs(host_state, fs_sel, gs_sel, fs_base, gs_base);
	vmx->guest_state_loaded = true;
}

static void vmx_prepare_switch_to_host(struct vcpu_vmx *vmx)
{
	struct pk_machine *m = this_machine();
	struct vmcs_host_state *host_state;
	struct pk_dtable gdt;

	if (!vmx->guest_state_loaded)
		return;
	host_state = &vmx->loaded_vmcs->host_state;

	/* Before load_gs_index(), which replaces the inactive GS base (c8770e7ba63b). */
	if (!vmx_param()->bug_kgs_saved_after_load_gs_index)
		vmx->msr_guest_kernel_gs_base = rdmsrl(MSR_KERNEL_GS_BASE);
	if (host_state->ldt_sel || (host_state->gs_sel & 7)) {
		if (!vmx_param()->forget_ldt_reload)
			native_lldt(host_state->ldt_sel);
		load_gs_index(host_state->gs_sel);
	} else if (savesegment(VCPU_SREG_GS) != host_state->gs_sel) {
		load_gs_index(host_state->gs_sel);
	}
	if (vmx_param()->bug_kgs_saved_after_load_gs_index)
		vmx->msr_guest_kernel_gs_base = rdmsrl(MSR_KERNEL_GS_BASE);
	if (host_state->fs_sel & 7)
		loadsegment(VCPU_SREG_FS, host_state->fs_sel);
	if ((host_state->ds_sel | host_state->es_sel) && !vmx_param()->forget_host_ds_es) {
		loadsegment(VCPU_SREG_DS, host_state->ds_sel);
		loadsegment(VCPU_SREG_ES, host_state->es_sel);
	}
	/*
	 * invalidate_tss_limit() comes here upstream: VM-exit left TR's limit at 0x67, and a
	 * task with an I/O bitmap (TIF_IO_BITMAP) gets TR reloaded (force_reload_TR), the
	 * others only have the TSS's I/O bitmap marked invalid. The VMM threads modelled have
	 * no I/O bitmap, so that is a per-cpu store touching no switched state: not modelled.
	 */
	if (!vmx_param()->forget_kernel_gs_base)
		wrmsrl(MSR_KERNEL_GS_BASE, vmx->msr_host_kernel_gs_base);
	if (!vmx_param()->forget_gdt_reload) {
		gdt.base = m->host.gdt_base[smp_processor_id()];
		gdt.limit = 0x7f;
		native_load_gdt(&gdt);
	}
	/* Before user-return notifiers existed, the host values came back on every put. */
	if (!vmx_param()->user_return_msrs)
		vmx_load_host_msrs(vmx);
	vmx->guest_state_loaded = false;
	if (!vmx_param()->bug_uret_loaded_kept_across_put)
		vmx->guest_uret_msrs_loaded = false;
}

/* Guest KERNEL_GS_BASE is live in hardware only while guest state is loaded (678e315e78a7). */
static u64 vmx_read_guest_kernel_gs_base(struct vcpu_vmx *vmx)
{
	/* Before 678e315e78a7: put the whole host state back, then use the cache. */
	if (!vmx_param()->lazy_kernel_gs_base && vmx_param()->user_return_msrs) {
		vmx_prepare_switch_to_host(vmx);
		return vmx->msr_guest_kernel_gs_base;
	}
	preempt_disable();
	if (vmx->guest_state_loaded)
		vmx->msr_guest_kernel_gs_base = rdmsrl(MSR_KERNEL_GS_BASE);
	preempt_enable();
	return vmx->msr_guest_kernel_gs_base;
}

static void vmx_write_guest_kernel_gs_base(struct vcpu_vmx *vmx, u64 data)
{
	/*
	 * Before user-return MSRs KERNEL_GS_BASE was one of the guest MSR list, and 2.6.31's
	 * vmx_set_msr wrote the whole list again if it was loaded (load_msrs).
	 */
	if (!vmx_param()->lazy_kernel_gs_base && !vmx_param()->user_return_msrs) {
		vmx->msr_guest_kernel_gs_base = data;
		if (vmx->guest_state_loaded) {
			vmx_load_guest_msrs(vmx);
			wrmsrl(MSR_KERNEL_GS_BASE, data);
		}
		return;
	}
	if (!vmx_param()->lazy_kernel_gs_base) {
		vmx_prepare_switch_to_host(vmx);
		vmx->msr_guest_kernel_gs_base = data;
		return;
	}
	preempt_disable();
	if (vmx->guest_state_loaded)
		wrmsrl(MSR_KERNEL_GS_BASE, data);
	preempt_enable();
	vmx->msr_guest_kernel_gs_base = data;
}

static void vmx_vcpu_load_vmcs(struct kvm_vcpu *vcpu, int cpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	struct vmx_global *vg = vmx_global();
	struct pk_machine *m = this_machine();
	bool already_loaded = vmx->loaded_vmcs->cpu == cpu;

	if (!already_loaded) {
		loaded_vmcs_clear(vmx->loaded_vmcs);
		list_add(&vmx->loaded_vmcs->loaded_vmcss_on_cpu_link, &vg->loaded_vmcss_on_cpu[cpu]);
	}
	if (vg->current_vmcs[cpu] != vmx->loaded_vmcs->vmcs) {
		vg->current_vmcs[cpu] = vmx->loaded_vmcs->vmcs;
		if (pk_vmptrld(__pa(vmx->loaded_vmcs->vmcs)))
			pk_host_bug(m);
	}
	if (!already_loaded) {
		/* Per-CPU host state: TSS, GDT and SYSENTER stack of this CPU. */
		if (!vmx_param()->forget_host_tr_base || vmx->vcpu.arch.last_vmentry_cpu < 0)
			vmcs_writel(HOST_TR_BASE, m->host.tss_base[cpu]);
		vmcs_writel(HOST_GDTR_BASE, m->host.gdt_base[cpu]);
		if (!vmx_param()->forget_host_sysenter_esp || vmx->vcpu.arch.last_vmentry_cpu < 0)
			vmcs_writel(HOST_IA32_SYSENTER_ESP, m->host.entry_stack[cpu]);
		WRITE_ONCE(vmx->loaded_vmcs->cpu, cpu);
	}
}

/*
 * kernel: vmx_vcpu_load(): the VMCS, then the host's DEBUGCTL for vmx_vcpu_run to put
 * back after VM-exit (which clears it) when it is non-zero (get_debugctlmsr: RDMSR).
 */
void vmx_vcpu_load(struct kvm_vcpu *vcpu, int cpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	vmx_vcpu_load_vmcs(vcpu, cpu);
	vmx->host_debugctlmsr = rdmsrl(MSR_IA32_DEBUGCTLMSR);
}

void vmx_vcpu_put(struct kvm_vcpu *vcpu)
{
	vmx_prepare_switch_to_host(to_vmx(vcpu));
}

/* ---- registers and segments ---- */

static const u32 vmx_seg_fields[NR_VCPU_SREGS][4] = {
	[VCPU_SREG_ES] = { GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR_BYTES },
	[VCPU_SREG_CS] = { GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR_BYTES },
	[VCPU_SREG_SS] = { GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR_BYTES },
	[VCPU_SREG_DS] = { GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR_BYTES },
	[VCPU_SREG_FS] = { GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR_BYTES },
	[VCPU_SREG_GS] = { GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR_BYTES },
	[VCPU_SREG_TR] = { GUEST_TR_SELECTOR, GUEST_TR_BASE, GUEST_TR_LIMIT, GUEST_TR_AR_BYTES },
	[VCPU_SREG_LDTR] = { GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_AR_BYTES },
};

static u32 vmx_segment_access_rights(const struct kvm_segment *var)
{
	if (var->unusable || !var->present)
		return VMX_AR_UNUSABLE_MASK;
	return (var->type & 15) | ((var->s & 1) << 4) | ((var->dpl & 3) << 5) |
	       ((var->present & 1) << 7) | ((var->avl & 1) << 12) | ((var->l & 1) << 13) |
	       ((var->db & 1) << 14) | ((var->g & 1) << 15);
}

/*
 * The segment cache (kernel: vmx_segment_cache_test_set / vmx_read_guest_seg_ar): AR
 * bytes read once per VM-exit, the cache invalidated by VM-exit and by segment writes.
 */
static u32 vmx_read_guest_seg_ar(struct vcpu_vmx *vmx, int seg)
{
	struct kvm_vcpu *vcpu = &vmx->vcpu;

	if (!kvm_register_is_available(vcpu, VCPU_EXREG_SEGMENTS)) {
		kvm_register_mark_available(vcpu, VCPU_EXREG_SEGMENTS);
		vmx->segment_cache.bitmask = 0;
	}
	if (!(vmx->segment_cache.bitmask & BIT(seg))) {
		vmx->segment_cache.bitmask |= BIT(seg);
		vmx->segment_cache.ar[seg] = vmcs_read32(vmx_seg_fields[seg][3]);
	}
	return vmx->segment_cache.ar[seg];
}

/* kernel: vmx_get_cpl(): SS.DPL (the model has no real-mode vm86 emulation). */
int vmx_get_cpl(struct kvm_vcpu *vcpu)
{
	return (vmx_read_guest_seg_ar(to_vmx(vcpu), VCPU_SREG_SS) >> 5) & 3;
}

/* kernel: vmx_get_cs_db_l_bits(). */
void vmx_get_cs_db_l_bits(struct kvm_vcpu *vcpu, int *db, int *l)
{
	u32 ar = vmx_read_guest_seg_ar(to_vmx(vcpu), VCPU_SREG_CS);

	*db = (ar >> 14) & 1;
	*l = (ar >> 13) & 1;
}

void vmx_get_segment(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg)
{
	u32 ar = vmcs_read32(vmx_seg_fields[seg][3]);

	var->selector = vmcs_read16(vmx_seg_fields[seg][0]);
	var->base = vmcs_readl(vmx_seg_fields[seg][1]);
	var->limit = vmcs_read32(vmx_seg_fields[seg][2]);
	var->unusable = (ar >> 16) & 1;
	var->type = ar & 15;
	var->s = (ar >> 4) & 1;
	var->dpl = (ar >> 5) & 3;
	var->present = !var->unusable;
	var->avl = (ar >> 12) & 1;
	var->l = (ar >> 13) & 1;
	var->db = (ar >> 14) & 1;
	var->g = (ar >> 15) & 1;
}

void vmx_set_segment(struct kvm_vcpu *vcpu, struct kvm_segment *var, int seg)
{
	vcpu->arch.regs_avail &= ~BIT(VCPU_EXREG_SEGMENTS);	/* vmx_segment_cache_clear */
	vmcs_write16(vmx_seg_fields[seg][0], var->selector);
	vmcs_writel(vmx_seg_fields[seg][1], var->base);
	vmcs_write32(vmx_seg_fields[seg][2], var->limit);
	vmcs_write32(vmx_seg_fields[seg][3], vmx_segment_access_rights(var));
}

void vmx_get_idt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	dt->size = vmcs_read32(GUEST_IDTR_LIMIT);
	dt->address = vmcs_readl(GUEST_IDTR_BASE);
}

void vmx_set_idt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	vmcs_write32(GUEST_IDTR_LIMIT, dt->size);
	vmcs_writel(GUEST_IDTR_BASE, dt->address);
}

void vmx_get_gdt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	dt->size = vmcs_read32(GUEST_GDTR_LIMIT);
	dt->address = vmcs_readl(GUEST_GDTR_BASE);
}

void vmx_set_gdt(struct kvm_vcpu *vcpu, struct desc_ptr *dt)
{
	vmcs_write32(GUEST_GDTR_LIMIT, dt->size);
	vmcs_writel(GUEST_GDTR_BASE, dt->address);
}

int vmx_set_efer(struct kvm_vcpu *vcpu, u64 efer)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	u32 entry;

	/*
	 * Before 678e315e78a7: "Force kernel_gs_base reloading before EFER changes, as
	 * control of this msr depends on is_long_mode()": the whole host state came back
	 * on every EFER write (v4.18 vmx_set_efer -> vmx_load_host_state).
	 */
	if (!vmx_param()->lazy_kernel_gs_base)
		vmx_prepare_switch_to_host(vmx);
	entry = vmcs_read32(VM_ENTRY_CONTROLS);

	vcpu->arch.efer = efer;
	if (efer & EFER_LMA)
		entry |= VM_ENTRY_IA32E_MODE;
	else
		entry &= ~VM_ENTRY_IA32E_MODE;
	vmcs_write32(VM_ENTRY_CONTROLS, entry);
	vmx_setup_uret_msrs(vmx);
	return 0;
}

/*
 * kernel: vmx_is_valid_cr0() / vmx_is_valid_cr4(): beyond the common checks, VMX refuses
 * values that nested VMX (vmxon, L2) or SMM forbid. The model has neither, so every value
 * the common checks (kvm_is_valid_cr0/cr4 in x86.c) let through is valid.
 */
bool vmx_is_valid_cr0(struct kvm_vcpu *vcpu, u64 cr0)
{
	return true;
}

bool vmx_is_valid_cr4(struct kvm_vcpu *vcpu, u64 cr4)
{
	return true;
}

void vmx_set_cr0(struct kvm_vcpu *vcpu, u64 cr0)
{
	/* Paging with EFER.LME set enters long mode (kernel: enter_lmode). */
	if ((vcpu->arch.efer & EFER_LME) && (cr0 & X86_CR0_PG) && !(vcpu->arch.efer & EFER_LMA))
		vmx_set_efer(vcpu, vcpu->arch.efer | EFER_LMA);
	vcpu->arch.cr0 = cr0;
	vmcs_writel(CR0_READ_SHADOW, cr0);
	vmcs_writel(GUEST_CR0, cr0);
	vmcs_writel(GUEST_CR3, vcpu->arch.cr3);
}

void vmx_set_cr4(struct kvm_vcpu *vcpu, u64 cr4)
{
	vcpu->arch.cr4 = cr4;
	vmcs_writel(CR4_READ_SHADOW, cr4);
	vmcs_writel(GUEST_CR4, cr4);
}

/* kernel: vmx_get_rflags(): one VMREAD per VM-exit at most (VCPU_EXREG_RFLAGS). */
u64 vmx_get_rflags(struct kvm_vcpu *vcpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	if (!kvm_register_is_available(vcpu, VCPU_EXREG_RFLAGS)) {
		kvm_register_mark_available(vcpu, VCPU_EXREG_RFLAGS);
		vmx->rflags = vmcs_readl(GUEST_RFLAGS);
	}
	return vmx->rflags;
}

/* kernel: vmx_set_rflags() for an unrestricted guest: always a VMWRITE. */
void vmx_set_rflags(struct kvm_vcpu *vcpu, u64 rflags)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	kvm_register_mark_available(vcpu, VCPU_EXREG_RFLAGS);
	vmx->rflags = rflags;
	vmcs_writel(GUEST_RFLAGS, rflags);
}

void vmx_cache_reg(struct kvm_vcpu *vcpu, int reg)
{
	if (reg == VCPU_REGS_RSP)
		vcpu->arch.regs[reg] = vmcs_readl(GUEST_RSP);
	else if (reg == VCPU_REGS_RIP)
		vcpu->arch.regs[reg] = vmcs_readl(GUEST_RIP);
	else if (reg == VCPU_EXREG_CR3)
		vcpu->arch.cr3 = vmcs_readl(GUEST_CR3);	/* EPT: the guest owns CR3 */
	vcpu->arch.regs_avail |= BIT(reg);
}

/* kernel: vmx_get_exit_qual(): EXIT_QUALIFICATION, read once per exit. */
static u64 vmx_get_exit_qual(struct kvm_vcpu *vcpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	if (!kvm_register_is_available(vcpu, VCPU_EXREG_EXIT_INFO_1)) {
		kvm_register_mark_available(vcpu, VCPU_EXREG_EXIT_INFO_1);
		vmx->exit_qualification = vmcs_readl(EXIT_QUALIFICATION);
	}
	return vmx->exit_qualification;
}

u32 vmx_get_interrupt_shadow(struct kvm_vcpu *vcpu)
{
	u32 interruptibility = vmcs_read32(GUEST_INTERRUPTIBILITY_INFO);

	return ((interruptibility & GUEST_INTR_STATE_STI) ? KVM_X86_SHADOW_INT_STI : 0) |
	       ((interruptibility & GUEST_INTR_STATE_MOV_SS) ? KVM_X86_SHADOW_INT_MOV_SS : 0);
}

/* kernel: vmx_set_interrupt_shadow(): a VMREAD always, a VMWRITE only on a change. */
void vmx_set_interrupt_shadow(struct kvm_vcpu *vcpu, int mask)
{
	u32 old = vmcs_read32(GUEST_INTERRUPTIBILITY_INFO);
	u32 interruptibility = old & ~(GUEST_INTR_STATE_STI | GUEST_INTR_STATE_MOV_SS);

	if (mask & KVM_X86_SHADOW_INT_MOV_SS)
		interruptibility |= GUEST_INTR_STATE_MOV_SS;
	else if (mask & KVM_X86_SHADOW_INT_STI)
		interruptibility |= GUEST_INTR_STATE_STI;
	if (interruptibility != old)
		vmcs_write32(GUEST_INTERRUPTIBILITY_INFO, interruptibility);
}

/*
 * kernel: skip_emulated_instruction() (vmx.c at 8ecb10bcbfa3): VM_EXIT_INSTRUCTION_LEN,
 * RIP (cached or a VMREAD), the new RIP, and vmx_set_interrupt_shadow(vcpu, 0):
 * "skipping an emulated instruction also counts" against STI/MOV SS blocking.
 */
int vmx_skip_emulated_instruction(struct kvm_vcpu *vcpu)
{
	u32 instr_len = vmcs_read32(VM_EXIT_INSTRUCTION_LEN);

	kvm_rip_write(vcpu, kvm_rip_read(vcpu) + instr_len);
	vmx_set_interrupt_shadow(vcpu, 0);
	return 1;
}

void vmx_inject_exception(struct kvm_vcpu *vcpu)
{
	struct kvm_queued_exception *ex = &vcpu->arch.exception;
	u32 intr_info = ex->vector | INTR_TYPE_HARD_EXCEPTION | INTR_INFO_VALID_MASK;

	if (ex->has_error_code) {
		vmcs_write32(VM_ENTRY_EXCEPTION_ERROR_CODE, ex->error_code);
		intr_info |= INTR_INFO_DELIVER_CODE_MASK;
	}
	vmcs_write32(VM_ENTRY_INTR_INFO_FIELD, intr_info);
}

void vmx_vcpu_after_set_cpuid(struct kvm_vcpu *vcpu)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	u32 sec = vmcs_read32(SECONDARY_VM_EXEC_CONTROL);

	/* RDTSCP and RDPID both need "enable RDTSCP"; without it they #UD in the guest. */
	if (this_machine()->model.has_rdtscp && (vcpu->arch.cap_rdtscp || vcpu->arch.cap_rdpid))
		sec |= SECONDARY_EXEC_ENABLE_RDTSCP;
	else
		sec &= ~SECONDARY_EXEC_ENABLE_RDTSCP;
	vmcs_write32(SECONDARY_VM_EXEC_CONTROL, sec);
	if (vcpu->arch.cap_ibpb)
		vmx_disable_intercept_for_msr(vmx, MSR_IA32_PRED_CMD, false, true);
	vmx_setup_uret_msrs(vmx);
}

/*
 * After an MSR filter or CPUID change (kernel: vmx_recalc_msr_intercepts): intercept
 * every MSR the guest may own, then let it have again what it owns and the filter
 * allows. SPEC_CTRL stays the guest's once it has used it (written non-zero).
 */
void vmx_recalc_msr_intercepts(struct kvm_vcpu *vcpu)
{
	static const u32 passthrough[] = {
		MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_IA32_SYSENTER_CS,
		MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP, MSR_IA32_PRED_CMD,
		MSR_IA32_SPEC_CTRL,
	};
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	bool spec_ctrl_owned = vmx->spec_ctrl || !vmx_msr_write_intercepted(vmx, MSR_IA32_SPEC_CTRL);

	for (unsigned int i = 0; i < ARRAY_SIZE(passthrough); i++)
		vmx_set_msr_bitmap(vmx->vmcs01.msr_bitmap, passthrough[i], true, true, true);
	vmx_pass_through_own_msrs(vmx);
	if (vcpu->arch.cap_ibpb)
		vmx_disable_intercept_for_msr(vmx, MSR_IA32_PRED_CMD, false, true);
	if (spec_ctrl_owned)
		vmx_disable_intercept_for_msr(vmx, MSR_IA32_SPEC_CTRL, true, true);
}

/* Every MSR of KVM's emulated list is emulated for VMX guests too. */
bool vmx_has_emulated_msr(struct kvm *kvm, u32 index)
{
	return true;
}

/* ---- MSRs ---- */

int vmx_get_msr(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	struct vmx_uret_msr *msr;

	switch (msr_info->index) {
	case MSR_FS_BASE:
		msr_info->data = vmcs_readl(GUEST_FS_BASE);
		return 0;
	case MSR_GS_BASE:
		msr_info->data = vmcs_readl(GUEST_GS_BASE);
		return 0;
	case MSR_KERNEL_GS_BASE:
		msr_info->data = vmx_read_guest_kernel_gs_base(vmx);
		return 0;
	case MSR_IA32_SYSENTER_CS:
		msr_info->data = vmcs_read32(GUEST_SYSENTER_CS);
		return 0;
	case MSR_IA32_SYSENTER_EIP:
		msr_info->data = vmcs_readl(GUEST_SYSENTER_EIP);
		return 0;
	case MSR_IA32_SYSENTER_ESP:
		msr_info->data = vmcs_readl(GUEST_SYSENTER_ESP);
		return 0;
	case MSR_IA32_CR_PAT:
		msr_info->data = vmcs_read64(GUEST_IA32_PAT);
		return 0;
	case MSR_IA32_SPEC_CTRL:
		if (!msr_info->host_initiated && !guest_has_spec_ctrl_msr(vcpu))
			return 1;
		msr_info->data = vmx->spec_ctrl;
		return 0;
	case MSR_IA32_TSX_CTRL:
		if (!msr_info->host_initiated && !this_machine()->model.has_rtm)
			return 1;
		goto find_uret_msr;
	case MSR_EFER:
		return kvm_get_msr_common(vcpu, msr_info);
	case MSR_TSC_AUX:
	default:
	find_uret_msr:
		msr = vmx_find_uret_msr(vmx, msr_info->index);
		if (msr) {
			msr_info->data = msr->data;
			return 0;
		}
		return kvm_get_msr_common(vcpu, msr_info);
	}
}

int vmx_set_msr(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	u32 msr_index = msr_info->index;
	u64 data = msr_info->data;
	struct vmx_uret_msr *msr;

	switch (msr_index) {
	case MSR_EFER:
		return kvm_set_msr_common(vcpu, msr_info);
	case MSR_FS_BASE:
		vmcs_writel(GUEST_FS_BASE, data);
		return 0;
	case MSR_GS_BASE:
		vmcs_writel(GUEST_GS_BASE, data);
		return 0;
	case MSR_KERNEL_GS_BASE:
		vmx_write_guest_kernel_gs_base(vmx, data);
		return 0;
	case MSR_IA32_SYSENTER_CS:
		vmcs_write32(GUEST_SYSENTER_CS, data);
		return 0;
	case MSR_IA32_SYSENTER_EIP:
		vmcs_writel(GUEST_SYSENTER_EIP, data);
		return 0;
	case MSR_IA32_SYSENTER_ESP:
		vmcs_writel(GUEST_SYSENTER_ESP, data);
		return 0;
	case MSR_IA32_CR_PAT:
		if (kvm_set_msr_common(vcpu, msr_info))
			return 1;
		vmcs_write64(GUEST_IA32_PAT, data);
		return 0;
	case MSR_IA32_SPEC_CTRL:
		if (!msr_info->host_initiated && !guest_has_spec_ctrl_msr(vcpu))
			return 1;
		if (!kvm_spec_ctrl_test_value(vcpu, data))
			return 1;
		vmx->spec_ctrl = data;
		if (!data)
			return 0;
		/*
		 * The guest uses SPEC_CTRL: stop intercepting its writes, and from now on
		 * __vmx_vcpu_run saves the guest value after every exit (SAVE_SPEC_CTRL).
		 */
		vmx_disable_intercept_for_msr(vmx, MSR_IA32_SPEC_CTRL, true, true);
		return 0;
	case MSR_IA32_TSX_CTRL:
		if (!msr_info->host_initiated && !this_machine()->model.has_rtm)
			return 1;
		if (data & ~(u64)(TSX_CTRL_RTM_DISABLE | TSX_CTRL_CPUID_CLEAR))
			return 1;
		goto find_uret_msr;
	case MSR_STAR:
	case MSR_LSTAR:
	case MSR_CSTAR:
	case MSR_SYSCALL_MASK:
		if (!vcpu->arch.cap_lm)
			return 1;
		if (msr_index == MSR_SYSCALL_MASK)
			data = (u32)data;
		goto find_uret_msr;
	case MSR_TSC_AUX:
	default:
	find_uret_msr:
		msr = vmx_find_uret_msr(vmx, msr_index);
		if (msr)
			return vmx_set_guest_uret_msr(vmx, msr, data);
		return kvm_set_msr_common(vcpu, msr_info);
	}
}

/* ---- run ---- */

int vmx_vcpu_pre_run(struct kvm_vcpu *vcpu)
{
	return 1;
}

static fastpath_t vmx_exit_handlers_fastpath(struct kvm_vcpu *vcpu)
{
	switch (to_vmx(vcpu)->exit_reason) {
	case EXIT_REASON_MSR_WRITE:
		return handle_fastpath_set_msr_irqoff(vcpu);
	default:
		return EXIT_FASTPATH_NONE;
	}
}

/* How __vmx_vcpu_run enters (VMRESUME or VMLAUNCH) and whether it saves the guest's
 * SPEC_CTRL after exit (only when the guest may write it without a VM-exit). */
unsigned int __vmx_vcpu_run_flags(struct vcpu_vmx *vmx)
{
	unsigned int flags = 0;

	if (vmx->loaded_vmcs->launched)
		flags |= VMX_RUN_VMRESUME;
	if (!vmx_msr_write_intercepted(vmx, MSR_IA32_SPEC_CTRL))
		flags |= VMX_RUN_SAVE_SPEC_CTRL;
	return flags;
}

/*
 * kernel: vmx_l1d_flush() in "cond" mode flushes only when something may have pulled
 * secrets into L1D since the last entry: a new KVM_RUN, a host interrupt, emulation.
 * With the microcode's FLUSH_CMD (the model's L1TF CPUs have it) it is one WRMSR.
 */
static void vmx_l1d_flush(struct kvm_vcpu *vcpu)
{
	if (vmx_global()->l1d_flush == VMENTER_L1D_FLUSH_COND) {
		bool flush_l1d = vcpu->arch.l1tf_flush_l1d;

		vcpu->arch.l1tf_flush_l1d = false;
		if (!flush_l1d)
			return;
	}
	wrmsrl(MSR_IA32_FLUSH_CMD, L1D_FLUSH);
}

/* Lazily read state that a VM-exit makes stale (kernel: VMX_REGS_LAZY_LOAD_SET). */
#define VMX_REGS_LAZY_LOAD_SET	(BIT(VCPU_REGS_RIP) | BIT(VCPU_REGS_RSP) |		\
				 BIT(VCPU_EXREG_RFLAGS) | BIT(VCPU_EXREG_SEGMENTS) |	\
				 BIT(VCPU_EXREG_CR3) | BIT(VCPU_EXREG_EXIT_INFO_1))

/*
 * kernel: vmx_vcpu_enter_exit() (vmx.c at 8ecb10bcbfa3): the L1D flush or, without it,
 * the MDS buffer clear; CR2 loaded only when it differs (both reads are MOVs from CR2);
 * __vmx_vcpu_run; CR2 saved; the lazily read registers invalidated; VM_EXIT_REASON and
 * IDT_VECTORING_INFO_FIELD read on every exit.
 */
static void vmx_vcpu_enter_exit(struct kvm_vcpu *vcpu, unsigned int flags)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	guest_state_enter_irqoff();
	if (vmx_global()->l1d_flush != VMENTER_L1D_FLUSH_NEVER)
		vmx_l1d_flush(vcpu);		/* includes the CPU-buffer clear */
	else if (pk_host_mds_clear(this_machine()))
		pk_verw();
	if (vcpu->arch.cr2 != native_read_cr2())
		native_write_cr2(vcpu->arch.cr2);

	vmx->fail = __vmx_vcpu_run(vmx, flags);
	pk_observe_ret(this_cpu());		/* __vmx_vcpu_run's RET */
	if (!vmx_param()->spec_ctrl_in_vmenter)
		vmx_spec_ctrl_restore_host(vmx, flags);

	vcpu->arch.cr2 = native_read_cr2();
	vcpu->arch.regs_avail &= ~VMX_REGS_LAZY_LOAD_SET;
	vmx->idt_vectoring_info = 0;
	/* Before e6adf28365b2 the host state came back right after every VM-exit. */
	if (!vmx_param()->lightweight_exit)
		vmx_prepare_switch_to_host(vmx);
	if (unlikely(vmx->fail)) {
		vmx->exit_reason = 0xdead;
		goto out;
	}
	vmx->exit_reason = vmcs_read32(VM_EXIT_REASON);
	if (likely(!(vmx->exit_reason & VMX_EXIT_REASONS_FAILED_VMENTRY)))
		vmx->idt_vectoring_info = vmcs_read32(IDT_VECTORING_INFO_FIELD);
out:
	guest_state_exit_irqoff();
}

/*
 * kernel: vmx_update_hv_timer(): an armed VMX preemption timer gets the time left before
 * every VM-entry (RDTSC and a VMWRITE); a disarmed one is parked at -1, once. It is armed
 * while the in-kernel LAPIC's TSC-deadline timer is on it (lapic.c start_hv_timer) and
 * disarmed by vmx_cancel_hv_timer when the deadline expires or moves to an hrtimer. The
 * model's hardware does not run the timer: a deadline reached in guest mode is seen when
 * the vCPU next blocks.
 */
static void vmx_update_hv_timer(struct vcpu_vmx *vmx)
{
	if (vmx->hv_deadline_tsc != -1ULL) {
		u64 tscl = this_cpu()->tsc;
		u64 delta = vmx->hv_deadline_tsc > tscl ? vmx->hv_deadline_tsc - tscl : 0;

		vmcs_write32(VMX_PREEMPTION_TIMER_VALUE, (u32)(delta > 0xffffffffULL ?
							      0xffffffffULL : delta));
		vmx->loaded_vmcs->hv_timer_soft_disabled = false;
	} else if (!vmx->loaded_vmcs->hv_timer_soft_disabled) {
		vmcs_write32(VMX_PREEMPTION_TIMER_VALUE, -1);
		vmx->loaded_vmcs->hv_timer_soft_disabled = true;
	}
}

/*
 * kernel: vmx_set_hv_timer(), from start_hv_timer() for an in-kernel LAPIC's deadline:
 * *expired if it has already passed. The guest's TSC is the pCPU's (no offset, scaling
 * or timer advance in the model), and no delta is too wide for the 32-bit timer: the
 * preemption timer rate is the TSC's (cpu_preemption_timer_multi 0) and the model's
 * waits are short, so -ERANGE never applies.
 */
int vmx_set_hv_timer(struct kvm_vcpu *vcpu, u64 guest_deadline_tsc, bool *expired)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	u64 tscl = this_cpu()->tsc;
	u64 delta_tsc = guest_deadline_tsc > tscl ? guest_deadline_tsc - tscl : 0;

	vmx->hv_deadline_tsc = tscl + delta_tsc;
	*expired = !delta_tsc;
	return 0;
}

void vmx_cancel_hv_timer(struct kvm_vcpu *vcpu)
{
	to_vmx(vcpu)->hv_deadline_tsc = -1ULL;
}

/*
 * kernel: vmx_recover_nmi_blocking() with virtual NMIs: once an exit has found NMIs
 * unblocked, later exits skip the check; the first one reads the exit's interruption
 * information and the interruptibility state.
 */
static void vmx_recover_nmi_blocking(struct vcpu_vmx *vmx)
{
	u32 exit_intr_info;

	if (vmx->loaded_vmcs->nmi_known_unmasked)
		return;
	exit_intr_info = vmcs_read32(VM_EXIT_INTR_INFO);
	if ((exit_intr_info & INTR_INFO_VALID_MASK) && (exit_intr_info & INTR_INFO_UNBLOCK_NMI) &&
	    !(vmx->idt_vectoring_info & VECTORING_INFO_VALID_MASK))
		return;		/* re-blocking NMIs after a faulting IRET: not in the model */
	vmx->loaded_vmcs->nmi_known_unmasked =
		!(vmcs_read32(GUEST_INTERRUPTIBILITY_INFO) & GUEST_INTR_STATE_NMI);
}

fastpath_t vmx_vcpu_run(struct kvm_vcpu *vcpu, u64 run_flags)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);

	/* Before e6adf28365b2 the host state was saved before every VM-entry (2.6.20). */
	if (!vmx_param()->lightweight_exit)
		vmx_prepare_switch_to_guest(vcpu);
	if (vcpu->arch.regs_dirty & BIT(VCPU_REGS_RSP))
		vmcs_writel(GUEST_RSP, vcpu->arch.regs[VCPU_REGS_RSP]);
	if (vcpu->arch.regs_dirty & BIT(VCPU_REGS_RIP))
		vmcs_writel(GUEST_RIP, vcpu->arch.regs[VCPU_REGS_RIP]);
	vcpu->arch.regs_dirty = 0;

	if (!vmx_param()->bug_host_cr3_refresh_in_prepare)
		vmx_refresh_host_cr3_cr4(vmx);

	if (vmx_param()->enable_preemption_timer)
		vmx_update_hv_timer(vmx);
	vmx_vcpu_enter_exit(vcpu, __vmx_vcpu_run_flags(vmx));

	/* DEBUGCTL is cleared by VM-exit: the host's comes back if it had one. */
	if (vmx->host_debugctlmsr)
		wrmsrl(MSR_IA32_DEBUGCTLMSR, vmx->host_debugctlmsr);
	if (unlikely(vmx->fail) || (vmx->exit_reason & VMX_EXIT_REASONS_FAILED_VMENTRY))
		return EXIT_FASTPATH_NONE;
	vmx->loaded_vmcs->launched = true;
	vmx_recover_nmi_blocking(vmx);
	/* vmx_complete_interrupts(): nothing was being delivered (idt_vectoring_info 0). */
	{
		u32 old = pk_path_enter(this_machine(), PK_PATH_FASTPATH);
		fastpath_t r = vmx_exit_handlers_fastpath(vcpu);

		pk_path_leave(this_machine(), old);
		return r;
	}
}

void vmx_get_exit_info(struct kvm_vcpu *vcpu, u32 *reason, u64 *info1, u64 *info2)
{
	*reason = to_vmx(vcpu)->exit_reason;
	*info1 = vmcs_readl(EXIT_QUALIFICATION);
	*info2 = vmcs_read32(VM_EXIT_INTR_INFO);
}

void vmx_handle_exit_irqoff(struct kvm_vcpu *vcpu)
{
	/* The host's timer IRQ that caused the exit runs now, through the host IDT. */
	if (to_vmx(vcpu)->exit_reason == EXIT_REASON_EXTERNAL_INTERRUPT) {
		vcpu->arch.l1tf_flush_l1d = true;	/* kvm_set_cpu_l1tf_flush_l1d() */
		pk_host_timer_interrupt();
	}
}

/* ---- exit handlers: 1 = handled in the kernel, 0 = exit to userspace ---- */

static int handle_io(struct kvm_vcpu *vcpu)
{
	u64 q = vmx_get_exit_qual(vcpu);
	int size = (q & VMX_IO_SIZE_MASK) + 1;
	int in = (q & VMX_IO_IN) != 0;
	unsigned short port = q >> VMX_IO_PORT_SHIFT;

	if (q & VMX_IO_STRING)
		return kvm_handle_unexpected_exit(vcpu, EXIT_REASON_IO_INSTRUCTION);
	return kvm_fast_pio(vcpu, size, port, in);
}

static int handle_rdmsr(struct kvm_vcpu *vcpu) { return kvm_emulate_rdmsr(vcpu); }
static int handle_wrmsr(struct kvm_vcpu *vcpu) { return kvm_emulate_wrmsr(vcpu); }
static int handle_cpuid(struct kvm_vcpu *vcpu) { return kvm_emulate_cpuid(vcpu); }
static int handle_halt(struct kvm_vcpu *vcpu) { return kvm_emulate_halt(vcpu); }
static int handle_vmcall(struct kvm_vcpu *vcpu) { return kvm_emulate_hypercall(vcpu); }
static int handle_triple_fault(struct kvm_vcpu *vcpu) { return kvm_handle_triple_fault(vcpu); }
static int handle_external_interrupt(struct kvm_vcpu *vcpu) { return kvm_handle_external_interrupt(vcpu); }
/*
 * kernel: handle_ept_misconfig(): the GPA, no fast-MMIO device at it, then
 * kvm_mmu_page_fault() -> the emulator (kvm_handle_mmio stands for both).
 */
static int handle_ept_misconfig(struct kvm_vcpu *vcpu)
{
	(void)vmcs_read64(GUEST_PHYSICAL_ADDRESS);
	return kvm_handle_mmio(vcpu, &this_cpu()->ev);
}

static int (*const kvm_vmx_exit_handlers[VMX_NR_EXIT_REASONS])(struct kvm_vcpu *vcpu) = {
	[EXIT_REASON_EXTERNAL_INTERRUPT]	= handle_external_interrupt,
	[EXIT_REASON_TRIPLE_FAULT]		= handle_triple_fault,
	[EXIT_REASON_CPUID]			= handle_cpuid,
	[EXIT_REASON_HLT]			= handle_halt,
	[EXIT_REASON_VMCALL]			= handle_vmcall,
	[EXIT_REASON_IO_INSTRUCTION]		= handle_io,
	[EXIT_REASON_MSR_READ]			= handle_rdmsr,
	[EXIT_REASON_MSR_WRITE]			= handle_wrmsr,
	[EXIT_REASON_EPT_MISCONFIG]		= handle_ept_misconfig,
};

/*
 * kernel: vmx_flush_pml_buffer(): the log index first; an empty log (the model's, always)
 * ends it there.
 */
static void vmx_flush_pml_buffer(struct kvm_vcpu *vcpu)
{
	u16 pml_idx = vmcs_read16(GUEST_PML_INDEX);

	if (pml_idx == PML_ENTITY_NUM - 1)
		return;
	vmcs_write16(GUEST_PML_INDEX, PML_ENTITY_NUM - 1);
}

/*
 * kernel: __vmx_handle_exit() (vmx.c at 8ecb10bcbfa3): the PML log is flushed on every
 * exit that reaches it, fast path or not; then the checks and the handler table.
 */
int vmx_handle_exit(struct kvm_vcpu *vcpu, fastpath_t exit_fastpath)
{
	struct vcpu_vmx *vmx = to_vmx(vcpu);
	u32 reason = vmx->exit_reason;

	pk_sw(PK_OP_SW_HANDLE_EXIT);
	if (vmx_global()->enable_pml)
		vmx_flush_pml_buffer(vcpu);
	if (unlikely(vmx->fail)) {
		vcpu->run.exit_reason = KVM_EXIT_FAIL_ENTRY;
		vcpu->run.fail_entry.hardware_entry_failure_reason = vmcs_read32(VM_INSTRUCTION_ERROR);
		vcpu->run.fail_entry.cpu = vcpu->arch.last_vmentry_cpu;
		return 0;
	}
	if (reason & VMX_EXIT_REASONS_FAILED_VMENTRY) {
		vcpu->run.exit_reason = KVM_EXIT_FAIL_ENTRY;
		vcpu->run.fail_entry.hardware_entry_failure_reason = reason;
		vcpu->run.fail_entry.cpu = vcpu->arch.last_vmentry_cpu;
		return 0;
	}
	if (exit_fastpath != EXIT_FASTPATH_NONE)
		return 1;
	if (reason >= VMX_NR_EXIT_REASONS || !kvm_vmx_exit_handlers[reason])
		return kvm_handle_unexpected_exit(vcpu, reason);
	return kvm_vmx_exit_handlers[reason](vcpu);
}
