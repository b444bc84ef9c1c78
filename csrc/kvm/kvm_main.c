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
#include "lapic.h"
#include "pykvm/events.h"
#include "pykvm/module.h"
#include "pykvm/smp.h"
#include "pykvm/printk.h"

int kvm_arch_enable_virtualization_cpu(void);
void kvm_arch_disable_virtualization_cpu(void);
int kvm_vcpu_ioctl_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n, bool set);

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
 * another CPU would get a reschedule IPI; in the model the kicks come from timers on the
 * target's own pCPU (they move with it), which only fire while that pCPU waits, so a kick
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

/*
 * The vCPU thread makes a system call: it gets its pCPU (waiting its turn behind other
 * tasks meant for it: the runqueue, include/pykvm/smp.h), enters the kernel and, if
 * another task had the CPU, is switched in. Returns the CPU, held until kvm_ioctl_exit.
 */
static u32 kvm_ioctl_enter(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	int task = vcpu->task;
	u32 cpu = pk_task(m, task)->cpu;

	pk_cpu_lock(m, cpu);
	pk_this_cpu = &m->cpu[cpu];
	if (m->host.in_user[cpu])
		pk_enter_kernel();
	if (m->host.current[cpu] != task)
		pk_context_switch(cpu, task);
	return cpu;
}

/* ... and returns to user mode (user-return notifiers run), giving the CPU up. */
static void kvm_ioctl_exit(struct kvm_vcpu *vcpu, u32 cpu)
{
	pk_exit_to_user_mode();
	pk_cpu_unlock(vcpu->kvm->m, cpu);
}

/* kvm_vcpu_ioctl(): one ioctl of a vCPU at a time (vcpu->mutex), then the kernel entry. */
static u32 vcpu_ioctl_begin(struct kvm_vcpu *vcpu)
{
	mutex_lock(vcpu->mutex);
	return kvm_ioctl_enter(vcpu);
}

static void vcpu_ioctl_end(struct kvm_vcpu *vcpu, u32 cpu)
{
	kvm_ioctl_exit(vcpu, cpu);
	mutex_unlock(vcpu->mutex);
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
	m->virt_disable_ipi = kvm_virt_disable_ipi;
	return 0;
}

/* Load kvm and a vendor module by its name ("kvm_intel") or pykvm's alias ("vmx"). */
int pk_kvm_load(struct pk_machine *m, const char *vendor, const char *params)
{
	const struct pk_module *mod = pk_find_module(vendor);
	int r;

	if (!mod || !mod->init)
		return pk_err(-ENOENT, "no vendor module '%s'", vendor);
	/* insmod runs on some CPU, here the first. */
	pk_cpu_lock(m, 0);
	pk_this_cpu = &m->cpu[0];
	r = mod->init(m, params);
	pk_cpu_unlock(m, 0);
	return r;
}

/* Load kvm with a plugin's init ops (a vendor outside this library). */
int pk_kvm_load_ops(struct pk_machine *m, const struct kvm_x86_init_ops *init,
		    const char *params)
{
	int r;

	if (!init || !init->runtime_ops)
		return pk_err(-EINVAL, "init ops without runtime ops");
	pk_cpu_lock(m, 0);
	pk_this_cpu = &m->cpu[0];
	r = kvm_x86_vendor_init(m, init, params);
	if (!r)
		r = kvm_init(m);
	pk_cpu_unlock(m, 0);
	return r;
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

/* Virtualization on for this CPU: kvm_enable_virtualization()'s IPI. */
static void kvm_enable_virtualization_ipi(void *info)
{
	struct pk_machine *m = this_machine();
	struct kvm_x86_global *g = m->kvm_global;
	int *r = info;
	u32 cpu = this_cpu()->id;

	if (g->virtualization_enabled[cpu] || *r)
		return;
	*r = kvm_arch_enable_virtualization_cpu();
	if (!*r)
		g->virtualization_enabled[cpu] = true;
}

/* kvm_enable_virtualization(): on every CPU, by IPI, the first time a VM is created.
 * kvm_lock held; the caller holds no CPU. */
static int kvm_enable_virtualization(struct pk_machine *m)
{
	int r = 0;

	for (u32 c = 0; c < m->nr_cpus && !r; c++)
		pk_smp_call_from_user(m, (int)c, kvm_enable_virtualization_ipi, &r,
				      PK_PATH_HARDWARE);
	return r;
}

/* Virtualization off on one CPU, which the caller holds (IPI handler, CPU offline). */
static void kvm_disable_virtualization_cpu_locked(struct pk_machine *m, u32 cpu)
{
	struct kvm_x86_global *g = m->kvm_global;
	struct pk_cpu *saved = pk_this_cpu;
	u32 old;

	if (!g->virtualization_enabled[cpu])
		return;
	pk_this_cpu = &m->cpu[cpu];
	old = pk_path_enter(m, PK_PATH_HARDWARE);
	kvm_arch_disable_virtualization_cpu();
	g->virtualization_enabled[cpu] = false;
	pk_observe_virt_off(pk_this_cpu, false);
	pk_path_leave(m, old);
	pk_this_cpu = saved;
}

/* Disable virtualization on one CPU (CPU offline, module unload, reboot IPI). */
int pk_kvm_disable_virtualization_cpu(struct pk_machine *m, u32 cpu)
{
	if (!m->kvm_global)
		return pk_err(-ENOENT, "kvm is not loaded");
	if (cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %u: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	pk_cpu_lock(m, cpu);
	kvm_disable_virtualization_cpu_locked(m, cpu);
	pk_cpu_unlock(m, cpu);
	return 0;
}

/* The IPI handler of a reboot/kexec/offline: virtualization off on this CPU. It
 * interrupts whatever the CPU was doing, so the CPU is held already. */
static void kvm_virt_disable_ipi(struct pk_machine *m, u32 cpu)
{
	kvm_disable_virtualization_cpu_locked(m, cpu);
}

/* ---- VMs ---- */

int pk_create_vm(struct pk_machine *m, struct kvm **out)
{
	struct kvm *kvm;
	int r;

	if (!m->kvm_global)
		return pk_err(-ENOENT, "kvm is not loaded");
	mutex_lock(pk_kvm_lock(m));
	r = kvm_enable_virtualization(m);
	if (r) {
		mutex_unlock(pk_kvm_lock(m));
		return pk_err(r, "enabling virtualization failed on some CPU");
	}
	mutex_unlock(pk_kvm_lock(m));
	kvm = pk_kzalloc(m, m->kvm_x86_ops->vm_size, 64);
	if (!kvm)
		return pk_err(-ENOMEM, "no kernel memory for a VM (%zu KiB in use of %zu MiB)",
			      m->kmem_in_use >> 10, m->kmem_reserved >> 20);
	kvm->m = m;
	kvm->max_vcpus = KVM_MAX_VCPUS;
	kvm->lock = mutex_create();
	kvm->slots_lock = mutex_create();
	if (!kvm->lock || !kvm->slots_lock) {
		r = pk_err(-ENOMEM, "no memory for a VM's locks");
		goto fail;
	}
	pk_cpu_lock(m, 0);			/* the ioctl runs on some CPU: the first */
	pk_this_cpu = &m->cpu[0];
	r = kvm_arch_init_vm(kvm);
	pk_cpu_unlock(m, 0);
	if (r)
		goto fail;
	*out = kvm;
	return 0;
fail:
	mutex_destroy(kvm->lock);
	mutex_destroy(kvm->slots_lock);
	pk_kfree(m, kvm, m->kvm_x86_ops->vm_size, 64);
	return r;
}

/*
 * A memslot change (KVM_SET_USER_MEMORY_REGION). The kernel publishes a new memslot
 * array and waits for running vCPUs (SRCU); here the "hardware" walks kvm->memslots
 * while guests run, so the update waits until no CPU runs anything (every runqueue held,
 * in order), then changes the slots in place.
 */
int pk_vm_set_memslot(struct kvm *kvm, u32 slot, u64 gpa, u64 size, void *hva)
{
	struct pk_machine *m = kvm->m;
	struct pk_memslots *s = &kvm->memslots;
	int r = 0;

	if (slot >= PK_MAX_MEMSLOTS)
		return pk_err(-EINVAL, "slot %u: a VM has slots 0..%d", slot, PK_MAX_MEMSLOTS - 1);
	if ((gpa & 0xfff) || (size & 0xfff) || gpa + size < gpa)
		return pk_err(-EINVAL, "slot %u: gpa %#llx and size %#llx must be page-aligned "
			      "and not wrap", slot, (unsigned long long)gpa, (unsigned long long)size);
	mutex_lock(kvm->slots_lock);
	for (u32 c = 0; c < m->nr_cpus; c++)
		pk_cpu_lock(m, c);
	for (u32 i = 0; i < s->nr; i++) {
		struct pk_memslot *o = &s->slot[i];

		if (i != slot && o->size && gpa < o->gpa + o->size && o->gpa < gpa + size) {
			r = pk_err(-EEXIST, "slot %u overlaps slot %u", slot, i);
			goto out;
		}
	}
	s->slot[slot].gpa = gpa;
	s->slot[slot].size = hva ? size : 0;
	s->slot[slot].hva = hva;
	if (slot >= s->nr)
		s->nr = slot + 1;
out:
	for (u32 c = m->nr_cpus; c-- > 0;)
		pk_cpu_unlock(m, c);
	mutex_unlock(kvm->slots_lock);
	return r;
}

/* Whether a vCPU has this id (kernel: kvm_get_vcpu_by_id() != NULL). */
static bool kvm_vcpu_id_taken(struct kvm *kvm, int id)
{
	return kvm->vcpu_ids[id / 64] & (1ULL << (id % 64));
}

/* The lowest id no vCPU has, or -1. */
static int kvm_lowest_free_vcpu_id(struct kvm *kvm)
{
	for (int w = 0; w < KVM_MAX_VCPU_IDS / 64; w++)
		if (~kvm->vcpu_ids[w])
			return w * 64 + __builtin_ctzll(~kvm->vcpu_ids[w]);
	return -1;
}

/* Free a vCPU whose creation failed, or of a VM being destroyed; its CPU is held. */
static void kvm_vcpu_free_locked(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;

	kvm_arch_vcpu_destroy(vcpu);
	pk_host_exit_task(m, vcpu->task);
}

/*
 * KVM_CREATE_VCPU (kernel: kvm_vm_ioctl_create_vcpu): the id is the vCPU's APIC ID,
 * below KVM_MAX_VCPU_IDS and unique in the VM (-EEXIST); at most max_vcpus vCPUs. With
 * id < 0 the lowest free id is taken. The vCPU thread (a host task) runs on `cpu`, or
 * round robin over the CPUs when cpu < 0.
 */
int pk_create_vcpu(struct kvm *kvm, int cpu, int id, struct kvm_vcpu **out)
{
	struct pk_machine *m = kvm->m;
	struct kvm_cpuid_entry2 cpuid[8];
	struct kvm_vcpu *vcpu;
	int task, n, r;
	u32 held;

	if (id >= KVM_MAX_VCPU_IDS)
		return pk_err(-EINVAL, "vCPU id %d: ids are below KVM_MAX_VCPU_IDS (%d)", id,
			      KVM_MAX_VCPU_IDS);
	if (cpu >= 0 && (u32)cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %d: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	mutex_lock(kvm->lock);
	if (kvm->created_vcpus >= kvm->max_vcpus) {
		r = pk_err(-EINVAL, "the VM has its %d vCPUs already (KVM_MAX_VCPUS)",
			   kvm->max_vcpus);
		goto unlock;
	}
	if (id < 0)
		id = kvm_lowest_free_vcpu_id(kvm);
	if (kvm_vcpu_id_taken(kvm, id)) {
		r = pk_err(-EEXIST, "the VM has a vCPU with id %d already", id);
		goto unlock;
	}
	if (cpu < 0)
		cpu = kvm->nr_vcpus % m->nr_cpus;
	task = pk_host_create_task(m, cpu, true);
	if (task < 0) {
		r = task;
		goto unlock;
	}
	vcpu = pk_kzalloc(m, m->kvm_x86_ops->vcpu_size, 4096);
	if (!vcpu) {
		r = pk_err(-ENOMEM, "no kernel memory for a vCPU (%zu KiB in use of %zu MiB)",
			   m->kmem_in_use >> 10, m->kmem_reserved >> 20);
		goto no_vcpu;
	}
	vcpu->mutex = mutex_create();
	if (!vcpu->mutex) {
		r = pk_err(-ENOMEM, "no memory for a vCPU's mutex");
		goto no_mutex;
	}
	vcpu->kvm = kvm;
	vcpu->vcpu_id = id;
	vcpu->vcpu_idx = kvm->nr_vcpus;
	vcpu->cpu = -1;
	vcpu->task = task;
	vcpu->preempt_notifier.sched_in = kvm_sched_in;
	vcpu->preempt_notifier.sched_out = kvm_sched_out;
	vcpu->preempt_notifier.task = -1;
	vcpu->arch.last_vmentry_cpu = -1;

	held = kvm_ioctl_enter(vcpu);
	u32 old = pk_path_enter(m, PK_PATH_HARDWARE);
	r = kvm_arch_vcpu_create(vcpu);
	pk_path_leave(m, old);
	if (!r) {
		vcpu_load(vcpu);
		kvm_vcpu_reset(vcpu, false);
		vcpu_put(vcpu);
		n = kvm_get_supported_cpuid(cpuid, ARRAY_SIZE(cpuid));
		r = n < 0 ? n : kvm_vcpu_ioctl_set_cpuid2(vcpu, cpuid, n);
		if (r)
			kvm_arch_vcpu_destroy(vcpu);
	}
	if (r) {
		pk_host_exit_task(m, task);	/* leaves the CPU in user mode */
		pk_cpu_unlock(m, held);
		mutex_destroy(vcpu->mutex);
		goto no_mutex;
	}
	kvm_ioctl_exit(vcpu, held);
	kvm->vcpus[kvm->nr_vcpus++] = vcpu;
	kvm->vcpu_ids[id / 64] |= 1ULL << (id % 64);
	kvm->created_vcpus++;
	mutex_unlock(kvm->lock);
	*out = vcpu;
	return 0;
no_mutex:
	pk_kfree(m, vcpu, m->kvm_x86_ops->vcpu_size, 4096);
	goto unlock;
no_vcpu:
	held = pk_task(m, task)->cpu;	/* the thread never ran: it just exits */
	pk_cpu_lock(m, held);
	pk_this_cpu = &m->cpu[held];
	pk_host_exit_task(m, task);
	pk_cpu_unlock(m, held);
unlock:
	mutex_unlock(kvm->lock);
	return r;
}

/*
 * kvm_destroy_vm(), when the last reference to the VM goes: every vCPU is freed on its
 * CPU (kvm_vcpu_destroy -> kvm_arch_vcpu_destroy), its thread exits, then the VM's
 * memory is freed. Nothing may use the VM or its vCPUs any more.
 */
void pk_destroy_vm(struct kvm *kvm)
{
	struct pk_machine *m;

	if (!kvm)
		return;
	m = kvm->m;
	mutex_lock(kvm->lock);
	for (int i = 0; i < kvm->nr_vcpus; i++) {
		struct kvm_vcpu *vcpu = kvm->vcpus[i];
		u32 cpu;

		mutex_lock(vcpu->mutex);
		cpu = kvm_ioctl_enter(vcpu);
		kvm_vcpu_free_locked(vcpu);
		pk_cpu_unlock(m, cpu);
		mutex_unlock(vcpu->mutex);
		mutex_destroy(vcpu->mutex);
		pk_kfree(m, vcpu, m->kvm_x86_ops->vcpu_size, 4096);
		kvm->vcpus[i] = NULL;
	}
	kvm->nr_vcpus = 0;
	kvm_arch_destroy_vm(kvm);
	mutex_unlock(kvm->lock);
	mutex_destroy(kvm->lock);
	mutex_destroy(kvm->slots_lock);
	pk_kfree(m, kvm, m->kvm_x86_ops->vm_size, 64);
}

/* ---- vCPU ioctls ---- */

/*
 * What a KVM_RUN of the model may have happen to it, set up and taken back while the
 * thread holds its pCPU: `inject_at` > 0 preempts the thread once, at the first
 * preemptible point from its inject_at-th host instruction on, by a task of kind
 * `inject_kind`; `preemptor` >= 0 (0: the CPU's user process, 1: its kernel worker) is
 * made runnable on the CPU before the run, to take it at the first reschedule point.
 * *preempted says whether either happened.
 */
struct vcpu_run_events {
	u32 inject_at, inject_kind;
	int preemptor;
	bool *preempted;
};

/*
 * KVM_RUN. With stay_in_kernel the vCPU thread has not reached user mode yet when this
 * returns (as if it were still on its exit path): user-return MSRs are still loaded, so
 * events such as a virtualization-disable IPI can be placed there; pk_vcpu_return_to_user
 * finishes the return.
 */
static int vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel,
		    const struct vcpu_run_events *ev)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t = pk_task(m, vcpu->task);
	int preemptor = -1;
	u32 cpu;
	int r;

	cpu = vcpu_ioctl_begin(vcpu);
	if (ev && ev->preemptor >= 0) {
		preemptor = pk_host_queue_preemptor(m, cpu, ev->preemptor);
		if (preemptor < 0) {
			vcpu_ioctl_end(vcpu, cpu);
			return pk_err(-EINVAL, "no task to preempt the vCPU thread on CPU %u", cpu);
		}
	}
	t->signal_pending = false;
	/* The run's instruction budget is the thread's timer: a signal ends the run. */
	t->timer_budget = max_insns ? max_insns : UINT64_MAX;
	this_cpu()->insn_budget = UINT64_MAX;
	pk_timer_slice_start(this_cpu(), t);
	if (ev && ev->inject_at)
		pk_inject_arm_patient(m, cpu, ev->inject_at, ev->inject_kind);
	r = kvm_arch_vcpu_ioctl_run(vcpu);
	if (ev && ev->inject_at) {
		*ev->preempted = m->inject.fired;
		pk_inject_disarm(m);
	}
	if (preemptor >= 0)
		*ev->preempted = pk_host_unqueue_preemptor(m, cpu, preemptor);
	/* The signal that ended the run is delivered on the way out. */
	t->signal_pending = false;
	if (stay_in_kernel)
		pk_cpu_unlock(m, cpu);
	else
		kvm_ioctl_exit(vcpu, cpu);
	mutex_unlock(vcpu->mutex);
	return r;
}

int pk_vcpu_run_ex(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel)
{
	return vcpu_run(vcpu, max_insns, stay_in_kernel, NULL);
}

int pk_vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns)
{
	return vcpu_run(vcpu, max_insns, false, NULL);
}

/*
 * KVM_RUN during which the vCPU thread is preempted once, at the first preemptible point
 * from its n-th host instruction on (another task runs: a user process that returns to
 * user mode, or a kernel worker that does not).
 */
int pk_vcpu_run_preempted_by(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, u32 kind,
			     bool *preempted)
{
	struct vcpu_run_events ev = {
		.inject_at = n ? n : 1, .inject_kind = kind, .preemptor = -1,
		.preempted = preempted,
	};

	*preempted = false;
	if (kind != PK_INJ_PREEMPT && kind != PK_INJ_PREEMPT_KTHREAD)
		return pk_err(-EINVAL, "injection %u is not a preemption", kind);
	return vcpu_run(vcpu, max_insns, false, &ev);
}

/* A signal to the vCPU thread (kvm_vcpu_kick, or Ctrl-C): a run ends at the next tick. */
int pk_vcpu_kick(struct kvm_vcpu *vcpu)
{
	pk_signal_task(vcpu->kvm->m, vcpu->task);
	return 0;
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
	struct vcpu_run_events ev = { .preemptor = kthread, .preempted = preempted };

	*preempted = false;
	return vcpu_run(vcpu, max_insns, false, &ev);
}

/*
 * Arm the vCPU's kick timer `ns` from now on the pCPU its thread runs on (or disarm it),
 * holding the vCPU (vcpu->mutex: its kick state) and that pCPU (its timer list).
 */
static int vcpu_kick_timer(struct kvm_vcpu *vcpu, bool arm, u64 ns, u64 period_ns)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_cpu *saved = pk_this_cpu;
	struct pk_hrtimer *t = &vcpu->arch.kick_timer;
	u32 cpu;

	mutex_lock(vcpu->mutex);
	cpu = pk_task(m, vcpu->task)->cpu;
	pk_cpu_lock(m, cpu);
	pk_this_cpu = &m->cpu[cpu];
	vcpu->arch.kick_period = pk_ns_to_tsc(period_ns);
	t->function = kvm_pv_kick_timer_fn;
	if (arm)
		hrtimer_start(t, this_cpu()->tsc + pk_ns_to_tsc(ns));
	else
		hrtimer_cancel(t);
	pk_this_cpu = saved;
	pk_cpu_unlock(m, cpu);
	mutex_unlock(vcpu->mutex);
	return 0;
}

/*
 * Another vCPU (on another pCPU, not simulated) sends this one a KVM_HC_KICK_CPU every
 * `period_ns` by the clock of the pCPU this vCPU's thread runs on (0: no more kicks). The
 * clock runs only while that pCPU waits, so each halt is woken `period_ns` after it began
 * (kvm_pv_kick_cpu_op -> kvm_vcpu_kick). The sender's own exits are not simulated.
 */
int pk_vcpu_kick_every(struct kvm_vcpu *vcpu, u64 period_ns)
{
	return vcpu_kick_timer(vcpu, period_ns != 0, period_ns, period_ns);
}

/* One kick of that kind, `ns` from now by the same clock (a checker's wake-up event). */
int pk_vcpu_kick_after(struct kvm_vcpu *vcpu, u64 ns)
{
	return vcpu_kick_timer(vcpu, true, ns, 0);
}

u32 pk_vcpu_halt_poll_ns(struct kvm_vcpu *vcpu)
{
	return vcpu->halt_poll_ns;
}

int pk_vcpu_return_to_user(struct kvm_vcpu *vcpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t;
	int r = 0;
	u32 cpu;

	mutex_lock(vcpu->mutex);
	t = pk_task(m, vcpu->task);
	cpu = t->cpu;
	pk_cpu_lock(m, cpu);
	if (m->host.current[cpu] != vcpu->task || m->host.in_user[cpu]) {
		r = pk_err(-EINVAL, "the vCPU thread is not in the kernel on its way out");
		pk_cpu_unlock(m, cpu);
	} else {
		pk_this_cpu = &m->cpu[cpu];
		kvm_ioctl_exit(vcpu, cpu);
	}
	mutex_unlock(vcpu->mutex);
	return r;
}

struct kvm_run *pk_vcpu_run_struct(struct kvm_vcpu *vcpu)
{
	return &vcpu->run;
}

static int vcpu_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *e, u32 n, bool set)
{
	struct pk_machine *m = vcpu->kvm->m;
	u32 old, cpu;
	int r;

	cpu = vcpu_ioctl_begin(vcpu);
	old = pk_path_enter(m, PK_PATH_IOCTL);
	r = kvm_vcpu_ioctl_msrs(vcpu, e, n, set);
	pk_path_leave(m, old);
	vcpu_ioctl_end(vcpu, cpu);
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
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_arch_vcpu_ioctl_get_regs(vcpu, regs);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_set_regs(struct kvm_vcpu *vcpu, const struct pk_regs *regs)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_arch_vcpu_ioctl_set_regs(vcpu, regs);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_get_sregs(struct kvm_vcpu *vcpu, struct pk_sregs *s)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_arch_vcpu_ioctl_get_sregs(vcpu, s);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_set_sregs(struct kvm_vcpu *vcpu, const struct pk_sregs *s)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_arch_vcpu_ioctl_set_sregs(vcpu, s);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_get_supported_cpuid(struct pk_machine *m, struct kvm_cpuid_entry2 *entries, int max)
{
	int r;

	pk_cpu_lock(m, 0);
	pk_this_cpu = &m->cpu[0];
	r = kvm_get_supported_cpuid(entries, max);
	pk_cpu_unlock(m, 0);
	return r;
}

int pk_vcpu_set_cpuid(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *entries, int n)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_vcpu_ioctl_set_cpuid2(vcpu, entries, n);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_get_stat(struct kvm_vcpu *vcpu, struct kvm_vcpu_stat *stat)
{
	mutex_lock(vcpu->mutex);
	*stat = vcpu->stat;
	mutex_unlock(vcpu->mutex);
	return 0;
}

/* The host task of the vCPU's thread (the checker's preemption by another VM uses it). */
int pk_vcpu_task(struct kvm_vcpu *vcpu)
{
	return vcpu->task;
}

int pk_vcpu_cpu(struct kvm_vcpu *vcpu)
{
	int cpu;

	mutex_lock(vcpu->mutex);
	cpu = (int)pk_task(vcpu->kvm->m, vcpu->task)->cpu;
	mutex_unlock(vcpu->mutex);
	return cpu;
}

int pk_vcpu_id(struct kvm_vcpu *vcpu)
{
	return vcpu->vcpu_id;
}

/*
 * Move the vCPU thread: on its old CPU another task is scheduled (and returns to user
 * mode there), and the thread runs on `cpu` from its next ioctl on. Its host timers go
 * with it now (__kvm_migrate_timers), not at its next vcpu_load as KVM_REQ_MIGRATE_TIMER
 * would move them: the model's clocks are per CPU and run only while their CPU waits,
 * so a timer left behind would not wake the vCPU halted on its new CPU (the kernel's
 * would fire on the old CPU and kick it there).
 */
int pk_vcpu_migrate(struct kvm_vcpu *vcpu, int cpu)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t;
	int from, r = 0;

	if (cpu < 0 || (u32)cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %d: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	mutex_lock(vcpu->mutex);
	t = pk_task(m, vcpu->task);
	from = (int)t->cpu;
	if (cpu != from) {
		pk_cpu_lock(m, from);
		pk_this_cpu = &m->cpu[from];
		if (m->host.current[from] == vcpu->task)
			pk_host_run_other_locked(m, from);	/* its own user process takes it */
		if (pk_migrate_task(vcpu->task, cpu))
			r = pk_err(-EINVAL, "the vCPU thread could not move to CPU %d", cpu);
		pk_cpu_unlock(m, from);
		if (!r) {
			pk_cpu_lock(m, cpu);
			pk_this_cpu = &m->cpu[cpu];
			__kvm_migrate_timers(vcpu);
			pk_cpu_unlock(m, cpu);
		}
	}
	mutex_unlock(vcpu->mutex);
	return r;
}

/* ---- costs and live state ---- */

struct pk_profile *pk_machine_profile(struct pk_machine *m) { return &m->profile; }

void pk_machine_reset_costs(struct pk_machine *m)
{
	for (u32 c = 0; c < m->nr_cpus; c++) {
		struct pk_costs *k = &m->costs[c];
		u32 path = k->path;

		pk_cpu_lock(m, c);
		memset(k, 0, sizeof(*k));
		k->path = path;
		pk_cpu_unlock(m, c);
	}
}

int pk_cpu_read_msr(struct pk_machine *m, u32 cpu, u32 index, u64 *val)
{
	int r;

	if (cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %u: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	pk_cpu_lock(m, cpu);
	r = pk_msr_read(&m->cpu[cpu], index, val) ? -EIO : 0;
	pk_cpu_unlock(m, cpu);
	if (r)
		return pk_err(r, "pCPU %u has no MSR %#x (RDMSR faults)", cpu, index);
	return 0;
}

int pk_host_per_cpu_offset(struct pk_machine *m, u32 cpu, u64 *offset)
{
	if (cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %u: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	*offset = m->host.per_cpu_offset[cpu];
	return 0;
}

/* ---- capabilities, MSR lists, MSR filters, irqchip, MCE, ONE_REG, MP state ---- */

/*
 * The calls about the whole of KVM (/dev/kvm ioctls) run on some CPU, here the first,
 * which the calling thread holds until kvm_dev_exit.
 */
static int kvm_dev_enter(struct pk_machine *m)
{
	if (!m->kvm_global)
		return pk_err(-ENOENT, "kvm.ko is not loaded on this machine");
	pk_cpu_lock(m, 0);
	pk_this_cpu = &m->cpu[0];
	return 0;
}

static int kvm_dev_exit(struct pk_machine *m, int r)
{
	pk_cpu_unlock(m, 0);
	return r;
}

/* KVM_CHECK_EXTENSION on /dev/kvm (kernel: kvm_vm_ioctl_check_extension_generic). */
int pk_check_extension(struct pk_machine *m, long ext)
{
	int r = kvm_dev_enter(m);

	if (r)
		return r;
	switch (ext) {
	case KVM_CAP_USER_MEMORY:
		r = 1;
		break;
	case KVM_CAP_NR_MEMSLOTS:
		r = PK_MAX_MEMSLOTS;
		break;
	default:
		r = kvm_vm_ioctl_check_extension(NULL, ext);
		break;
	}
	return kvm_dev_exit(m, r);
}

int pk_vm_check_extension(struct kvm *kvm, long ext)
{
	return pk_check_extension(kvm->m, ext);
}

int pk_get_msr_index_list(struct pk_machine *m, u32 *indices, u32 *n)
{
	int r = kvm_dev_enter(m);

	return r ? r : kvm_dev_exit(m, kvm_get_msr_index_list(indices, n));
}

int pk_get_msr_feature_index_list(struct pk_machine *m, u32 *indices, u32 *n)
{
	int r = kvm_dev_enter(m);

	return r ? r : kvm_dev_exit(m, kvm_get_msr_feature_index_list(indices, n));
}

int pk_get_feature_msrs(struct pk_machine *m, struct kvm_msr_entry *entries, u32 n)
{
	int r = kvm_dev_enter(m);

	return r ? r : kvm_dev_exit(m, kvm_get_feature_msrs(entries, n));
}

int pk_get_mce_cap_supported(struct pk_machine *m, u64 *cap)
{
	int r = kvm_dev_enter(m);

	if (r)
		return r;
	*cap = kvm_global()->supported_mce_cap;
	return kvm_dev_exit(m, 0);
}

/*
 * A VM ioctl (kernel: kvm_vm_ioctl): under kvm->lock, which orders it with vCPU creation
 * (KVM_CREATE_IRQCHIP must come first), on the first CPU.
 */
static int kvm_vm_enter(struct kvm *kvm)
{
	int r;

	mutex_lock(kvm->lock);
	r = kvm_dev_enter(kvm->m);
	if (r)
		mutex_unlock(kvm->lock);
	return r;
}

static int kvm_vm_exit(struct kvm *kvm, int r)
{
	kvm_dev_exit(kvm->m, r);
	mutex_unlock(kvm->lock);
	return r;
}

int pk_vm_enable_cap(struct kvm *kvm, const struct kvm_enable_cap *cap)
{
	int r = kvm_vm_enter(kvm);

	return r ? r : kvm_vm_exit(kvm, kvm_vm_ioctl_enable_cap(kvm, cap));
}

/* KVM_CREATE_IRQCHIP: the LAPIC (and PIC, IOAPIC) in the kernel, so HLT halts in KVM. */
int pk_vm_create_irqchip(struct kvm *kvm)
{
	int r = kvm_vm_enter(kvm);

	return r ? r : kvm_vm_exit(kvm, kvm_vm_ioctl_create_irqchip(kvm));
}

/*
 * KVM_X86_SET_MSR_FILTER. Upstream swaps the filter in under kvm->lock and waits for
 * every vCPU to leave the old one (synchronize_srcu) before freeing it; the model
 * rebuilds the filter not in force, so it waits before building: every pCPU held, in
 * order, as for a memslot change, is no vCPU in KVM_RUN.
 */
int pk_vm_set_msr_filter(struct kvm *kvm, const struct kvm_msr_filter *filter)
{
	struct pk_machine *m = kvm->m;
	int r;

	if (!m->kvm_global)
		return pk_err(-ENOENT, "kvm.ko is not loaded on this machine");
	mutex_lock(kvm->lock);
	for (u32 c = 0; c < m->nr_cpus; c++)
		pk_cpu_lock(m, c);
	pk_this_cpu = &m->cpu[0];
	r = kvm_vm_ioctl_set_msr_filter(kvm, filter);
	for (u32 c = m->nr_cpus; c-- > 0;)
		pk_cpu_unlock(m, c);
	mutex_unlock(kvm->lock);
	return r;
}

/* The vCPU ioctls below run as the vCPU thread, like the others in this file. */
int pk_vcpu_setup_mce(struct kvm_vcpu *vcpu, u64 mcg_cap)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_vcpu_ioctl_x86_setup_mce(vcpu, mcg_cap);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_get_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 *val)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_get_one_reg(vcpu, id, val);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_set_one_reg(struct kvm_vcpu *vcpu, u64 id, u64 val)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_set_one_reg(vcpu, id, val);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_get_reg_list(struct kvm_vcpu *vcpu, u64 *n, u64 *regs)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_get_reg_list(vcpu, n, regs);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_get_mp_state(struct kvm_vcpu *vcpu, struct kvm_mp_state *mp_state)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r;

	vcpu_load(vcpu);
	r = kvm_arch_vcpu_ioctl_get_mpstate(vcpu, mp_state);
	vcpu_put(vcpu);
	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_set_mp_state(struct kvm_vcpu *vcpu, const struct kvm_mp_state *mp_state)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r;

	vcpu_load(vcpu);
	r = kvm_arch_vcpu_ioctl_set_mpstate(vcpu, mp_state);
	vcpu_put(vcpu);
	vcpu_ioctl_end(vcpu, cpu);
	return r;
}

int pk_vcpu_get_cpuid(struct kvm_vcpu *vcpu, struct kvm_cpuid_entry2 *entries, int *n)
{
	u32 cpu = vcpu_ioctl_begin(vcpu);
	int r = kvm_vcpu_ioctl_get_cpuid2(vcpu, entries, n);

	vcpu_ioctl_end(vcpu, cpu);
	return r;
}
