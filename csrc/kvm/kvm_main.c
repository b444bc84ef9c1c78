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
int pk_vcpu_run_preempted(struct kvm_vcpu *vcpu, u64 max_insns, u32 n, bool *preempted)
{
	struct pk_machine *m = vcpu->kvm->m;
	int r;

	pk_inject_arm_patient(m, m->host.tasks[vcpu->task].cpu, n, PK_INJ_PREEMPT);
	r = pk_vcpu_run(vcpu, max_insns);
	*preempted = m->inject.fired;
	pk_inject_disarm(m);
	return r;
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
