// SPDX-License-Identifier: MIT
/*
 * Host time and high-resolution timers (kernel/time/hrtimer.c, kernel/time/timekeeping.c),
 * only as far as wake-ups need them: a timer fires on its CPU when that CPU's TSC reaches
 * its expiry. The TSC advances only while a CPU waits (pk_hrtimer_run_next): halt polling
 * and the idle loop. See PK_TSC_KHZ in include/pykvm/host.h.
 */
#include "pykvm/events.h"
#include "pykvm/smp.h"

u64 pk_tsc_to_ns(u64 tsc)
{
	return (u64)((unsigned __int128)tsc * 1000000 / PK_TSC_KHZ);
}

u64 pk_ns_to_tsc(u64 ns)
{
	return (u64)((unsigned __int128)ns * PK_TSC_KHZ / 1000000);
}

u64 ktime_get(void)
{
	return pk_tsc_to_ns(this_cpu()->tsc);
}

/* Unlink `t` from its CPU's list of armed timers; that CPU is held. */
static void hrtimer_cancel_on(void *info)
{
	struct pk_hrtimer *t = info;
	struct pk_hrtimer **p = &this_machine()->host.hrtimers[t->cpu];

	if (!t->armed)
		return;
	while (*p && *p != t)
		p = &(*p)->next;
	if (*p)
		*p = t->next;
	t->next = NULL;
	t->armed = false;
}

/*
 * The timer's list is its CPU's (the kernel's hrtimer_cpu_base, under that base's lock):
 * a timer armed on another CPU than the one this thread holds is cancelled there.
 */
void hrtimer_cancel(struct pk_hrtimer *t)
{
	struct pk_machine *m = this_machine();

	if (!t->armed)
		return;
	if (pk_cpu_held(m, (u32)t->cpu))
		hrtimer_cancel_on(t);
	else
		smp_call_function_single(t->cpu, hrtimer_cancel_on, t);
}

/* Timers due at the same time fire in the order they were armed (the timerqueue's). */
void hrtimer_start(struct pk_hrtimer *t, u64 expires)
{
	struct pk_machine *m = this_machine();
	int cpu = this_cpu()->id;
	struct pk_hrtimer **p = &m->host.hrtimers[cpu];

	hrtimer_cancel(t);
	while (*p)
		p = &(*p)->next;
	t->expires = expires;
	t->cpu = cpu;
	t->armed = true;
	t->next = NULL;
	*p = t;
}

/* A timer taken off the CPU it is armed on, with the time it had left there. */
struct hrtimer_left {
	struct pk_hrtimer *t;
	u64 left;
	bool armed;
};

static void hrtimer_take_on(void *info)
{
	struct hrtimer_left *h = info;
	u64 now = this_cpu()->tsc;

	h->armed = h->t->armed && h->t->cpu == (int)this_cpu()->id;
	if (!h->armed)
		return;
	h->left = h->t->expires > now ? h->t->expires - now : 0;
	hrtimer_cancel_on(h->t);
}

/*
 * Move an armed timer to this CPU (kernel: hrtimer_cancel() and hrtimer_start_expires(),
 * as __kvm_migrate_apic_timer() does when a vCPU changes CPU). The kernel has one clock
 * for every CPU, so the expiry stays; the model's clocks are per CPU, so what carries
 * over is the time the timer had left on its old CPU.
 */
void hrtimer_migrate_here(struct pk_hrtimer *t)
{
	struct hrtimer_left h = { .t = t };
	int cpu = t->cpu;

	if (!t->armed || cpu == (int)this_cpu()->id)
		return;
	smp_call_function_single(cpu, hrtimer_take_on, &h);
	if (h.armed)
		hrtimer_start(t, this_cpu()->tsc + h.left);
}

bool pk_hrtimer_run_next(struct pk_cpu *cpu, u64 until)
{
	struct pk_machine *m = cpu->m;
	struct pk_hrtimer *first = NULL;
	struct pk_cpu *saved = pk_this_cpu;
	bool irqs;

	for (struct pk_hrtimer *t = m->host.hrtimers[cpu->id]; t; t = t->next)
		if (t->expires <= until && (!first || t->expires < first->expires))
			first = t;
	if (!first) {
		if (until != ~0ULL && cpu->tsc < until)
			cpu->tsc = until;
		return false;
	}
	if (cpu->tsc < first->expires)
		cpu->tsc = first->expires;
	/* hrtimer_interrupt(): the callback runs in hard-IRQ context on its CPU. */
	pk_this_cpu = cpu;
	irqs = m->host.irqs_enabled[cpu->id];
	local_irq_disable();
	hrtimer_cancel(first);
	first->function(first);
	if (irqs)
		local_irq_enable();
	pk_this_cpu = saved;
	return true;
}
