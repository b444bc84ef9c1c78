// SPDX-License-Identifier: MIT
/*
 * Common x86 KVM: the run loop, user-return MSRs, MSR access, PIO/MMIO/CPUID/HLT exits.
 * Mirrors arch/x86/kvm/x86.c (torvalds/linux); function names are the kernel's.
 */
#include "x86.h"
#include "pykvm/events.h"
#include "pykvm/module.h"

/* ------------------------------------------------------------------------------------
 * Module parameters (kvm.*)
 * ---------------------------------------------------------------------------------- */

static const struct pk_param kvm_param_table[] = {
	PK_PARAM(struct kvm_params, uret_irqs_off, true,
		 "kvm_set_user_return_msr() writes the MSR and records it with IRQs off, so a "
		 "virtualization-disable IPI cannot fall in between (docs/world-switch.md, bug 3)"),
	PK_PARAM(struct kvm_params, forget_star, false, "never restore the host STAR"),
	PK_PARAM(struct kvm_params, forget_lstar, false, "never restore the host LSTAR"),
	PK_PARAM(struct kvm_params, forget_syscall_mask, false, "never restore the host SYSCALL_MASK"),
	PK_PARAM(struct kvm_params, forget_efer, false, "never restore the host EFER (user return)"),
	PK_PARAM(struct kvm_params, forget_tsc_aux, false, "never restore the host TSC_AUX"),
	PK_PARAM(struct kvm_params, forget_tsx_ctrl, false, "never restore the host TSX_CTRL"),
	{ }		/* end */
};

/* A variant that leaves this user-return MSR's guest value in hardware. */
static bool kvm_uret_forgotten(u32 msr)
{
	const struct kvm_params *p = &kvm_global()->params;

	switch (msr) {
	case MSR_STAR: return p->forget_star;
	case MSR_LSTAR: return p->forget_lstar;
	case MSR_SYSCALL_MASK: return p->forget_syscall_mask;
	case MSR_EFER: return p->forget_efer;
	case MSR_TSC_AUX: return p->forget_tsc_aux;
	case MSR_IA32_TSX_CTRL: return p->forget_tsx_ctrl;
	default: return false;
	}
}

/* kvm.ko's parameters; kvm itself loads with the vendor module (kvm_x86_vendor_init). */
static struct pk_module kvm_module = {
	.name = "kvm",
	.kp = kvm_param_table,
};
module_init(kvm_module);

/* ------------------------------------------------------------------------------------
 * User-return MSRs: guest values stay loaded until the CPU next returns to user mode.
 * ---------------------------------------------------------------------------------- */

static struct kvm_user_return_msrs *this_cpu_uret(void)
{
	return &kvm_global()->user_return_msrs[smp_processor_id()];
}

static void kvm_on_user_return(struct user_return_notifier *urn)
{
	struct kvm_x86_global *g = kvm_global();
	struct kvm_user_return_msrs *msrs =
		container_of(urn, struct kvm_user_return_msrs, urn);
	bool irqs = this_machine()->host.irqs_enabled[smp_processor_id()];

	/*
	 * IRQs off: kvm_arch_disable_virtualization_cpu() may run this from an IPI, and
	 * must not see a half-unregistered notifier.
	 */
	local_irq_disable();
	if (msrs->registered) {
		msrs->registered = false;
		user_return_notifier_unregister(urn);
	}
	if (irqs)
		local_irq_enable();
	for (int slot = 0; slot < g->kvm_nr_uret_msrs; ++slot) {
		struct kvm_user_return_msr_values *values = &msrs->values[slot];

		if (values->host != values->curr) {
			if (kvm_uret_forgotten(g->kvm_uret_msrs_list[slot]))
				continue;
			wrmsrl(g->kvm_uret_msrs_list[slot], values->host);
			values->curr = values->host;
		}
	}
}

static int kvm_probe_user_return_msr(u32 msr)
{
	u64 val;
	int ret;

	preempt_disable();
	ret = rdmsrl_safe(msr, &val);
	if (!ret)
		ret = wrmsrl_safe(msr, val);
	preempt_enable();
	return ret;
}

int kvm_add_user_return_msr(u32 msr)
{
	struct kvm_x86_global *g = kvm_global();

	if (g->kvm_nr_uret_msrs >= KVM_MAX_NR_USER_RETURN_MSRS)
		return -1;
	if (kvm_probe_user_return_msr(msr))
		return -1;
	g->kvm_uret_msrs_list[g->kvm_nr_uret_msrs] = msr;
	return g->kvm_nr_uret_msrs++;
}

int kvm_find_user_return_msr(u32 msr)
{
	struct kvm_x86_global *g = kvm_global();

	for (int i = 0; i < g->kvm_nr_uret_msrs; ++i)
		if (g->kvm_uret_msrs_list[i] == msr)
			return i;
	return -1;
}

bool kvm_is_supported_user_return_msr(u32 msr)
{
	return kvm_find_user_return_msr(msr) >= 0;
}

/* Snapshot the host values of every slot; once per virtualization enable. */
void kvm_user_return_msr_cpu_online(void)
{
	struct kvm_x86_global *g = kvm_global();
	struct kvm_user_return_msrs *msrs = this_cpu_uret();
	u64 value;

	msrs->urn.on_user_return = kvm_on_user_return;
	for (int i = 0; i < g->kvm_nr_uret_msrs; ++i) {
		if (rdmsrl_safe(g->kvm_uret_msrs_list[i], &value))
			value = 0;
		msrs->values[i].host = value;
		msrs->values[i].curr = value;
	}
}

/*
 * Load `value` into user-return slot `slot` on this CPU. `mask` marks the bits the guest
 * owns; the others are forced to the host's snapshot. Preemption must be off.
 */
int kvm_set_user_return_msr(unsigned int slot, u64 value, u64 mask)
{
	struct kvm_x86_global *g = kvm_global();
	struct kvm_user_return_msrs *msrs = this_cpu_uret();
	bool irqs = this_machine()->host.irqs_enabled[smp_processor_id()];
	int err;

	value = (value & mask) | (msrs->values[slot].host & ~mask);
	if (value == msrs->values[slot].curr)
		return 0;
	/*
	 * A disable IPI between the WRMSR and the update of curr would see host == curr
	 * and leave the guest value in hardware: keep IRQs off across both.
	 */
	if (g->params.uret_irqs_off)
		local_irq_disable();
	err = wrmsrl_safe(g->kvm_uret_msrs_list[slot], value);
	pk_interrupt_window();
	if (!err)
		msrs->values[slot].curr = value;
	if (g->params.uret_irqs_off && irqs)
		local_irq_enable();
	if (err)
		return 1;
	if (!msrs->registered) {
		msrs->urn.on_user_return = kvm_on_user_return;
		user_return_notifier_register(&msrs->urn);
		msrs->registered = true;
	}
	return 0;
}

void drop_user_return_notifiers(void)
{
	struct kvm_user_return_msrs *msrs = this_cpu_uret();

	if (msrs->registered)
		kvm_on_user_return(&msrs->urn);
}

/* ------------------------------------------------------------------------------------
 * Virtualization enable/disable per CPU (kvm_arch_{enable,disable}_virtualization_cpu)
 * ---------------------------------------------------------------------------------- */

int kvm_arch_enable_virtualization_cpu(void)
{
	kvm_user_return_msr_cpu_online();
	return kvm_x86_call(enable_virtualization_cpu)();
}

void kvm_arch_disable_virtualization_cpu(void)
{
	kvm_x86_call(disable_virtualization_cpu)();
	drop_user_return_notifiers();
}

/* ------------------------------------------------------------------------------------
 * Vendor registration (kvm_x86_vendor_init): every mandatory op must be set.
 * ---------------------------------------------------------------------------------- */

/* kvm.*, the vendor module's and kernel.* parameters, as "module.name=value" items. */
static int kvm_apply_params(struct pk_machine *m, const struct kvm_x86_init_ops *init,
			    const char *params)
{
	struct kvm_x86_global *g = m->kvm_global;
	const struct pk_module *kvm = pk_find_module("kvm"), *kernel = pk_find_module("kernel");
	const struct pk_module *vendor = init->module ? pk_find_module(init->module) : NULL;
	struct pk_param_module mods[] = {
		{ "kvm", kvm->kp, kvm->num_kp, &g->params },
		{ init->module ? init->module : "", vendor ? vendor->kp : NULL,
		  vendor ? vendor->num_kp : 0, (u8 *)m->vendor_global + init->params_offset },
		{ "kernel", kernel->kp, kernel->num_kp, &m->host.params },
	};

	return pk_params_apply(mods, ARRAY_SIZE(mods), params);
}

int kvm_x86_vendor_init(struct pk_machine *m, const struct kvm_x86_init_ops *init,
			const char *params)
{
	const struct kvm_x86_ops *ops = init->runtime_ops;
	struct kvm_x86_global *g;
	int r;

	if (m->kvm_global)
		return -EEXIST;
#define KVM_X86_OP(func)		if (!ops->func) return -EINVAL;
#define KVM_X86_OP_OPTIONAL(func)
#include "asm/kvm-x86-ops.h"
	g = pk_kzalloc(m, sizeof(*g), 64);
	if (!g)
		return -ENOMEM;
	if (init->global_size) {
		m->vendor_global = pk_kzalloc(m, init->global_size, 4096);
		if (!m->vendor_global)
			return -ENOMEM;
	}
	m->kvm_global = g;
	m->vendor_init_ops = init;
	g->ops = *ops;
	m->kvm_x86_ops = &g->ops;
	pk_params_init(&g->params, kvm_param_table, ARRAY_SIZE(kvm_param_table) - 1);
	if (init->module && pk_find_module(init->module))
		pk_params_init((u8 *)m->vendor_global + init->params_offset,
			       pk_find_module(init->module)->kp, pk_find_module(init->module)->num_kp);
	r = kvm_apply_params(m, init, params);
	if (r) {
		m->kvm_global = NULL;
		return r;
	}
	g->host_efer = rdmsrl(MSR_EFER);

	u32 old = pk_path_enter(m, PK_PATH_HARDWARE);
	r = init->hardware_setup();
	pk_path_leave(m, old);
	if (r) {
		m->kvm_global = NULL;
		return r;
	}
	return 0;
}

/* ------------------------------------------------------------------------------------
 * MSRs
 * ---------------------------------------------------------------------------------- */

static bool kvm_pat_valid(u64 data)
{
	for (int i = 0; i < 8; i++) {
		u8 t = (data >> (8 * i)) & 0xff;
		if (t != 0 && t != 1 && t != 4 && t != 5 && t != 6 && t != 7)
			return false;
	}
	return true;
}

static bool kvm_valid_efer(struct kvm_vcpu *vcpu, u64 efer)
{
	u64 allowed = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX;

	if (!vcpu->arch.cap_intel_compatible)
		allowed |= EFER_SVME;
	if ((efer & (EFER_LME | EFER_LMA)) && !vcpu->arch.cap_lm)
		return false;
	return !(efer & ~allowed);
}

static int set_efer(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	u64 old_efer = vcpu->arch.efer;
	u64 efer = msr_info->data;
	int r;

	if (!kvm_valid_efer(vcpu, efer))
		return 1;
	if (!msr_info->host_initiated) {
		/* LME may not change while paging is on (SDM 2.2.1). */
		if ((vcpu->arch.cr0 & X86_CR0_PG) && ((efer ^ old_efer) & EFER_LME))
			return 1;
	}
	/* LMA is owned by the CPU: a guest write keeps the current value. */
	efer &= ~EFER_LMA;
	efer |= vcpu->arch.efer & EFER_LMA;
	if (msr_info->host_initiated)
		efer = msr_info->data;

	r = kvm_x86_call(set_efer)(vcpu, efer);
	return r ? 1 : 0;
}

int kvm_set_msr_common(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	u64 data = msr_info->data;

	switch (msr_info->index) {
	case MSR_EFER:
		return set_efer(vcpu, msr_info);
	case MSR_IA32_CR_PAT:
		if (!kvm_pat_valid(data))
			return 1;
		vcpu->arch.pat = data;
		return 0;
	case MSR_IA32_MISC_ENABLE: {
		u64 old_val = vcpu->arch.ia32_misc_enable_msr;

		if (!msr_info->host_initiated) {
			/* PEBS/BTS unavailable are read-only; EMON writes are ignored. */
			if ((old_val ^ data) & (BIT_ULL(11) | BIT_ULL(12)))
				return 1;
			data = (data & ~BIT_ULL(7)) | (old_val & BIT_ULL(7));
		}
		vcpu->arch.ia32_misc_enable_msr = data;
		return 0;
	}
	case MSR_IA32_TSC_DEADLINE:
		vcpu->arch.tsc_deadline = data;
		return 0;
	case MSR_IA32_APICBASE:
		vcpu->arch.apic_base = data;
		return 0;
	case MSR_IA32_PRED_CMD:
		if (!msr_info->host_initiated && !vcpu->arch.cap_ibpb)
			return 1;
		if (data & ~(u64)PRED_CMD_IBPB)
			return 1;
		if (data)
			wrmsrl(MSR_IA32_PRED_CMD, data);
		return 0;
	default:
		return KVM_MSR_RET_UNSUPPORTED;
	}
}

int kvm_get_msr_common(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	switch (msr_info->index) {
	case MSR_EFER:
		msr_info->data = vcpu->arch.efer;
		return 0;
	case MSR_IA32_CR_PAT:
		msr_info->data = vcpu->arch.pat;
		return 0;
	case MSR_IA32_MISC_ENABLE:
		msr_info->data = vcpu->arch.ia32_misc_enable_msr;
		return 0;
	case MSR_IA32_TSC_DEADLINE:
		msr_info->data = vcpu->arch.tsc_deadline;
		return 0;
	case MSR_IA32_APICBASE:
		msr_info->data = vcpu->arch.apic_base;
		return 0;
	case MSR_IA32_TSC:
		msr_info->data = this_cpu()->tsc;
		return 0;
	default:
		return KVM_MSR_RET_UNSUPPORTED;
	}
}

/* kernel: __kvm_set_msr(): architectural checks common to both vendors, then the vendor. */
static int __kvm_set_msr(struct kvm_vcpu *vcpu, u32 index, u64 data, bool host_initiated)
{
	struct msr_data msr;

	switch (index) {
	case MSR_FS_BASE:
	case MSR_GS_BASE:
	case MSR_KERNEL_GS_BASE:
	case MSR_CSTAR:
	case MSR_LSTAR:
		if (is_noncanonical_address(data))
			return 1;
		break;
	case MSR_IA32_SYSENTER_EIP:
	case MSR_IA32_SYSENTER_ESP:
		/*
		 * Intel #GPs on a non-canonical value, AMD ignores bits 63:32; making it
		 * canonical keeps VM-entry from failing later.
		 */
		data = (u64)((s64)(data << 16) >> 16);
		break;
	case MSR_TSC_AUX:
		if (!kvm_is_supported_user_return_msr(MSR_TSC_AUX))
			return 1;
		if (!host_initiated && !vcpu->arch.cap_rdtscp && !vcpu->arch.cap_rdpid)
			return 1;
		/* Intel reserves bits 63:32; AMD ignores them. */
		if (vcpu->arch.cap_intel_compatible && (data >> 32) != 0)
			return 1;
		data = (u32)data;
		break;
	}
	msr.data = data;
	msr.index = index;
	msr.host_initiated = host_initiated;
	return kvm_x86_call(set_msr)(vcpu, &msr);
}

static int __kvm_get_msr(struct kvm_vcpu *vcpu, u32 index, u64 *data, bool host_initiated)
{
	struct msr_data msr;
	int ret;

	if (index == MSR_TSC_AUX) {
		if (!kvm_is_supported_user_return_msr(MSR_TSC_AUX))
			return 1;
		if (!host_initiated && !vcpu->arch.cap_rdtscp && !vcpu->arch.cap_rdpid)
			return 1;
	}
	msr.index = index;
	msr.host_initiated = host_initiated;
	ret = kvm_x86_call(get_msr)(vcpu, &msr);
	if (!ret)
		*data = msr.data;
	return ret;
}

/* An unknown MSR is #GP for the guest and a failure for the host (ignore_msrs=0). */
int kvm_get_msr(struct kvm_vcpu *vcpu, u32 index, u64 *data, bool host_initiated)
{
	return __kvm_get_msr(vcpu, index, data, host_initiated) ? 1 : 0;
}

int kvm_set_msr(struct kvm_vcpu *vcpu, u32 index, u64 data, bool host_initiated)
{
	return __kvm_set_msr(vcpu, index, data, host_initiated) ? 1 : 0;
}

int kvm_emulate_rdmsr(struct kvm_vcpu *vcpu)
{
	u32 ecx = kvm_rcx_read(vcpu);
	u64 data;

	vcpu->stat.msr_exits++;
	if (kvm_get_msr(vcpu, ecx, &data, false)) {
		kvm_inject_gp(vcpu, 0);
		return 1;
	}
	pk_trace(vcpu->kvm->m, PK_TR_KVM_MSR, smp_processor_id(), ecx, data);
	kvm_register_write(vcpu, VCPU_REGS_RAX, data & 0xffffffffULL);
	kvm_register_write(vcpu, VCPU_REGS_RDX, data >> 32);
	return kvm_skip_emulated_instruction(vcpu);
}

int kvm_emulate_wrmsr(struct kvm_vcpu *vcpu)
{
	u32 ecx = kvm_rcx_read(vcpu);
	u64 data = kvm_read_edx_eax(vcpu);

	vcpu->stat.msr_exits++;
	pk_trace(vcpu->kvm->m, PK_TR_KVM_MSR, smp_processor_id(), (1ULL << 32) | ecx, data);
	if (kvm_set_msr(vcpu, ecx, data, false)) {
		kvm_inject_gp(vcpu, 0);
		return 1;
	}
	return kvm_skip_emulated_instruction(vcpu);
}

/*
 * The WRMSR fast path: handled with IRQs off right after VM-exit, and the guest is
 * re-entered without prepare_switch_to_guest/vcpu_put. TSC_DEADLINE arms the LAPIC
 * timer (assumed to be the VMX preemption timer / hrtimer, always usable here).
 */
fastpath_t handle_fastpath_set_msr_irqoff(struct kvm_vcpu *vcpu)
{
	u32 msr = kvm_rcx_read(vcpu);

	switch (msr) {
	case MSR_IA32_TSC_DEADLINE:
		vcpu->arch.tsc_deadline = kvm_read_edx_eax(vcpu);
		vcpu->stat.fastpath_exits++;
		kvm_skip_emulated_instruction(vcpu);
		return EXIT_FASTPATH_REENTER_GUEST;
	default:
		return EXIT_FASTPATH_NONE;
	}
}

/* KVM_GET_MSRS / KVM_SET_MSRS (__msr_io): the count processed, stopping at the first failure. */
int kvm_vcpu_ioctl_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n, bool set)
{
	u32 i;

	vcpu_load(vcpu);
	for (i = 0; i < n; ++i) {
		int r = set ? kvm_set_msr(vcpu, entries[i].index, entries[i].data, true)
			    : kvm_get_msr(vcpu, entries[i].index, &entries[i].data, true);
		if (r)
			break;
	}
	vcpu_put(vcpu);
	return (int)i;
}

/* ------------------------------------------------------------------------------------
 * Exceptions, instruction skipping, CPUID, HLT, hypercalls
 * ---------------------------------------------------------------------------------- */

void kvm_queue_exception(struct kvm_vcpu *vcpu, u8 vector)
{
	vcpu->arch.exception.pending = true;
	vcpu->arch.exception.vector = vector;
	vcpu->arch.exception.has_error_code = false;
}

void kvm_inject_gp(struct kvm_vcpu *vcpu, u32 error_code)
{
	vcpu->arch.exception.pending = true;
	vcpu->arch.exception.vector = X86_TRAP_GP;
	vcpu->arch.exception.has_error_code = true;
	vcpu->arch.exception.error_code = error_code;
}

int kvm_skip_emulated_instruction(struct kvm_vcpu *vcpu)
{
	return kvm_x86_call(skip_emulated_instruction)(vcpu);
}

const struct kvm_cpuid_entry2 *kvm_find_cpuid_entry(struct kvm_vcpu *vcpu, u32 function, u32 index)
{
	for (int i = 0; i < vcpu->arch.cpuid_nent; i++) {
		const struct kvm_cpuid_entry2 *e = &vcpu->arch.cpuid_entries[i];
		if (e->function == function && (e->index == index || !(e->flags & 1)))
			return e;
	}
	return NULL;
}

int kvm_emulate_cpuid(struct kvm_vcpu *vcpu)
{
	u32 fn = (u32)kvm_rax_read(vcpu), idx = (u32)kvm_rcx_read(vcpu);
	const struct kvm_cpuid_entry2 *e = kvm_find_cpuid_entry(vcpu, fn, idx);

	vcpu->stat.cpuid_exits++;
	kvm_register_write(vcpu, VCPU_REGS_RAX, e ? e->eax : 0);
	kvm_register_write(vcpu, VCPU_REGS_RBX, e ? e->ebx : 0);
	kvm_register_write(vcpu, VCPU_REGS_RCX, e ? e->ecx : 0);
	kvm_register_write(vcpu, VCPU_REGS_RDX, e ? e->edx : 0);
	return kvm_skip_emulated_instruction(vcpu);
}

/* No in-kernel LAPIC: HLT goes to userspace (kernel: __kvm_emulate_halt, !lapic_in_kernel). */
int kvm_emulate_halt(struct kvm_vcpu *vcpu)
{
	kvm_skip_emulated_instruction(vcpu);
	vcpu->stat.halt_exits++;
	vcpu->run.exit_reason = KVM_EXIT_HLT;
	return 0;
}

u64 kvm_host_spec_ctrl(void)
{
	return this_machine()->host.spec_ctrl;
}

#define KVM_ENOSYS 1000
int kvm_emulate_hypercall(struct kvm_vcpu *vcpu)
{
	kvm_register_write(vcpu, VCPU_REGS_RAX, (u64)-KVM_ENOSYS);
	return kvm_skip_emulated_instruction(vcpu);
}

int kvm_handle_triple_fault(struct kvm_vcpu *vcpu)
{
	vcpu->run.exit_reason = KVM_EXIT_SHUTDOWN;
	return 0;
}

int kvm_handle_external_interrupt(struct kvm_vcpu *vcpu)
{
	vcpu->stat.irq_exits++;
	return 1;
}

int kvm_handle_unexpected_exit(struct kvm_vcpu *vcpu, u64 exit_reason)
{
	vcpu->run.exit_reason = KVM_EXIT_INTERNAL_ERROR;
	vcpu->run.internal.suberror = KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON;
	vcpu->run.internal.ndata = 2;
	vcpu->run.internal.data[0] = exit_reason;
	vcpu->run.internal.data[1] = (u64)vcpu->arch.last_vmentry_cpu;
	return 0;
}

/* ------------------------------------------------------------------------------------
 * PIO and MMIO to userspace, completed on the next KVM_RUN (complete_userspace_io)
 * ---------------------------------------------------------------------------------- */

/* Userspace moved RIP (KVM_SET_REGS) since the exit: nothing left to complete. */
static bool kvm_cui_rip_moved(struct kvm_vcpu *vcpu)
{
	return kvm_rip_read(vcpu) != vcpu->arch.cui_linear_rip;
}

static int complete_fast_pio_out(struct kvm_vcpu *vcpu)
{
	vcpu->arch.pio.count = 0;
	if (unlikely(kvm_cui_rip_moved(vcpu)))
		return 1;
	return kvm_skip_emulated_instruction(vcpu);
}

static int complete_fast_pio_in(struct kvm_vcpu *vcpu)
{
	u64 val = 0;
	u8 size = vcpu->arch.pio.size;

	if (unlikely(kvm_cui_rip_moved(vcpu))) {
		vcpu->arch.pio.count = 0;
		return 1;
	}
	if (size < 4)
		val = kvm_rax_read(vcpu) & ~((1ULL << (8 * size)) - 1);
	for (int i = 0; i < size; i++)
		val |= (u64)vcpu->run.pio_data[i] << (8 * i);
	vcpu->arch.pio.count = 0;
	kvm_register_write(vcpu, VCPU_REGS_RAX, val);
	return kvm_skip_emulated_instruction(vcpu);
}

int kvm_fast_pio(struct kvm_vcpu *vcpu, int size, unsigned short port, int in)
{
	struct kvm_run *run = &vcpu->run;

	vcpu->stat.io_exits++;
	vcpu->arch.pio.port = port;
	vcpu->arch.pio.size = size;
	vcpu->arch.pio.in = in;
	vcpu->arch.pio.count = 1;
	run->exit_reason = KVM_EXIT_IO;
	run->io.direction = in ? KVM_EXIT_IO_IN : KVM_EXIT_IO_OUT;
	run->io.size = size;
	run->io.port = port;
	run->io.count = 1;
	run->io.data_offset = offsetof(struct kvm_run, pio_data);
	vcpu->arch.cui_linear_rip = kvm_rip_read(vcpu);
	if (in) {
		memset(run->pio_data, 0, size);
		vcpu->arch.complete_userspace_io = complete_fast_pio_in;
	} else {
		u64 val = kvm_rax_read(vcpu);
		for (int i = 0; i < size; i++)
			run->pio_data[i] = (u8)(val >> (8 * i));
		vcpu->arch.complete_userspace_io = complete_fast_pio_out;
	}
	return 0;
}

static int complete_emulated_mmio(struct kvm_vcpu *vcpu)
{
	if (vcpu->run.mmio.is_write)
		return kvm_skip_emulated_instruction(vcpu);
	/* The read is completed by re-executing the instruction with the data at hand. */
	memcpy(&vcpu->arch.mmio_gpa, &vcpu->run.mmio.phys_addr, sizeof(u64));
	vcpu->arch.mmio_read_pending = true;
	return 1;
}

/*
 * An access outside every memory slot. Simplification (MACHINE.md): the hardware hands
 * KVM the decoded access, standing in for KVM's instruction emulator.
 */
int kvm_handle_mmio(struct kvm_vcpu *vcpu, const struct pk_guest_event *ev)
{
	struct kvm_run *run = &vcpu->run;

	vcpu->stat.mmio_exits++;
	if (ev->len == 0 || ev->len > 8)
		return kvm_handle_unexpected_exit(vcpu, ev->kind);
	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = ev->gpa;
	run->mmio.len = ev->len;
	run->mmio.is_write = ev->write;
	memset(run->mmio.data, 0, sizeof(run->mmio.data));
	if (ev->write)
		for (int i = 0; i < ev->len; i++)
			run->mmio.data[i] = (u8)(ev->data >> (8 * i));
	vcpu->arch.mmio_len = ev->len;
	vcpu->arch.complete_userspace_io = complete_emulated_mmio;
	return 0;
}

/* ------------------------------------------------------------------------------------
 * The run loop
 * ---------------------------------------------------------------------------------- */

static bool kvm_vcpu_exit_request(struct kvm_vcpu *vcpu)
{
	return current_task()->signal_pending;
}

static void kvm_inject_pending_exception(struct kvm_vcpu *vcpu)
{
	if (vcpu->arch.exception.pending) {
		kvm_x86_call(inject_exception)(vcpu);
		vcpu->arch.exception.pending = false;
	}
}

/* Hand an MMIO read's data to the re-executed instruction on this CPU. */
static void kvm_complete_mmio_read(struct kvm_vcpu *vcpu)
{
	struct pk_cpu *cpu = this_cpu();
	u64 data = 0;

	memcpy(&data, vcpu->run.mmio.data, vcpu->arch.mmio_len);
	cpu->mmio_fill_valid = true;
	cpu->mmio_fill_gpa = vcpu->arch.mmio_gpa;
	cpu->mmio_fill_data = data;
	vcpu->arch.mmio_read_pending = false;
}

static int vcpu_enter_guest(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	fastpath_t exit_fastpath;
	u32 old;
	int r;

	kvm_inject_pending_exception(vcpu);

	preempt_disable();
	old = pk_path_enter(m, PK_PATH_PREPARE_SWITCH);
	kvm_x86_call(prepare_switch_to_guest)(vcpu);
	pk_path_leave(m, old);
	local_irq_disable();
	vcpu->mode = IN_GUEST_MODE;

	if (kvm_vcpu_exit_request(vcpu)) {
		/* Guest state stays loaded: the next entry or vcpu_put deals with it. */
		vcpu->mode = OUTSIDE_GUEST_MODE;
		local_irq_enable();
		preempt_enable();
		return 1;
	}
	if (vcpu->arch.mmio_read_pending)
		kvm_complete_mmio_read(vcpu);

	old = pk_path_enter(m, PK_PATH_VCPU_RUN);
	for (;;) {
		if (unlikely(m->trace))
			pk_trace(m, PK_TR_KVM_ENTRY, smp_processor_id(), vcpu->vcpu_id,
				 kvm_rip_read(vcpu));
		exit_fastpath = kvm_x86_call(vcpu_run)(vcpu, 0);
		if (unlikely(m->trace)) {
			u32 reason;
			u64 info1, info2;

			kvm_x86_call(get_exit_info)(vcpu, &reason, &info1, &info2);
			pk_trace(m, PK_TR_KVM_EXIT, smp_processor_id(), reason, kvm_rip_read(vcpu));
		}
		if (likely(exit_fastpath != EXIT_FASTPATH_REENTER_GUEST))
			break;
		if (kvm_vcpu_exit_request(vcpu)) {
			exit_fastpath = EXIT_FASTPATH_EXIT_HANDLED;
			break;
		}
	}
	vcpu->arch.last_vmentry_cpu = smp_processor_id();
	vcpu->mode = OUTSIDE_GUEST_MODE;

	pk_path_enter(m, PK_PATH_HANDLE_EXIT);
	kvm_x86_call(handle_exit_irqoff)(vcpu);
	/* Host IRQs and NMIs taken here run with whatever MSR values are still loaded. */
	local_irq_enable();
	preempt_enable();
	r = kvm_x86_call(handle_exit)(vcpu, exit_fastpath);
	pk_path_leave(m, old);
	vcpu->stat.exits++;
	return r;
}

static int vcpu_run(struct kvm_vcpu *vcpu)
{
	int r;

	for (;;) {
		r = vcpu_enter_guest(vcpu);
		if (r <= 0)
			break;
		/* xfer_to_guest_mode_handle_work(): a reschedule may happen here. */
		pk_interrupt_window();
		if (current_task()->signal_pending) {
			r = -EINTR;
			vcpu->run.exit_reason = KVM_EXIT_INTR;
			break;
		}
	}
	if (r == 0)
		vcpu->stat.userspace_exits++;
	return r;
}

int kvm_arch_vcpu_ioctl_run(struct kvm_vcpu *vcpu)
{
	struct kvm_run *kvm_run = &vcpu->run;
	int r;

	vcpu_load(vcpu);
	kvm_run->flags = 0;
	if (vcpu->arch.complete_userspace_io) {
		int (*cui)(struct kvm_vcpu *) = vcpu->arch.complete_userspace_io;
		u32 old = pk_path_enter(vcpu->kvm->m, PK_PATH_HANDLE_EXIT);

		vcpu->arch.complete_userspace_io = NULL;
		r = cui(vcpu);
		pk_path_leave(vcpu->kvm->m, old);
		if (r <= 0)
			goto out;
	}
	if (kvm_run->immediate_exit) {
		r = -EINTR;
		kvm_run->exit_reason = KVM_EXIT_INTR;
		goto out;
	}
	r = kvm_x86_call(vcpu_pre_run)(vcpu);
	if (r <= 0)
		goto out;
	r = vcpu_run(vcpu);
out:
	vcpu_put(vcpu);
	pk_trace(vcpu->kvm->m, PK_TR_KVM_USERSPACE_EXIT, this_cpu()->id, kvm_run->exit_reason, 0);
	return r;
}

/* ------------------------------------------------------------------------------------
 * vCPU load/put (kvm_arch_vcpu_load/put) and CPUID
 * ---------------------------------------------------------------------------------- */

void kvm_arch_vcpu_load(struct kvm_vcpu *vcpu, int cpu)
{
	struct kvm_x86_global *g = kvm_global();

	/* A different vCPU ran here last: keep it from steering our indirect branches. */
	if (g->last_vcpu[cpu] != vcpu) {
		if (this_machine()->model.has_ibpb)
			wrmsrl(MSR_IA32_PRED_CMD, PRED_CMD_IBPB);
		g->last_vcpu[cpu] = vcpu;
	}
	kvm_x86_call(vcpu_load)(vcpu, cpu);
	if (vcpu->cpu != cpu && vcpu->cpu != -1)
		vcpu->stat.migrations++;
	vcpu->cpu = cpu;
}

void kvm_arch_vcpu_put(struct kvm_vcpu *vcpu)
{
	kvm_x86_call(vcpu_put)(vcpu);
}

int kvm_get_supported_cpuid(struct kvm_cpuid_entry2 *e, int max)
{
	const struct pk_cpu_model *cm = &this_machine()->model;
	bool intel = cm->vendor == PK_VENDOR_INTEL;
	int n = 0;

	if (max < 5)
		return -E2BIG;
	memset(e, 0, sizeof(*e) * 5);
	/* Leaf 0: max leaf and vendor string. */
	e[n].function = 0;
	e[n].eax = 7;
	if (intel) {
		e[n].ebx = 0x756e6547; e[n].edx = 0x49656e69; e[n].ecx = 0x6c65746e;	/* GenuineIntel */
	} else {
		e[n].ebx = 0x68747541; e[n].edx = 0x69746e65; e[n].ecx = 0x444d4163;	/* AuthenticAMD */
	}
	n++;
	e[n].function = 7;
	e[n].flags = 1;
	e[n].ebx = (cm->has_fsgsbase ? CPUID_7_EBX_FSGSBASE : 0) | (cm->has_rtm ? CPUID_7_EBX_RTM : 0);
	e[n].ecx = cm->has_rdpid ? CPUID_7_ECX_RDPID : 0;
	if (intel)
		e[n].edx = ((cm->has_ibrs && cm->has_ibpb) ? CPUID_7_EDX_SPEC_CTRL : 0) |
			   (cm->has_stibp ? CPUID_7_EDX_STIBP : 0) | (cm->has_ssbd ? CPUID_7_EDX_SSBD : 0);
	n++;
	e[n].function = 0x80000000;
	e[n].eax = 0x80000008;
	n++;
	e[n].function = 0x80000001;
	e[n].edx = CPUID_8000_0001_EDX_LM | CPUID_8000_0001_EDX_SYSCALL |
		   (cm->has_rdtscp ? CPUID_8000_0001_EDX_RDTSCP : 0);
	n++;
	e[n].function = 0x80000008;
	e[n].eax = 0x3030;	/* 48-bit physical and virtual addresses */
	if (!intel)
		e[n].ebx = (cm->has_ibpb ? CPUID_8000_0008_EBX_IBPB : 0) |
			   (cm->has_ibrs ? CPUID_8000_0008_EBX_IBRS : 0) |
			   (cm->has_stibp ? CPUID_8000_0008_EBX_STIBP : 0) |
			   (cm->has_ssbd ? CPUID_8000_0008_EBX_SSBD : 0);
	n++;
	return n;
}

/* KVM_SET_CPUID2: keep the entries, derive the capabilities the switch depends on. */
int kvm_vcpu_ioctl_set_cpuid2(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *entries, int n)
{
	const struct kvm_cpuid_entry2 *e;
	struct kvm_vcpu_arch *a = &vcpu->arch;

	if (n < 0 || n > KVM_MAX_CPUID_ENTRIES)
		return -E2BIG;
	memcpy(a->cpuid_entries, entries, sizeof(*entries) * n);
	a->cpuid_nent = n;

	e = kvm_find_cpuid_entry(vcpu, 0, 0);
	a->cap_intel_compatible = !e || e->ebx == 0x756e6547;
	e = kvm_find_cpuid_entry(vcpu, 7, 0);
	a->cap_rdpid = e && (e->ecx & CPUID_7_ECX_RDPID);
	a->cap_spec_ctrl = e && (e->edx & CPUID_7_EDX_SPEC_CTRL);
	a->cap_ibpb = a->cap_spec_ctrl;
	a->cap_stibp = e && (e->edx & CPUID_7_EDX_STIBP);
	a->cap_ssbd = e && (e->edx & CPUID_7_EDX_SSBD);
	e = kvm_find_cpuid_entry(vcpu, 0x80000001, 0);
	a->cap_rdtscp = e && (e->edx & CPUID_8000_0001_EDX_RDTSCP);
	a->cap_lm = e && (e->edx & CPUID_8000_0001_EDX_LM);
	e = kvm_find_cpuid_entry(vcpu, 0x80000008, 0);
	if (e) {
		a->cap_ibpb |= !!(e->ebx & CPUID_8000_0008_EBX_IBPB);
		a->cap_spec_ctrl |= !!(e->ebx & CPUID_8000_0008_EBX_IBRS);
		a->cap_stibp |= !!(e->ebx & CPUID_8000_0008_EBX_STIBP);
		a->cap_ssbd |= !!(e->ebx & CPUID_8000_0008_EBX_SSBD);
	}
	vcpu_load(vcpu);
	kvm_x86_call(vcpu_after_set_cpuid)(vcpu);
	vcpu_put(vcpu);
	return 0;
}
