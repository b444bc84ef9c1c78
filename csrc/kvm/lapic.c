// SPDX-License-Identifier: MIT
/*
 * The in-kernel local APIC (kernel: arch/x86/kvm/lapic.c; read at kvm-x86/linux
 * 1618270827, kvm_apic_set_base and the x2APIC ICR reserved bits from later upstream,
 * the timer at torvalds/linux 000d75b0b186): IA32_APIC_BASE and its mode changes,
 * reset, the xAPIC MMIO page and the x2APIC MSRs, with the registers each mode has and
 * the values each takes; and the TSC-deadline timer, which wakes a halted vCPU.
 *
 * Deliberately not modelled (docs/simplifications.md): interrupt delivery. An ICR or
 * SELF_IPI write is stored but sends nothing, EOI finds no ISR bit, and an expired timer
 * sets no IRR bit: its pending expiry wakes the vCPU from HLT as the interrupt would,
 * and injecting it only consumes it. The one-shot and periodic timer modes never count
 * (TMCCT reads 0).
 */
#include "x86.h"
#include "lapic.h"
#include "pykvm/printk.h"

#define LVT_MASK	(APIC_LVT_MASKED | APIC_SEND_PENDING | APIC_VECTOR_MASK)
#define LINT_MASK	(LVT_MASK | APIC_MODE_MASK | APIC_INPUT_POLARITY | \
			 APIC_LVT_REMOTE_IRR | APIC_LVT_LEVEL_TRIGGER)

/* The bits of each LVT register the guest can write (kernel: apic_lvt_mask). */
static const u32 apic_lvt_mask[KVM_APIC_MAX_NR_LVT_ENTRIES] = {
	[LVT_TIMER] = LVT_MASK,			/* timer mode bits come from the CPUID */
	[LVT_THERMAL_MONITOR] = LVT_MASK | APIC_MODE_MASK,
	[LVT_PERFORMANCE_COUNTER] = LVT_MASK | APIC_MODE_MASK,
	[LVT_LINT0] = LINT_MASK,
	[LVT_LINT1] = LINT_MASK,
	[LVT_ERROR] = LVT_MASK,
	[LVT_CMCI] = LVT_MASK | APIC_MODE_MASK,
};

/* Bits 31:20, 17:16 and 13 of the 64-bit x2APIC ICR are reserved. */
#define X2APIC_ICR_RESERVED_BITS (0xfff00000ULL | 0x30000ULL | BIT_ULL(13))

static void kvm_lapic_set_reg(struct kvm_lapic *apic, int reg_off, u32 val)
{
	memcpy(apic->regs + reg_off, &val, sizeof(val));
}

/* In x2APIC mode ICR is one 64-bit register at APIC_ICR (ICR2's slot holds bits 63:32). */
static u64 kvm_lapic_get_reg64(struct kvm_lapic *apic, int reg)
{
	u64 v;

	memcpy(&v, apic->regs + reg, sizeof(v));
	return v;
}

static void kvm_lapic_set_reg64(struct kvm_lapic *apic, int reg, u64 val)
{
	memcpy(apic->regs + reg, &val, sizeof(val));
}

static bool kvm_lapic_lvt_supported(struct kvm_lapic *apic, int lvt_index)
{
	return apic->nr_lvt_entries > lvt_index;
}

/* CMCI has an LVT entry only with MCG_CAP.MCG_CMCI_P (kernel: kvm_apic_calc_nr_lvt_entries). */
static int kvm_apic_calc_nr_lvt_entries(struct kvm_vcpu *vcpu)
{
	return KVM_APIC_MAX_NR_LVT_ENTRIES - !(vcpu->arch.mcg_cap & MCG_CMCI_P);
}

static bool ioapic_in_kernel(struct kvm *kvm)
{
	return kvm->arch.irqchip_mode == KVM_IRQCHIP_KERNEL;
}

static bool apic_enabled(struct kvm_lapic *apic)
{
	return apic->sw_enabled && kvm_apic_hw_enabled(apic);
}

/* kernel: kvm_apic_present(): an in-kernel LAPIC, enabled in IA32_APIC_BASE. */
static bool kvm_apic_present(struct kvm_vcpu *vcpu)
{
	return lapic_in_kernel(vcpu) && kvm_apic_hw_enabled(vcpu->arch.apic);
}

static bool apic_lvt_enabled(struct kvm_lapic *apic, int lvt_type)
{
	return !(kvm_lapic_get_reg(apic, lvt_type) & APIC_LVT_MASKED);
}

static bool apic_lvtt_tscdeadline(struct kvm_lapic *apic)
{
	return apic->lapic_timer.timer_mode == APIC_LVT_TIMER_TSCDEADLINE;
}

void kvm_apic_set_version(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;
	u32 v;

	if (!lapic_in_kernel(vcpu))
		return;
	v = APIC_VERSION | ((u32)(apic->nr_lvt_entries - 1) << 16);
	/*
	 * KVM's in-kernel IOAPIC (82093AA) has no EOI register, so directed EOI is offered
	 * only when userspace emulates the IOAPIC.
	 */
	if (guest_cpu_cap_has(vcpu, X86_FEATURE_X2APIC) && !ioapic_in_kernel(vcpu->kvm))
		v |= APIC_LVR_DIRECTED_EOI;
	kvm_lapic_set_reg(apic, APIC_LVR, v);
}

void kvm_apic_after_set_mcg_cap(struct kvm_vcpu *vcpu)
{
	int nr_lvt_entries = kvm_apic_calc_nr_lvt_entries(vcpu);
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!lapic_in_kernel(vcpu) || nr_lvt_entries == apic->nr_lvt_entries)
		return;
	/* New LVT entries start masked. */
	for (int i = apic->nr_lvt_entries; i < nr_lvt_entries; i++)
		kvm_lapic_set_reg(apic, APIC_LVTx(i), APIC_LVT_MASKED);
	apic->nr_lvt_entries = nr_lvt_entries;
	/* The number of LVT entries is reflected in the version register. */
	kvm_apic_set_version(vcpu);
}

static void kvm_apic_set_xapic_id(struct kvm_lapic *apic, u8 id)
{
	kvm_lapic_set_reg(apic, APIC_ID, (u32)id << 24);
}

static void kvm_apic_set_x2apic_id(struct kvm_lapic *apic, u32 id)
{
	/* In x2APIC mode the LDR is derived from the ID: cluster in 31:16, bit in 15:0. */
	kvm_lapic_set_reg(apic, APIC_ID, id);
	kvm_lapic_set_reg(apic, APIC_LDR, ((id >> 4) << 16) | (1u << (id & 0xf)));
}

static void apic_set_spiv(struct kvm_lapic *apic, u32 val)
{
	kvm_lapic_set_reg(apic, APIC_SPIV, val);
	apic->sw_enabled = val & APIC_SPIV_APIC_ENABLED;
}

static int apic_find_highest_isr(struct kvm_lapic *apic)
{
	for (int i = APIC_ISR_NR - 1; i >= 0; i--) {
		u32 w = kvm_lapic_get_reg(apic, APIC_ISR + 0x10 * i);

		if (w)
			return i * 32 + 31 - __builtin_clz(w);
	}
	return -1;
}

/* PPR = TPR, or the in-service class if that is higher (kernel: __apic_update_ppr). */
static void apic_update_ppr(struct kvm_lapic *apic)
{
	int isr = apic_find_highest_isr(apic);
	u32 isrv = isr < 0 ? 0 : (u32)isr;
	u32 tpr = kvm_lapic_get_reg(apic, APIC_TASKPRI);
	u32 ppr = (tpr & 0xf0) >= (isrv & 0xf0) ? tpr & 0xff : isrv & 0xf0;

	kvm_lapic_set_reg(apic, APIC_PROCPRI, ppr);
}

/* Bit n set: register n << 4 can be read (kernel: kvm_lapic_readable_reg_mask). */
#define APIC_REG_MASK(reg)		(1ULL << ((reg) >> 4))
#define APIC_REGS_MASK(first, count)	(APIC_REG_MASK(first) * ((1ULL << (count)) - 1))

u64 kvm_lapic_readable_reg_mask(struct kvm_lapic *apic)
{
	/* Reserved and write-only registers stay 0. */
	u64 valid_reg_mask =
		APIC_REG_MASK(APIC_ID) | APIC_REG_MASK(APIC_LVR) | APIC_REG_MASK(APIC_TASKPRI) |
		APIC_REG_MASK(APIC_PROCPRI) | APIC_REG_MASK(APIC_LDR) | APIC_REG_MASK(APIC_SPIV) |
		APIC_REGS_MASK(APIC_ISR, APIC_ISR_NR) | APIC_REGS_MASK(APIC_TMR, APIC_ISR_NR) |
		APIC_REGS_MASK(APIC_IRR, APIC_ISR_NR) | APIC_REG_MASK(APIC_ESR) |
		APIC_REG_MASK(APIC_ICR) | APIC_REG_MASK(APIC_LVTT) | APIC_REG_MASK(APIC_LVTTHMR) |
		APIC_REG_MASK(APIC_LVTPC) | APIC_REG_MASK(APIC_LVT0) | APIC_REG_MASK(APIC_LVT1) |
		APIC_REG_MASK(APIC_LVTERR) | APIC_REG_MASK(APIC_TMICT) | APIC_REG_MASK(APIC_TMCCT) |
		APIC_REG_MASK(APIC_TDCR);

	if (kvm_lapic_lvt_supported(apic, LVT_CMCI))
		valid_reg_mask |= APIC_REG_MASK(APIC_LVTCMCI);
	/* ARBPRI, DFR and ICR2 do not exist in x2APIC mode. */
	if (!apic_x2apic_mode(apic))
		valid_reg_mask |= APIC_REG_MASK(APIC_ARBPRI) | APIC_REG_MASK(APIC_DFR) |
				  APIC_REG_MASK(APIC_ICR2);
	return valid_reg_mask;
}

static u32 __apic_read(struct kvm_lapic *apic, u32 offset)
{
	switch (offset) {
	case APIC_ARBPRI:
		return 0;
	case APIC_TMCCT:
		/* 0 in TSC-deadline mode; the one-shot and periodic counts never run here. */
		return 0;
	case APIC_PROCPRI:
		apic_update_ppr(apic);
		return kvm_lapic_get_reg(apic, offset);
	default:
		return kvm_lapic_get_reg(apic, offset);
	}
}

/* 1 for a register that cannot be read this way (kernel: kvm_lapic_reg_read). */
static int kvm_lapic_reg_read(struct kvm_lapic *apic, u32 offset, int len, u32 *data)
{
	u32 alignment = offset & 0xf, result;

	if (alignment + (u32)len > 4)
		return 1;
	if (offset > 0x3f0 || !(kvm_lapic_readable_reg_mask(apic) & APIC_REG_MASK(offset)))
		return 1;
	result = __apic_read(apic, offset & ~0xfu);
	*data = 0;
	memcpy(data, (u8 *)&result + alignment, (size_t)len);
	return 0;
}

/* ---- the timer: TSC-deadline mode (kernel: the timer half of lapic.c) ---- */

static void cancel_hv_timer(struct kvm_lapic *apic);

/* No timer runs and no expiry is left (kernel: cancel_apic_timer). */
static void cancel_apic_timer(struct kvm_lapic *apic)
{
	hrtimer_cancel(&apic->lapic_timer.timer);
	preempt_disable();
	if (apic->lapic_timer.hv_timer_in_use)
		cancel_hv_timer(apic);
	preempt_enable();
	apic->lapic_timer.pending = 0;
}

/* A new LVTT mode; entering or leaving TSC-deadline mode drops the deadline and count. */
static void apic_update_lvtt(struct kvm_lapic *apic)
{
	u32 timer_mode = kvm_lapic_get_reg(apic, APIC_LVTT) & apic->lapic_timer.timer_mode_mask;

	if (apic->lapic_timer.timer_mode == timer_mode)
		return;
	if (apic_lvtt_tscdeadline(apic) != (timer_mode == APIC_LVT_TIMER_TSCDEADLINE)) {
		cancel_apic_timer(apic);
		kvm_lapic_set_reg(apic, APIC_TMICT, 0);
		apic->lapic_timer.tscdeadline = 0;
	}
	apic->lapic_timer.timer_mode = timer_mode;
}

/*
 * kernel: kvm_apic_inject_pending_timer_irqs(). kvm_apic_local_deliver(APIC_LVTT) would
 * raise the LVTT vector in IRR; the model delivers no interrupts. A deadline fires once.
 */
static void kvm_apic_inject_pending_timer_irqs(struct kvm_lapic *apic)
{
	if (apic_lvtt_tscdeadline(apic))
		apic->lapic_timer.tscdeadline = 0;
}

/*
 * The deadline has passed: one expiry is pending. From the hrtimer (the vCPU is blocked
 * or polling) it kicks the vCPU awake; otherwise the caller is the vCPU itself.
 */
static void apic_timer_expired(struct kvm_lapic *apic, bool from_timer_fn)
{
	if (apic->lapic_timer.pending)
		return;
	apic->lapic_timer.pending++;
	if (from_timer_fn)
		kvm_vcpu_kick(apic->vcpu);
}

/* The host hrtimer the deadline runs on while the vCPU is blocked. */
static void apic_timer_fn(struct pk_hrtimer *data)
{
	struct kvm_lapic *apic = container_of(data, struct kvm_lapic, lapic_timer.timer);

	apic_timer_expired(apic, true);
}

/*
 * kernel: start_sw_tscdeadline(). The guest's TSC is its pCPU's (the model has no TSC
 * offset or scaling, and no timer advance), so the hrtimer expires at the deadline.
 */
static void start_sw_tscdeadline(struct kvm_lapic *apic)
{
	u64 tscdeadline = apic->lapic_timer.tscdeadline;

	if (!tscdeadline)
		return;
	if (tscdeadline > this_cpu()->tsc)
		hrtimer_start(&apic->lapic_timer.timer, tscdeadline);
	else
		apic_timer_expired(apic, false);
}

static void cancel_hv_timer(struct kvm_lapic *apic)
{
	kvm_x86_call(cancel_hv_timer)(apic->vcpu);
	apic->lapic_timer.hv_timer_in_use = false;
}

/*
 * kernel: start_hv_timer(): the deadline goes to the vendor's hypervisor timer (VMX's
 * preemption timer, programmed before each VM-entry); one already past expires at once.
 * SVM has none: there the deadline stays on the hrtimer, armed while the guest runs.
 * The model's hardware never runs the preemption timer (no guest time passes).
 */
static bool start_hv_timer(struct kvm_lapic *apic)
{
	struct kvm_timer *ktimer = &apic->lapic_timer;
	struct kvm_vcpu *vcpu = apic->vcpu;
	bool expired;

	if (!kvm_can_use_hv_timer(vcpu))
		return false;
	if (!ktimer->tscdeadline)
		return false;
	if (kvm_x86_call(set_hv_timer)(vcpu, ktimer->tscdeadline, &expired))
		return false;
	ktimer->hv_timer_in_use = true;
	hrtimer_cancel(&ktimer->timer);
	/* Cancel it if the hrtimer fired meanwhile, or if the deadline has passed. */
	if (ktimer->pending) {
		cancel_hv_timer(apic);
	} else if (expired) {
		apic_timer_expired(apic, false);
		cancel_hv_timer(apic);
	}
	return true;
}

static void start_sw_timer(struct kvm_lapic *apic)
{
	if (apic->lapic_timer.hv_timer_in_use)
		cancel_hv_timer(apic);
	if (apic->lapic_timer.pending)
		return;
	if (apic_lvtt_tscdeadline(apic))
		start_sw_tscdeadline(apic);
}

static void restart_apic_timer(struct kvm_lapic *apic)
{
	preempt_disable();
	if (!apic->lapic_timer.pending && !start_hv_timer(apic))
		start_sw_timer(apic);
	preempt_enable();
}

/* kernel: __start_apic_timer(); only TSC-deadline mode gets this far (see TMICT). */
static void start_apic_timer(struct kvm_lapic *apic)
{
	apic->lapic_timer.pending = 0;
	restart_apic_timer(apic);
}

bool kvm_lapic_hv_timer_in_use(struct kvm_vcpu *vcpu)
{
	return lapic_in_kernel(vcpu) && vcpu->arch.apic->lapic_timer.hv_timer_in_use;
}

/*
 * kernel: __kvm_migrate_apic_timer(), after the vCPU moved: an armed hrtimer (a halted
 * vCPU's deadline, or SVM's while the guest runs) is re-armed on the new CPU.
 */
void __kvm_migrate_apic_timer(struct kvm_vcpu *vcpu)
{
	if (!lapic_in_kernel(vcpu))
		return;
	hrtimer_migrate_here(&vcpu->arch.apic->lapic_timer.timer);
}

/* Before the vCPU blocks: the preemption timer would not count outside guest mode. */
void kvm_lapic_switch_to_sw_timer(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	preempt_disable();
	if (apic->lapic_timer.hv_timer_in_use)
		start_sw_timer(apic);
	preempt_enable();
}

/* After the block: back to the preemption timer, unless the deadline fired meanwhile. */
void kvm_lapic_switch_to_hv_timer(struct kvm_vcpu *vcpu)
{
	restart_apic_timer(vcpu->arch.apic);
}

/* IA32_TSC_DEADLINE: 0, and writes ignored, unless the LAPIC is in TSC-deadline mode. */
u64 kvm_get_lapic_tscdeadline_msr(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!kvm_apic_present(vcpu) || !apic_lvtt_tscdeadline(apic))
		return 0;
	return apic->lapic_timer.tscdeadline;
}

void kvm_set_lapic_tscdeadline_msr(struct kvm_vcpu *vcpu, u64 data)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!kvm_apic_present(vcpu) || !apic_lvtt_tscdeadline(apic))
		return;
	hrtimer_cancel(&apic->lapic_timer.timer);
	apic->lapic_timer.tscdeadline = data;
	start_apic_timer(apic);
}

/*
 * kernel: irq.c kvm_cpu_has_pending_timer() with apic_has_pending_timer(): an expiry
 * counts only while the APIC and its LVTT entry are enabled.
 */
bool kvm_cpu_has_pending_timer(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!lapic_in_kernel(vcpu))
		return false;
	return apic_enabled(apic) && apic_lvt_enabled(apic, APIC_LVTT) &&
	       apic->lapic_timer.pending;
}

/* kernel: irq.c kvm_inject_pending_timer_irqs(), kvm_inject_apic_timer_irqs(). */
void kvm_inject_pending_timer_irqs(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (lapic_in_kernel(vcpu) && apic->lapic_timer.pending) {
		kvm_apic_inject_pending_timer_irqs(apic);
		apic->lapic_timer.pending = 0;
	}
}

static int get_lvt_index(u32 reg)
{
	if (reg == APIC_LVTCMCI)
		return LVT_CMCI;
	if (reg < APIC_LVTT || reg > APIC_LVTERR)
		return -1;
	return (int)((reg - APIC_LVTT) >> 4);
}

/* 1 if the write is refused (kernel: kvm_lapic_reg_write). */
static int kvm_lapic_reg_write(struct kvm_lapic *apic, u32 reg, u32 val)
{
	int ret = 0;

	switch (reg) {
	case APIC_ID:
		if (!apic_x2apic_mode(apic))
			kvm_apic_set_xapic_id(apic, val >> 24);
		else
			ret = 1;
		break;
	case APIC_TASKPRI:
		kvm_lapic_set_reg(apic, APIC_TASKPRI, val & 0xff);
		apic_update_ppr(apic);
		break;
	case APIC_EOI:
		/* No in-service vector in the model: nothing to retire. */
		break;
	case APIC_LDR:
		if (!apic_x2apic_mode(apic))
			kvm_lapic_set_reg(apic, APIC_LDR, val & APIC_LDR_MASK);
		else
			ret = 1;
		break;
	case APIC_DFR:
		if (!apic_x2apic_mode(apic))
			kvm_lapic_set_reg(apic, APIC_DFR, val | 0x0fffffff);
		else
			ret = 1;
		break;
	case APIC_SPIV: {
		u32 mask = 0x3ff;

		if (kvm_lapic_get_reg(apic, APIC_LVR) & APIC_LVR_DIRECTED_EOI)
			mask |= APIC_SPIV_DIRECTED_EOI;
		apic_set_spiv(apic, val & mask);
		/* A software-disabled APIC masks every LVT entry. */
		if (!(val & APIC_SPIV_APIC_ENABLED)) {
			for (int i = 0; i < apic->nr_lvt_entries; i++)
				kvm_lapic_set_reg(apic, APIC_LVTx(i),
						  kvm_lapic_get_reg(apic, APIC_LVTx(i)) |
						  APIC_LVT_MASKED);
			apic_update_lvtt(apic);
			apic->lapic_timer.pending = 0;
		}
		break;
	}
	case APIC_ICR:
		/* xAPIC only (x2APIC ICR goes through kvm_x2apic_icr_write); no IPI is sent. */
		kvm_lapic_set_reg(apic, APIC_ICR, val & ~APIC_ICR_BUSY);
		break;
	case APIC_ICR2:
		if (apic_x2apic_mode(apic))
			ret = 1;
		else
			kvm_lapic_set_reg(apic, APIC_ICR2, val & 0xff000000);
		break;
	case APIC_LVT0:
	case APIC_LVTTHMR:
	case APIC_LVTPC:
	case APIC_LVT1:
	case APIC_LVTERR:
	case APIC_LVTCMCI: {
		int index = get_lvt_index(reg);

		if (!kvm_lapic_lvt_supported(apic, index)) {
			ret = 1;
			break;
		}
		if (!apic->sw_enabled)
			val |= APIC_LVT_MASKED;
		kvm_lapic_set_reg(apic, reg, val & apic_lvt_mask[index]);
		break;
	}
	case APIC_LVTT:
		if (!apic->sw_enabled)
			val |= APIC_LVT_MASKED;
		kvm_lapic_set_reg(apic, APIC_LVTT,
				  val & (apic_lvt_mask[LVT_TIMER] |
					 apic->lapic_timer.timer_mode_mask));
		apic_update_lvtt(apic);
		break;
	case APIC_TMICT:
		/* Ignored in TSC-deadline mode; otherwise stored, but the count never runs. */
		if (!apic_lvtt_tscdeadline(apic))
			kvm_lapic_set_reg(apic, APIC_TMICT, val);
		break;
	case APIC_TDCR:
		kvm_lapic_set_reg(apic, APIC_TDCR, val & 0xb);
		break;
	case APIC_ESR:
		if (apic_x2apic_mode(apic) && val != 0)
			ret = 1;
		break;
	case APIC_SELF_IPI:
		/* x2APIC only; bits 31:8 are reserved. No interrupt is delivered. */
		if (!apic_x2apic_mode(apic) || (val & ~APIC_VECTOR_MASK))
			ret = 1;
		break;
	default:
		ret = 1;
		break;
	}
	return ret;
}

/* ---- xAPIC MMIO ---- */

static bool apic_mmio_in_range(struct kvm_lapic *apic, u64 addr)
{
	return addr >= apic->base_address && addr < apic->base_address + LAPIC_MMIO_LENGTH;
}

/*
 * A disabled or x2APIC-mode APIC leaves its page to the rest of the bus; upstream's
 * default KVM_X86_QUIRK_LAPIC_MMIO_HOLE then reads all ones and drops writes.
 */
int kvm_lapic_mmio_read(struct kvm_vcpu *vcpu, u64 gpa, int len, u64 *data)
{
	struct kvm_lapic *apic = vcpu->arch.apic;
	u32 v = 0;

	if (!apic || !apic_mmio_in_range(apic, gpa))
		return -EOPNOTSUPP;
	if (!kvm_apic_hw_enabled(apic) || apic_x2apic_mode(apic)) {
		*data = len >= 8 ? ~0ULL : (1ULL << (8 * len)) - 1;
		return 0;
	}
	if (len > 4) {
		*data = 0;
		return 0;
	}
	kvm_lapic_reg_read(apic, (u32)(gpa - apic->base_address), len, &v);
	*data = v;
	return 0;
}

int kvm_lapic_mmio_write(struct kvm_vcpu *vcpu, u64 gpa, int len, u64 data)
{
	struct kvm_lapic *apic = vcpu->arch.apic;
	u32 offset;

	if (!apic || !apic_mmio_in_range(apic, gpa))
		return -EOPNOTSUPP;
	if (!kvm_apic_hw_enabled(apic) || apic_x2apic_mode(apic))
		return 0;
	offset = (u32)(gpa - apic->base_address);
	/* Registers are 16-byte aligned and accessed 32 bits at a time (SDM 10.4.1). */
	if (len != 4 || (offset & 0xf))
		return 0;
	kvm_lapic_reg_write(apic, offset & 0xff0, (u32)data);
	return 0;
}

/* ---- x2APIC MSRs ---- */

static int kvm_x2apic_icr_write(struct kvm_lapic *apic, u64 data)
{
	if (data & X2APIC_ICR_RESERVED_BITS)
		return 1;
	kvm_lapic_set_reg64(apic, APIC_ICR, data & ~(u64)APIC_ICR_BUSY);
	return 0;
}

static int kvm_lapic_msr_read(struct kvm_lapic *apic, u32 reg, u64 *data)
{
	u32 low;

	if (reg == APIC_ICR) {
		*data = kvm_lapic_get_reg64(apic, APIC_ICR);
		return 0;
	}
	if (kvm_lapic_reg_read(apic, reg, 4, &low))
		return 1;
	*data = low;
	return 0;
}

static int kvm_lapic_msr_write(struct kvm_lapic *apic, u32 reg, u64 data)
{
	/* ICR is the one 64-bit x2APIC register; bits 63:32 of the others are reserved. */
	if (reg == APIC_ICR)
		return kvm_x2apic_icr_write(apic, data);
	if (data >> 32)
		return 1;
	return kvm_lapic_reg_write(apic, reg, (u32)data);
}

int kvm_x2apic_msr_write(struct kvm_vcpu *vcpu, u32 msr, u64 data)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!lapic_in_kernel(vcpu) || !apic_x2apic_mode(apic))
		return 1;
	return kvm_lapic_msr_write(apic, (msr - APIC_BASE_MSR) << 4, data);
}

int kvm_x2apic_msr_read(struct kvm_vcpu *vcpu, u32 msr, u64 *data)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!lapic_in_kernel(vcpu) || !apic_x2apic_mode(apic))
		return 1;
	return kvm_lapic_msr_read(apic, (msr - APIC_BASE_MSR) << 4, data);
}

/* ---- IA32_APIC_BASE ---- */

/* Apply a new APIC base with its side effects (kernel: __kvm_apic_set_base). */
static void __kvm_apic_set_base(struct kvm_vcpu *vcpu, u64 value)
{
	u64 old_value = vcpu->arch.apic_base;
	struct kvm_lapic *apic = vcpu->arch.apic;

	vcpu->arch.apic_base = value;
	if ((old_value ^ value) & MSR_IA32_APICBASE_ENABLE)
		kvm_update_cpuid_runtime(vcpu);
	if (!apic)
		return;
	if ((old_value ^ value) & MSR_IA32_APICBASE_ENABLE && (value & MSR_IA32_APICBASE_ENABLE))
		kvm_apic_set_xapic_id(apic, (u8)vcpu->vcpu_id);
	if ((old_value ^ value) & X2APIC_ENABLE) {
		if (value & X2APIC_ENABLE)
			kvm_apic_set_x2apic_id(apic, (u32)vcpu->vcpu_id);
		else if (value & MSR_IA32_APICBASE_ENABLE)
			kvm_apic_set_xapic_id(apic, (u8)vcpu->vcpu_id);
	}
	apic->base_address = value & MSR_IA32_APICBASE_BASE;
}

/*
 * IA32_APIC_BASE writes (kernel: kvm_apic_set_base): reserved bits and the invalid
 * EXTD-without-EN mode fault; x2APIC needs CPUID.1:ECX.X2APIC; the guest (not the host)
 * may not go from x2APIC straight to xAPIC, nor from disabled straight to x2APIC.
 */
int kvm_apic_set_base(struct kvm_vcpu *vcpu, u64 value, bool host_initiated)
{
	enum lapic_mode old_mode = kvm_apic_mode(vcpu->arch.apic_base);
	enum lapic_mode new_mode = kvm_apic_mode(value);
	u64 reserved_bits;

	if (vcpu->arch.apic_base == value)
		return 0;
	reserved_bits = kvm_vcpu_reserved_gpa_bits_raw(vcpu) | 0x2ff |
			(guest_cpu_cap_has(vcpu, X86_FEATURE_X2APIC) ? 0 : X2APIC_ENABLE);
	if ((value & reserved_bits) != 0 || new_mode == LAPIC_MODE_INVALID)
		return 1;
	if (!host_initiated) {
		if (old_mode == LAPIC_MODE_X2APIC && new_mode == LAPIC_MODE_XAPIC)
			return 1;
		if (old_mode == LAPIC_MODE_DISABLED && new_mode == LAPIC_MODE_X2APIC)
			return 1;
	}
	__kvm_apic_set_base(vcpu, value);
	return 0;
}

/* ---- creation and reset ---- */

int kvm_create_lapic(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic;

	if (!irqchip_in_kernel(vcpu->kvm))
		return 0;
	apic = pk_kzalloc(vcpu->kvm->m, sizeof(*apic), 4096);
	if (!apic)
		return pk_err(-ENOMEM, "no kernel memory left for vCPU %d's local APIC",
			      vcpu->vcpu_id);
	apic->vcpu = vcpu;
	apic->nr_lvt_entries = kvm_apic_calc_nr_lvt_entries(vcpu);
	apic->lapic_timer.timer.function = apic_timer_fn;
	/* One-shot and periodic; TSC-deadline once the CPUID offers it (cpuid.c). */
	apic->lapic_timer.timer_mode_mask = APIC_LVT_TIMER_PERIODIC;
	vcpu->arch.apic = apic;
	/* The full RESET value is set by kvm_lapic_reset(). */
	vcpu->arch.apic_base = MSR_IA32_APICBASE_ENABLE;
	return 0;
}

/* kernel: kvm_free_lapic(): the timer is stopped before the LAPIC's memory goes. */
void kvm_free_lapic(struct kvm_vcpu *vcpu)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!apic)
		return;
	hrtimer_cancel(&apic->lapic_timer.timer);
	pk_kfree(vcpu->kvm->m, apic, sizeof(*apic), 4096);
	vcpu->arch.apic = NULL;
}

void kvm_lapic_reset(struct kvm_vcpu *vcpu, bool init_event)
{
	struct kvm_lapic *apic = vcpu->arch.apic;

	if (!init_event) {
		u64 msr_val = APIC_DEFAULT_PHYS_BASE | MSR_IA32_APICBASE_ENABLE;

		if (kvm_vcpu_is_reset_bsp(vcpu))
			msr_val |= MSR_IA32_APICBASE_BSP;
		__kvm_apic_set_base(vcpu, msr_val);
	}
	if (!apic)
		return;
	/* Stop the timer in case this resets an active APIC. */
	hrtimer_cancel(&apic->lapic_timer.timer);
	/* The xAPIC ID is set at RESET even if the APIC was already enabled. */
	if (!init_event)
		kvm_apic_set_xapic_id(apic, (u8)vcpu->vcpu_id);
	kvm_apic_set_version(vcpu);
	for (int i = 0; i < apic->nr_lvt_entries; i++)
		kvm_lapic_set_reg(apic, APIC_LVTx(i), APIC_LVT_MASKED);
	apic_update_lvtt(apic);
	/* KVM_X86_QUIRK_LINT0_REENABLED (on by default): the BSP's LINT0 takes ExtINT. */
	if (kvm_vcpu_is_reset_bsp(vcpu))
		kvm_lapic_set_reg(apic, APIC_LVT0, APIC_MODE_EXTINT);
	kvm_lapic_set_reg(apic, APIC_DFR, 0xffffffffu);
	apic_set_spiv(apic, 0xff);
	kvm_lapic_set_reg(apic, APIC_TASKPRI, 0);
	if (!apic_x2apic_mode(apic))
		kvm_lapic_set_reg(apic, APIC_LDR, 0);
	kvm_lapic_set_reg(apic, APIC_ESR, 0);
	if (!apic_x2apic_mode(apic)) {
		kvm_lapic_set_reg(apic, APIC_ICR, 0);
		kvm_lapic_set_reg(apic, APIC_ICR2, 0);
	} else {
		kvm_lapic_set_reg64(apic, APIC_ICR, 0);
	}
	kvm_lapic_set_reg(apic, APIC_TDCR, 0);
	kvm_lapic_set_reg(apic, APIC_TMICT, 0);
	for (int i = 0; i < APIC_ISR_NR; i++) {
		kvm_lapic_set_reg(apic, APIC_IRR + 0x10 * i, 0);
		kvm_lapic_set_reg(apic, APIC_ISR + 0x10 * i, 0);
		kvm_lapic_set_reg(apic, APIC_TMR + 0x10 * i, 0);
	}
	apic_update_ppr(apic);
	apic->lapic_timer.pending = 0;
}
