// SPDX-License-Identifier: MIT
/*
 * Host events at any point where the host allows them (MACHINE.md section 5): before a
 * chosen host instruction an NMI or a machine check arrives (an NMI is held while
 * GIF = 0), an interrupt is taken (a virtualization-disable IPI, a device interrupt with
 * softirqs, a LAM-enable IPI rewriting CR3) only with IRQs on, and the running vCPU
 * thread is preempted (by the CPU's own user process, or by another VM's vCPU thread) or
 * changes its page tables in process context (text_poke) only where it is preemptible.
 * Between ioctls: host tasks executing user-mode instructions that read the switched
 * state, and the VMM thread changing its own FS/GS base or TSC mode.
 */
#include "pykvm/events.h"
#include "pykvm/oracle.h"
#include "pykvm/smp.h"

/* Interrupt vectors the model's host uses (arch/x86/include/asm/irq_vectors.h). */
#define REBOOT_VECTOR		0xf8
#define LOCAL_TIMER_VECTOR	0xec
#define CALL_FUNCTION_VECTOR	0xfc

u32 pk_inject_class(u32 kind)
{
	switch (kind) {
	case PK_INJ_DISABLE_IPI:
	case PK_INJ_SOFTIRQ:
	case PK_INJ_CR3:
		return PK_INJ_CLASS_IRQ;
	case PK_INJ_PREEMPT:
	case PK_INJ_PREEMPT_KTHREAD:
	case PK_INJ_PREEMPT_VM:
		return PK_INJ_CLASS_PREEMPT;
	default:
		return PK_INJ_CLASS_ANY;
	}
}

/* Identifies the calling thread: an injection belongs to the run of the thread arming it. */
static __thread char inject_self;

void pk_inject_arm(struct pk_machine *m, u32 cpu, u32 n, u32 kind)
{
	m->inject = (struct pk_inject){ .countdown = n, .kind = kind, .cpu = cpu,
					.counting = true, .owner = &inject_self };
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

void pk_inject_arm_named(struct pk_machine *m, u32 cpu, u32 kind, u32 path, u32 op, u32 msr,
			 u32 nth)
{
	pk_inject_arm(m, cpu, 0, kind);
	m->inject.by_name = true;
	m->inject.name_path = path;
	m->inject.name_op = op;
	m->inject.name_msr = msr;
	m->inject.name_nth = nth ? nth : 1;
}

void pk_machine_set_point_log(struct pk_machine *m, struct pk_point_log *log)
{
	m->point_log = log;
}

int pk_inject_fired(struct pk_machine *m)
{
	return m->inject.fired;
}

void pk_inject_set_other(struct pk_machine *m, int task,
			 void (*run)(struct pk_machine *m, void *arg), void *arg)
{
	m->inject_other_task = task;
	m->inject_other_run = run;
	m->inject_other_arg = arg;
}

/* IRQs on in host kernel mode: an interrupt can be taken. */
static bool irq_allowed(struct pk_machine *m, u32 id)
{
	return m->host.irqs_enabled[id];
}

/* The running task can be scheduled out: IRQs on, preempt_count 0 (never in __schedule). */
static bool preempt_allowed(struct pk_machine *m, u32 id)
{
	return irq_allowed(m, id) && !m->host.preempt_count[id] &&
	       pk_task(m, m->host.current[id])->is_vcpu_thread;
}

static bool allowed(struct pk_machine *m, u32 id, u32 kind)
{
	switch (pk_inject_class(kind)) {
	case PK_INJ_CLASS_IRQ: return irq_allowed(m, id);
	case PK_INJ_CLASS_PREEMPT: return preempt_allowed(m, id);
	default: return true;
	}
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

/*
 * Another VM's vCPU thread takes the CPU from the preempted one: it returns to user mode,
 * issues KVM_RUN (its own vcpu_load, guest entry and exit, vcpu_put), returns to user mode
 * again and is preempted in turn; the first thread is switched back in.
 */
static bool inject_preempt_by_vcpu(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;
	int prev = m->host.current[cpu->id], task = m->inject_other_task;
	u32 old;

	if (task < 0 || (u32)task >= m->host.nr_tasks || task == prev || !m->inject_other_run)
		return false;
	old = pk_path_enter(m, PK_PATH_OTHER);
	for (u32 c = 0; c < m->nr_cpus; c++)
		if (c != cpu->id && m->host.current[c] == task)
			pk_host_run_other(m, c);	/* its CPU's own process takes that CPU */
	pk_this_cpu = cpu;
	pk_migrate_task(task, (int)cpu->id);
	pk_context_switch((int)cpu->id, task);
	pk_exit_to_user_mode();
	m->inject_other_run(m, m->inject_other_arg);
	pk_this_cpu = cpu;
	pk_enter_kernel();
	pk_context_switch((int)cpu->id, prev);
	pk_path_leave(m, old);
	m->inject.other_ran = true;
	return true;
}

/*
 * The running task's CR3 changes while it keeps the CPU. Preemptible: text_poke()
 * switches to its temporary mm and back (use_temporary_mm()), and the task's mm comes
 * back with another PCID. IRQs on only: another thread of the process enables LAM and
 * its IPI (enable_lam_func()) rewrites CR3 with the LAM bit.
 */
#define X86_CR3_LAM_U57		BIT_ULL(61)
static void inject_cr3_change(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;
	struct pk_host *h = &m->host;
	struct pk_task *t = pk_task(m, h->current[cpu->id]);
	bool text_poke = preempt_allowed(m, cpu->id);
	u32 old = pk_path_enter(m, PK_PATH_OTHER);

	if (text_poke) {
		native_write_cr3(h->poking_cr3);
		h->loaded_cr3[cpu->id] = h->poking_cr3;
		t->cr3 ^= 1;		/* switch_mm_irqs_off() chose a new ASID on the way back */
	} else {
		pk_host_irq(cpu, CALL_FUNCTION_VECTOR, false);
		t->cr3 |= X86_CR3_LAM_U57;
	}
	native_write_cr3(t->cr3);
	h->loaded_cr3[cpu->id] = t->cr3;
	pk_trace(m, PK_TR_CR3, cpu->id, t->cr3, !text_poke);
	pk_path_leave(m, old);
}

void pk_inject_point(struct pk_cpu *cpu, u32 op, u32 msr)
{
	struct pk_machine *m = cpu->m;
	struct pk_inject *in = &m->inject;
	struct pk_cpu *saved;
	u32 id = cpu->id;

	__atomic_thread_fence(__ATOMIC_ACQUIRE);	/* pairs with pk_inject_arm's release */
	if (unlikely(m->attr != NULL)) {
		pk_attr_point(m, cpu, op);
		if (!in->armed)
			return;
	}
	if (cpu->mode != PK_MODE_HOST || id != in->cpu || m->host.in_user[id] ||
	    in->owner != &inject_self)
		return;
	in->points++;
	if (unlikely(m->point_log) && m->point_log->n < PK_INJ_OK_POINTS)
		m->point_log->rec[m->point_log->n++] =
			(struct pk_point_name){ (u16)cpu->costs->path, (u16)op, msr };
	if (in->by_name && (in->name_path == ~0U || in->name_path == cpu->costs->path) &&
	    (in->name_op == 0xffff || in->name_op == op) &&
	    (!in->name_msr || in->name_msr == msr) && !--in->name_nth) {
		in->by_name = false;
		in->countdown = 1;
	}
	if (in->countdown == 0) {
		u32 p = in->points - 1;

		/* Counting: note where an interrupt or a preemption could be taken. */
		if (p < PK_INJ_OK_POINTS && irq_allowed(m, id)) {
			in->irq_ok[p / 64] |= 1ULL << (p % 64);
			if (preempt_allowed(m, id))
				in->preempt_ok[p / 64] |= 1ULL << (p % 64);
		}
		return;
	}
	if (in->countdown > 1) {
		in->countdown--;
		return;
	}
	if (!allowed(m, id, in->kind)) {
		/* A patient event waits for a point where it can be taken; others are not. */
		if (in->patient)
			return;
		in->refused++;
		in->countdown = 0;
		__atomic_store_n(&in->armed, 0, __ATOMIC_RELEASE);
		return;
	}
	in->countdown = 0;
	/* The point is reached: fire once, with injection off while the event runs. */
	__atomic_store_n(&in->armed, 0, __ATOMIC_RELEASE);
	saved = pk_this_cpu;
	pk_this_cpu = cpu;
	pk_trace(m, PK_TR_INJECT, id, in->kind,
		 m->host.preempt_count[id] | ((u64)m->host.irqs_enabled[id] << 31));
	switch (in->kind) {
	case PK_INJ_MC:
		pk_trace(m, PK_TR_NMI, id, 2, 0);
		pk_host_machine_check(cpu);
		in->fired = true;
		break;
	case PK_INJ_NMI:
		pk_trace(m, PK_TR_NMI, id, !cpu->gif, 0);
		pk_nmi(cpu);
		in->fired = true;
		break;
	case PK_INJ_DISABLE_IPI:
		if (m->virt_disable_ipi) {
			pk_trace(m, PK_TR_VIRT_DISABLE, id, 0, 0);
			pk_host_irq(cpu, REBOOT_VECTOR, false);
			m->virt_disable_ipi(m, id);
			in->fired = true;
			/* The CPU goes down: what the interrupted path does next is not observed. */
			in->dead = true;
			if (m->oracle)
				m->oracle->enabled = false;
		}
		break;
	case PK_INJ_SOFTIRQ:
		pk_host_irq(cpu, LOCAL_TIMER_VECTOR, true);
		in->fired = true;
		break;
	case PK_INJ_CR3:
		inject_cr3_change(cpu);
		in->fired = true;
		break;
	case PK_INJ_PREEMPT:
		inject_preempt(cpu);
		in->fired = true;
		break;
	case PK_INJ_PREEMPT_KTHREAD:
		pk_host_kthread_preempt(cpu);		/* csrc/host/sched.c */
		in->fired = true;
		break;
	case PK_INJ_PREEMPT_VM:
		in->fired = inject_preempt_by_vcpu(cpu);
		break;
	}
	pk_this_cpu = saved;
}

/* ---- between ioctls: host tasks in user mode ---- */

/* `task` gets its CPU and is in user mode there (what a wake-up and a return lead to). */
static struct pk_cpu *task_to_user(struct pk_machine *m, u32 task)
{
	struct pk_task *t = pk_task(m, (int)task);
	struct pk_cpu *cpu = &m->cpu[t->cpu];

	pk_this_cpu = cpu;
	if (m->host.current[t->cpu] == (int)task && m->host.in_user[t->cpu])
		return cpu;
	if (m->host.in_user[t->cpu])
		pk_enter_kernel();
	pk_context_switch((int)t->cpu, (int)task);
	pk_exit_to_user_mode();
	return cpu;
}

static void expect_user(struct pk_cpu *cpu, u32 reg, u64 exp, u64 act)
{
	if (exp != act && cpu->m->oracle)
		pk_oracle_violation(cpu->m, PK_OBS_USER, cpu->id, reg, exp, act);
}

static int host_user_insns(struct pk_machine *m, u32 cpu_id)
{
	struct pk_cpu *saved = pk_this_cpu, *cpu;
	struct pk_host *h = &m->host;
	struct pk_task *t;
	u64 user_flags = 0x40cd7, mask;	/* CF PF AF ZF SF DF OF AC set in user mode */
	bool aux = m->model.has_rdtscp || m->model.has_rdpid;

	if (cpu_id >= m->nr_cpus)
		return -1;
	pk_this_cpu = cpu = &m->cpu[cpu_id];
	if (!h->in_user[cpu_id]) {
		pk_this_cpu = saved;
		return -1;
	}
	t = pk_task(m, h->current[cpu_id]);
	pk_trace(m, PK_TR_TASK, cpu_id, t->id, 0x10);
	/* vgetcpu()/getcpu(): TSC_AUX holds (node << 12) | cpu. */
	if (m->model.has_rdtscp && aux)
		expect_user(cpu, MSR_TSC_AUX, cpu_id, (u32)cpu->msr[PK_MSR_TSC_AUX]);
	if (m->model.has_rdpid && aux)
		expect_user(cpu, MSR_TSC_AUX, cpu_id, cpu->msr[PK_MSR_TSC_AUX]);
	if (cpu->cr4 & X86_CR4_FSGSBASE) {
		expect_user(cpu, MSR_FS_BASE, t->user_fsbase, cpu->seg[VCPU_SREG_FS].base);
		expect_user(cpu, MSR_GS_BASE, t->user_gsbase, cpu->seg[VCPU_SREG_GS].base);
	}
	/* SYSCALL: RIP from LSTAR, CS/SS from STAR, RFLAGS & ~SYSCALL_MASK (SDM vol. 2B). */
	expect_user(cpu, MSR_LSTAR, h->lstar, cpu->msr[PK_MSR_LSTAR]);
	mask = cpu->msr[PK_MSR_SYSCALL_MASK] & 0xffffffffULL;
	expect_user(cpu, MSR_SYSCALL_MASK, user_flags & ~h->syscall_mask, user_flags & ~mask);
	expect_user(cpu, MSR_STAR, (h->star >> 32) & 0xfffc, (cpu->msr[PK_MSR_STAR] >> 32) & 0xfffc);
	/* ... a syscall (its exit work included) that returns with SYSRETQ. */
	pk_enter_kernel();
	pk_exit_to_user_mode();
	pk_this_cpu = saved;
	return 0;
}

/* arch_prctl(ARCH_SET_FS / ARCH_SET_GS) for the current task, in the kernel (process_64.c). */
static void do_arch_prctl_64(struct pk_machine *m, struct pk_task *t, u64 fs, u64 gs, bool set_gs)
{
	if (t->fsindex)
		loadsegment(VCPU_SREG_FS, 0);
	t->fsindex = 0;
	t->fsbase = fs;
	if (m->model.has_fsgsbase)
		wrfsbase(fs);		/* x86_fsbase_write_cpu() */
	else
		wrmsrl(MSR_FS_BASE, fs);
	t->user_fsbase = fs;
	if (!set_gs)
		return;
	if (t->gsindex)
		load_gs_index(0);
	t->gsindex = 0;
	t->gsbase = gs;
	x86_gsbase_write_inactive(gs);	/* x86_gsbase_write_cpu_inactive() */
	t->user_gsbase = gs;
}

static int host_task_change(struct pk_machine *m, u32 task, u32 how)
{
	struct pk_cpu *saved = pk_this_cpu, *cpu;
	struct pk_host *h = &m->host;
	struct pk_task *t;
	/* A 32-bit VMM has neither arch_prctl(ARCH_SET_GS) nor WRGSBASE in compat mode. */
	bool gs;
	u64 fs_new, gs_new;

	if (task >= h->nr_tasks || how >= PK_NR_TASK_CHANGES)
		return -1;
	t = pk_task(m, (int)task);
	gs = !h->params.vmm_32bit_gs || !t->is_vcpu_thread;
	cpu = task_to_user(m, task);
	pk_trace(m, PK_TR_TASK, cpu->id, task, how);
	fs_new = t->user_fsbase ^ 0x100000;
	gs_new = gs ? t->user_gsbase ^ 0x200000 : t->user_gsbase;
	if (how == PK_TASK_WRFSBASE && (cpu->cr4 & X86_CR4_FSGSBASE)) {
		/* User mode: the kernel learns the new bases only at the next context switch. */
		pk_attr_mark(cpu, "WRFSBASE/WRGSBASE in user mode");
		cpu->seg[VCPU_SREG_FS].base = fs_new;
		t->user_fsbase = fs_new;
		if (gs) {
			cpu->seg[VCPU_SREG_GS].base = gs_new;
			t->user_gsbase = gs_new;
		}
		pk_this_cpu = saved;
		return 0;
	}
	pk_enter_kernel();
	if (how == PK_TASK_SET_TSC) {
		/* prctl(PR_SET_TSC): TIF_NOTSC and CR4.TSD now (cr4_toggle_bits_irqsoff()). */
		local_irq_disable();
		t->notsc = !t->notsc;
		h->cr4_shadow[cpu->id] ^= X86_CR4_TSD;
		native_write_cr4(h->cr4_shadow[cpu->id]);
		local_irq_enable();
	} else {
		do_arch_prctl_64(m, t, fs_new, gs_new, gs);
	}
	pk_exit_to_user_mode();
	pk_this_cpu = saved;
	return 0;
}

/* The task on pCPU `cpu_id`, in user mode, runs those instructions; the CPU is held. */
int pk_host_user_insns(struct pk_machine *m, u32 cpu_id)
{
	int r;

	if (cpu_id >= m->nr_cpus)
		return -1;
	pk_cpu_lock(m, cpu_id);
	r = host_user_insns(m, cpu_id);
	pk_cpu_unlock(m, cpu_id);
	return r;
}

/* A change a task makes to itself, on its CPU (held; the task may be moving meanwhile). */
int pk_host_task_change(struct pk_machine *m, u32 task, u32 how)
{
	u32 cpu;
	int r;

	if (task >= __atomic_load_n(&m->host.nr_tasks, __ATOMIC_RELAXED))
		return -1;
	for (;;) {
		cpu = __atomic_load_n(&pk_task(m, (int)task)->cpu, __ATOMIC_RELAXED);
		pk_cpu_lock(m, cpu);
		if (pk_task(m, (int)task)->cpu == cpu)
			break;
		pk_cpu_unlock(m, cpu);
	}
	r = host_task_change(m, task, how);
	pk_cpu_unlock(m, cpu);
	return r;
}

/* Record tracepoints into `t` (NULL: stop). The buffer is not machine state. */
void pk_machine_set_trace(struct pk_machine *m, struct pk_trace *t)
{
	m->trace = t;
}
