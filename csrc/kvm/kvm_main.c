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
#include "pykvm/smp.h"
#include "pykvm/printk.h"

int kvm_arch_enable_virtualization_cpu(void);
void kvm_arch_disable_virtualization_cpu(void);
int kvm_vcpu_ioctl_msrs(struct kvm_vcpu *vcpu, struct kvm_msr_entry *entries, u32 n, bool set);
int kvm_vcpu_ioctl_set_cpuid2(struct kvm_vcpu *vcpu, const struct kvm_cpuid_entry2 *e, int n);

/* ---- preempt notifiers: kvm_sched_in / kvm_sched_out ---- */

static void kvm_sched_in(struct preempt_notifier *pn, int cpu)
{
	struct kvm_vcpu *vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
	struct pk_machine *m = vcpu->kvm->m;
	u32 old = pk_path_enter(m, PK_PATH_VCPU_LOAD);

	vcpu->preempted = false;
	vcpu->scheduled_out = false;
	kvm_arch_vcpu_load(vcpu, cpu);
	pk_path_leave(m, old);
}

static void kvm_sched_out(struct preempt_notifier *pn)
{
	struct kvm_vcpu *vcpu = container_of(pn, struct kvm_vcpu, preempt_notifier);
	struct pk_machine *m = vcpu->kvm->m;
	u32 old = pk_path_enter(m, PK_PATH_VCPU_PUT);

	vcpu->scheduled_out = true;
	vcpu->preempted = true;
	vcpu->stat.preemptions++;
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

	pk_this_cpu = &m->cpu[0];
	for (u32 c = 0; c < m->nr_cpus && !r; c++)
		smp_call_function_single(c, kvm_enable_virtualization_ipi, &r);
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
	pk_this_cpu = &m->cpu[0];
	r = kvm_x86_call(vm_init)(kvm);
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
	r = kvm_x86_call(vcpu_create)(vcpu);
	pk_path_leave(m, old);
	if (!r) {
		vcpu_load(vcpu);
		kvm_x86_call(vcpu_reset)(vcpu, false);
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
	mutex_unlock(kvm->lock);
	mutex_destroy(kvm->lock);
	mutex_destroy(kvm->slots_lock);
	pk_kfree(m, kvm, m->kvm_x86_ops->vm_size, 64);
}

/* ---- vCPU ioctls ---- */

/*
 * KVM_RUN. With stay_in_kernel the vCPU thread has not reached user mode yet when this
 * returns (as if it were still on its exit path): user-return MSRs are still loaded, so
 * events such as a virtualization-disable IPI can be placed there; pk_vcpu_return_to_user
 * finishes the return. `inject_at` > 0 preempts the thread once, at the first preemptible
 * point from its inject_at-th host instruction on (*preempted says whether it happened).
 */
static int vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns, bool stay_in_kernel, u32 inject_at,
		    bool *preempted)
{
	struct pk_machine *m = vcpu->kvm->m;
	struct pk_task *t = pk_task(m, vcpu->task);
	u32 cpu;
	int r;

	cpu = vcpu_ioctl_begin(vcpu);
	t->signal_pending = false;
	/* The run's instruction budget is the thread's timer: a signal ends the run. */
	t->timer_budget = max_insns ? max_insns : UINT64_MAX;
	this_cpu()->insn_budget = UINT64_MAX;
	pk_timer_slice_start(this_cpu(), t);
	if (inject_at)
		pk_inject_arm_patient(m, cpu, inject_at, PK_INJ_PREEMPT);
	r = kvm_arch_vcpu_ioctl_run(vcpu);
	if (inject_at) {
		*preempted = m->inject.fired;
		pk_inject_disarm(m);
	}
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
	return vcpu_run(vcpu, max_insns, stay_in_kernel, 0, NULL);
}

int pk_vcpu_run(struct kvm_vcpu *vcpu, u64 max_insns)
{
	return vcpu_run(vcpu, max_insns, false, 0, NULL);
}

/*
 * KVM_RUN during which the vCPU thread is preempted once, at the first preemptible point
 * from its n-th host instruction on (another task runs and returns to user mode).
 */
int pk_vcpu_run_preempted(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, bool *preempted)
{
	*preempted = false;
	return vcpu_run(vcpu, max_insns, false, n ? n : 1, preempted);
}

/* A signal to the vCPU thread (kvm_vcpu_kick, or Ctrl-C): a run ends at the next tick. */
int pk_vcpu_kick(struct kvm_vcpu *vcpu)
{
	pk_signal_task(vcpu->kvm->m, vcpu->task);
	return 0;
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
 * mode there), and the thread runs on `cpu` from its next ioctl on.
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
