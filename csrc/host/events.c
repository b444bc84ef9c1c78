// SPDX-License-Identifier: MIT
/*
 * Host events at any point where the host allows them (MACHINE.md section 5): before a
 * chosen host instruction, an NMI arrives (held while GIF = 0), a disable IPI is taken
 * (only with IRQs on), or the running vCPU thread is preempted (only when preemptible).
 */
#include "pykvm/events.h"
#include "pykvm/oracle.h"

/* The caller holds `cpu`; other CPUs see the injection whole once `armed` is set. */
void pk_inject_arm(struct pk_machine *m, u32 cpu, u32 n, u32 kind)
{
	m->inject = (struct pk_inject){ .countdown = n, .kind = kind, .cpu = cpu,
					.counting = true };
	__atomic_store_n(&m->inject.armed, 1, __ATOMIC_RELEASE);
}

/* Preempt the vCPU thread at the first preemptible point from the n-th on. */
void pk_inject_arm_patient(struct pk_machine *m, u32 cpu, u32 n, u32 kind)
{
	pk_inject_arm(m, cpu, n, kind);
	m->inject.patient = true;
}

void pk_inject_disarm(struct pk_machine *m)
{
	__atomic_store_n(&m->inject.armed, 0, __ATOMIC_RELEASE);
}

/* Preempt the vCPU thread on cpu: its sched_out, another task to user mode, sched_in. */
static void inject_preempt(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;
	int prev = m->host.current[cpu->id];
	u32 old = pk_path_enter(m, PK_PATH_OTHER);	/* the scheduler, not the interrupted path */

	pk_context_switch((int)cpu->id, (int)cpu->id);
	pk_exit_to_user_mode();
	pk_enter_kernel();
	pk_context_switch((int)cpu->id, prev);
	pk_path_leave(m, old);
}

void pk_inject_point(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;
	struct pk_inject *in = &m->inject;
	struct pk_cpu *saved;
	u32 id = cpu->id;

	__atomic_thread_fence(__ATOMIC_ACQUIRE);	/* pairs with pk_inject_arm's release */
	if (cpu->mode != PK_MODE_HOST || id != in->cpu || m->host.in_user[id])
		return;
	in->points++;
	if (in->countdown == 0) {
		u32 p = in->points - 1;

		/* Counting: note where a disable IPI or a preemption could be taken. */
		if (p < 256 && m->host.irqs_enabled[id]) {
			in->irq_ok[p / 64] |= 1ULL << (p % 64);
			if (!m->host.preempt_count[id] &&
			    pk_task(m, m->host.current[id])->is_vcpu_thread)
				in->preempt_ok[p / 64] |= 1ULL << (p % 64);
		}
		return;
	}
	if (in->countdown > 1) {
		in->countdown--;
		return;
	}
	/* A patient preemption waits for a point where the thread is preemptible. */
	if (in->patient && (in->kind == PK_INJ_PREEMPT || in->kind == PK_INJ_PREEMPT_KTHREAD) &&
	    (m->host.preempt_count[id] || !m->host.irqs_enabled[id] ||
	     !pk_task(m, m->host.current[id])->is_vcpu_thread))
		return;
	in->countdown = 0;
	/* The point is reached: fire once, with injection off while the event runs. */
	__atomic_store_n(&in->armed, 0, __ATOMIC_RELEASE);
	saved = pk_this_cpu;
	pk_this_cpu = cpu;
	switch (in->kind) {
	case PK_INJ_MC:
		pk_trace(m, PK_TR_NMI, id, 2, 0);
		if (m->nmi_handler)
			m->nmi_handler(cpu);	/* the same paranoid entry */
		in->fired = true;
		break;
	case PK_INJ_NMI:
		pk_trace(m, PK_TR_NMI, id, !cpu->gif, 0);
		pk_nmi(cpu);
		in->fired = true;
		break;
	case PK_INJ_DISABLE_IPI:
		if (m->host.irqs_enabled[id] && m->virt_disable_ipi) {
			pk_trace(m, PK_TR_VIRT_DISABLE, id, 0, 0);
			m->virt_disable_ipi(m, id);
			in->fired = true;
			/* The CPU goes down: what the interrupted path does next is not observed. */
			in->dead = true;
			if (m->oracle)
				m->oracle->enabled = false;
		}
		break;
	case PK_INJ_PREEMPT:
	case PK_INJ_PREEMPT_KTHREAD: {
		struct pk_task *t = pk_task(m, m->host.current[id]);

		if (!m->host.preempt_count[id] && m->host.irqs_enabled[id] && t->is_vcpu_thread) {
			if (in->kind == PK_INJ_PREEMPT)
				inject_preempt(cpu);
			else
				pk_host_kthread_preempt(cpu);	/* csrc/host/sched.c */
			in->fired = true;
		}
		break;
	}
	}
	pk_this_cpu = saved;
}

/* Record tracepoints into `t` (NULL: stop). The buffer is not machine state. */
void pk_machine_set_trace(struct pk_machine *m, struct pk_trace *t)
{
	m->trace = t;
}
