// SPDX-License-Identifier: MIT
/*
 * Common x86 KVM: the run loop, user-return MSRs, MSR access, PIO/MMIO/CPUID/HLT exits.
 * Mirrors arch/x86/kvm/x86.c (torvalds/linux); function names are the kernel's.
 */
#include "x86.h"
#include "lapic.h"
#include "pykvm/events.h"
#include "pykvm/module.h"
#include "pykvm/kvm_api.h"
#include "pykvm/printk.h"

/* ------------------------------------------------------------------------------------
 * Module parameters (kvm.*)
 * ---------------------------------------------------------------------------------- */

static const struct pk_param kvm_param_table[] = {
	PK_PARAM(struct kvm_params, ignore_msrs, false,
		 "accesses to MSRs KVM does not know neither fault nor fail: reads give 0, "
		 "writes are dropped (kvm_do_msr_access)"),
	/*
	 * Not upstream's behaviour: upstream kvm_set_user_return_msr() has never disabled
	 * IRQs (torvalds/linux arch/x86/kvm/x86.c). The window it leaves, a disable IPI
	 * between the WRMSR and the update of curr, was raised on kvm@vger.kernel.org in
	 * Oct 2025 ("KVM: x86: User-return MSR fix+cleanups"); Sean Christopherson declined to
	 * disable IRQs here and closed it instead by not dropping the notifiers from the
	 * reboot IPI (kvm-x86/linux 2baa33a8ddd6, "Leave user-return notifier registered on
	 * reboot/shutdown"), after which kvm_on_user_return() stopped disabling IRQs too
	 * (995d504100cf; it had since 1650b4ebc99d). The model has no such reboot path, so
	 * its default closes the window the simplest way; 0 is upstream's code as the IPI
	 * met it before 2baa33a8ddd6.
	 */
	PK_PARAM(struct kvm_params, uret_irqs_off, true,
		 "the model's fix, not upstream's code: kvm_set_user_return_msr() writes the MSR "
		 "and records it with IRQs off, so a virtualization-disable IPI cannot fall in "
		 "between; 0: upstream's kvm_set_user_return_msr(), IRQs on, with the window a "
		 "disable IPI could use before 2baa33a8ddd6 (docs/world-switch.md, bug 3)"),
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
	 * and leave the guest value in hardware: uret_irqs_off keeps IRQs off across both.
	 * Upstream does not (see kvm_param_table): its default is uret_irqs_off=0.
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
	/* Each vendor adds its own machine-check capabilities in hardware_setup. */
	g->supported_mce_cap = KVM_MCE_CAP_SUPPORTED;
	kvm_set_cpu_caps();
	/* kvm_x86_vendor_init(): EFER bits the host has, that a guest may own. */
	g->efer_reserved_bits = ~(u64)(EFER_SCE | EFER_LME | EFER_LMA);
	if (g->host_efer & EFER_NX)
		kvm_enable_efer_bits(EFER_NX);

	u32 old = pk_path_enter(m, PK_PATH_HARDWARE);
	r = init->hardware_setup();
	pk_path_leave(m, old);
	if (r) {
		m->kvm_global = NULL;
		return r;
	}
	kvm_init_msr_lists();
	return 0;
}

/* ------------------------------------------------------------------------------------
 * MSR lists: what KVM_GET_MSR_INDEX_LIST and KVM_GET_MSR_FEATURE_INDEX_LIST report
 * (kernel: msrs_to_save_base, emulated_msrs_all, msr_based_features_all_except_vmx and
 * kvm_init_msr_lists, read at kvm-x86/linux 042007c262e5). Each list keeps, of
 * upstream's, the MSRs this model implements: no PMU, Hyper-V, kvmclock, MTRR, XSAVE,
 * nested-VMX or TSC-offset MSRs. The CET MSRs stay (their checks are modelled); like
 * every CPUID-dependent MSR, kvm_init_msr_lists drops them without SHSTK or IBT.
 * ---------------------------------------------------------------------------------- */

static const u32 msrs_to_save_base[] = {
	MSR_IA32_SYSENTER_CS, MSR_IA32_SYSENTER_ESP, MSR_IA32_SYSENTER_EIP,
	MSR_STAR,
	MSR_CSTAR, MSR_KERNEL_GS_BASE, MSR_SYSCALL_MASK, MSR_LSTAR,
	MSR_IA32_CR_PAT, MSR_VM_HSAVE_PA, MSR_TSC_AUX,
	MSR_IA32_SPEC_CTRL, MSR_IA32_TSX_CTRL,
	MSR_IA32_U_CET, MSR_IA32_S_CET,
	MSR_IA32_PL0_SSP, MSR_IA32_PL1_SSP, MSR_IA32_PL2_SSP, MSR_IA32_PL3_SSP,
	MSR_IA32_INT_SSP_TAB,
};

static const u32 emulated_msrs_all[] = {
	MSR_IA32_TSC_DEADLINE,
	MSR_IA32_PERF_CAPABILITIES,
	MSR_IA32_MISC_ENABLE,
	MSR_IA32_MCG_STATUS,
	MSR_IA32_MCG_CTL,
	MSR_PLATFORM_INFO,
	MSR_IA32_POWER_CTL,
	MSR_IA32_UCODE_REV,
	MSR_K7_HWCR,
};

static const u32 msr_based_features_all_except_vmx[] = {
	MSR_IA32_UCODE_REV,
	MSR_IA32_PERF_CAPABILITIES,
	MSR_PLATFORM_INFO,
};

/* An MSR KVM saves and restores only if the host has it and the guest can have it. */
static void kvm_probe_msr_to_save(u32 msr_index)
{
	struct kvm_x86_global *g = kvm_global();
	u64 dummy;

	if (rdmsrl_safe(msr_index, &dummy))
		return;
	switch (msr_index) {
	case MSR_TSC_AUX:
		if (!kvm_cpu_cap_has(X86_FEATURE_RDTSCP) && !kvm_cpu_cap_has(X86_FEATURE_RDPID))
			return;
		break;
	case MSR_IA32_TSX_CTRL:
		/* Upstream asks ARCH_CAPABILITIES.TSX_CTRL_MSR; the model's RTM CPUs have it. */
		if (!this_machine()->model.has_rtm)
			return;
		break;
	case MSR_IA32_U_CET:
	case MSR_IA32_S_CET:
		if (!kvm_cpu_cap_has(X86_FEATURE_SHSTK) && !kvm_cpu_cap_has(X86_FEATURE_IBT))
			return;
		break;
	case MSR_IA32_INT_SSP_TAB:
	case MSR_IA32_PL0_SSP ... MSR_IA32_PL3_SSP:
		if (!kvm_cpu_cap_has(X86_FEATURE_SHSTK))
			return;
		break;
	default:
		break;
	}
	if (g->num_msrs_to_save < ARRAY_SIZE(g->msrs_to_save))
		g->msrs_to_save[g->num_msrs_to_save++] = msr_index;
}

void kvm_init_msr_lists(void)
{
	struct kvm_x86_global *g = kvm_global();

	g->num_msrs_to_save = g->num_emulated_msrs = g->num_msr_based_features = 0;
	for (unsigned int i = 0; i < ARRAY_SIZE(msrs_to_save_base); i++)
		kvm_probe_msr_to_save(msrs_to_save_base[i]);
	for (unsigned int i = 0; i < ARRAY_SIZE(emulated_msrs_all); i++) {
		if (!kvm_x86_call(has_emulated_msr)(NULL, emulated_msrs_all[i]))
			continue;
		if (g->num_emulated_msrs < ARRAY_SIZE(g->emulated_msrs))
			g->emulated_msrs[g->num_emulated_msrs++] = emulated_msrs_all[i];
	}
	/* Every feature MSR of the list reads successfully here (kvm_get_feature_msr). */
	for (unsigned int i = 0; i < ARRAY_SIZE(msr_based_features_all_except_vmx); i++)
		if (g->num_msr_based_features < ARRAY_SIZE(g->msr_based_features))
			g->msr_based_features[g->num_msr_based_features++] =
				msr_based_features_all_except_vmx[i];
}

static bool kvm_is_advertised_msr(u32 msr_index)
{
	struct kvm_x86_global *g = kvm_global();

	for (u32 i = 0; i < g->num_msrs_to_save; i++)
		if (g->msrs_to_save[i] == msr_index)
			return true;
	for (u32 i = 0; i < g->num_emulated_msrs; i++)
		if (g->emulated_msrs[i] == msr_index)
			return true;
	return false;
}

/* Feature MSRs are immutable once the vCPU has run (kernel: kvm_is_immutable_feature_msr). */
static bool kvm_is_immutable_feature_msr(u32 msr)
{
	for (unsigned int i = 0; i < ARRAY_SIZE(msr_based_features_all_except_vmx); i++)
		if (msr == msr_based_features_all_except_vmx[i])
			return msr != MSR_IA32_UCODE_REV;
	return false;
}

/* A list into indices[*n]; *n becomes the list's length, -E2BIG if it did not fit. */
static int kvm_copy_msr_list(const u32 *a, u32 na, const u32 *b, u32 nb, u32 *indices, u32 *n)
{
	u32 room = *n;

	*n = na + nb;
	if (room < na + nb)
		return -E2BIG;
	memcpy(indices, a, sizeof(*a) * na);
	memcpy(indices + na, b, sizeof(*b) * nb);
	return 0;
}

int kvm_get_msr_index_list(u32 *indices, u32 *n)
{
	struct kvm_x86_global *g = kvm_global();

	return kvm_copy_msr_list(g->msrs_to_save, g->num_msrs_to_save, g->emulated_msrs,
				 g->num_emulated_msrs, indices, n);
}

int kvm_get_msr_feature_index_list(u32 *indices, u32 *n)
{
	struct kvm_x86_global *g = kvm_global();

	return kvm_copy_msr_list(g->msr_based_features, g->num_msr_based_features, NULL, 0,
				 indices, n);
}

/* The host's view of the feature MSRs (kernel: kvm_get_feature_msr). */
static int kvm_get_feature_msr(u32 index, u64 *data)
{
	switch (index) {
	case MSR_IA32_PERF_CAPABILITIES:
		*data = 0;		/* kvm_caps.supported_perf_cap: no vPMU in the model */
		return 0;
	case MSR_PLATFORM_INFO:
		*data = MSR_PLATFORM_INFO_CPUID_FAULT;
		return 0;
	case MSR_IA32_UCODE_REV:
		*data = 0;
		rdmsrl_safe(index, data);
		return 0;
	default:
		return KVM_MSR_RET_UNSUPPORTED;
	}
}

/* KVM_GET_MSRS on /dev/kvm: the count read, stopping at the first failure. */
int kvm_get_feature_msrs(struct kvm_msr_entry *entries, u32 n)
{
	u32 i;

	for (i = 0; i < n; i++)
		if (kvm_get_feature_msr(entries[i].index, &entries[i].data))
			break;
	return (int)i;
}

/* ------------------------------------------------------------------------------------
 * MSR filters (kernel: kvm_msr_allowed, kvm_vm_ioctl_set_msr_filter)
 * ---------------------------------------------------------------------------------- */

bool kvm_msr_allowed(struct kvm_vcpu *vcpu, u32 index, u32 type)
{
	const struct kvm_x86_msr_filter *msr_filter = vcpu->kvm->arch.msr_filter;

	/* x2APIC MSRs do not support filtering. */
	if (index >= 0x800 && index <= 0x8ff)
		return true;
	if (!msr_filter)
		return true;
	for (u32 i = 0; i < msr_filter->count; i++) {
		const struct msr_bitmap_range *r = &msr_filter->ranges[i];
		u64 start = r->base, end = start + r->nmsrs;

		if (index >= start && index < end && (r->flags & type)) {
			u32 bit = index - r->base;

			return r->bitmap[bit / 8] & BIT(bit % 8);
		}
	}
	return msr_filter->default_allow;
}

static int kvm_add_msr_filter(struct kvm_x86_msr_filter *msr_filter,
			      const struct kvm_msr_filter_range *user_range)
{
	struct msr_bitmap_range *r;
	size_t bitmap_size;

	if (!user_range->nmsrs)
		return 0;
	if (user_range->flags & ~KVM_MSR_FILTER_RANGE_VALID_MASK)
		return pk_err(-EINVAL, "KVM_X86_SET_MSR_FILTER: range flags %#x, valid: %#x",
			      user_range->flags, KVM_MSR_FILTER_RANGE_VALID_MASK);
	if (!user_range->flags)
		return pk_err(-EINVAL, "KVM_X86_SET_MSR_FILTER: a range with MSRs needs READ or WRITE");
	/* The kernel copies whole longs: BITS_TO_LONGS(nmsrs) * sizeof(long) bytes. */
	bitmap_size = ((size_t)user_range->nmsrs + 63) / 64 * 8;
	if (bitmap_size > KVM_MSR_FILTER_MAX_BITMAP_SIZE)
		return pk_err(-EINVAL, "KVM_X86_SET_MSR_FILTER: %u MSRs need a %zu-byte bitmap "
			      "(at most %d)", user_range->nmsrs, bitmap_size,
			      KVM_MSR_FILTER_MAX_BITMAP_SIZE);
	if (!user_range->bitmap)
		return pk_err(-EFAULT, "KVM_X86_SET_MSR_FILTER: range without a bitmap");
	r = &msr_filter->ranges[msr_filter->count++];
	r->flags = user_range->flags;
	r->base = user_range->base;
	r->nmsrs = user_range->nmsrs;
	memset(r->bitmap, 0, sizeof(r->bitmap));
	memcpy(r->bitmap, user_range->bitmap, bitmap_size);
	return 0;
}

int kvm_vm_ioctl_set_msr_filter(struct kvm *kvm, const struct kvm_msr_filter *filter)
{
	struct kvm_arch *ka = &kvm->arch;
	struct kvm_x86_msr_filter *new_filter;
	bool default_allow, empty = true;
	int r;

	if (filter->flags & ~KVM_MSR_FILTER_VALID_MASK)
		return pk_err(-EINVAL, "KVM_X86_SET_MSR_FILTER: flags %#x, valid: %#x",
			      filter->flags, KVM_MSR_FILTER_VALID_MASK);
	for (int i = 0; i < KVM_MSR_FILTER_MAX_RANGES; i++)
		empty &= !filter->ranges[i].nmsrs;
	default_allow = !(filter->flags & KVM_MSR_FILTER_DEFAULT_DENY);
	if (empty && !default_allow)
		return pk_err(-EINVAL, "KVM_X86_SET_MSR_FILTER: deny by default with no range "
			      "would deny every MSR");
	for (int i = 0; i < 2; i++) {
		if (ka->msr_filter_buf[i])
			continue;
		ka->msr_filter_buf[i] = pk_kzalloc(kvm->m, sizeof(struct kvm_x86_msr_filter), 8);
		if (!ka->msr_filter_buf[i])
			return pk_err(-ENOMEM, "no kernel memory left for an MSR filter");
	}
	/* Build the new filter where the one in force is not, then swap it in. */
	new_filter = ka->msr_filter == ka->msr_filter_buf[0] ? ka->msr_filter_buf[1]
							     : ka->msr_filter_buf[0];
	new_filter->count = 0;
	new_filter->default_allow = default_allow;
	for (int i = 0; i < KVM_MSR_FILTER_MAX_RANGES; i++) {
		r = kvm_add_msr_filter(new_filter, &filter->ranges[i]);
		if (r)
			return r;
	}
	ka->msr_filter = new_filter;
	/* Userspace may want to see accesses KVM would otherwise pass through. */
	for (int i = 0; i < kvm->nr_vcpus; i++)
		kvm_make_request(KVM_REQ_RECALC_INTERCEPTS, kvm->vcpus[i]);
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

/* kernel: kvm_enable_efer_bits(): a vendor lets guests own more EFER bits (SVME). */
void kvm_enable_efer_bits(u64 mask)
{
	kvm_global()->efer_reserved_bits &= ~mask;
}

/* kernel: __kvm_valid_efer(): the features behind each EFER bit, in the guest's CPUID. */
static bool __kvm_valid_efer(struct kvm_vcpu *vcpu, u64 efer)
{
	if ((efer & EFER_SVME) && !guest_cpu_cap_has(vcpu, X86_FEATURE_SVM))
		return false;
	if ((efer & (EFER_LME | EFER_LMA)) && !guest_cpu_cap_has(vcpu, X86_FEATURE_LM))
		return false;
	if ((efer & EFER_NX) && !guest_cpu_cap_has(vcpu, X86_FEATURE_NX))
		return false;
	return true;
}

/* kernel: kvm_valid_efer() (x86.c). */
bool kvm_valid_efer(struct kvm_vcpu *vcpu, u64 efer)
{
	if (efer & kvm_global()->efer_reserved_bits)
		return false;
	return __kvm_valid_efer(vcpu, efer);
}

/*
 * kernel: set_efer(). Reserved bits are refused for everyone; the guest's CPUID and the
 * "no LME change with paging on" rule only bind the guest. LMA is the CPU's: a write,
 * host-initiated or not, keeps the current value (KVM_SET_SREGS is how it changes).
 */
static int set_efer(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	u64 old_efer = vcpu->arch.efer;
	u64 efer = msr_info->data;
	int r;

	if (efer & kvm_global()->efer_reserved_bits)
		return 1;
	if (!msr_info->host_initiated) {
		if (!__kvm_valid_efer(vcpu, efer))
			return 1;
		/* LME may not change while paging is on (SDM 2.2.1). */
		if ((vcpu->arch.cr0 & X86_CR0_PG) && ((efer ^ old_efer) & EFER_LME))
			return 1;
	}
	efer &= ~EFER_LMA;
	efer |= vcpu->arch.efer & EFER_LMA;

	r = kvm_x86_call(set_efer)(vcpu, efer);
	return r ? 1 : 0;
}

/* Helpers safe only for a bank MSR (0x400 + 4 * bank + register). */
static bool is_mci_control_msr(u32 msr) { return (msr & 3) == 0; }
static bool is_mci_status_msr(u32 msr) { return (msr & 3) == 1; }

/* On AMD, HWCR.McStatusWrEn (bit 18) lets MCi_STATUS take non-zero values. */
static bool can_set_mci_status(struct kvm_vcpu *vcpu)
{
	if (guest_cpuid_is_amd_compatible(vcpu))
		return !!(vcpu->arch.msr_hwcr & BIT_ULL(18));
	return false;
}

/* Machine-check MSR writes (kernel: set_msr_mce). */
static int set_msr_mce(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	u64 mcg_cap = vcpu->arch.mcg_cap;
	u32 bank_num = mcg_cap & MCG_BANKCNT_MASK;
	u32 msr = msr_info->index;
	u64 data = msr_info->data;
	u32 last_msr;

	switch (msr) {
	case MSR_IA32_MCG_STATUS:
		vcpu->arch.mcg_status = data;
		break;
	case MSR_IA32_MCG_CTL:
		if (!(mcg_cap & MCG_CTL_P) && (data || !msr_info->host_initiated))
			return 1;
		if (data != 0 && data != ~(u64)0)
			return 1;
		vcpu->arch.mcg_ctl = data;
		break;
	case MSR_IA32_MC0_CTL2 ... MSR_IA32_MCx_CTL2(KVM_MAX_MCE_BANKS) - 1:
		last_msr = MSR_IA32_MCx_CTL2(bank_num) - 1;
		if (msr > last_msr)
			return 1;
		if (!(mcg_cap & MCG_CMCI_P) && (data || !msr_info->host_initiated))
			return 1;
		/* A 1 written to a reserved bit raises #GP. */
		if (data & ~(MCI_CTL2_CMCI_EN | MCI_CTL2_CMCI_THRESHOLD_MASK))
			return 1;
		vcpu->arch.mci_ctl2_banks[msr - MSR_IA32_MC0_CTL2] = data;
		break;
	case MSR_IA32_MC0_CTL ... MSR_IA32_MCx_CTL(KVM_MAX_MCE_BANKS) - 1:
		last_msr = MSR_IA32_MCx_CTL(bank_num) - 1;
		if (msr > last_msr)
			return 1;
		/*
		 * Only 0 or all ones go into MCi_CTL; Linux clears bit 10 of bank 4 (a K8
		 * GART erratum) and UnixWare bit 0 of MC1_CTL, so those may be clear.
		 */
		if (is_mci_control_msr(msr) && data != 0 && (data | (1 << 10) | 1) != ~(u64)0)
			return 1;
		/* Every CPU lets MCi_STATUS be cleared; other values only from the host. */
		if (!msr_info->host_initiated && is_mci_status_msr(msr) && data != 0 &&
		    !can_set_mci_status(vcpu))
			return 1;
		vcpu->arch.mce_banks[msr - MSR_IA32_MC0_CTL] = data;
		break;
	default:
		return 1;
	}
	return 0;
}

/* Machine-check MSR reads (kernel: get_msr_mce). */
static int get_msr_mce(struct kvm_vcpu *vcpu, u32 msr, u64 *pdata, bool host)
{
	u64 mcg_cap = vcpu->arch.mcg_cap;
	u32 bank_num = mcg_cap & MCG_BANKCNT_MASK;
	u32 last_msr;
	u64 data;

	switch (msr) {
	case MSR_IA32_P5_MC_ADDR:
	case MSR_IA32_P5_MC_TYPE:
		data = 0;
		break;
	case MSR_IA32_MCG_CAP:
		data = vcpu->arch.mcg_cap;
		break;
	case MSR_IA32_MCG_CTL:
		if (!(mcg_cap & MCG_CTL_P) && !host)
			return 1;
		data = vcpu->arch.mcg_ctl;
		break;
	case MSR_IA32_MCG_STATUS:
		data = vcpu->arch.mcg_status;
		break;
	case MSR_IA32_MC0_CTL2 ... MSR_IA32_MCx_CTL2(KVM_MAX_MCE_BANKS) - 1:
		last_msr = MSR_IA32_MCx_CTL2(bank_num) - 1;
		if (msr > last_msr)
			return 1;
		if (!(mcg_cap & MCG_CMCI_P) && !host)
			return 1;
		data = vcpu->arch.mci_ctl2_banks[msr - MSR_IA32_MC0_CTL2];
		break;
	case MSR_IA32_MC0_CTL ... MSR_IA32_MCx_CTL(KVM_MAX_MCE_BANKS) - 1:
		last_msr = MSR_IA32_MCx_CTL(bank_num) - 1;
		if (msr > last_msr)
			return 1;
		data = vcpu->arch.mce_banks[msr - MSR_IA32_MC0_CTL];
		break;
	default:
		return 1;
	}
	*pdata = data;
	return 0;
}

int kvm_set_msr_common(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	u64 data = msr_info->data;

	switch (msr_info->index) {
	case MSR_VM_HSAVE_PA:
		/* Nested SVM is not modelled: the value has nowhere to go. */
		break;
	case MSR_IA32_UCODE_REV:
		if (msr_info->host_initiated)
			vcpu->arch.microcode_version = data;
		break;
	case MSR_IA32_PERF_CAPABILITIES:
		/* Needs CPUID PDCM, which the model never offers (no vPMU). */
		return KVM_MSR_RET_UNSUPPORTED;
	case MSR_EFER:
		return set_efer(vcpu, msr_info);
	case MSR_K7_HWCR:
		/* Flush-filter, IGNNE-emulation and TLB-cache-disable writes are ignored. */
		data &= ~(u64)0x40;
		data &= ~(u64)0x100;
		data &= ~(u64)0x8;
		/* McStatusWrEn and TscFreqSel may be set. */
		if (data & ~(BIT_ULL(18) | BIT_ULL(24)))
			return 1;
		vcpu->arch.msr_hwcr = data;
		break;
	case MSR_IA32_CR_PAT:
		if (!kvm_pat_valid(data))
			return 1;
		vcpu->arch.pat = data;
		return 0;
	case MSR_IA32_APICBASE:
		return kvm_apic_set_base(vcpu, data, msr_info->host_initiated);
	case APIC_BASE_MSR ... APIC_BASE_MSR + 0xff:
		return kvm_x2apic_msr_write(vcpu, msr_info->index, data);
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
	case MSR_IA32_POWER_CTL:
		vcpu->arch.msr_ia32_power_ctl = data;
		break;
	case MSR_IA32_TSC_DEADLINE:
		kvm_set_lapic_tscdeadline_msr(vcpu, data);
		return 0;
	case MSR_IA32_PRED_CMD: {
		u64 reserved_bits = ~(u64)PRED_CMD_IBPB;

		if (!msr_info->host_initiated && !vcpu->arch.cap_ibpb)
			return 1;
		if (!this_machine()->model.has_ibpb)
			reserved_bits |= PRED_CMD_IBPB;
		if (data & reserved_bits)
			return 1;
		if (data)
			wrmsrl(MSR_IA32_PRED_CMD, data);
		return 0;
	}
	case MSR_IA32_FLUSH_CMD:
		if (!msr_info->host_initiated && !guest_cpu_cap_has(vcpu, X86_FEATURE_FLUSH_L1D))
			return 1;
		/* No model CPU has L1D_FLUSH (boot_cpu_has(X86_FEATURE_FLUSH_L1D) is false). */
		return 1;
	case MSR_IA32_MCG_CTL:
	case MSR_IA32_MCG_STATUS:
	case MSR_IA32_MC0_CTL ... MSR_IA32_MCx_CTL(KVM_MAX_MCE_BANKS) - 1:
	case MSR_IA32_MC0_CTL2 ... MSR_IA32_MCx_CTL2(KVM_MAX_MCE_BANKS) - 1:
		return set_msr_mce(vcpu, msr_info);
	case MSR_PLATFORM_INFO:
		if (!msr_info->host_initiated)
			return 1;
		vcpu->arch.msr_platform_info = data;
		break;
	default:
		return KVM_MSR_RET_UNSUPPORTED;
	}
	return 0;
}

int kvm_get_msr_common(struct kvm_vcpu *vcpu, struct msr_data *msr_info)
{
	switch (msr_info->index) {
	case MSR_VM_HSAVE_PA:
		msr_info->data = 0;
		return 0;
	case MSR_IA32_UCODE_REV:
		msr_info->data = vcpu->arch.microcode_version;
		return 0;
	case MSR_IA32_PERF_CAPABILITIES:
		return KVM_MSR_RET_UNSUPPORTED;
	case MSR_IA32_POWER_CTL:
		msr_info->data = vcpu->arch.msr_ia32_power_ctl;
		return 0;
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
		msr_info->data = kvm_get_lapic_tscdeadline_msr(vcpu);
		return 0;
	case MSR_IA32_APICBASE:
		msr_info->data = vcpu->arch.apic_base;
		return 0;
	case APIC_BASE_MSR ... APIC_BASE_MSR + 0xff:
		return kvm_x2apic_msr_read(vcpu, msr_info->index, &msr_info->data);
	case MSR_IA32_TSC:
		msr_info->data = this_cpu()->tsc;
		return 0;
	case MSR_IA32_P5_MC_ADDR:
	case MSR_IA32_P5_MC_TYPE:
	case MSR_IA32_MCG_CAP:
	case MSR_IA32_MCG_CTL:
	case MSR_IA32_MCG_STATUS:
	case MSR_IA32_MC0_CTL ... MSR_IA32_MCx_CTL(KVM_MAX_MCE_BANKS) - 1:
	case MSR_IA32_MC0_CTL2 ... MSR_IA32_MCx_CTL2(KVM_MAX_MCE_BANKS) - 1:
		return get_msr_mce(vcpu, msr_info->index, &msr_info->data,
				   msr_info->host_initiated);
	case MSR_PLATFORM_INFO:
		if (!msr_info->host_initiated && !vcpu->kvm->arch.guest_can_read_msr_platform_info)
			return 1;
		msr_info->data = vcpu->arch.msr_platform_info;
		return 0;
	case MSR_K7_HWCR:
		msr_info->data = vcpu->arch.msr_hwcr;
		return 0;
	default:
		return KVM_MSR_RET_UNSUPPORTED;
	}
}

/*
 * kernel: __kvm_set_msr(): architectural checks common to both vendors, then the vendor.
 * Returns 0, 1 (an invalid access) or KVM_MSR_RET_UNSUPPORTED.
 */
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
	/*
	 * CET: KVM never offers SHSTK or IBT on the model's CPUs, so these MSRs do not
	 * exist for any guest; the checks that follow in upstream have nothing to check.
	 */
	case MSR_IA32_U_CET:
	case MSR_IA32_S_CET:
		if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK) &&
		    !guest_cpu_cap_has(vcpu, X86_FEATURE_IBT))
			return KVM_MSR_RET_UNSUPPORTED;
		return 1;
	case MSR_KVM_INTERNAL_GUEST_SSP:
		if (!host_initiated)
			return 1;
		/* fallthrough */
	case MSR_IA32_PL0_SSP ... MSR_IA32_INT_SSP_TAB:
		if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK))
			return KVM_MSR_RET_UNSUPPORTED;
		return 1;
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

	switch (index) {
	case MSR_TSC_AUX:
		if (!kvm_is_supported_user_return_msr(MSR_TSC_AUX))
			return 1;
		if (!host_initiated && !vcpu->arch.cap_rdtscp && !vcpu->arch.cap_rdpid)
			return 1;
		break;
	case MSR_IA32_U_CET:
	case MSR_IA32_S_CET:
		if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK) &&
		    !guest_cpu_cap_has(vcpu, X86_FEATURE_IBT))
			return KVM_MSR_RET_UNSUPPORTED;
		return 1;
	case MSR_KVM_INTERNAL_GUEST_SSP:
		if (!host_initiated)
			return 1;
		/* fallthrough */
	case MSR_IA32_PL0_SSP ... MSR_IA32_INT_SSP_TAB:
		if (!guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK))
			return KVM_MSR_RET_UNSUPPORTED;
		return 1;
	}
	msr.index = index;
	msr.host_initiated = host_initiated;
	ret = kvm_x86_call(get_msr)(vcpu, &msr);
	if (!ret)
		*data = msr.data;
	return ret;
}

/*
 * kernel: kvm_do_msr_access(). Reads that fail give 0. An MSR KVM does not know fails,
 * except that userspace may read, and write 0 to, the MSRs KVM advertises, and that
 * kvm.ignore_msrs turns the failure into success.
 */
static int kvm_do_msr_access(struct kvm_vcpu *vcpu, u32 msr, u64 *data, bool host_initiated,
			     bool write)
{
	int ret = write ? __kvm_set_msr(vcpu, msr, *data, host_initiated)
			: __kvm_get_msr(vcpu, msr, data, host_initiated);

	if (ret && !write)
		*data = 0;
	if (ret != KVM_MSR_RET_UNSUPPORTED)
		return ret;
	if (host_initiated && !*data && kvm_is_advertised_msr(msr))
		return 0;
	if (!kvm_global()->params.ignore_msrs)
		return ret;
	return 0;
}

/* 0 on success, else 1 or KVM_MSR_RET_UNSUPPORTED (kernel: kvm_get_msr_ignored_check). */
int kvm_get_msr(struct kvm_vcpu *vcpu, u32 index, u64 *data, bool host_initiated)
{
	return kvm_do_msr_access(vcpu, index, data, host_initiated, false);
}

/*
 * kernel: kvm_set_msr_ignored_check(), and for userspace do_set_msr(): feature MSRs may
 * not change once the vCPU has run (writing the same value is fine).
 */
int kvm_set_msr(struct kvm_vcpu *vcpu, u32 index, u64 data, bool host_initiated)
{
	u64 val;

	if (host_initiated && kvm_vcpu_has_run(vcpu) && kvm_is_immutable_feature_msr(index) &&
	    (kvm_get_msr(vcpu, index, &val, true) || data != val))
		return -EINVAL;
	return kvm_do_msr_access(vcpu, index, &data, host_initiated, true);
}

/* A guest access: the VM's filter first (kernel: kvm_emulate_msr_read/write). */
static int kvm_emulate_msr_read(struct kvm_vcpu *vcpu, u32 index, u64 *data)
{
	if (!kvm_msr_allowed(vcpu, index, KVM_MSR_FILTER_READ))
		return KVM_MSR_RET_FILTERED;
	return kvm_get_msr(vcpu, index, data, false);
}

static int kvm_emulate_msr_write(struct kvm_vcpu *vcpu, u32 index, u64 data)
{
	if (!kvm_msr_allowed(vcpu, index, KVM_MSR_FILTER_WRITE))
		return KVM_MSR_RET_FILTERED;
	return kvm_set_msr(vcpu, index, data, false);
}

int kvm_complete_insn_gp(struct kvm_vcpu *vcpu, int err)
{
	if (err) {
		kvm_inject_gp(vcpu, 0);
		return 1;
	}
	return kvm_skip_emulated_instruction(vcpu);
}

/* ---- userspace MSR exits (KVM_CAP_X86_USER_SPACE_MSR) ---- */

static void complete_userspace_rdmsr(struct kvm_vcpu *vcpu)
{
	if (!vcpu->run.msr.error) {
		kvm_register_write(vcpu, VCPU_REGS_RAX, (u32)vcpu->run.msr.data);
		kvm_register_write(vcpu, VCPU_REGS_RDX, vcpu->run.msr.data >> 32);
	}
}

/* Userspace answered: #GP if it set msr.error, else the instruction completes. */
static int complete_fast_msr_access(struct kvm_vcpu *vcpu)
{
	return kvm_x86_call(complete_emulated_msr)(vcpu, vcpu->run.msr.error);
}

static int complete_fast_rdmsr(struct kvm_vcpu *vcpu)
{
	complete_userspace_rdmsr(vcpu);
	return complete_fast_msr_access(vcpu);
}

static u32 kvm_msr_reason(int r)
{
	switch (r) {
	case KVM_MSR_RET_UNSUPPORTED:
		return KVM_MSR_EXIT_REASON_UNKNOWN;
	case KVM_MSR_RET_FILTERED:
		return KVM_MSR_EXIT_REASON_FILTER;
	default:
		return KVM_MSR_EXIT_REASON_INVAL;
	}
}

/* 1 if the failed access goes to userspace: the VMM asked for this kind of failure. */
static int kvm_msr_user_space(struct kvm_vcpu *vcpu, u32 index, u32 exit_reason, u64 data,
			      int (*completion)(struct kvm_vcpu *vcpu), int r)
{
	u32 msr_reason = kvm_msr_reason(r);

	if (!(vcpu->kvm->arch.user_space_msr_mask & msr_reason))
		return 0;
	vcpu->run.exit_reason = exit_reason;
	vcpu->run.msr.error = 0;
	memset(vcpu->run.msr.pad, 0, sizeof(vcpu->run.msr.pad));
	vcpu->run.msr.reason = msr_reason;
	vcpu->run.msr.index = index;
	vcpu->run.msr.data = data;
	vcpu->arch.complete_userspace_io = completion;
	return 1;
}

int kvm_emulate_rdmsr(struct kvm_vcpu *vcpu)
{
	u32 ecx = kvm_rcx_read(vcpu);
	u64 data;
	int r;

	vcpu->stat.msr_exits++;
	r = kvm_emulate_msr_read(vcpu, ecx, &data);
	if (!r) {
		pk_trace(vcpu->kvm->m, PK_TR_KVM_MSR, smp_processor_id(), ecx, data);
		kvm_register_write(vcpu, VCPU_REGS_RAX, data & 0xffffffffULL);
		kvm_register_write(vcpu, VCPU_REGS_RDX, data >> 32);
	} else if (kvm_msr_user_space(vcpu, ecx, KVM_EXIT_X86_RDMSR, 0, complete_fast_rdmsr, r)) {
		return 0;
	}
	return kvm_x86_call(complete_emulated_msr)(vcpu, r);
}

int kvm_emulate_wrmsr(struct kvm_vcpu *vcpu)
{
	u32 ecx = kvm_rcx_read(vcpu);
	u64 data = kvm_read_edx_eax(vcpu);
	int r;

	vcpu->stat.msr_exits++;
	r = kvm_emulate_msr_write(vcpu, ecx, data);
	if (!r) {
		pk_trace(vcpu->kvm->m, PK_TR_KVM_MSR, smp_processor_id(), (1ULL << 32) | ecx, data);
	} else {
		if (kvm_msr_user_space(vcpu, ecx, KVM_EXIT_X86_WRMSR, data,
				       complete_fast_msr_access, r))
			return 0;
		/* Other negative errors go to userspace as they are. */
		if (r < 0)
			return r;
	}
	return kvm_x86_call(complete_emulated_msr)(vcpu, r);
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

/*
 * KVM_GET_MSRS / KVM_SET_MSRS (msr_io, __msr_io): the count processed, stopping at the
 * first failure; MAX_IO_MSRS entries or more are refused whole (E2BIG).
 */
int kvm_vcpu_ioctl_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n, bool set)
{
	u32 i;

	if (n >= MAX_IO_MSRS)
		return pk_err(-E2BIG, "%u MSRs in one KVM_%s_MSRS: fewer than MAX_IO_MSRS (%d)",
			      n, set ? "SET" : "GET", MAX_IO_MSRS);
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
 * The vCPU's runnable state and the wake events of a halted vCPU (kernel: x86.c). The
 * LAPIC timer is lapic.c's; an expired deadline stands in for the interrupt it would
 * raise (docs/simplifications.md).
 * ---------------------------------------------------------------------------------- */

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

/*
 * kernel: __kvm_migrate_timers() (irq.c), on KVM_REQ_MIGRATE_TIMER and when the vCPU's
 * thread moves (pk_vcpu_migrate): the vCPU's host timers go to the CPU this runs on. The
 * model has no PIT and no posted-interrupt wakeup timer; it has the kick timer that
 * stands for another vCPU's KVM_HC_KICK_CPU.
 */
void __kvm_migrate_timers(struct kvm_vcpu *vcpu)
{
	__kvm_migrate_apic_timer(vcpu);
	hrtimer_migrate_here(&vcpu->arch.kick_timer);
}

/* kernel: kvm_set_mp_state(); a runnable vCPU has no kick left over. */
static void kvm_set_mp_state(struct kvm_vcpu *vcpu, u32 mp_state)
{
	vcpu->arch.mp_state = mp_state;
	if (mp_state == KVM_MP_STATE_RUNNABLE)
		vcpu->arch.pv.pv_unhalted = false;
}

static bool kvm_vcpu_running(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.mp_state == KVM_MP_STATE_RUNNABLE;
}

/*
 * kvm_vcpu_has_events(): a wake event is pending. Of upstream's the model has a PV kick
 * and the LAPIC timer, whose pending expiry counts as the interrupt it would raise.
 */
static bool kvm_vcpu_has_events(struct kvm_vcpu *vcpu)
{
	return vcpu->arch.pv.pv_unhalted || kvm_cpu_has_pending_timer(vcpu);
}

bool kvm_arch_vcpu_runnable(struct kvm_vcpu *vcpu)
{
	return kvm_vcpu_running(vcpu) || kvm_vcpu_has_events(vcpu);
}

/*
 * vcpu_block(): a halted vCPU waits in kvm_vcpu_halt (polling, then blocking), one in
 * another state (an AP waiting for INIT/SIPI) in kvm_vcpu_block, until a wake event or
 * a signal. The guest's timer moves to a host hrtimer meanwhile, since the preemption
 * timer runs only in guest mode (and before polling, so an expiry is seen by it).
 */
static int vcpu_block(struct kvm_vcpu *vcpu)
{
	bool hv_timer;

	if (!kvm_arch_vcpu_runnable(vcpu)) {
		hv_timer = kvm_lapic_hv_timer_in_use(vcpu);
		if (hv_timer)
			kvm_lapic_switch_to_sw_timer(vcpu);
		if (vcpu->arch.mp_state == KVM_MP_STATE_HALTED)
			kvm_vcpu_halt(vcpu);
		else
			kvm_vcpu_block(vcpu);
		if (hv_timer)
			kvm_lapic_switch_to_hv_timer(vcpu);
		/* Woken by something else (a signal): service it, still halted. */
		if (!kvm_arch_vcpu_runnable(vcpu))
			return 1;
	}
	switch (vcpu->arch.mp_state) {
	case KVM_MP_STATE_HALTED:
	case KVM_MP_STATE_AP_RESET_HOLD:
		kvm_set_mp_state(vcpu, KVM_MP_STATE_RUNNABLE);
		break;
	default:
		/*
		 * INIT_RECEIVED waits for a SIPI, which nothing in the model sends. A kick
		 * does not end that wait, yet keeps the vCPU from blocking: upstream goes
		 * round vcpu_run until a signal, so the run's alarm comes now.
		 */
		if (!kvm_cpu_has_pending_timer(vcpu))
			current_task()->signal_pending = true;
		break;
	}
	return 1;
}

/* ------------------------------------------------------------------------------------
 * Exceptions, instruction skipping, HLT, hypercalls
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

/*
 * kernel: __kvm_emulate_halt(). The vCPU has halted. With the LAPIC in the kernel the
 * run loop sees it is not runnable and halts it (vcpu_block), unless a wake event is
 * already pending; without, HLT goes to userspace, which handles the wake-up events.
 */
static int __kvm_emulate_halt(struct kvm_vcpu *vcpu, u32 state, u32 reason)
{
	++vcpu->stat.halt_exits;
	if (lapic_in_kernel(vcpu)) {
		if (kvm_vcpu_has_events(vcpu))
			vcpu->arch.pv.pv_unhalted = false;
		else
			kvm_set_mp_state(vcpu, state);
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
	vcpu->arch.mmio_data = 0;
	memcpy(&vcpu->arch.mmio_data, vcpu->run.mmio.data, vcpu->arch.mmio_len);
	vcpu->arch.mmio_read_pending = true;
	return 1;
}

/*
 * The in-kernel LAPIC takes the emulated access before userspace sees it (kernel:
 * emulator_read_write -> vcpu_mmio_write/vcpu_mmio_read try the LAPIC first), and the
 * emulator then completes the instruction in the kernel. True if the LAPIC took it.
 */
static bool kvm_lapic_handle_mmio(struct kvm_vcpu *vcpu, const struct pk_guest_event *ev)
{
	u64 rflags, data;

	if (!lapic_in_kernel(vcpu))
		return false;
	if (ev->write) {
		if (kvm_lapic_mmio_write(vcpu, ev->gpa, ev->len, ev->data))
			return false;
		kvm_emulate_writeback(vcpu, ev->insn_len);
		return true;
	}
	if (kvm_lapic_mmio_read(vcpu, ev->gpa, ev->len, &data))
		return false;
	/* The writeback's accesses; RIP moves when the load is re-executed with the value. */
	rflags = kvm_x86_call(get_rflags)(vcpu);
	(void)kvm_x86_call(get_interrupt_shadow)(vcpu);
	kvm_x86_call(set_rflags)(vcpu, rflags);
	vcpu->arch.mmio_gpa = ev->gpa;
	vcpu->arch.mmio_len = ev->len;
	vcpu->arch.mmio_data = data;
	vcpu->arch.mmio_read_pending = true;
	return true;
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

	if (ev->len == 0 || ev->len > 8)
		return kvm_handle_unexpected_exit(vcpu, ev->kind);
	kvm_emulate_prologue(vcpu);
	if (kvm_lapic_handle_mmio(vcpu, ev))
		return 1;
	vcpu->stat.mmio_exits++;
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

	cpu->mmio_fill_valid = true;
	cpu->mmio_fill_gpa = vcpu->arch.mmio_gpa;
	cpu->mmio_fill_data = vcpu->arch.mmio_data;
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
	if (unlikely(kvm_request_pending(vcpu))) {
		if (kvm_check_request(KVM_REQ_MIGRATE_TIMER, vcpu))
			__kvm_migrate_timers(vcpu);
		if (kvm_check_request(KVM_REQ_RECALC_INTERCEPTS, vcpu))
			kvm_x86_call(recalc_intercepts)(vcpu);
	}
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
	/*
	 * An AP waits for INIT/SIPI in kvm_vcpu_block. Nothing in the model sends them: a
	 * signal ends the wait (the run's alarm, once the pCPU has nothing left to wait
	 * for), or a kick, which leaves the vCPU waiting and KVM_RUN failing with EAGAIN.
	 */
	if (unlikely(vcpu->arch.mp_state == KVM_MP_STATE_UNINITIALIZED)) {
		r = -EINTR;
		if (!kvm_run->immediate_exit) {
			kvm_vcpu_block(vcpu);
			if (!current_task()->signal_pending) {
				r = -EAGAIN;
				goto out;
			}
		}
		kvm_run->exit_reason = KVM_EXIT_INTR;
		goto out;
	}
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
 * vCPU load/put (kvm_arch_vcpu_load/put)
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
	if (__atomic_load_n(&g->last_vcpu[cpu], __ATOMIC_RELAXED) != vcpu) {
		if (this_machine()->model.has_ibpb)
			wrmsrl(MSR_IA32_PRED_CMD, PRED_CMD_IBPB);
		__atomic_store_n(&g->last_vcpu[cpu], vcpu, __ATOMIC_RELAXED);
	}
	kvm_x86_call(vcpu_load)(vcpu, cpu);
	if (vcpu->cpu != cpu) {
		if (vcpu->cpu != -1)
			vcpu->stat.migrations++;
		/* A LAPIC timer on a host hrtimer follows the vCPU to its new CPU. */
		kvm_make_request(KVM_REQ_MIGRATE_TIMER, vcpu);
	}
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

/* ------------------------------------------------------------------------------------
 * vCPU creation and reset (kernel: kvm_arch_vcpu_create, kvm_vcpu_reset)
 * ---------------------------------------------------------------------------------- */

int kvm_arch_vcpu_create(struct kvm_vcpu *vcpu)
{
	int r;

	/* With an in-kernel irqchip only the BSP runs at once; APs wait for INIT/SIPI. */
	if (!irqchip_in_kernel(vcpu->kvm) || kvm_vcpu_is_reset_bsp(vcpu))
		vcpu->arch.mp_state = KVM_MP_STATE_RUNNABLE;
	else
		vcpu->arch.mp_state = KVM_MP_STATE_UNINITIALIZED;
	r = kvm_create_lapic(vcpu);
	if (r)
		return r;
	/* Every bank exists until KVM_X86_SETUP_MCE says how many the guest has. */
	vcpu->arch.mcg_cap = KVM_MAX_MCE_BANKS;
	/* KVM_X86_QUIRK_STUFF_FEATURE_MSRS (on by default). */
	vcpu->arch.msr_platform_info = MSR_PLATFORM_INFO_CPUID_FAULT;
	r = kvm_x86_call(vcpu_create)(vcpu);
	if (r)
		kvm_free_lapic(vcpu);
	return r;
}

void kvm_vcpu_reset(struct kvm_vcpu *vcpu, bool init_event)
{
	kvm_lapic_reset(vcpu, init_event);
	if (!init_event) {
		vcpu->arch.msr_ia32_power_ctl = 0;
		vcpu->arch.microcode_version = 0x100000000ULL;
	}
	kvm_x86_call(vcpu_reset)(vcpu, init_event);
}

/*
 * kernel: kvm_arch_vcpu_destroy(): the vendor frees its part (a VMCS is VMCLEARed where
 * it is loaded), then the CPUID table. No CPU may remember the vCPU as the last one to
 * run there (as svm_clear_current_vmcb() forgets a freed VMCB on every CPU).
 */
void kvm_arch_vcpu_destroy(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct kvm_x86_global *g = kvm_global();

	/* No timer of the vCPU may fire after it is gone: the PV kick's, then the LAPIC's. */
	hrtimer_cancel(&vcpu->arch.kick_timer);
	kvm_x86_call(vcpu_free)(vcpu);
	kvm_free_lapic(vcpu);
	for (u32 c = 0; c < m->nr_cpus; c++) {
		struct kvm_vcpu *expected = vcpu;

		__atomic_compare_exchange_n(&g->last_vcpu[c], &expected, NULL, false,
					    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
	}
	pk_kfree(m, vcpu->arch.cpuid_entries,
		 vcpu->arch.cpuid_nent * sizeof(*vcpu->arch.cpuid_entries), 64);
	vcpu->arch.cpuid_entries = NULL;
	vcpu->arch.cpuid_nent = 0;
}

/* ------------------------------------------------------------------------------------
 * KVM_GET/SET_REGS, KVM_GET/SET_SREGS (kvm_arch_vcpu_ioctl_*)
 * ---------------------------------------------------------------------------------- */

int kvm_arch_vcpu_ioctl_get_regs(struct kvm_vcpu *vcpu, struct pk_regs *regs)
{
	vcpu_load(vcpu);
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		regs->gpr[i] = kvm_register_read(vcpu, i);
	regs->rip = kvm_rip_read(vcpu);
	regs->rflags = kvm_x86_call(get_rflags)(vcpu);
	vcpu_put(vcpu);
	return 0;
}

/* kernel: __set_regs(): any values; RFLAGS gets its fixed bit; a pending fault is dropped. */
int kvm_arch_vcpu_ioctl_set_regs(struct kvm_vcpu *vcpu, const struct pk_regs *regs)
{
	vcpu_load(vcpu);
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		kvm_register_write(vcpu, i, regs->gpr[i]);
	kvm_rip_write(vcpu, regs->rip);
	kvm_x86_call(set_rflags)(vcpu, regs->rflags | X86_EFLAGS_FIXED);
	vcpu->arch.exception.pending = false;
	vcpu_put(vcpu);
	return 0;
}

int kvm_arch_vcpu_ioctl_get_sregs(struct kvm_vcpu *vcpu, struct pk_sregs *s)
{
	vcpu_load(vcpu);
	for (int i = 0; i < NR_VCPU_SREGS; i++)
		kvm_x86_call(get_segment)(vcpu, &s->seg[i], i);
	kvm_x86_call(get_gdt)(vcpu, &s->gdt);
	kvm_x86_call(get_idt)(vcpu, &s->idt);
	s->cr0 = vcpu->arch.cr0;
	s->cr2 = vcpu->arch.cr2;
	s->cr3 = vcpu->arch.cr3;
	s->cr4 = vcpu->arch.cr4;
	s->efer = vcpu->arch.efer;
	s->apic_base = vcpu->arch.apic_base;
	vcpu_put(vcpu);
	return 0;
}

/* kernel: kvm_is_valid_cr0() (x86.c), then the vendor's is_valid_cr0. */
static bool kvm_is_valid_cr0(struct kvm_vcpu *vcpu, u64 cr0)
{
	if (cr0 & 0xffffffff00000000ULL)
		return false;
	if ((cr0 & X86_CR0_NW) && !(cr0 & X86_CR0_CD))
		return false;
	if ((cr0 & X86_CR0_PG) && !(cr0 & X86_CR0_PE))
		return false;
	return kvm_x86_call(is_valid_cr0)(vcpu, cr0);
}

/* kernel: __kvm_is_valid_cr4() (the guest's CPUID) and the vendor's is_valid_cr4. */
static bool kvm_is_valid_cr4(struct kvm_vcpu *vcpu, u64 cr4)
{
	if (cr4 & vcpu->arch.cr4_guest_rsvd_bits)
		return false;
	return kvm_x86_call(is_valid_cr4)(vcpu, cr4);
}

/*
 * kernel: kvm_is_valid_sregs() (x86.c, torvalds/linux 2025: with kvm_valid_efer()).
 * Paging with EFER.LME is 64-bit mode: it needs CR4.PAE, EFER.LMA and a CR3 within
 * MAXPHYADDR; outside it EFER.LMA is clear and CS cannot be a 64-bit segment.
 */
static const char *kvm_is_valid_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *s)
{
	if ((s->efer & EFER_LME) && (s->cr0 & X86_CR0_PG)) {
		if (!(s->cr4 & X86_CR4_PAE))
			return "EFER.LME with CR0.PG (64-bit mode) needs CR4.PAE";
		if (!(s->efer & EFER_LMA))
			return "EFER.LME with CR0.PG (64-bit mode) needs EFER.LMA";
		if (!kvm_vcpu_is_legal_gpa(vcpu, s->cr3))
			return "CR3 has bits above the guest's MAXPHYADDR";
	} else {
		if (s->efer & EFER_LMA)
			return "EFER.LMA without EFER.LME and CR0.PG";
		if (s->seg[VCPU_SREG_CS].l)
			return "CS.L (a 64-bit code segment) outside 64-bit mode";
	}
	if (!kvm_is_valid_cr4(vcpu, s->cr4))
		return "CR4 sets a reserved bit or one the guest's CPUID lacks";
	if (!kvm_is_valid_cr0(vcpu, s->cr0))
		return "CR0 sets bits 63:32, NW without CD, or PG without PE";
	if (!kvm_valid_efer(vcpu, s->efer))
		return "EFER sets a reserved bit or one the guest's CPUID lacks";
	return NULL;
}

/* kernel: __set_sregs_common(): checked whole first, then applied. */
int kvm_arch_vcpu_ioctl_set_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *s)
{
	const char *why = kvm_is_valid_sregs(vcpu, s);
	struct desc_ptr dt;
	struct kvm_segment seg;
	int r = 0;

	if (why)
		return pk_err(-EINVAL, "KVM_SET_SREGS: %s (cr0 %#llx cr4 %#llx efer %#llx)", why,
			      (unsigned long long)s->cr0, (unsigned long long)s->cr4,
			      (unsigned long long)s->efer);
	vcpu_load(vcpu);
	if (kvm_apic_set_base(vcpu, s->apic_base, true)) {
		r = pk_err(-EINVAL, "KVM_SET_SREGS: APIC base %#llx sets reserved bits or an "
			   "invalid mode", (unsigned long long)s->apic_base);
		goto out;
	}
	dt = s->idt;
	kvm_x86_call(set_idt)(vcpu, &dt);
	dt = s->gdt;
	kvm_x86_call(set_gdt)(vcpu, &dt);
	vcpu->arch.cr2 = s->cr2;
	vcpu->arch.cr3 = s->cr3;
	kvm_x86_call(set_efer)(vcpu, s->efer);
	kvm_x86_call(set_cr0)(vcpu, s->cr0);
	kvm_x86_call(set_cr4)(vcpu, s->cr4);
	for (int i = 0; i < NR_VCPU_SREGS; i++) {
		seg = s->seg[i];
		kvm_x86_call(set_segment)(vcpu, &seg, i);
	}
out:
	vcpu_put(vcpu);
	return r;
}

/* ------------------------------------------------------------------------------------
 * vCPU ioctls: KVM_X86_SETUP_MCE, KVM_GET/SET_ONE_REG, KVM_GET_REG_LIST, MP state
 * ---------------------------------------------------------------------------------- */

int kvm_vcpu_ioctl_x86_setup_mce(struct kvm_vcpu *vcpu, u64 mcg_cap)
{
	u32 bank_num = mcg_cap & MCG_BANKCNT_MASK;

	if (!bank_num || bank_num > KVM_MAX_MCE_BANKS)
		return pk_err(-EINVAL, "KVM_X86_SETUP_MCE: %u banks (1..%d)", bank_num,
			      KVM_MAX_MCE_BANKS);
	if (mcg_cap & ~(kvm_global()->supported_mce_cap | 0xff | 0xff0000))
		return pk_err(-EINVAL, "KVM_X86_SETUP_MCE: MCG_CAP %#llx has bits outside "
			      "%#llx", (unsigned long long)mcg_cap,
			      (unsigned long long)(kvm_global()->supported_mce_cap | 0xff00ff));
	vcpu_load(vcpu);
	vcpu->arch.mcg_cap = mcg_cap;
	/* IA32_MCG_CTL and every IA32_MCi_CTL start all ones, IA32_MCi_CTL2 zero. */
	if (mcg_cap & MCG_CTL_P)
		vcpu->arch.mcg_ctl = ~(u64)0;
	for (u32 bank = 0; bank < bank_num; bank++) {
		vcpu->arch.mce_banks[bank * 4] = ~(u64)0;
		if (mcg_cap & MCG_CMCI_P)
			vcpu->arch.mci_ctl2_banks[bank] = 0;
	}
	kvm_apic_after_set_mcg_cap(vcpu);
	vcpu_put(vcpu);
	return 0;
}

/*
 * A ONE_REG id (kernel: struct kvm_x86_reg_id): index in bits 31:0, type 39:32, reserved
 * 51:40, size 55:52, KVM_REG_X86 in 63:56.
 */
static int kvm_x86_reg_msr(struct kvm_vcpu *vcpu, u64 id, u32 *msr)
{
	u32 index = (u32)id, type = (id >> 32) & 0xff;

	if ((id & KVM_REG_ARCH_MASK) != KVM_REG_X86)
		return pk_err(-EINVAL, "ONE_REG id %#llx is not an x86 register",
			      (unsigned long long)id);
	if ((id >> 40) & 0xfff)
		return pk_err(-EINVAL, "ONE_REG id %#llx has reserved bits set",
			      (unsigned long long)id);
	/* KVM-defined registers map to KVM-internal MSR indices (kvm_translate_kvm_reg). */
	if (type == KVM_X86_REG_TYPE_KVM) {
		if (index != KVM_REG_GUEST_SSP || !guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK))
			return pk_err(-EINVAL, "ONE_REG: no KVM register %u on this vCPU", index);
		type = KVM_X86_REG_TYPE_MSR;
		index = MSR_KVM_INTERNAL_GUEST_SSP;
	}
	if (type != KVM_X86_REG_TYPE_MSR)
		return pk_err(-EINVAL, "ONE_REG id %#llx: type %u is not MSR or KVM",
			      (unsigned long long)id, type);
	if ((id & KVM_REG_SIZE_MASK) != KVM_REG_SIZE_U64)
		return pk_err(-EINVAL, "ONE_REG id %#llx: an MSR is a u64",
			      (unsigned long long)id);
	*msr = index;
	return 0;
}

/* KVM_GET_ONE_REG (kernel: kvm_get_set_one_reg, kvm_get_one_msr). */
int kvm_get_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 *val)
{
	u32 msr;
	int r = kvm_x86_reg_msr(vcpu, id, &msr);

	if (r)
		return r;
	vcpu_load(vcpu);
	r = kvm_get_msr(vcpu, msr, val, true) ? -EINVAL : 0;
	vcpu_put(vcpu);
	return r ? pk_err(r, "KVM_GET_ONE_REG: MSR %#x cannot be read", msr) : 0;
}

int kvm_set_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 val)
{
	u32 msr;
	int r = kvm_x86_reg_msr(vcpu, id, &msr);

	if (r)
		return r;
	vcpu_load(vcpu);
	r = kvm_set_msr(vcpu, msr, val, true) ? -EINVAL : 0;
	vcpu_put(vcpu);
	return r ? pk_err(r, "KVM_SET_ONE_REG: MSR %#x refuses %#llx", msr,
			  (unsigned long long)val) : 0;
}

/*
 * KVM_GET_REG_LIST (kernel: kvm_get_reg_list): only the KVM-defined registers are
 * listed; the MSRs are enumerated by KVM_GET_MSR_INDEX_LIST. *n: in, room; out, count.
 */
int kvm_get_reg_list(struct kvm_vcpu *vcpu, u64 *n, u64 *regs)
{
	u64 nr_regs = guest_cpu_cap_has(vcpu, X86_FEATURE_SHSTK) ? 1 : 0;
	u64 room = *n;

	*n = nr_regs;
	if (room < nr_regs)
		return -E2BIG;
	if (nr_regs)
		regs[0] = KVM_REG_X86 | ((u64)KVM_X86_REG_TYPE_KVM << 32) | KVM_REG_SIZE_U64 |
			  KVM_REG_GUEST_SSP;
	return 0;
}

/*
 * KVM_GET_MP_STATE: HALTED for a vCPU that halted in KVM and has not been woken (a
 * signal ended its KVM_RUN); a kick already received makes it RUNNABLE.
 */
int kvm_arch_vcpu_ioctl_get_mpstate(struct kvm_vcpu *vcpu, struct kvm_mp_state *mp_state)
{
	if ((vcpu->arch.mp_state == KVM_MP_STATE_HALTED ||
	     vcpu->arch.mp_state == KVM_MP_STATE_AP_RESET_HOLD) && vcpu->arch.pv.pv_unhalted)
		mp_state->mp_state = KVM_MP_STATE_RUNNABLE;
	else
		mp_state->mp_state = vcpu->arch.mp_state;
	return 0;
}

int kvm_arch_vcpu_ioctl_set_mpstate(struct kvm_vcpu *vcpu, const struct kvm_mp_state *mp_state)
{
	u32 state = mp_state->mp_state;

	switch (state) {
	case KVM_MP_STATE_UNINITIALIZED:
	case KVM_MP_STATE_HALTED:
	case KVM_MP_STATE_AP_RESET_HOLD:
	case KVM_MP_STATE_INIT_RECEIVED:
	case KVM_MP_STATE_SIPI_RECEIVED:
		if (!lapic_in_kernel(vcpu))
			return pk_err(-EINVAL, "KVM_SET_MP_STATE %u needs an in-kernel LAPIC", state);
		break;
	case KVM_MP_STATE_RUNNABLE:
		break;
	default:
		return pk_err(-EINVAL, "KVM_SET_MP_STATE: unknown state %u", state);
	}
	/*
	 * SIPI_RECEIVED is obsolete: upstream leaves the vCPU waiting for SIPI with the SIPI
	 * pending. The model delivers no SIPI, so the vCPU keeps waiting.
	 */
	if (state == KVM_MP_STATE_SIPI_RECEIVED)
		state = KVM_MP_STATE_INIT_RECEIVED;
	kvm_set_mp_state(vcpu, state);
	return 0;
}

/* ------------------------------------------------------------------------------------
 * VM ioctls: KVM_CHECK_EXTENSION, KVM_ENABLE_CAP, KVM_CREATE_IRQCHIP
 * ---------------------------------------------------------------------------------- */

/* kernel: kvm_vm_ioctl_check_extension; 0 for what the model does not do. */
int kvm_vm_ioctl_check_extension(struct kvm *kvm, long ext)
{
	switch (ext) {
	case KVM_CAP_IRQCHIP:
	case KVM_CAP_HLT:
	case KVM_CAP_EXT_CPUID:
	case KVM_CAP_MP_STATE:
	case KVM_CAP_TSC_DEADLINE_TIMER:
	case KVM_CAP_SPLIT_IRQCHIP:
	case KVM_CAP_IMMEDIATE_EXIT:
	case KVM_CAP_GET_MSR_FEATURES:
	case KVM_CAP_MSR_PLATFORM_INFO:
	case KVM_CAP_X86_USER_SPACE_MSR:
	case KVM_CAP_X86_MSR_FILTER:
	case KVM_CAP_ONE_REG:
		return 1;
	case KVM_CAP_NR_VCPUS:
		return (int)(this_machine()->nr_cpus < KVM_MAX_VCPUS ? this_machine()->nr_cpus
								       : KVM_MAX_VCPUS);
	case KVM_CAP_MAX_VCPUS:
		return KVM_MAX_VCPUS;
	case KVM_CAP_MCE:
		return KVM_MAX_MCE_BANKS;
	default:
		return 0;
	}
}

/* The IOAPIC pins userspace may route to the LAPICs (kernel: MAX_NR_RESERVED_IOAPIC_PINS). */
#define MAX_NR_RESERVED_IOAPIC_PINS	48

int kvm_vm_ioctl_enable_cap(struct kvm *kvm, const struct kvm_enable_cap *cap)
{
	if (cap->flags)
		return pk_err(-EINVAL, "KVM_ENABLE_CAP: flags %#x must be 0", cap->flags);
	switch (cap->cap) {
	case KVM_CAP_SPLIT_IRQCHIP:
		if (cap->args[0] > MAX_NR_RESERVED_IOAPIC_PINS)
			return pk_err(-EINVAL, "KVM_CAP_SPLIT_IRQCHIP: %llu IOAPIC pins (at most %d)",
				      (unsigned long long)cap->args[0], MAX_NR_RESERVED_IOAPIC_PINS);
		if (irqchip_in_kernel(kvm))
			return pk_err(-EEXIST, "KVM_CAP_SPLIT_IRQCHIP: the VM has an irqchip");
		if (kvm->nr_vcpus)
			return pk_err(-EEXIST, "KVM_CAP_SPLIT_IRQCHIP: vCPUs exist already");
		kvm->arch.irqchip_mode = KVM_IRQCHIP_SPLIT;
		return 0;
	case KVM_CAP_MSR_PLATFORM_INFO:
		kvm->arch.guest_can_read_msr_platform_info = cap->args[0];
		return 0;
	case KVM_CAP_X86_USER_SPACE_MSR:
		if (cap->args[0] & ~(u64)KVM_MSR_EXIT_REASON_VALID_MASK)
			return pk_err(-EINVAL, "KVM_CAP_X86_USER_SPACE_MSR: reasons %#llx, valid: %#x",
				      (unsigned long long)cap->args[0],
				      KVM_MSR_EXIT_REASON_VALID_MASK);
		kvm->arch.user_space_msr_mask = (u32)cap->args[0];
		return 0;
	default:
		return pk_err(-EINVAL, "KVM_ENABLE_CAP: capability %u cannot be enabled on a VM",
			      cap->cap);
	}
}

/*
 * KVM_CREATE_IRQCHIP. Of the in-kernel irqchip the model has the LAPICs; the PIC and
 * IOAPIC are not modelled (their ports and MMIO still exit to userspace).
 */
int kvm_vm_ioctl_create_irqchip(struct kvm *kvm)
{
	if (irqchip_in_kernel(kvm))
		return pk_err(-EEXIST, "KVM_CREATE_IRQCHIP: the VM already has an in-kernel "
			      "irqchip");
	/* Counted under kvm->lock, which the caller holds, with vCPUs still being created. */
	if (kvm->created_vcpus)
		return pk_err(-EINVAL, "KVM_CREATE_IRQCHIP after KVM_CREATE_VCPU");
	kvm->arch.irqchip_mode = KVM_IRQCHIP_KERNEL;
	return 0;
}

/* kernel: kvm_arch_init_vm: a VM's defaults, then the vendor's. */
int kvm_arch_init_vm(struct kvm *kvm)
{
	kvm->arch.guest_can_read_msr_platform_info = true;
	return kvm_x86_call(vm_init)(kvm);
}

/* kernel: kvm_arch_destroy_vm: what the VM allocated for itself (its MSR filters). */
void kvm_arch_destroy_vm(struct kvm *kvm)
{
	for (int i = 0; i < 2; i++) {
		pk_kfree(kvm->m, kvm->arch.msr_filter_buf[i], sizeof(struct kvm_x86_msr_filter), 8);
		kvm->arch.msr_filter_buf[i] = NULL;
	}
	kvm->arch.msr_filter = NULL;
}
