/* SPDX-License-Identifier: MIT */
/*
 * The host kernel around KVM (MACHINE.md section 5): syscall entry/exit with SWAPGS,
 * user-return notifiers (kernel/user-return-notifier.c), preempt notifiers and the
 * scheduler's context switch (kernel/sched/core.c), tasks and their user FS/GS bases.
 */
#ifndef _PYKVM_HOST_H
#define _PYKVM_HOST_H

#include "pykvm/cpu.h"
#include "pykvm/params.h"
#include "pykvm/oracle.h"

/* Segment selectors of the host kernel (arch/x86/include/asm/segment.h, 64-bit). */
#define __KERNEL_CS	0x10
#define __KERNEL_DS	0x18
#define __USER32_CS	0x23
#define __USER_DS	0x2b
#define __USER_CS	0x33
#define GDT_ENTRY_TSS	8
#define GDT_ENTRY_LDT	10
#define __TSS_SEL	(GDT_ENTRY_TSS * 8)

int pk_host_init(struct pk_machine *m);
const char *pk_host_params_invalid(struct pk_machine *m);
u64 pk_host_spec_ctrl_kernel(const struct pk_machine *m);
u64 pk_host_spec_ctrl_user(const struct pk_machine *m);
/* Mitigations the host kernel applies: its parameter and the CPU's bug or feature. */
bool pk_host_kernel_ibrs(const struct pk_machine *m);	/* X86_FEATURE_KERNEL_IBRS */
bool pk_host_pti(const struct pk_machine *m);		/* X86_FEATURE_PTI */
bool pk_host_mds_clear(const struct pk_machine *m);	/* mds_user_clear */
/* The host NMI handler (paranoid entry, then per-cpu data through GS). */
void pk_host_nmi(struct pk_cpu *cpu);
void pk_host_machine_check(struct pk_cpu *cpu);
/* A device interrupt in host kernel mode, with the softirqs run on its way out. */
void pk_host_irq(struct pk_cpu *cpu, u32 vector, bool softirqs);
int pk_host_create_task(struct pk_machine *m, int cpu, bool is_vcpu_thread);
void pk_host_exit_task(struct pk_machine *m, int id);

/* The running task enters / leaves the kernel on this_cpu() (syscall, ioctl). */
void pk_enter_kernel(void);
void pk_exit_to_user_mode(void);

/* kernel/user-return-notifier.c */
void user_return_notifier_register(struct user_return_notifier *urn);
void user_return_notifier_unregister(struct user_return_notifier *urn);
void fire_user_return_notifiers(void);

/* Preemption: kernel/sched/core.c (preempt notifiers fire around a context switch). */
void preempt_notifier_register(struct preempt_notifier *pn);
void preempt_notifier_unregister(struct preempt_notifier *pn);
void preempt_disable(void);
void preempt_enable(void);
void local_irq_disable(void);
void local_irq_enable(void);
/* Switch this CPU from its current task to `next` (sched_out / switch_to / sched_in). */
void pk_context_switch(int cpu, int next);
/* Move a task to another CPU (it is not running; runs there on its next switch). */
int pk_migrate_task(int task, int cpu);
/* Host IRQ handler of the timer tick (see PK_TICK_INSNS in host.c). */
void pk_host_timer_interrupt(void);
/* The running task's next slice of guest instructions before a tick. */
void pk_timer_slice_start(struct pk_cpu *cpu, struct pk_task *t);
/* A signal to a task from another thread: its run ends at the next tick. */
void pk_signal_task(struct pk_machine *m, int task);
/* pk_host_run_other() for a caller that holds the CPU already. */
void pk_host_run_other_locked(struct pk_machine *m, u32 cpu);
/* cffi:begin */
int pk_host_run_other(struct pk_machine *m, u32 cpu);
/* cffi:end */

/* ---- the scheduler (csrc/host/sched.c: kernel/sched/core.c, kernel/sched/idle.c) ---- */
#define TASK_RUNNING		0
#define TASK_INTERRUPTIBLE	1

/* The CPU's idle task (swapper/N) and a kernel worker thread: created on first use. */
int pk_host_idle_task(struct pk_machine *m, u32 cpu);
int pk_host_kworker(struct pk_machine *m, u32 cpu);
void set_current_state(u32 state);
bool need_resched(void);
bool single_task_running(void);
/* try_to_wake_up(): a sleeping task becomes runnable and preempts its CPU's current one. */
bool wake_up_process(int task);
/* The current task gives up this CPU (blocked, or preempted by a task it woke). */
void schedule(void);
/* A kernel worker preempts the task running on `cpu`, with no return to user mode. */
void pk_host_kthread_preempt(struct pk_cpu *cpu);
/* Make the CPU's user process or its kworker runnable: it preempts at the next reschedule. */
int pk_host_queue_preemptor(struct pk_machine *m, u32 cpu, bool kthread);
bool pk_host_unqueue_preemptor(struct pk_machine *m, u32 cpu, int id);
/* An exiting task leaves the runqueue it waits in (its CPU is held). */
void pk_host_dequeue_task(struct pk_machine *m, int id);
/* cffi:begin */
/*
 * A kernel thread (a kworker) is woken on `cpu`, preempts the task running there and
 * gives the CPU back when its work is done; nothing returns to user mode in between
 * unless the preempted task was in user mode (then it returns, as after an interrupt).
 * A host event for the checker and the workloads: 0, or -EINVAL for a bad CPU.
 */
int pk_host_run_kthread(struct pk_machine *m, u32 cpu);
/* The TSC of `cpu` (the simulated clock; it advances only while the CPU waits). */
u64 pk_host_cpu_tsc(struct pk_machine *m, u32 cpu);
/* cffi:end */

/* ---- time and timers (csrc/host/hrtimer.c: kernel/time/hrtimer.c) ---- */
/*
 * The simulated TSC runs at 2.1 GHz (the Xeon Platinum 8160 of the skylake-sp profile).
 * It does not advance with guest or host instructions, only while a CPU waits for its
 * next timer (halt polling, the idle loop): enough to order wake-ups, not a clock of
 * the work done (costs are counted, not timed).
 */
#define PK_TSC_KHZ		2100000ULL
u64 pk_tsc_to_ns(u64 tsc);
u64 pk_ns_to_tsc(u64 ns);
u64 ktime_get(void);				/* this CPU's clock in ns */
/* Arm `t` to fire on this CPU when its TSC reaches `expires` (re-arming moves it). */
void hrtimer_start(struct pk_hrtimer *t, u64 expires);
void hrtimer_cancel(struct pk_hrtimer *t);
/* Re-arm an armed timer of another CPU on this one, with the time it had left there. */
void hrtimer_migrate_here(struct pk_hrtimer *t);
/*
 * Let `cpu` wait, with IRQs on, until its TSC reaches `until`: the earliest timer that
 * expires by then fires (the clock jumps to its expiry) and true is returned; with none,
 * the clock moves to `until` (if it is not ~0) and false is returned.
 */
bool pk_hrtimer_run_next(struct pk_cpu *cpu, u64 until);

u64 x86_gsbase_read_inactive(void);
void x86_gsbase_write_inactive(u64 gsbase);

static inline struct pk_task *current_task(void)
{
	struct pk_machine *m = this_machine();
	return pk_task(m, m->host.current[this_cpu()->id]);
}

#endif

#ifndef _PYKVM_HOST_H_CACHED
#define _PYKVM_HOST_H_CACHED
/* Per-cpu cached copies the kernel reads instead of MOV from CR3/CR4. */
static inline u64 __get_current_cr3_fast(void)
{
	/* build_cr3(cpu_tlbstate.loaded_mm->pgd, cpu_tlbstate.loaded_mm_asid) */
	return this_machine()->host.loaded_cr3[smp_processor_id()];
}

/*
 * The noinstr section around VM-entry (kernel: guest_state_enter_irqoff() and
 * guest_state_exit_irqoff() in include/linux/kvm_host.h, which enter and leave guest
 * context for RCU and context tracking). The oracle knows that inside it the host runs
 * with guest values it restores before any instrumentable code (pk_observe_handler).
 */
static inline void guest_state_enter_irqoff(void)
{
	this_machine()->host.guest_ctx[this_cpu()->id] = true;
}

static inline void guest_state_exit_irqoff(void)
{
	this_machine()->host.guest_ctx[this_cpu()->id] = false;
}

static inline u64 cr4_read_shadow(void)
{
	return this_machine()->host.cr4_shadow[smp_processor_id()];
}
#endif
