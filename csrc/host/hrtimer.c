// SPDX-License-Identifier: MIT
/*
 * Host time and high-resolution timers (kernel/time/hrtimer.c, kernel/time/timekeeping.c),
 * only as far as wake-ups need them: a timer fires on its CPU when that CPU's TSC reaches
 * its expiry. The TSC advances only while a CPU waits (pk_hrtimer_run_next): halt polling
 * and the idle loop. See PK_TSC_KHZ in include/pykvm/host.h.
 */
#include "pykvm/events.h"

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

void hrtimer_cancel(struct pk_hrtimer *t)
{
	struct pk_machine *m = this_machine();

	if (!t->armed)
		return;
	for (int i = 0; i < PK_MAX_HRTIMERS; i++)
		if (m->host.hrtimers[t->cpu][i] == t)
			m->host.hrtimers[t->cpu][i] = NULL;
	t->armed = false;
}

void hrtimer_start(struct pk_hrtimer *t, u64 expires)
{
	struct pk_machine *m = this_machine();
	int cpu = this_cpu()->id;

	hrtimer_cancel(t);
	for (int i = 0; i < PK_MAX_HRTIMERS; i++) {
		if (!m->host.hrtimers[cpu][i]) {
			m->host.hrtimers[cpu][i] = t;
			t->expires = expires;
			t->cpu = cpu;
			t->armed = true;
			return;
		}
	}
	m->host_bugs++;		/* more timers than the model keeps per CPU: a WARN */
}

bool pk_hrtimer_run_next(struct pk_cpu *cpu, u64 until)
{
	struct pk_machine *m = cpu->m;
	struct pk_hrtimer *first = NULL;
	struct pk_cpu *saved = pk_this_cpu;
	bool irqs;

	for (int i = 0; i < PK_MAX_HRTIMERS; i++) {
		struct pk_hrtimer *t = m->host.hrtimers[cpu->id][i];

		if (t && t->expires <= until && (!first || t->expires < first->expires))
			first = t;
	}
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
