/* SPDX-License-Identifier: MIT */
/*
 * Host events at interleaving points, and tracepoints (kernel: the kvm_entry, kvm_exit,
 * kvm_msr, kvm_userspace_exit and sched_switch tracepoints), for the checker.
 */
#ifndef _PYKVM_EVENTS_H
#define _PYKVM_EVENTS_H

#include "pykvm/host.h"

struct kvm_vcpu;

/* cffi:begin */
/*
 * Host events placed before a host instruction. Each is taken only where the kernel
 * takes it: an NMI or #MC anywhere in host mode (an NMI is held while GIF = 0); the
 * IRQ-borne ones only with IRQs on; a preemption only where the running vCPU thread is
 * preemptible (preempt_count 0, IRQs on: never inside the scheduler).
 */
enum pk_inject_kind {
	PK_INJ_NONE,
	PK_INJ_NMI,		/* an NMI (held while GIF = 0) */
	PK_INJ_DISABLE_IPI,	/* virtualization disable by IPI (reboot, kexec): IRQs on */
	PK_INJ_PREEMPT,		/* preemption: another task runs and returns to user mode */
	PK_INJ_MC,		/* a machine check: like an NMI, but not held by GIF = 0 */
	PK_INJ_PREEMPT_KTHREAD,	/* preemption by a kernel thread: no return to user mode */
	PK_INJ_SOFTIRQ,		/* a device interrupt that runs softirqs on its way out */
	PK_INJ_CR3,		/* the task's CR3 changes without a reschedule: text_poke's
				 * temporary mm (preemptible), else a LAM-enable IPI */
	PK_INJ_PREEMPT_VM,	/* preemption by another VM's vCPU thread, which runs KVM_RUN */
	PK_NR_INJ
};

/* Which host events can be taken at a point (what pk_inject_point checks). */
enum pk_inject_class { PK_INJ_CLASS_ANY, PK_INJ_CLASS_IRQ, PK_INJ_CLASS_PREEMPT };
u32 pk_inject_class(u32 kind);

/* Arm an injection before the n-th (1-based) host instruction on `cpu`; 0: count only. */
void pk_inject_arm(struct pk_machine *m, u32 cpu, u32 n, u32 kind);
void pk_inject_arm_patient(struct pk_machine *m, u32 cpu, u32 n, u32 kind);
void pk_inject_disarm(struct pk_machine *m);
/*
 * Arm by name: before the nth (1-based) host point of instruction `op` (enum pk_op; an
 * MSR access names its MSR, 0: any) in path `path` (enum pk_path; ~0: any path).
 */
void pk_inject_arm_named(struct pk_machine *m, u32 cpu, u32 kind, u32 path, u32 op, u32 msr,
			 u32 nth);

/* The host points a counting run passes, by name (path, instruction, MSR). */
struct pk_point_name {
	u16 path;
	u16 op;			/* enum pk_op; PK_NR_OPS: a window between two stores */
	u32 msr;
};
struct pk_point_log {
	u32 n;
	struct pk_point_name rec[1024];
};
void pk_machine_set_point_log(struct pk_machine *m, struct pk_point_log *log);

/* Whether the armed event fired, and how many were refused where the kernel forbids them. */
int pk_inject_fired(struct pk_machine *m);
/* cffi:end */
/*
 * The task PK_INJ_PREEMPT_VM switches to, and what its userspace does once it returns
 * there (csrc/check: a KVM_RUN of another VM's vCPU). task < 0: none.
 */
void pk_inject_set_other(struct pk_machine *m, int task,
			 void (*run)(struct pk_machine *m, void *arg), void *arg);
/* cffi:begin */
void pk_machine_set_trace(struct pk_machine *m, struct pk_trace *t);

/*
 * A host task in user mode executes what reads the switched state directly: RDTSCP and
 * RDPID (TSC_AUX: getcpu()), RDFSBASE/RDGSBASE, and a SYSCALL (LSTAR, STAR, SYSCALL_MASK)
 * that returns with SYSRETQ. A mismatch is a violation at host user mode.
 */
int pk_host_user_insns(struct pk_machine *m, u32 cpu);
/*
 * The thread of task `task` (a VMM thread, in user mode) changes its own state between
 * ioctls: how = PK_TASK_ARCH_PRCTL (arch_prctl ARCH_SET_FS/ARCH_SET_GS),
 * PK_TASK_WRFSBASE (WRFSBASE/WRGSBASE in user mode; arch_prctl without FSGSBASE), or
 * PK_TASK_SET_TSC (prctl PR_SET_TSC: CR4.TSD while it runs).
 */
enum { PK_TASK_ARCH_PRCTL, PK_TASK_WRFSBASE, PK_TASK_SET_TSC, PK_NR_TASK_CHANGES };
int pk_host_task_change(struct pk_machine *m, u32 task, u32 how);
/* cffi:end */

/*
 * A point where the host can be interrupted that is not a host instruction (a plain
 * store between two that matter): the checker may place an event here too.
 */
static inline void pk_interrupt_window(void)
{
	struct pk_cpu *cpu = pk_this_cpu;

	if (unlikely(pk_inject_armed(cpu->m)))
		pk_inject_point(cpu, PK_NR_OPS, 0);
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
	PK_TR_IRQ,			/* a: vector, b: softirqs run */
	PK_TR_CR3,			/* a: new CR3, b: 0 text_poke, 1 LAM IPI */
	PK_TR_INJECT,			/* a: kind, b: preempt_count | IRQs on << 31 */
	PK_TR_TASK,			/* a: task, b: what changed (PK_TASK_* or 0x10 user insns) */
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
