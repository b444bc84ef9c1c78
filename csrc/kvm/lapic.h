/* SPDX-License-Identifier: MIT */
/*
 * The in-kernel local APIC (kernel: arch/x86/kvm/lapic.h, asm/apicdef.h): its register
 * page, reachable through xAPIC MMIO and the x2APIC MSRs, and its TSC-deadline timer.
 */
#ifndef __KVM_X86_LAPIC_H
#define __KVM_X86_LAPIC_H

#include "asm/kvm_host.h"

/* Register offsets in the APIC page; x2APIC MSR = APIC_BASE_MSR + (offset >> 4). */
#define APIC_ID			0x20
#define APIC_LVR		0x30
#define APIC_LVR_DIRECTED_EOI	BIT(24)
#define GET_APIC_MAXLVT(x)	(((x) >> 16) & 0xff)
#define APIC_TASKPRI		0x80
#define APIC_ARBPRI		0x90
#define APIC_PROCPRI		0xa0
#define APIC_EOI		0xb0
#define APIC_RRR		0xc0
#define APIC_LDR		0xd0
#define APIC_LDR_MASK		(0xffu << 24)
#define APIC_DFR		0xe0
#define APIC_SPIV		0xf0
#define APIC_SPIV_APIC_ENABLED	BIT(8)
#define APIC_SPIV_DIRECTED_EOI	BIT(12)
#define APIC_ISR		0x100
#define APIC_ISR_NR		8
#define APIC_TMR		0x180
#define APIC_IRR		0x200
#define APIC_ESR		0x280
#define APIC_LVTCMCI		0x2f0
#define APIC_ICR		0x300
#define APIC_ICR2		0x310
#define APIC_LVTT		0x320
#define APIC_LVTTHMR		0x330
#define APIC_LVTPC		0x340
#define APIC_LVT0		0x350
#define APIC_LVT1		0x360
#define APIC_LVTERR		0x370
#define APIC_TMICT		0x380
#define APIC_TMCCT		0x390
#define APIC_TDCR		0x3e0
#define APIC_SELF_IPI		0x3f0

#define APIC_VECTOR_MASK	0x000ffu
#define APIC_MODE_MASK		0x00700u
#define APIC_MODE_EXTINT	0x00700u
#define APIC_SEND_PENDING	BIT(12)
#define APIC_INPUT_POLARITY	BIT(13)
#define APIC_LVT_REMOTE_IRR	BIT(14)
#define APIC_LVT_LEVEL_TRIGGER	BIT(15)
#define APIC_LVT_MASKED		BIT(16)
#define APIC_ICR_BUSY		BIT(12)
#define APIC_LVT_TIMER_ONESHOT	(0u << 17)
#define APIC_LVT_TIMER_PERIODIC	(1u << 17)
#define APIC_LVT_TIMER_TSCDEADLINE (2u << 17)

#define APIC_DEFAULT_PHYS_BASE	0xfee00000ULL
#define APIC_VERSION		0x14u	/* Xeon and Pentium 4 (SDM 8.4.8) */
#define LAPIC_MMIO_LENGTH	4096

enum lapic_lvt_entry {
	LVT_TIMER,
	LVT_THERMAL_MONITOR,
	LVT_PERFORMANCE_COUNTER,
	LVT_LINT0,
	LVT_LINT1,
	LVT_ERROR,
	LVT_CMCI,
	KVM_APIC_MAX_NR_LVT_ENTRIES,
};

#define APIC_LVTx(x)		((x) == LVT_CMCI ? APIC_LVTCMCI : APIC_LVTT + 0x10 * (x))

enum lapic_mode {
	LAPIC_MODE_DISABLED = 0,
	LAPIC_MODE_INVALID = X2APIC_ENABLE,
	LAPIC_MODE_XAPIC = MSR_IA32_APICBASE_ENABLE,
	LAPIC_MODE_X2APIC = MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE,
};

/*
 * The LAPIC timer (kernel: struct kvm_timer). Only TSC-deadline mode runs. With a
 * hypervisor timer (VMX) the deadline is on it while the vCPU runs (hv_timer_in_use)
 * and moves to the host hrtimer while the vCPU is blocked; without (SVM) it stays on
 * the hrtimer.
 */
struct kvm_timer {
	struct pk_hrtimer timer;
	u32 timer_mode;			/* LVTT's mode bits, as last written */
	u32 timer_mode_mask;		/* the mode bits the guest may set (CPUID) */
	u64 tscdeadline;
	u32 pending;			/* expiries not yet injected */
	bool hv_timer_in_use;
};

struct kvm_lapic {
	u64 base_address;		/* of the xAPIC MMIO page */
	struct kvm_timer lapic_timer;
	struct kvm_vcpu *vcpu;
	bool sw_enabled;		/* SPIV.APIC_ENABLED */
	int nr_lvt_entries;
	u8 regs[LAPIC_MMIO_LENGTH] __attribute__((aligned(16)));
};

static inline u32 kvm_lapic_get_reg(struct kvm_lapic *apic, int reg_off)
{
	u32 v;

	memcpy(&v, apic->regs + reg_off, sizeof(v));
	return v;
}

static inline enum lapic_mode kvm_apic_mode(u64 apic_base)
{
	return (enum lapic_mode)(apic_base & (MSR_IA32_APICBASE_ENABLE | X2APIC_ENABLE));
}

static inline bool kvm_apic_hw_enabled(struct kvm_lapic *apic)
{
	return apic->vcpu->arch.apic_base & MSR_IA32_APICBASE_ENABLE;
}

static inline bool apic_x2apic_mode(struct kvm_lapic *apic)
{
	return apic->vcpu->arch.apic_base & X2APIC_ENABLE;
}

static inline bool kvm_vcpu_is_reset_bsp(struct kvm_vcpu *vcpu)
{
	return vcpu->kvm->arch.bsp_vcpu_id == (u32)vcpu->vcpu_id;
}

int kvm_create_lapic(struct kvm_vcpu *vcpu);
void kvm_free_lapic(struct kvm_vcpu *vcpu);
void kvm_lapic_reset(struct kvm_vcpu *vcpu, bool init_event);
int kvm_apic_set_base(struct kvm_vcpu *vcpu, u64 value, bool host_initiated);
void kvm_apic_set_version(struct kvm_vcpu *vcpu);
void kvm_apic_after_set_mcg_cap(struct kvm_vcpu *vcpu);
u64 kvm_lapic_readable_reg_mask(struct kvm_lapic *apic);
int kvm_x2apic_msr_write(struct kvm_vcpu *vcpu, u32 msr, u64 data);
int kvm_x2apic_msr_read(struct kvm_vcpu *vcpu, u32 msr, u64 *data);
/* The xAPIC page: 0 if the APIC took the access, -EOPNOTSUPP if it is not its. */
int kvm_lapic_mmio_read(struct kvm_vcpu *vcpu, u64 gpa, int len, u64 *data);
int kvm_lapic_mmio_write(struct kvm_vcpu *vcpu, u64 gpa, int len, u64 data);

/* The TSC-deadline timer. */
/* kernel: kvm_can_use_hv_timer(): the vendor has a hypervisor timer (VMX's preemption timer). */
static inline bool kvm_can_use_hv_timer(struct kvm_vcpu *vcpu)
{
	return kvm_x86_call(set_hv_timer) != NULL;
}
u64 kvm_get_lapic_tscdeadline_msr(struct kvm_vcpu *vcpu);
void kvm_set_lapic_tscdeadline_msr(struct kvm_vcpu *vcpu, u64 data);
bool kvm_lapic_hv_timer_in_use(struct kvm_vcpu *vcpu);
void __kvm_migrate_apic_timer(struct kvm_vcpu *vcpu);
void kvm_lapic_switch_to_sw_timer(struct kvm_vcpu *vcpu);
void kvm_lapic_switch_to_hv_timer(struct kvm_vcpu *vcpu);
/* kernel: irq.c, the interrupt side of an expiry. */
void kvm_inject_pending_timer_irqs(struct kvm_vcpu *vcpu);

#endif
