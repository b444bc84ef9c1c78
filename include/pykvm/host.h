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
#define __TSS_SEL	(GDT_ENTRY_TSS * 8)

void pk_host_init(struct pk_machine *m);
/* The host NMI handler (paranoid entry, then per-cpu data through GS). */
void pk_host_nmi(struct pk_cpu *cpu);
int pk_host_create_task(struct pk_machine *m, int cpu, bool is_vcpu_thread);

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
/* Host IRQ handler of the timer tick that ends a guest instruction budget. */
void pk_host_timer_interrupt(void);
/* cffi:begin */
int pk_host_run_other(struct pk_machine *m, u32 cpu);
/* cffi:end */

u64 x86_gsbase_read_inactive(void);
void x86_gsbase_write_inactive(u64 gsbase);

static inline struct pk_task *current_task(void)
{
	struct pk_machine *m = this_machine();
	return &m->host.tasks[m->host.current[this_cpu()->id]];
}

#endif

#ifndef _PYKVM_HOST_H_CACHED
#define _PYKVM_HOST_H_CACHED
/* Per-cpu cached copies the kernel reads instead of MOV from CR3/CR4. */
static inline u64 __get_current_cr3_fast(void)
{
	(void)smp_processor_id();		/* this_cpu_read(cpu_tlbstate...) */
	return current_task()->cr3;
}

static inline u64 cr4_read_shadow(void)
{
	(void)smp_processor_id();
	return this_machine()->host.cr4;
}
#endif
