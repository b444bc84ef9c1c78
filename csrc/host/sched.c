// SPDX-License-Identifier: MIT
/*
 * The scheduler around KVM (kernel/sched/core.c, kernel/sched/idle.c), only as far as
 * the world switch meets it: a task that blocks gives its CPU to the next runnable task
 * or to the CPU's idle task; a woken task preempts the one running; kernel threads run
 * without ever returning to user mode, so the user-return notifiers stay pending across
 * them (the vcpu -> idle -> vcpu switch that 26bb0981b3ff, "KVM: VMX: Use shared msr
 * infrastructure", made cheap).
 *
 * The model runs a host CPU on one C stack, so the tasks that run while a task is
 * switched out run inline, inside its schedule(): the idle task waits for the CPU's next
 * timer (the clock jumps to it) until some task is runnable; a kernel worker does its
 * (empty) work and sleeps again. Only these and the task that called schedule() ever get
 * the CPU here: a blocked task is always one whose ioctl is on the stack.
 */
#include <errno.h>

#include "pykvm/events.h"

static struct pk_task *task(struct pk_machine *m, int id)
{
	return &m->host.tasks[id];
}

/* A kernel thread of `cpu` (kthread_create_on_cpu): no user mode, no mm of its own. */
static int create_kthread(struct pk_machine *m, u32 cpu, bool idle)
{
	int id = pk_host_create_task(m, (int)cpu, false);
	struct pk_task *t;

	if (id < 0)
		return -1;
	t = task(m, id);
	t->is_kthread = true;
	t->is_idle = idle;
	t->fsbase = t->gsbase = 0;
	t->cr3 = 0;				/* borrows the mm it finds (lazy TLB) */
	t->state = idle ? TASK_RUNNING : TASK_INTERRUPTIBLE;
	return id;
}

int pk_host_idle_task(struct pk_machine *m, u32 cpu)
{
	if (m->host.idle_task[cpu] < 0)
		m->host.idle_task[cpu] = create_kthread(m, cpu, true);
	return m->host.idle_task[cpu];
}

int pk_host_kworker(struct pk_machine *m, u32 cpu)
{
	if (m->host.kworker[cpu] < 0)
		m->host.kworker[cpu] = create_kthread(m, cpu, false);
	return m->host.kworker[cpu];
}

void set_current_state(u32 state)
{
	current_task()->state = state;
}

bool need_resched(void)
{
	return this_machine()->host.need_resched[this_cpu()->id];
}

/* Nothing else is waiting for this CPU (kernel: nr_running() == 1 on this runqueue). */
bool single_task_running(void)
{
	return this_machine()->host.rq_nr[this_cpu()->id] == 0;
}

static void enqueue_task(struct pk_machine *m, u32 cpu, int id)
{
	struct pk_host *h = &m->host;

	for (u32 i = 0; i < h->rq_nr[cpu]; i++)
		if (h->rq[cpu][i] == id)
			return;
	if (h->rq_nr[cpu] < PK_MAX_TASKS)
		h->rq[cpu][h->rq_nr[cpu]++] = id;
}

static int dequeue_first(struct pk_machine *m, u32 cpu)
{
	struct pk_host *h = &m->host;
	int id = h->rq[cpu][0];

	for (u32 i = 1; i < h->rq_nr[cpu]; i++)
		h->rq[cpu][i - 1] = h->rq[cpu][i];
	h->rq_nr[cpu]--;
	return id;
}

/*
 * try_to_wake_up(): a sleeping task becomes runnable on its CPU, which is told to
 * reschedule (the woken task preempts: wakeup preemption). False if it was not asleep.
 */
bool wake_up_process(int id)
{
	struct pk_machine *m = this_machine();
	struct pk_task *t = task(m, id);

	if (t->state == TASK_RUNNING)
		return false;
	t->state = TASK_RUNNING;
	enqueue_task(m, t->cpu, id);
	m->host.need_resched[t->cpu] = true;
	return true;
}

/* pick_next_task(): a woken task first, else the current one if it can run, else idle. */
static int pick_next_task(struct pk_machine *m, u32 cpu, int prev)
{
	if (m->host.rq_nr[cpu])
		return dequeue_first(m, cpu);
	if (task(m, prev)->state == TASK_RUNNING)
		return prev;
	return pk_host_idle_task(m, cpu);
}

/*
 * do_idle(): the CPU halts until an interrupt makes a task runnable; in the model, time
 * jumps to the next timer on this CPU. False if no timer is left to wake anything.
 */
static bool do_idle(struct pk_machine *m, u32 cpu)
{
	while (!m->host.need_resched[cpu]) {
		if (!pk_hrtimer_run_next(&m->cpu[cpu], ~0ULL))
			return false;
	}
	return true;
}

/*
 * What a task other than `me` does once it has the CPU, until it calls schedule() in
 * turn: the idle task idles, a kernel worker does its work and sleeps.
 */
static void run_inline(struct pk_machine *m, u32 cpu, int id, int me)
{
	struct pk_task *t = task(m, id);

	if (t->is_idle) {
		if (!do_idle(m, cpu)) {
			/*
			 * Nothing will ever wake `me`: it sleeps until its signal (the run's
			 * timer budget: the ioctl ends with -EINTR, as a VMM's SIGALRM would).
			 */
			task(m, me)->signal_pending = true;
			wake_up_process(me);
		}
		return;
	}
	if (!t->is_kthread) {
		/*
		 * A user task: it returns to user mode (the user-return notifiers run), runs
		 * there and sleeps in its next system call.
		 */
		pk_exit_to_user_mode();
		pk_enter_kernel();
	}
	/* A kworker: its work item runs (nothing the switch sees), then it sleeps. */
	t->state = TASK_INTERRUPTIBLE;
}

/* __schedule(): the current task leaves the CPU until it is picked again. */
void schedule(void)
{
	struct pk_machine *m = this_machine();
	u32 cpu = this_cpu()->id;
	int me = m->host.current[cpu];
	u32 old = pk_path_enter(m, PK_PATH_OTHER);

	for (;;) {
		int prev = m->host.current[cpu];
		int next;

		m->host.need_resched[cpu] = false;
		next = pick_next_task(m, cpu, prev);
		if (next != prev) {
			/* A preempted task stays runnable, behind the one that preempted it. */
			if (task(m, prev)->state == TASK_RUNNING && !task(m, prev)->is_idle)
				enqueue_task(m, cpu, prev);
			pk_context_switch((int)cpu, next);
		}
		if (next == me)
			break;
		run_inline(m, cpu, next, me);
	}
	pk_path_leave(m, old);
}

/*
 * A kernel worker is woken on this CPU (a work item queued by an interrupt) and the
 * running task is preempted at once (preempt_schedule_irq on the interrupt's return):
 * the worker runs and sleeps, the preempted task runs on. Nothing returns to user mode.
 */
void pk_host_kthread_preempt(struct pk_cpu *cpu)
{
	struct pk_cpu *saved = pk_this_cpu;
	struct pk_machine *m = cpu->m;
	int kw;

	pk_this_cpu = cpu;
	kw = pk_host_kworker(m, cpu->id);
	if (kw >= 0) {
		wake_up_process(kw);
		schedule();
	}
	pk_this_cpu = saved;
}

/*
 * The task that will preempt whatever runs on `cpu` at its next reschedule point: the
 * CPU's own user process or its kernel worker, made runnable (TIF_NEED_RESCHED set).
 */
int pk_host_queue_preemptor(struct pk_machine *m, u32 cpu, bool kthread)
{
	struct pk_cpu *saved = pk_this_cpu;
	int id = kthread ? pk_host_kworker(m, cpu) : (int)cpu;	/* pk_host_init's order */

	if (id < 0 || m->host.current[cpu] == id)
		return -1;
	pk_this_cpu = &m->cpu[cpu];
	task(m, id)->state = TASK_INTERRUPTIBLE;
	wake_up_process(id);
	pk_this_cpu = saved;
	return id;
}

/* Take back a preemptor that never got the CPU; true if it had run. */
bool pk_host_unqueue_preemptor(struct pk_machine *m, u32 cpu, int id)
{
	struct pk_host *h = &m->host;
	bool queued = false;

	for (u32 i = 0; i < h->rq_nr[cpu]; i++) {
		if (h->rq[cpu][i] != id)
			continue;
		for (u32 j = i + 1; j < h->rq_nr[cpu]; j++)
			h->rq[cpu][j - 1] = h->rq[cpu][j];
		h->rq_nr[cpu]--;
		queued = true;
		break;
	}
	if (queued) {
		task(m, id)->state = TASK_INTERRUPTIBLE;
		h->need_resched[cpu] = h->rq_nr[cpu] != 0;
	}
	return !queued;
}

int pk_host_run_kthread(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *saved = pk_this_cpu;
	bool user;

	if (cpu >= m->nr_cpus)
		return -EINVAL;
	pk_this_cpu = &m->cpu[cpu];
	user = m->host.in_user[cpu];
	if (user)
		pk_enter_kernel();		/* the interrupt that woke the worker */
	pk_host_kthread_preempt(&m->cpu[cpu]);
	if (user)
		pk_exit_to_user_mode();
	pk_this_cpu = saved;
	return 0;
}

u64 pk_host_cpu_tsc(struct pk_machine *m, u32 cpu)
{
	return cpu < m->nr_cpus ? m->cpu[cpu].tsc : 0;
}
