// SPDX-License-Identifier: MIT
/*
 * Generic KVM (virt/kvm/kvm_main.c): vcpu_load/vcpu_put, preempt notifiers, VM and vCPU
 * creation, enabling virtualization on every CPU, and the ioctl entry points that the
 * Python binding calls. Each entry point runs as the vCPU thread (a host task) entering
 * the kernel on its CPU and returning to user mode, so user-return MSRs behave as they do
 * for a real VMM.
 */
#include "pykvm/kvm_api.h"
#include "x86.h"
#include "pykvm/events.h"
#include "pykvm/module.h"
#include "pykvm/printk.h"

int kvm_arch_enable_virtualization_cpu(void);
void kvm_arch_disable_virtualization_cpu(void);
int kvm_vcpu_ioctl_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n, bool set);
int kvm_vcpu_ioctl_set_cpuid2(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *e, int n);

/* ---- halting: polling, blocking, waking (kvm_vcpu_halt, kvm_vcpu_block) ---- */

/*
 * kvm.halt_poll_ns is in x86.c's table. Its companions halt_poll_ns_grow (2),
 * halt_poll_ns_grow_start (10000) and halt_poll_ns_shrink (2 upstream since it stopped
 * defaulting to 0) are kept at upstream's values: they decide how fast a vCPU's window
 * adapts, which a steady workload does not see.
 */
#define HALT_POLL_NS_GROW		2
#define HALT_POLL_NS_GROW_START		10000	/* 10 us */
#define HALT_POLL_NS_SHRINK		2

static const struct kvm_params *kvm_param(void)
{
	return &kvm_global()->params;
}

static void grow_halt_poll_ns(struct kvm_vcpu *vcpu)
{
	unsigned int val = vcpu->halt_poll_ns;
	unsigned int grow = HALT_POLL_NS_GROW;
	unsigned int grow_start = HALT_POLL_NS_GROW_START;

	if (!grow)
		return;
	val *= grow;
	if (val < grow_start)
		val = grow_start;
	vcpu->halt_poll_ns = val;
}

static void shrink_halt_poll_ns(struct kvm_vcpu *vcpu)
{
	unsigned int val = vcpu->halt_poll_ns;
	unsigned int shrink = HALT_POLL_NS_SHRINK;

	if (shrink == 0)
		val = 0;
	else
		val /= shrink;
	/* Below the start value polling is not worth it (S. Senozhatsky, Message-Id
	 * <20210902031100.252080-1-senozhatsky@chromium.org>). */
	if (val < HALT_POLL_NS_GROW_START)
		val = 0;
	vcpu->halt_poll_ns = val;
}

/* <0: the vCPU must stop halting (a wake event, a timer, a signal); 0: keep waiting. */
static int kvm_vcpu_check_block(struct kvm_vcpu *vcpu)
{
	if (kvm_arch_vcpu_runnable(vcpu))
		return -EINTR;
	if (kvm_cpu_has_pending_timer(vcpu))
		return -EINTR;
	if (current_task()->signal_pending)
		return -EINTR;
	return 0;
}

/*
 * Block the vCPU until it is runnable, an event arrives or a signal is pending: the
 * thread sleeps (schedule(): kvm_sched_out puts the vCPU, the CPU runs other tasks or
 * idles, kvm_sched_in loads it again). True if it actually slept.
 */
bool kvm_vcpu_block(struct kvm_vcpu *vcpu)
{
	bool waited = false;

	/* prepare_to_rcuwait(): kvm_vcpu_wake_up() may wake this thread from now on. */
	preempt_disable();
	vcpu->waiting = true;
	preempt_enable();
	for (;;) {
		set_current_state(TASK_INTERRUPTIBLE);
		if (kvm_vcpu_check_block(vcpu) < 0)
			break;
		waited = true;
		schedule();
	}
	/* finish_rcuwait() */
	preempt_disable();
	vcpu->waiting = false;
	set_current_state(TASK_RUNNING);
	preempt_enable();
	return waited;
}

static unsigned int kvm_vcpu_max_halt_poll_ns(struct kvm_vcpu *vcpu)
{
	return kvm_param()->halt_poll_ns;
}

/* kvm_vcpu_can_poll(): nothing else wants the CPU and the window is still open. */
static bool kvm_vcpu_can_poll(u64 cur, u64 stop)
{
	return single_task_running() && !need_resched() && cur < stop;
}

/*
 * Emulate a halt: with polling on, busy-wait up to the vCPU's window for a wake event
 * (halt-polling: no put/load and no context switch if it comes), else block. The window
 * then grows after a short halt and shrinks after a long one (virt/kvm/kvm_main.c).
 */
void kvm_vcpu_halt(struct kvm_vcpu *vcpu)
{
	unsigned int max_halt_poll_ns = kvm_vcpu_max_halt_poll_ns(vcpu);
	bool waited = false;
	bool do_halt_poll;
	u64 start, cur, halt_ns;

	if (vcpu->halt_poll_ns > max_halt_poll_ns)
		vcpu->halt_poll_ns = max_halt_poll_ns;
	do_halt_poll = vcpu->halt_poll_ns != 0;		/* kvm_arch_no_poll(): never on x86 here */

	start = cur = ktime_get();
	if (do_halt_poll) {
		u64 stop = start + vcpu->halt_poll_ns;

		do {
			if (kvm_vcpu_check_block(vcpu) < 0)
				goto out;
			/* cpu_relax(): time passes up to the next timer on this CPU, or the end. */
			pk_hrtimer_run_next(this_cpu(), pk_ns_to_tsc(stop));
			cur = ktime_get();
		} while (kvm_vcpu_can_poll(cur, stop));
	}
	waited = kvm_vcpu_block(vcpu);
	cur = ktime_get();
out:
	/* The total time the vCPU was halted, polling included. */
	halt_ns = cur - start;
	/* Polling succeeded if the vCPU never had to schedule out. */
	if (do_halt_poll) {
		++vcpu->stat.halt_attempted_poll;
		if (!waited)
			++vcpu->stat.halt_successful_poll;
	}
	max_halt_poll_ns = kvm_vcpu_max_halt_poll_ns(vcpu);
	if (max_halt_poll_ns) {
		if (halt_ns <= vcpu->halt_poll_ns)
			;
		/* A long halt: polling would not have caught it, poll less. */
		else if (vcpu->halt_poll_ns && halt_ns > max_halt_poll_ns)
			shrink_halt_poll_ns(vcpu);
		/* A short halt the window missed: poll longer. */
		else if (vcpu->halt_poll_ns < max_halt_poll_ns && halt_ns < max_halt_poll_ns)
			grow_halt_poll_ns(vcpu);
	} else {
		vcpu->halt_poll_ns = 0;
	}
}

/* __kvm_vcpu_wake_up() / rcuwait_wake_up(): wake the thread if it sleeps in kvm_vcpu_block. */
bool kvm_vcpu_wake_up(struct kvm_vcpu *vcpu)
{
	if (vcpu->waiting && wake_up_process(vcpu->task)) {
		vcpu->ready = true;
		++vcpu->stat.halt_wakeup;
		return true;
	}
	return false;
}

/*
 * Kick a sleeping vCPU, or one in guest mode, into host kernel mode. A vCPU running on
 * another CPU would get a reschedule IPI; the model runs one vCPU at a time, so a kick
 * only ever finds its target asleep or polling.
 */
void kvm_vcpu_kick(struct kvm_vcpu *vcpu)
{
	if (kvm_vcpu_wake_up(vcpu))
		return;
	if (vcpu->mode == IN_GUEST_MODE)
		vcpu->mode = OUTSIDE_GUEST_MODE;
}

/* ---- preempt notifiers: kvm_sched_in / kvm_sched_out ---- */

static void kvm_sched_in(struct preempt_notifier *pn, int cpu)
{
	struct kvm_vcpu *vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
	struct pk_machine *m = vcpu->kvm->m;
	u32 old = pk_path_enter(m, PK_PATH_VCPU_LOAD);

	vcpu->preempted = false;
	vcpu->scheduled_out = false;
	vcpu->arch.l1tf_flush_l1d = true;	/* kvm_arch_sched_in(): L1TF */
	kvm_arch_vcpu_load(vcpu, cpu);
	pk_path_leave(m, old);
}

static void kvm_sched_out(struct preempt_notifier *pn)
{
	struct kvm_vcpu *vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
	struct pk_machine *m = vcpu->kvm->m;
	u32 old = pk_path_enter(m, PK_PATH_VCPU_PUT);

	vcpu->scheduled_out = true;
	/* Preempted, not blocked: the thread is still runnable (task_is_runnable(current)). */
	if (current_task()->state == TASK_RUNNING) {
		vcpu->preempted = true;
		vcpu->ready = true;
		vcpu->stat.preemptions++;
	}
	kvm_arch_vcpu_put(vcpu);
	pk_path_leave(m, old);
}

void vcpu_load(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	u32 old = pk_path_enter(m, PK_PATH_VCPU_LOAD);
	int cpu;

	preempt_disable();
	cpu = smp_processor_id();
	pk_trace(m, PK_TR_VCPU_LOAD, cpu, vcpu->vcpu_id, 0);
	preempt_notifier_register(&vcpu->preempt_notifier);
	kvm_arch_vcpu_load(vcpu, cpu);
	preempt_enable();
	pk_path_leave(m, old);
}

void vcpu_put(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	u32 old = pk_path_enter(m, PK_PATH_VCPU_PUT);

	preempt_disable();
	pk_trace(m, PK_TR_VCPU_PUT, this_cpu()->id, vcpu->vcpu_id, 0);
	kvm_arch_vcpu_put(vcpu);
	preempt_notifier_unregister(&vcpu->preempt_notifier);
	preempt_enable();
	pk_path_leave(m, old);
}

/* ---- the vCPU thread entering and leaving the kernel ---- */

static void kvm_ioctl_enter(struct pk_machine *m, int task)
{
	struct pk_task *t = &m->host.tasks[task];

	pk_this_cpu = &m->cpu[t->cpu];
	if (m->host.in_user[t->cpu])
		pk_enter_kernel();
	if (m->host.current[t->cpu] != task)
		pk_context_switch(t->cpu, task);
}

static void kvm_ioctl_exit(void)
{
	pk_exit_to_user_mode();
}

/* ---- modules and virtualization enable ---- */

static void kvm_virt_disable_ipi(struct pk_machine *m, u32 cpu);

/*
 * kvm_init(): what kvm.ko sets up once a vendor module's kvm_x86_vendor_init() has
 * succeeded: room for its vCPUs, and the handler of the virtualization-disable IPI
 * (reboot, kexec, CPU offline). A vendor's module_init calls both, as vt_init() does.
 */
int kvm_init(struct pk_machine *m)
{
	const struct kvm_x86_ops *ops = m->kvm_x86_ops;

	if (ops->vcpu_size > PK_KMEM_SIZE / 4 || ops->vm_size > PK_KMEM_SIZE / 4)
		return pk_err(-E2BIG, "%s: a vCPU (%u bytes) or VM (%u bytes) larger than a quarter "
			      "of kernel memory", ops->name, ops->vcpu_size, ops->vm_size);
	m->virt_disable_ipi = kvm_virt_disable_ipi;
	return 0;
}

/* Load kvm and a vendor module by its name ("kvm_intel") or pykvm's alias ("vmx"). */
int pk_kvm_load(struct pk_machine *m, const char *vendor, const char *params)
{
	const struct pk_module *mod = pk_find_module(vendor);

	if (!mod || !mod->init)
		return pk_err(-ENOENT, "no vendor module '%s'", vendor);
	pk_this_cpu = &m->cpu[0];
	return mod->init(m, params);
}

/* Load kvm with a plugin's init ops (a vendor outside this library). */
int pk_kvm_load_ops(struct pk_machine *m, const struct kvm_x86_init_ops *init,
		    const char *params)
{
	int r;

	if (!init || !init->runtime_ops)
		return pk_err(-EINVAL, "init ops without runtime ops");
	pk_this_cpu = &m->cpu[0];
	r = kvm_x86_vendor_init(m, init, params);
	return r ? r : kvm_init(m);
}

/* Parameter i of a module ("kernel", "kvm", a vendor module or its alias): its name,
 * type, upstream value and meaning, and the module it belongs to ("kvm_intel"). */
int pk_param_info(const char *module, int i, const char **owner, const char **name,
		  u32 *type, u64 *upstream, const char **doc)
{
	const struct pk_module *mod = pk_find_module(module);

	if (!mod || i < 0 || i >= mod->num_kp)
		return -ENOENT;
	*owner = mod->name;
	*name = mod->kp[i].name;
	*type = mod->kp[i].type;
	*upstream = mod->kp[i].upstream;
	*doc = mod->kp[i].doc;
	return 0;
}

const char *pk_kvm_vendor_name(struct pk_machine *m)
{
	return m->kvm_x86_ops ? m->kvm_x86_ops->name : NULL;
}

int pk_kvm_has_hv_timer(struct pk_machine *m)
{
	return m->kvm_x86_ops && m->kvm_x86_ops->set_hv_timer;
}

/* kvm_enable_virtualization(): on every CPU, by IPI, the first time a VM is created. */
static int kvm_enable_virtualization(struct pk_machine *m)
{
	struct kvm_x86_global *g = m->kvm_global;
	struct pk_cpu *saved = pk_this_cpu;
	u32 old = pk_path_enter(m, PK_PATH_HARDWARE);
	int r = 0;

	for (u32 c = 0; c < m->nr_cpus && !r; c++) {
		if (g->virtualization_enabled[c])
			continue;
		pk_this_cpu = &m->cpu[c];
		r = kvm_arch_enable_virtualization_cpu();
		if (!r)
			g->virtualization_enabled[c] = true;
	}
	pk_this_cpu = saved;
	pk_path_leave(m, old);
	return r;
}

/* Disable virtualization on one CPU (CPU offline, module unload, reboot IPI). */
int pk_kvm_disable_virtualization_cpu(struct pk_machine *m, u32 cpu)
{
	struct kvm_x86_global *g = m->kvm_global;
	struct pk_cpu *saved = pk_this_cpu;
	u32 old;

	if (!g || cpu >= m->nr_cpus)
		return -EINVAL;
	if (!g->virtualization_enabled[cpu])
		return 0;
	old = pk_path_enter(m, PK_PATH_HARDWARE);
	pk_this_cpu = &m->cpu[cpu];
	kvm_arch_disable_virtualization_cpu();
	g->virtualization_enabled[cpu] = false;
	pk_observe_virt_off(pk_this_cpu, false);
	pk_this_cpu = saved;
	pk_path_leave(m, old);
	return 0;
}

/* The IPI handler of a reboot/kexec/offline: virtualization off on this CPU. */
static void kvm_virt_disable_ipi(struct pk_machine *m, u32 cpu)
{
	pk_kvm_disable_virtualization_cpu(m, cpu);
}

int pk_create_vm(struct pk_machine *m, struct kvm **out)
{
	struct kvm *kvm;
	int r;

	if (!m->kvm_global)
		return -ENOENT;
	pk_this_cpu = &m->cpu[0];
	r = kvm_enable_virtualization(m);
	if (r)
		return r;
	kvm = pk_kzalloc(m, m->kvm_x86_ops->vm_size, 64);
	if (!kvm)
		return -ENOMEM;
	kvm->m = m;
	r = kvm_x86_call(vm_init)(kvm);
	if (r)
		return r;
	*out = kvm;
	return 0;
}

int pk_vm_set_memslot(struct kvm *kvm, u32 slot, u64 gpa, u64 size, void *hva)
{
	struct pk_memslots *s = &kvm->memslots;

	if (slot >= PK_MAX_MEMSLOTS || (gpa & 0xfff) || (size & 0xfff) || gpa + size < gpa)
		return -EINVAL;
	for (u32 i = 0; i < s->nr; i++) {
		struct pk_memslot *o = &s->slot[i];
		if (i != slot && o->size && gpa < o->gpa + o->size && o->gpa < gpa + size)
			return -EEXIST;
	}
	s->slot[slot].gpa = gpa;
	s->slot[slot].size = hva ? size : 0;
	s->slot[slot].hva = hva;
	if (slot >= s->nr)
		s->nr = slot + 1;
	return 0;
}

int pk_create_vcpu(struct kvm *kvm, int cpu, struct kvm_vcpu **out)
{
	struct pk_machine *m = kvm->m;
	struct kvm_cpuid_entry2 cpuid[KVM_MAX_CPUID_ENTRIES];
	struct kvm_vcpu *vcpu;
	int task, n, r;

	if (kvm->nr_vcpus >= KVM_MAX_VCPUS)
		return -EINVAL;
	if (cpu < 0)
		cpu = kvm->nr_vcpus % m->nr_cpus;
	if ((u32)cpu >= m->nr_cpus)
		return -EINVAL;
	task = pk_host_create_task(m, cpu, true);
	if (task < 0)
		return -ENOMEM;
	vcpu = pk_kzalloc(m, m->kvm_x86_ops->vcpu_size, 4096);
	if (!vcpu)
		return -ENOMEM;
	vcpu->kvm = kvm;
	vcpu->vcpu_id = kvm->nr_vcpus;
	vcpu->cpu = -1;
	vcpu->task = task;
	vcpu->preempt_notifier.sched_in = kvm_sched_in;
	vcpu->preempt_notifier.sched_out = kvm_sched_out;
	vcpu->preempt_notifier.task = -1;
	vcpu->arch.last_vmentry_cpu = -1;

	kvm_ioctl_enter(m, task);
	u32 old = pk_path_enter(m, PK_PATH_HARDWARE);
	r = kvm_x86_call(vcpu_create)(vcpu);
	pk_path_leave(m, old);
	if (!r) {
		vcpu_load(vcpu);
		kvm_x86_call(vcpu_reset)(vcpu, false);
		vcpu_put(vcpu);
		n = kvm_get_supported_cpuid(cpuid, KVM_MAX_CPUID_ENTRIES);
		r = kvm_vcpu_ioctl_set_cpuid2(vcpu, cpuid, n);
	}
	kvm_ioctl_exit();
	if (r)
		return r;
	kvm->vcpus[kvm->nr_vcpus++] = vcpu;
	*out = vcpu;
	return 0;
}

/* ---- vCPU ioctls ---- */

/*
 * KVM_RUN. With stay_in_kernel the vCPU thread has not reached user mode yet when this
 * returns (as if it were still on its exit path): user-return MSRs are still loaded, so
 * events such as a virtualization-disable IPI can be placed there; pk_vcpu_return_to_user
 * finishes the return.
 */
int pk_vcpu_run_ex(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t = &m->host.tasks[vcpu->task];
	int r;

	t->timer_budget = max_insns ? max_insns : UINT64_MAX;
	t->signal_pending = false;
	kvm_ioctl_enter(m, vcpu->task);
	this_cpu()->insn_budget = t->timer_budget;
	r = kvm_arch_vcpu_ioctl_run(vcpu);
	/* The signal that ended the run is delivered on the way out. */
	t->signal_pending = false;
	if (!stay_in_kernel)
		kvm_ioctl_exit();
	return r;
}

int pk_vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns)
{
	return pk_vcpu_run_ex(vcpu, max_insns, false);
}

/*
 * KVM_RUN during which the vCPU thread is preempted once, at the first preemptible point
 * from its n-th host instruction on (another task runs and returns to user mode).
 */
int pk_vcpu_run_preempted_by(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, u32 kind,
			     bool *preempted)
{
	struct pk_machine *m = vcpu->kvm->m;
	int r;

	if (kind != PK_INJ_PREEMPT && kind != PK_INJ_PREEMPT_KTHREAD)
		return pk_err(-EINVAL, "injection %u is not a preemption", kind);
	pk_inject_arm_patient(m, m->host.tasks[vcpu->task].cpu, n, kind);
	r = pk_vcpu_run(vcpu, max_insns);
	*preempted = m->inject.fired;
	pk_inject_disarm(m);
	return r;
}

int pk_vcpu_run_preempted(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, bool *preempted)
{
	return pk_vcpu_run_preempted_by(vcpu, max_insns, n, PK_INJ_PREEMPT, preempted);
}

/*
 * KVM_RUN during which another task becomes runnable on the vCPU thread's pCPU (woken
 * by an interrupt while the guest ran): the CPU's user process, which returns to user
 * mode when it runs, or (kthread) its kernel worker, which does not. The vCPU thread
 * yields at its first reschedule point, xfer_to_guest_mode_handle_work() in vcpu_run
 * after an exit handled in the kernel, with the guest state loaded. *preempted says
 * whether it came to that (a run whose first exit goes to userspace never yields).
 */
int pk_vcpu_run_rescheduled(struct kvm_vcpu *vcpu, u64 max_insns, bool kthread,
			    bool *preempted)
{
	struct pk_machine *m = vcpu->kvm->m;
	u32 cpu = m->host.tasks[vcpu->task].cpu;
	int id = pk_host_queue_preemptor(m, cpu, kthread);
	int r;

	if (id < 0)
		return pk_err(-EINVAL, "no task to preempt the vCPU thread on CPU %u", cpu);
	r = pk_vcpu_run(vcpu, max_insns);
	*preempted = pk_host_unqueue_preemptor(m, cpu, id);
	return r;
}

/*
 * Another vCPU (on another pCPU, not simulated) sends this one a KVM_HC_KICK_CPU every
 * `period_ns` by the clock of the pCPU this vCPU's thread runs on (0: no more kicks). The
 * clock runs only while that pCPU waits, so each halt is woken `period_ns` after it began
 * (kvm_pv_kick_cpu_op -> kvm_vcpu_kick). The sender's own exits are not simulated.
 */
int pk_vcpu_kick_every(struct kvm_vcpu *vcpu, u64 period_ns)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_cpu *saved = pk_this_cpu;
	struct pk_hrtimer *t = &vcpu->arch.kick_timer;

	pk_this_cpu = &m->cpu[m->host.tasks[vcpu->task].cpu];
	vcpu->arch.kick_period = pk_ns_to_tsc(period_ns);
	t->function = kvm_pv_kick_timer_fn;
	if (vcpu->arch.kick_period)
		hrtimer_start(t, this_cpu()->tsc + vcpu->arch.kick_period);
	else
		hrtimer_cancel(t);
	pk_this_cpu = saved;
	return 0;
}

/* One kick of that kind, `ns` from now by the same clock (a checker's wake-up event). */
int pk_vcpu_kick_after(struct kvm_vcpu *vcpu, u64 ns)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_cpu *saved = pk_this_cpu;
	struct pk_hrtimer *t = &vcpu->arch.kick_timer;

	pk_this_cpu = &m->cpu[m->host.tasks[vcpu->task].cpu];
	vcpu->arch.kick_period = 0;
	t->function = kvm_pv_kick_timer_fn;
	hrtimer_start(t, this_cpu()->tsc + pk_ns_to_tsc(ns));
	pk_this_cpu = saved;
	return 0;
}

u32 pk_vcpu_halt_poll_ns(struct kvm_vcpu *vcpu)
{
	return vcpu->halt_poll_ns;
}

/* KVM_CREATE_IRQCHIP: the LAPIC (and PIC, IOAPIC) in the kernel, so HLT halts in KVM. */
int pk_vm_create_irqchip(struct kvm *kvm)
{
	pk_this_cpu = &kvm->m->cpu[0];
	return kvm_arch_vm_ioctl_create_irqchip(kvm);
}

int pk_vcpu_return_to_user(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t = &m->host.tasks[vcpu->task];

	if (m->host.current[t->cpu] != vcpu->task || m->host.in_user[t->cpu])
		return -EINVAL;
	pk_this_cpu = &m->cpu[t->cpu];
	kvm_ioctl_exit();
	return 0;
}

struct kvm_run *pk_vcpu_run_struct(struct kvm_vcpu *vcpu)
{
	return &vcpu->run;
}

static int vcpu_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *e, u32 n, bool set)
{
	struct pk_machine *m = vcpu->kvm->m;
	u32 old;
	int r;

	kvm_ioctl_enter(m, vcpu->task);
	old = pk_path_enter(m, PK_PATH_IOCTL);
	r = kvm_vcpu_ioctl_msrs(vcpu, e, n, set);
	pk_path_leave(m, old);
	kvm_ioctl_exit();
	return r;
}

int pk_vcpu_get_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *e, u32 n)
{
	return vcpu_msrs(vcpu, e, n, false);
}

int pk_vcpu_set_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *e, u32 n)
{
	return vcpu_msrs(vcpu, e, n, true);
}

int pk_vcpu_get_regs(struct kvm_vcpu *vcpu, struct pk_regs *regs)
{
	kvm_ioctl_enter(vcpu->kvm->m, vcpu->task);
	vcpu_load(vcpu);
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		regs->gpr[i] = kvm_register_read(vcpu, i);
	regs->rip = kvm_rip_read(vcpu);
	regs->rflags = kvm_x86_call(get_rflags)(vcpu);
	vcpu_put(vcpu);
	kvm_ioctl_exit();
	return 0;
}

int pk_vcpu_set_regs(struct kvm_vcpu *vcpu, const struct pk_regs *regs)
{
	kvm_ioctl_enter(vcpu->kvm->m, vcpu->task);
	vcpu_load(vcpu);
	for (int i = 0; i < NR_VCPU_GPRS; i++)
		kvm_register_write(vcpu, i, regs->gpr[i]);
	kvm_rip_write(vcpu, regs->rip);
	kvm_x86_call(set_rflags)(vcpu, regs->rflags | X86_EFLAGS_FIXED);
	vcpu->arch.exception.pending = false;
	vcpu_put(vcpu);
	kvm_ioctl_exit();
	return 0;
}

int pk_vcpu_get_sregs(struct kvm_vcpu *vcpu, struct pk_sregs *s)
{
	kvm_ioctl_enter(vcpu->kvm->m, vcpu->task);
	vcpu_load(vcpu);
	for (int i = 0; i < NR_VCPU_SREGS; i++)
		kvm_x86_call(get_segment)(vcpu, &s->seg[i], i);
	kvm_x86_call(get_gdt)(vcpu, &s->gdt);
	kvm_x86_call(get_idt)(vcpu, &s->idt);
	s->cr0 = vcpu->arch.cr0;
	s->cr2 = vcpu->arch.cr2;
	s->cr3 = vcpu->arch.cr3;
	s->cr4 = vcpu->arch.cr4;
	s->efer = vcpu->arch.efer;
	s->apic_base = vcpu->arch.apic_base;
	vcpu_put(vcpu);
	kvm_ioctl_exit();
	return 0;
}

int pk_vcpu_set_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *s)
{
	struct desc_ptr dt;
	struct kvm_segment seg;
	int r = 0;

	kvm_ioctl_enter(vcpu->kvm->m, vcpu->task);
	vcpu_load(vcpu);
	vcpu->arch.cr2 = s->cr2;
	vcpu->arch.cr3 = s->cr3;
	if (kvm_x86_call(set_efer)(vcpu, s->efer))
		r = -EINVAL;
	kvm_x86_call(set_cr0)(vcpu, s->cr0);
	kvm_x86_call(set_cr4)(vcpu, s->cr4);
	for (int i = 0; i < NR_VCPU_SREGS; i++) {
		seg = s->seg[i];
		kvm_x86_call(set_segment)(vcpu, &seg, i);
	}
	dt = s->gdt;
	kvm_x86_call(set_gdt)(vcpu, &dt);
	dt = s->idt;
	kvm_x86_call(set_idt)(vcpu, &dt);
	vcpu->arch.apic_base = s->apic_base;
	vcpu_put(vcpu);
	kvm_ioctl_exit();
	return r;
}

int pk_get_supported_cpuid(struct pk_machine *m, struct kvm_cpuid_entry2 *entries, int max)
{
	pk_this_cpu = &m->cpu[0];
	return kvm_get_supported_cpuid(entries, max);
}

int pk_vcpu_set_cpuid(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *entries, int n)
{
	int r;

	kvm_ioctl_enter(vcpu->kvm->m, vcpu->task);
	r = kvm_vcpu_ioctl_set_cpuid2(vcpu, entries, n);
	kvm_ioctl_exit();
	return r;
}

int pk_vcpu_get_stat(struct kvm_vcpu *vcpu, struct kvm_vcpu_stat *stat)
{
	*stat = vcpu->stat;
	return 0;
}

/* The host task of the vCPU's thread (the checker's preemption by another VM uses it). */
int pk_vcpu_task(struct kvm_vcpu *vcpu)
{
	return vcpu->task;
}

int pk_vcpu_cpu(struct kvm_vcpu *vcpu)
{
	return (int)vcpu->kvm->m->host.tasks[vcpu->task].cpu;
}

/*
 * Move the vCPU thread: on its old CPU another task is scheduled (and returns to user
 * mode there), and the thread runs on `cpu` from its next ioctl on.
 */
int pk_vcpu_migrate(struct kvm_vcpu *vcpu, int cpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t = &m->host.tasks[vcpu->task];
	int from = (int)t->cpu;

	if (cpu < 0 || (u32)cpu >= m->nr_cpus)
		return -EINVAL;
	if (cpu == from)
		return 0;
	if (m->host.current[from] == vcpu->task)
		pk_host_run_other(m, from);	/* the CPU's own user process takes it */
	return pk_migrate_task(vcpu->task, cpu);
}

/* ---- costs and live state ---- */

struct pk_costs *pk_machine_costs(struct pk_machine *m) { return &m->costs; }
struct pk_profile *pk_machine_profile(struct pk_machine *m) { return &m->profile; }
void pk_machine_reset_costs(struct pk_machine *m)
{
	u32 path = m->costs.path;

	memset(&m->costs, 0, sizeof(m->costs));
	m->costs.path = path;
}

int pk_cpu_read_msr(struct pk_machine *m, u32 cpu, u32 index, u64 *val)
{
	if (cpu >= m->nr_cpus)
		return -EINVAL;
	return pk_msr_read(&m->cpu[cpu], index, val) ? -EIO : 0;
}

u64 pk_host_per_cpu_offset(struct pk_machine *m, u32 cpu)
{
	return cpu < m->nr_cpus ? m->host.per_cpu_offset[cpu] : 0;
}
