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

#include "pykvm/printk.h"

#include "pykvm/events.h"
#include "pykvm/smp.h"

static struct pk_task *task(struct pk_machine *m, int id)
{
	return pk_task(m, id);
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

/* The runqueue of a CPU: its runnable tasks waiting, first come first served. */
static void enqueue_task(struct pk_machine *m, u32 cpu, int id)
{
	struct pk_host *h = &m->host;
	struct pk_task *t = task(m, id);

	if (t->on_rq)
		return;
	t->on_rq = true;
	t->rq_next = -1;
	if (h->rq_tail[cpu] < 0)
		h->rq_head[cpu] = id;
	else
		task(m, h->rq_tail[cpu])->rq_next = id;
	h->rq_tail[cpu] = id;
	h->rq_nr[cpu]++;
}

/* Take `id` off the runqueue of `cpu`; false if it was not there. */
static bool dequeue_task(struct pk_machine *m, u32 cpu, int id)
{
	struct pk_host *h = &m->host;
	int prev = -1;

	if (!task(m, id)->on_rq)
		return false;
	for (int i = h->rq_head[cpu]; i >= 0 && i != id; i = task(m, i)->rq_next)
		prev = i;
	if (prev < 0)
		h->rq_head[cpu] = task(m, id)->rq_next;
	else
		task(m, prev)->rq_next = task(m, id)->rq_next;
	if (h->rq_tail[cpu] == id)
		h->rq_tail[cpu] = prev;
	task(m, id)->on_rq = false;
	task(m, id)->rq_next = -1;
	h->rq_nr[cpu]--;
	return true;
}

static int dequeue_first(struct pk_machine *m, u32 cpu)
{
	int id = m->host.rq_head[cpu];

	dequeue_task(m, cpu, id);
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
	/*
	 * Wake-ups come from the woken task's own CPU here (its timers move with it,
	 * pk_vcpu_migrate): another CPU's runqueue is not this thread's to touch.
	 */
	if (t->cpu != this_cpu()->id) {
		pk_host_bug(m);
		return false;
	}
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

/*
 * __schedule(): the current task leaves the CPU until it is picked again. A task that
 * calls it while not TASK_RUNNING sleeps; one preempted (SM_PREEMPT) stays runnable
 * whatever its state, as it had not gone to sleep yet (kernel/sched/core.c).
 */
static void __schedule(bool preempt)
{
	struct pk_machine *m = this_machine();
	u32 cpu = this_cpu()->id;
	int me = m->host.current[cpu];
	u32 old = pk_path_enter(m, PK_PATH_OTHER);

	for (;;) {
		int prev = m->host.current[cpu];
		struct pk_task *p = task(m, prev);
		int next;

		m->host.need_resched[cpu] = false;
		next = pick_next_task(m, cpu, prev);
		if (next != prev) {
			/* A preempted task stays runnable, behind the one that preempted it. */
			if (!p->is_idle && (p->state == TASK_RUNNING || (preempt && prev == me)))
				enqueue_task(m, cpu, prev);
			pk_context_switch((int)cpu, next);
		}
		if (next == me)
			break;
		run_inline(m, cpu, next, me);
	}
	pk_path_leave(m, old);
}

void schedule(void)
{
	__schedule(false);
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
		__schedule(true);		/* preempt_schedule_irq() */
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

	if (!dequeue_task(m, cpu, id))
		return true;
	task(m, id)->state = TASK_INTERRUPTIBLE;
	h->need_resched[cpu] = h->rq_nr[cpu] != 0;
	return false;
}

/* Drop an exiting task from the runqueue it may wait in; its CPU is held. */
void pk_host_dequeue_task(struct pk_machine *m, int id)
{
	dequeue_task(m, task(m, id)->cpu, id);
}

int pk_host_run_kthread(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *saved = pk_this_cpu;
	bool user;

	if (cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %u: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	pk_cpu_lock(m, cpu);
	pk_this_cpu = &m->cpu[cpu];
	user = m->host.in_user[cpu];
	if (user)
		pk_enter_kernel();		/* the interrupt that woke the worker */
	pk_host_kthread_preempt(&m->cpu[cpu]);
	if (user)
		pk_exit_to_user_mode();
	pk_this_cpu = saved;
	pk_cpu_unlock(m, cpu);
	return 0;
}

u64 pk_host_cpu_tsc(struct pk_machine *m, u32 cpu)
{
	u64 tsc;

	if (cpu >= m->nr_cpus)
		return 0;
	pk_cpu_lock(m, cpu);
	tsc = m->cpu[cpu].tsc;
	pk_cpu_unlock(m, cpu);
	return tsc;
}
