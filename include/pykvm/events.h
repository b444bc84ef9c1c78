/* SPDX-License-Identifier: MIT */
/*
 * Host events at interleaving points, and tracepoints (kernel: the kvm_entry, kvm_exit,
 * kvm_msr, kvm_userspace_exit and sched_switch tracepoints), for the checker.
 */
#ifndef _PYKVM_EVENTS_H
#define _PYKVM_EVENTS_H

#include "pykvm/host.h"

/* cffi:begin */
enum pk_inject_kind {
	PK_INJ_NONE,
	PK_INJ_NMI,		/* an NMI (held while GIF = 0) */
	PK_INJ_DISABLE_IPI,	/* virtualization disable by IPI (reboot, kexec): IRQs on */
	PK_INJ_PREEMPT,		/* preemption: another task runs and returns to user mode */
	PK_INJ_MC,		/* a machine check: like an NMI, but not held by GIF = 0 */
	PK_INJ_PREEMPT_KTHREAD,	/* preemption by a kernel thread: no return to user mode */
	PK_NR_INJ
};

/* Arm an injection before the n-th (1-based) host instruction on `cpu`; 0: count only. */
void pk_inject_arm(struct pk_machine *m, u32 cpu, u32 n, u32 kind);
void pk_inject_arm_patient(struct pk_machine *m, u32 cpu, u32 n, u32 kind);
void pk_inject_disarm(struct pk_machine *m);
void pk_machine_set_trace(struct pk_machine *m, struct pk_trace *t);
/* cffi:end */

/*
 * A point where the host can be interrupted that is not a host instruction (a plain
 * store between two that matter): the checker may place an event here too.
 */
static inline void pk_interrupt_window(void)
{
	struct pk_cpu *cpu = pk_this_cpu;

	if (unlikely(pk_inject_armed(cpu->m)))
		pk_inject_point(cpu);
}

/* cffi:begin */
enum pk_trace_kind {
	PK_TR_KVM_ENTRY,		/* a: vcpu id, b: rip */
	PK_TR_KVM_EXIT,			/* a: exit reason, b: rip */
	PK_TR_KVM_MSR,			/* a: (write << 32) | msr, b: data */
	PK_TR_KVM_USERSPACE_EXIT,	/* a: KVM_EXIT_* */
	PK_TR_SCHED_SWITCH,		/* a: prev task, b: next task */
	PK_TR_USER_RETURN,		/* a: task */
	PK_TR_NMI,			/* a: held (1) or taken (0) */
	PK_TR_VIRT_DISABLE,
	PK_TR_VCPU_LOAD,		/* a: vcpu id */
	PK_TR_VCPU_PUT,			/* a: vcpu id */
	PK_TR_STEP,			/* a: checker step index */
	PK_TR_NMI_HANDLER,		/* a: GS base the handler found */
	PK_TR_VIOLATION,		/* a: obs, b: register */
};

struct pk_trace_rec {
	u32 kind;
	u32 cpu;
	u64 a, b;
};

#define PK_TRACE_CAP 65536
struct pk_trace {
	u32 n;
	u32 dropped;
	struct pk_trace_rec rec[PK_TRACE_CAP];
};
/* cffi:end */

/* Any CPU may record: a slot is claimed atomically. */
static inline void pk_trace(struct pk_machine *m, u32 kind, u32 cpu, u64 a, u64 b)
{
	struct pk_trace *t = m->trace;
	u32 n;

	if (likely(!t))
		return;
	n = __atomic_fetch_add(&t->n, 1, __ATOMIC_RELAXED);
	if (n >= PK_TRACE_CAP) {
		__atomic_fetch_sub(&t->n, 1, __ATOMIC_RELAXED);
		__atomic_fetch_add(&t->dropped, 1, __ATOMIC_RELAXED);
		return;
	}
	t->rec[n] = (struct pk_trace_rec){ kind, cpu, a, b };
}

#endif
