// SPDX-License-Identifier: MIT
/*
 * Common x86 KVM: the run loop, user-return MSRs, MSR access, PIO/MMIO/CPUID/HLT exits.
 * Mirrors arch/x86/kvm/x86.c (torvalds/linux); function names are the kernel's.
 */
#include "x86.h"
#include "pykvm/events.h"
#include "pykvm/module.h"
#include "pykvm/printk.h"

/* ------------------------------------------------------------------------------------
 * Module parameters (kvm.*)
 * ---------------------------------------------------------------------------------- */

static const struct pk_param kvm_param_table[] = {
	PK_PARAM(struct kvm_params, uret_irqs_off, true,
		 "kvm_set_user_return_msr() writes the MSR and records it with IRQs off, so a "
		 "virtualization-disable IPI cannot fall in between (docs/world-switch.md, bug 3)"),
	PK_PARAM(struct kvm_params, lazy_fpu, false,
		 "the guest FPU state is loaded lazily, on the guest's first FPU use (2.6-era "
		 "KVM); 0: swapped with the VMM's on every KVM_RUN (kvm_load_guest_fpu, 4.15+)"),
	PK_PARAM(struct kvm_params, forget_star, false, "never restore the host STAR"),
	PK_PARAM(struct kvm_params, forget_lstar, false, "never restore the host LSTAR"),
	PK_PARAM(struct kvm_params, forget_syscall_mask, false, "never restore the host SYSCALL_MASK"),
	PK_PARAM(struct kvm_params, forget_efer, false, "never restore the host EFER (user return)"),
	PK_PARAM(struct kvm_params, forget_tsc_aux, false, "never restore the host TSC_AUX"),
	PK_PARAM(struct kvm_params, forget_tsx_ctrl, false, "never restore the host TSX_CTRL"),
	PK_PARAM(struct kvm_params, bug_uret_curr_stale, false,
		 "a stale user-return cache: kvm_on_user_return() writes the host values back "
		 "but leaves each slot's `curr` at the guest's, so the next "
		 "kvm_set_user_return_msr() of that value skips its WRMSR and the guest runs "
		 "with the host's"),
	/*
	 * kvm_main.c's module_param (the halt-polling code is there; kvm.ko is one module
	 * and the model keeps one table). Upstream's default is KVM_HALT_POLL_NS_DEFAULT,
	 * 200000 on x86 (arch/x86/include/asm/kvm_host.h).
	 */
	PK_PARAM_UINT(struct kvm_params, halt_poll_ns, 200000,
		      "the longest a halted vCPU polls for a wake-up before it schedules out "
		      "(ns); 0: never poll, every halt puts the vCPU and idles the CPU"),
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

/*
 * kernel: kvm_on_user_return() (x86.c at 8ecb10bcbfa3). Its software, with the notifier
 * call that reaches it, is one SW_USER_RETURN; the WRMSRs are counted on their own.
 */
static void kvm_on_user_return(struct user_return_notifier *urn)
{
	struct kvm_x86_global *g = kvm_global();
	struct kvm_user_return_msrs *msrs =
		container_of(urn, struct kvm_user_return_msrs, urn);
	bool irqs = this_machine()->host.irqs_enabled[smp_processor_id()];

	pk_sw(PK_OP_SW_USER_RETURN);

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
			if (!g->params.bug_uret_curr_stale)
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
	const char *why;
	int r;

	r = pk_params_apply(mods, ARRAY_SIZE(mods), params);
	if (r)
		return r;
	why = pk_host_params_invalid(m);
	if (why)
		return pk_err(-EINVAL, "%s", why);
	return 0;
}

int kvm_x86_vendor_init(struct pk_machine *m, const struct kvm_x86_init_ops *init,
			const char *params)
{
	const struct kvm_x86_ops *ops = init->runtime_ops;
	struct kvm_x86_global *g;
	int r;

	if (m->kvm_global)
		return -EEXIST;
#define KVM_X86_OP(func)		if (!ops->func)					\
		return pk_err(-EINVAL, "vendor %s lacks the mandatory op %s", ops->name, #func);
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
		kvm_set_lapic_tscdeadline_msr(vcpu, data);
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
 * kernel: handle_fastpath_set_tscdeadline(): the write is handled in the fast path when
 * the vendor has a hypervisor timer (kvm_can_use_hv_timer; SVM has none, so there it
 * takes the full exit path), whether or not the LAPIC is in the kernel:
 * kvm_set_lapic_tscdeadline_msr() arms the timer only for an in-kernel LAPIC.
 */
static int handle_fastpath_set_tscdeadline(struct kvm_vcpu *vcpu, u64 data)
{
	if (!kvm_can_use_hv_timer(vcpu))
		return 1;
	kvm_set_lapic_tscdeadline_msr(vcpu, data);
	return 0;
}

/*
 * The WRMSR fast path (kernel: handle_fastpath_set_msr_irqoff, torvalds/linux x86.c at
 * 8ecb10bcbfa3): handled with IRQs off right after VM-exit; the guest is re-entered from
 * vcpu_enter_guest's inner loop without prepare_switch_to_guest, IRQ/preemption
 * toggles, handle_exit dispatch or a vcpu_run pass (EXIT_FASTPATH_REENTER_GUEST).
 */
fastpath_t handle_fastpath_set_msr_irqoff(struct kvm_vcpu *vcpu)
{
	u32 msr = kvm_rcx_read(vcpu);

	switch (msr) {
	case MSR_IA32_TSC_DEADLINE:
		if (handle_fastpath_set_tscdeadline(vcpu, kvm_read_edx_eax(vcpu)))
			return EXIT_FASTPATH_NONE;
		pk_sw(PK_OP_SW_FASTPATH);
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

	pk_sw(PK_OP_SW_VCPU_IOCTL);
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
 * The in-kernel LAPIC's TSC-deadline timer and the vCPU's runnable state (upstream:
 * lapic.c and x86.c), only as the wake-up source of a halted vCPU. Simplifications: the
 * LVT timer is taken to be in TSC-deadline mode once the irqchip is in the kernel; while
 * the vCPU runs, the deadline is held (the VMX preemption timer upstream), no exit is
 * taken when it passes; the expiry that wakes a halted vCPU is not delivered to the
 * guest as an interrupt: the guest resumes after its HLT.
 * ---------------------------------------------------------------------------------- */

/* apic_timer_expired(): count the expiry and kick the vCPU if it came from the hrtimer. */
static void apic_timer_expired(struct kvm_vcpu *vcpu, bool from_timer_fn)
{
	if (vcpu->arch.lapic_timer.pending)
		return;
	vcpu->arch.tsc_deadline = 0;
	vcpu->arch.lapic_timer.pending++;
	if (from_timer_fn)
		kvm_vcpu_kick(vcpu);
}

/* apic_timer_fn(): the host hrtimer the deadline runs on while the vCPU is blocked. */
static void apic_timer_fn(struct pk_hrtimer *timer)
{
	struct kvm_vcpu *vcpu = container_of(timer, struct kvm_vcpu, arch.lapic_timer.timer);

	apic_timer_expired(vcpu, true);
}

void kvm_set_lapic_tscdeadline_msr(struct kvm_vcpu *vcpu, u64 data)
{
	vcpu->arch.tsc_deadline = data;
	if (!lapic_in_kernel(vcpu))
		return;
	hrtimer_cancel(&vcpu->arch.lapic_timer.timer);
	/*
	 * start_apic_timer(): a deadline already past expires at once; a future one goes to
	 * the hypervisor timer where there is one (start_hv_timer -> set_hv_timer).
	 */
	if (data && data <= this_cpu()->tsc)
		apic_timer_expired(vcpu, false);
	else if (kvm_can_use_hv_timer(vcpu))
		kvm_x86_call(set_hv_timer)(vcpu, data);
}

/*
 * The guest's timer keeps counting while the vCPU is blocked only on a host hrtimer
 * (kvm_lapic_switch_to_sw_timer; SVM, which has no preemption timer, keeps it there all
 * along: the same, as host timers cost nothing in the model).
 */
static bool kvm_lapic_hv_timer_in_use(struct kvm_vcpu *vcpu)
{
	return lapic_in_kernel(vcpu) && vcpu->arch.tsc_deadline;
}

static void kvm_lapic_switch_to_sw_timer(struct kvm_vcpu *vcpu)
{
	struct pk_hrtimer *t = &vcpu->arch.lapic_timer.timer;

	preempt_disable();
	t->function = apic_timer_fn;
	if (vcpu->arch.tsc_deadline <= this_cpu()->tsc)
		apic_timer_expired(vcpu, false);
	else
		hrtimer_start(t, vcpu->arch.tsc_deadline);
	preempt_enable();
}

static void kvm_lapic_switch_to_hv_timer(struct kvm_vcpu *vcpu)
{
	hrtimer_cancel(&vcpu->arch.lapic_timer.timer);
}

bool kvm_cpu_has_pending_timer(struct kvm_vcpu *vcpu)
{
	return lapic_in_kernel(vcpu) && vcpu->arch.lapic_timer.pending;
}

/* kvm_inject_pending_timer_irqs(): the expiry becomes the guest's interrupt (not modelled). */
static void kvm_inject_pending_timer_irqs(struct kvm_vcpu *vcpu)
{
	vcpu->arch.lapic_timer.pending = 0;
}

/*
 * kvm_pv_kick_cpu_op() as another vCPU's KVM_HC_KICK_CPU delivers it (APIC_DM_REMRD in
 * __apic_accept_irq): the target may leave its halt.
 */
static void kvm_pv_kick_cpu_op(struct kvm_vcpu *target)
{
	target->arch.pv.pv_unhalted = true;
	kvm_vcpu_kick(target);
}

/* A kick of pk_vcpu_kick_every(), arriving on the halted vCPU's CPU; the next is due. */
void kvm_pv_kick_timer_fn(struct pk_hrtimer *timer)
{
	struct kvm_vcpu *vcpu = container_of(timer, struct kvm_vcpu, arch.kick_timer);

	if (vcpu->arch.kick_period)
		hrtimer_start(timer, timer->expires + vcpu->arch.kick_period);
	kvm_pv_kick_cpu_op(vcpu);
}

static bool kvm_vcpu_running(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.mp_state == KVM_MP_STATE_RUNNABLE;
}

/* kvm_vcpu_has_events(): a wake event is pending (an expired timer, a PV kick). */
static bool kvm_vcpu_has_events(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.pv.pv_unhalted || kvm_cpu_has_pending_timer(vcpu);
}

bool kvm_arch_vcpu_runnable(struct kvm_vcpu *vcpu)
{
	return kvm_vcpu_running(vcpu) || kvm_vcpu_has_events(vcpu);
}

/*
 * vcpu_block(): a halted vCPU waits in kvm_vcpu_halt (polling, then blocking) until a
 * wake event; the guest's timer moves to a host hrtimer meanwhile, since the preemption
 * timer runs only in guest mode (and before polling, so an expiry is seen by it).
 */
static int vcpu_block(struct kvm_vcpu *vcpu)
{
	bool hv_timer;

	if (!kvm_arch_vcpu_runnable(vcpu)) {
		hv_timer = kvm_lapic_hv_timer_in_use(vcpu);
		if (hv_timer)
			kvm_lapic_switch_to_sw_timer(vcpu);
		kvm_vcpu_halt(vcpu);
		if (hv_timer)
			kvm_lapic_switch_to_hv_timer(vcpu);
		/* Woken by something else (a signal): service it, still halted. */
		if (!kvm_arch_vcpu_runnable(vcpu))
			return 1;
	}
	vcpu->arch.pv.pv_unhalted = false;
	vcpu->arch.mp_state = KVM_MP_STATE_RUNNABLE;
	return 1;
}

/* KVM_CREATE_IRQCHIP (kvm_arch_vm_ioctl): before any vCPU exists, once. */
int kvm_arch_vm_ioctl_create_irqchip(struct kvm *kvm)
{
	if (kvm->arch.irqchip_mode != KVM_IRQCHIP_NONE)
		return pk_err(-EEXIST, "the VM already has an in-kernel irqchip");
	if (kvm->nr_vcpus)
		return pk_err(-EINVAL, "KVM_CREATE_IRQCHIP after KVM_CREATE_VCPU");
	kvm->arch.irqchip_mode = KVM_IRQCHIP_KERNEL;
	return 0;
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

/*
 * kernel: kvm_skip_emulated_instruction() reads RFLAGS first (a VMREAD of GUEST_RFLAGS on
 * VMX, unless cached since the exit) to inject a single-step #DB when TF was set.
 */
int kvm_skip_emulated_instruction(struct kvm_vcpu *vcpu)
{
	u64 rflags = kvm_x86_call(get_rflags)(vcpu);
	int r = kvm_x86_call(skip_emulated_instruction)(vcpu);

	(void)rflags;		/* single-step #DB: the model's guests never set TF here */
	return r;
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

/*
 * The vCPU has halted. With the LAPIC in the kernel, the run loop sees the vCPU is not
 * runnable and halts it (vcpu_block); without, userspace handles the wake-up events.
 */
static int __kvm_emulate_halt(struct kvm_vcpu *vcpu, u32 state, u32 reason)
{
	++vcpu->stat.halt_exits;
	if (lapic_in_kernel(vcpu)) {
		if (kvm_vcpu_has_events(vcpu))
			vcpu->arch.pv.pv_unhalted = false;
		else
			vcpu->arch.mp_state = state;
		return 1;
	}
	vcpu->run.exit_reason = reason;
	return 0;
}

int kvm_emulate_halt(struct kvm_vcpu *vcpu)
{
	int ret = kvm_skip_emulated_instruction(vcpu);

	return __kvm_emulate_halt(vcpu, KVM_MP_STATE_HALTED, KVM_EXIT_HLT) && ret;
}

/* x86_spec_ctrl_current: the kernel-mode value (with IBRS on a legacy-IBRS host). */
u64 kvm_host_spec_ctrl(void)
{
	return pk_host_spec_ctrl_kernel(this_machine());
}

#define KVM_ENOSYS 1000
#define KVM_EPERM 1
/*
 * kernel: kvm_emulate_hypercall(): the operand size from is_64_bit_mode() (CS.L) and the
 * CPL (SS.DPL) before the call number; an unknown one returns -KVM_ENOSYS.
 */
int kvm_emulate_hypercall(struct kvm_vcpu *vcpu)
{
	bool op_64_bit = is_64_bit_mode(vcpu);
	int cpl = kvm_x86_call(get_cpl)(vcpu);
	u64 ret = cpl ? (u64)-KVM_EPERM : (u64)-KVM_ENOSYS;

	kvm_register_write(vcpu, VCPU_REGS_RAX, op_64_bit ? ret : (u32)ret);
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

/* Userspace moved RIP (KVM_SET_REGS) since the exit: nothing left to complete
 * (kernel: !kvm_is_linear_rip()). */
static bool kvm_cui_rip_moved(struct kvm_vcpu *vcpu)
{
	return kvm_get_linear_rip(vcpu) != vcpu->arch.cui_linear_rip;
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
	vcpu->arch.cui_linear_rip = kvm_get_linear_rip(vcpu);
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

/*
 * What x86_emulate_instruction() does around the emulation proper (torvalds/linux x86.c
 * at 8ecb10bcbfa3): init_emulate_ctxt() reads RFLAGS, CS.L/D and RIP; the instruction
 * fetch checks the CPL and walks the guest page tables from CR3; the emulator decodes
 * and executes (SW_EMULATE). Simplification (MACHINE.md): the hardware hands KVM the
 * decoded access, so only these accesses and the software are mirrored, not the decode.
 */
static void kvm_emulate_prologue(struct kvm_vcpu *vcpu)
{
	int cs_db, cs_l;

	vcpu->arch.l1tf_flush_l1d = true;
	(void)kvm_x86_call(get_rflags)(vcpu);
	kvm_x86_call(get_cs_db_l_bits)(vcpu, &cs_db, &cs_l);
	(void)kvm_rip_read(vcpu);
	(void)kvm_x86_call(get_cpl)(vcpu);
	if (is_paging(vcpu))
		(void)kvm_read_cr3(vcpu);
	pk_sw(PK_OP_SW_EMULATE);
}

/*
 * The writeback of a completed instruction: toggle_interruptibility() reads the
 * interrupt shadow, RIP moves past it, and __kvm_set_rflags() writes RFLAGS back.
 */
static void kvm_emulate_writeback(struct kvm_vcpu *vcpu, u8 insn_len)
{
	u64 rflags = kvm_x86_call(get_rflags)(vcpu);

	(void)kvm_x86_call(get_interrupt_shadow)(vcpu);
	kvm_rip_write(vcpu, kvm_rip_read(vcpu) + insn_len);
	kvm_x86_call(set_rflags)(vcpu, rflags);
}

/*
 * The next KVM_RUN after an MMIO exit (kernel: complete_emulated_mmio). A store was
 * completed before the exit; a load is finished by the emulator with the data userspace
 * supplied: here, by re-executing the instruction with that data (MACHINE.md), after the
 * emulator's accesses and software.
 */
static int complete_emulated_mmio(struct kvm_vcpu *vcpu)
{
	u64 rflags;

	if (vcpu->run.mmio.is_write)
		return 1;
	/* complete_emulated_io: EMULTYPE_NO_DECODE, then the writeback (RIP: below). */
	pk_sw(PK_OP_SW_EMULATE);
	rflags = kvm_x86_call(get_rflags)(vcpu);
	(void)kvm_x86_call(get_interrupt_shadow)(vcpu);
	kvm_x86_call(set_rflags)(vcpu, rflags);
	memcpy(&vcpu->arch.mmio_gpa, &vcpu->run.mmio.phys_addr, sizeof(u64));
	vcpu->arch.mmio_read_pending = true;
	return 1;
}

/*
 * An access outside every memory slot (kernel: kvm_mmu_page_fault -> x86_emulate_instruction
 * with EMULTYPE_PF). Simplification (MACHINE.md): the hardware hands KVM the decoded
 * access, standing in for KVM's instruction emulator. A store completes now (writeback
 * before the exit, as upstream: RIP is past it when userspace sees KVM_EXIT_MMIO).
 */
int kvm_handle_mmio(struct kvm_vcpu *vcpu, const struct pk_guest_event *ev)
{
	struct kvm_run *run = &vcpu->run;

	vcpu->stat.mmio_exits++;
	if (ev->len == 0 || ev->len > 8)
		return kvm_handle_unexpected_exit(vcpu, ev->kind);
	kvm_emulate_prologue(vcpu);
	run->exit_reason = KVM_EXIT_MMIO;
	run->mmio.phys_addr = ev->gpa;
	run->mmio.len = ev->len;
	run->mmio.is_write = ev->write;
	memset(run->mmio.data, 0, sizeof(run->mmio.data));
	if (ev->write) {
		for (int i = 0; i < ev->len; i++)
			run->mmio.data[i] = (u8)(ev->data >> (8 * i));
		kvm_emulate_writeback(vcpu, ev->insn_len);
	}
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

/*
 * RIP for a tracepoint. Tracing must not change what runs: no host point for the
 * checker's injections, and the register cache left as it was (a cached RIP would
 * spare a later VMREAD and shift every host point after it).
 */
static u64 kvm_trace_rip(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	u32 armed = m->inject.armed, avail = vcpu->arch.regs_avail;
	u64 rip;

	m->inject.armed = 0;
	rip = kvm_rip_read(vcpu);
	vcpu->arch.regs_avail = avail;
	m->inject.armed = armed;
	return rip;
}

/*
 * kernel: vcpu_enter_guest() (torvalds/linux x86.c at 8ecb10bcbfa3). Its own software,
 * outside the vendor's vcpu_run and handle_exit, is one SW_ENTER_GUEST per call: the
 * request checks, kvm_mmu_reload, preempt_disable, local_irq_disable, the guest-mode
 * store and SRCU unlock, kvm_vcpu_exit_request, guest_timing_enter_irqoff; after the exit
 * last_guest_tsc (RDTSC), handle_exit_irqoff's call, the IRQ window around
 * kvm_before/after_interrupt, guest_timing_exit_irqoff, preempt_enable, SRCU lock.
 */
static int vcpu_enter_guest(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	fastpath_t exit_fastpath;
	u32 old;
	int r;

	old = pk_path_enter(m, PK_PATH_VCPU_RUN);
	pk_sw(PK_OP_SW_ENTER_GUEST);
	pk_path_leave(m, old);
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
				 kvm_trace_rip(vcpu));
		exit_fastpath = kvm_x86_call(vcpu_run)(vcpu, 0);
		if (unlikely(m->trace)) {
			u32 reason, armed = m->inject.armed;
			u64 info1, info2;

			/* The tracepoint's VMREADs are not host points: a traced replay places
			 * its injections where the untraced run did. */
			m->inject.armed = 0;
			kvm_x86_call(get_exit_info)(vcpu, &reason, &info1, &info2);
			m->inject.armed = armed;
			pk_trace(m, PK_TR_KVM_EXIT, smp_processor_id(), reason, kvm_trace_rip(vcpu));
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

/*
 * kernel: vcpu_run(). Each pass after an exit handled in the kernel is one SW_RUN_LOOP
 * (kvm_vcpu_running, the pending-timer and IRQ-window checks,
 * __xfer_to_guest_mode_work_pending); the first pass is part of the ioctl.
 */
static int vcpu_run(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	int r;

	/* L1TF: flush L1D before the first entry of every KVM_RUN (vmx_l1d_flush, cond). */
	vcpu->arch.l1tf_flush_l1d = true;
	for (;;) {
		if (kvm_vcpu_running(vcpu))
			r = vcpu_enter_guest(vcpu);
		else
			r = vcpu_block(vcpu);
		if (r <= 0)
			break;
		if (kvm_cpu_has_pending_timer(vcpu))
			kvm_inject_pending_timer_irqs(vcpu);
		{
			u32 old = pk_path_enter(m, PK_PATH_VCPU_RUN);

			pk_sw(PK_OP_SW_RUN_LOOP);
			pk_path_leave(m, old);
		}
		/* xfer_to_guest_mode_handle_work(): a reschedule may happen here. */
		pk_interrupt_window();
		if (current_task()->signal_pending) {
			r = -EINTR;
			vcpu->run.exit_reason = KVM_EXIT_INTR;
			break;
		}
		if (need_resched())
			schedule();
	}
	if (r == 0)
		vcpu->stat.userspace_exits++;
	return r;
}

/*
 * kernel: kvm_load_guest_fpu() / kvm_put_guest_fpu(), fpu_swap_kvm_fpstate(): the VMM's
 * FPU state is saved and the guest's restored at the start of KVM_RUN, the other way at
 * the end (XSAVES + XRSTORS each way: the VMM just returned from user mode, so its
 * registers are live, TIF_NEED_FPU_LOAD clear). Before 4.15 KVM loaded the guest FPU
 * lazily, on the guest's first FPU use, which these guests never make (kvm.lazy_fpu).
 */
static void kvm_swap_guest_fpu(struct kvm_vcpu *vcpu)
{
	if (kvm_global()->params.lazy_fpu)
		return;
	preempt_disable();		/* fpregs_lock() */
	pk_xsaves();
	pk_xrstors();
	preempt_enable();
}

/*
 * kernel: kvm_arch_vcpu_ioctl_run() (torvalds/linux x86.c at 8ecb10bcbfa3). The ioctl's
 * own software (with kvm_vcpu_ioctl's vcpu->mutex and dispatch) is one SW_VCPU_IOCTL;
 * post_kvm_run_save() reads the guest's IF (RFLAGS) for kvm_run->if_flag.
 */
int kvm_arch_vcpu_ioctl_run(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct kvm_run *kvm_run = &vcpu->run;
	u32 old;
	int r;

	old = pk_path_enter(m, PK_PATH_IOCTL);
	pk_sw(PK_OP_SW_VCPU_IOCTL);
	pk_path_leave(m, old);
	vcpu_load(vcpu);
	old = pk_path_enter(m, PK_PATH_IOCTL);
	kvm_swap_guest_fpu(vcpu);
	pk_path_leave(m, old);
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
	old = pk_path_enter(m, PK_PATH_IOCTL);
	kvm_swap_guest_fpu(vcpu);
	kvm_run->if_flag = !!(kvm_x86_call(get_rflags)(vcpu) & X86_EFLAGS_IF);
	pk_path_leave(m, old);
	vcpu_put(vcpu);
	pk_trace(vcpu->kvm->m, PK_TR_KVM_USERSPACE_EXIT, this_cpu()->id, kvm_run->exit_reason, 0);
	return r;
}

/* ------------------------------------------------------------------------------------
 * vCPU load/put (kvm_arch_vcpu_load/put) and CPUID
 * ---------------------------------------------------------------------------------- */

/*
 * kernel: kvm_arch_vcpu_load() with vcpu_load()'s own part (SW_VCPU_LOAD): the preempt
 * notifier, the TSC checks, KVM_REQ_STEAL_UPDATE.
 */
void kvm_arch_vcpu_load(struct kvm_vcpu *vcpu, int cpu)
{
	struct kvm_x86_global *g = kvm_global();

	pk_sw(PK_OP_SW_VCPU_LOAD);
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

/*
 * kernel: kvm_arch_vcpu_put() with vcpu_put()'s own part (SW_VCPU_PUT): on a preemption
 * it records whether the vCPU was in guest kernel mode (the CPL: SS.DPL) for the steal
 * time area, then the vendor put and last_host_tsc.
 */
void kvm_arch_vcpu_put(struct kvm_vcpu *vcpu)
{
	pk_sw(PK_OP_SW_VCPU_PUT);
	if (vcpu->preempted)
		(void)kvm_x86_call(get_cpl)(vcpu);
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
