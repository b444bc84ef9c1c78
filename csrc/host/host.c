// SPDX-License-Identifier: MIT
/*
 * The host kernel around KVM, only as far as it reads or writes switched state:
 * syscall entry/exit (SWAPGS), return-to-user notifiers, preempt notifiers and the
 * context switch of FS/GS bases (arch/x86/kernel/process_64.c), tasks on CPUs.
 */
#include "pykvm/events.h"
#include "pykvm/module.h"

/* Canonical kernel addresses, shaped like Linux's, distinct per CPU. */
#define HOST_PER_CPU_BASE	0xffff88807fc00000ULL
#define HOST_PER_CPU_STRIDE	0x40000ULL
#define HOST_IDT_BASE		0xfffffe0000000000ULL
#define HOST_CEA_BASE		0xfffffe0000001000ULL	/* cpu_entry_area: GDT, TSS, stacks */
#define HOST_CEA_STRIDE		0x3b000ULL

static void host_cpu_init(struct pk_machine *m, struct pk_cpu *cpu)
{
	struct pk_host *h = &m->host;
	u32 id = cpu->id;

	cpu->cr0 = h->cr0;
	cpu->cr4 = h->cr4;
	cpu->seg[VCPU_SREG_CS] = (struct pk_segment){ .selector = __KERNEL_CS, .limit = 0xffffffff, .ar = 0xa09b };
	cpu->seg[VCPU_SREG_SS] = (struct pk_segment){ .selector = __KERNEL_DS, .limit = 0xffffffff, .ar = 0xc093 };
	cpu->seg[VCPU_SREG_DS] = (struct pk_segment){ .selector = __USER_DS, .limit = 0xffffffff, .ar = 0xc0f3 };
	cpu->seg[VCPU_SREG_ES] = cpu->seg[VCPU_SREG_DS];
	cpu->seg[VCPU_SREG_FS] = (struct pk_segment){ .selector = 0, .ar = 0x1c000 };
	cpu->seg[VCPU_SREG_GS] = (struct pk_segment){ .selector = 0, .ar = 0x1c000 };
	cpu->seg[VCPU_SREG_TR] = (struct pk_segment){ .selector = __TSS_SEL, .base = h->tss_base[id], .limit = 0x4087, .ar = 0x8b };
	cpu->seg[VCPU_SREG_LDTR] = (struct pk_segment){ .selector = 0, .ar = 0x10000 };
	cpu->gdtr = (struct pk_dtable){ .base = h->gdt_base[id], .limit = 0x7f };
	cpu->idtr = (struct pk_dtable){ .base = h->idt_base, .limit = 0xfff };
	cpu->msr[PK_MSR_EFER] = h->efer;
	cpu->msr[PK_MSR_STAR] = h->star;
	cpu->msr[PK_MSR_LSTAR] = h->lstar;
	cpu->msr[PK_MSR_CSTAR] = h->cstar;
	cpu->msr[PK_MSR_SYSCALL_MASK] = h->syscall_mask;
	cpu->msr[PK_MSR_SYSENTER_CS] = __KERNEL_CS;
	cpu->msr[PK_MSR_SYSENTER_ESP] = h->entry_stack[id];
	cpu->msr[PK_MSR_SYSENTER_EIP] = h->sysenter_eip;
	cpu->msr[PK_MSR_PAT] = h->pat;
	/* getcpu()/RDPID in user space read the CPU number from TSC_AUX. */
	cpu->msr[PK_MSR_TSC_AUX] = (m->model.has_rdtscp || m->model.has_rdpid) ? id : 0;
	cpu->msr[PK_MSR_SPEC_CTRL] = h->spec_ctrl;
	cpu->cr3 = 0;
	cpu->gif = true;
	cpu->mode = PK_MODE_HOST;
}

/* The state of a CPU whose task `t` runs in user mode. */
static void host_cpu_enter_user(struct pk_cpu *cpu, struct pk_task *t)
{
	cpu->seg[VCPU_SREG_FS].base = t->fsbase;
	cpu->seg[VCPU_SREG_GS].base = t->gsbase;
	cpu->seg[VCPU_SREG_FS].selector = t->fsindex;
	cpu->seg[VCPU_SREG_GS].selector = t->gsindex;
	cpu->msr[PK_MSR_KERNEL_GS_BASE] = cpu->m->host.per_cpu_offset[cpu->id];
	cpu->cr3 = t->cr3;
	cpu->m->host.in_user[cpu->id] = true;
}

static const struct pk_param host_param_table[] = {
	PK_PARAM(struct pk_host_params, paranoid_entry_rdpid, false,
		 "the NMI paranoid entry finds its per-cpu base with RDPID (TSC_AUX), as before "
		 "\"x86/entry/64: Do not use RDPID in paranoid entry\" (2020)"),
	PK_PARAM(struct pk_host_params, paranoid_entry_fsgsbase, true,
		 "NMI/#MC paranoid entry with FSGSBASE (v5.9+): GS base from the CPU number "
		 "(GET_PERCPU_BASE), whatever GS held; 0: trust GS_BASE if it looks like a kernel "
		 "address, else SWAPGS"),
	PK_PARAM(struct pk_host_params, vmm_32bit_gs, false,
		 "the VMM is a 32-bit process: its threads' GS holds a user selector (RPL 3), "
		 "so KVM must reload it with load_gs_index() when it puts the vCPU"),
	PK_PARAM(struct pk_host_params, ret_uses_percpu, true,
		 "a RET touches per-cpu data (call depth tracking, v6.2+), so the first RET after "
		 "a VM-exit needs the host GS base"),
	{ }		/* end */
};

/* Built-in parameters of the host kernel (the boot command line's kernel.*): no init. */
static struct pk_module kernel_module = {
	.name = "kernel",
	.kp = host_param_table,
};
module_init(kernel_module);

/*
 * An NMI in host mode. The paranoid entry cannot trust the GS state it finds: it reads
 * GS_BASE and SWAPGSes if that is not a kernel address (or, in the RDPID variant,
 * indexes the per-cpu offsets with TSC_AUX), then the handler touches per-cpu data.
 */
void pk_host_nmi(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;
	struct pk_host *h = &m->host;
	u64 gs = cpu->seg[VCPU_SREG_GS].base;

	pk_trace(m, PK_TR_NMI_HANDLER, cpu->id, gs, 0);
	if (h->params.paranoid_entry_rdpid) {
		u64 aux = cpu->msr[PK_MSR_TSC_AUX] & 0xfff;
		u64 base = aux < m->nr_cpus ? h->per_cpu_offset[aux] : ~0ULL;

		if (m->oracle && base != h->per_cpu_offset[cpu->id])
			pk_oracle_violation(m, PK_OBS_NMI, cpu->id, MSR_TSC_AUX, cpu->id,
					    cpu->msr[PK_MSR_TSC_AUX]);
		return;
	}
	if (h->params.paranoid_entry_fsgsbase) {
		/* RDGSBASE to save, WRGSBASE the per-cpu base found from the CPU number. */
		cpu->seg[VCPU_SREG_GS].base = h->per_cpu_offset[cpu->id];
		pk_observe_percpu(cpu, PK_OBS_NMI);
		cpu->seg[VCPU_SREG_GS].base = gs;
		return;
	}
	if ((s64)gs >= 0) {		/* a user GS base: the kernel's is in KERNEL_GS_BASE */
		cpu->seg[VCPU_SREG_GS].base = cpu->msr[PK_MSR_KERNEL_GS_BASE];
		cpu->msr[PK_MSR_KERNEL_GS_BASE] = gs;
		pk_observe_percpu(cpu, PK_OBS_NMI);
		cpu->msr[PK_MSR_KERNEL_GS_BASE] = cpu->seg[VCPU_SREG_GS].base;
		cpu->seg[VCPU_SREG_GS].base = gs;
		return;
	}
	pk_observe_percpu(cpu, PK_OBS_NMI);
}

void pk_host_init(struct pk_machine *m)
{
	struct pk_host *h = &m->host;
	bool intel = m->model.vendor == PK_VENDOR_INTEL;

	pk_params_init(&h->params, host_param_table, ARRAY_SIZE(host_param_table) - 1);
	m->nmi_handler = pk_host_nmi;
	h->idt_base = HOST_IDT_BASE;
	h->efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX;
	h->pat = 0x0407050600070106ULL;
	h->cr0 = 0x80050033;
	h->cr4 = 0x3706f0 | (m->model.has_fsgsbase ? X86_CR4_FSGSBASE : 0);
	h->star = ((u64)__USER32_CS << 48) | ((u64)__KERNEL_CS << 32);
	h->lstar = 0xffffffff81e00080ULL;	/* entry_SYSCALL_64 */
	h->cstar = 0xffffffff81e01c40ULL;	/* entry_SYSCALL_compat */
	h->syscall_mask = 0x47700;		/* TF|DF|IF|IOPL|AC|NT */
	h->sysenter_eip = 0xffffffff81e01b20ULL;/* entry_SYSENTER_compat */
	/* eIBRS hosts keep IBRS set; others run with SPEC_CTRL = 0 (or SSBD per task). */
	h->spec_ctrl = m->model.has_eibrs ? SPEC_CTRL_IBRS : 0;
	h->kernel_cs = __KERNEL_CS;
	h->kernel_ds = __KERNEL_DS;
	h->tss_sel = __TSS_SEL;
	for (u32 i = 0; i < m->nr_cpus; i++) {
		h->per_cpu_offset[i] = HOST_PER_CPU_BASE + i * HOST_PER_CPU_STRIDE;
		h->gdt_base[i] = HOST_CEA_BASE + i * HOST_CEA_STRIDE;
		h->tss_base[i] = h->gdt_base[i] + 0x1000;
		h->entry_stack[i] = h->gdt_base[i] + 0x9000;
		h->irqs_enabled[i] = true;
	}
	/* AMD keeps only the low 32 bits of SYSENTER_ESP/EIP: that is what the host has. */
	if (!intel) {
		h->sysenter_eip &= 0xffffffffULL;
		for (u32 i = 0; i < m->nr_cpus; i++)
			h->entry_stack[i] &= 0xffffffffULL;
	}
	/* One user process per CPU, with user FS/GS bases of its own, in user mode. */
	for (u32 i = 0; i < m->nr_cpus; i++) {
		int t = pk_host_create_task(m, i, false);
		h->current[i] = t;
		host_cpu_init(m, &m->cpu[i]);
		host_cpu_enter_user(&m->cpu[i], &h->tasks[t]);
	}
}

int pk_host_create_task(struct pk_machine *m, int cpu, bool is_vcpu_thread)
{
	struct pk_host *h = &m->host;
	struct pk_task *t;

	if (h->nr_tasks >= PK_MAX_TASKS || cpu < 0 || (u32)cpu >= m->nr_cpus)
		return -1;
	t = &h->tasks[h->nr_tasks];
	memset(t, 0, sizeof(*t));
	t->id = h->nr_tasks;
	t->cpu = cpu;
	t->is_vcpu_thread = is_vcpu_thread;
	/* Distinct, recognisable user TLS bases and page tables per task. */
	t->fsbase = 0x00007f0000000000ULL | ((u64)t->id << 20) | 0x740;
	t->gsbase = is_vcpu_thread ? 0 : 0x00007e0000000000ULL | ((u64)t->id << 20);
	/* A 32-bit VMM's GS is a flat user data selector: base 0. */
	if (is_vcpu_thread && m->host.params.vmm_32bit_gs)
		t->gsindex = __USER_DS;
	t->cr3 = 0x1000000ULL + ((u64)t->id << 12);
	t->timer_budget = UINT64_MAX;
	return (int)h->nr_tasks++;
}

/* ---- the inactive (user) GS base while in the kernel (arch/x86/kernel/process_64.c) ---- */

u64 x86_gsbase_read_inactive(void)
{
	bool irqs;
	u64 gs;

	if (!this_machine()->model.has_fsgsbase)
		return rdmsrl(MSR_KERNEL_GS_BASE);
	/* __rdgsbase_inactive(): SWAPGS; RDGSBASE; SWAPGS with IRQs off (NMIs cope). */
	irqs = this_machine()->host.irqs_enabled[this_cpu()->id];
	local_irq_disable();
	native_swapgs();
	gs = rdgsbase();
	native_swapgs();
	if (irqs)
		local_irq_enable();
	return gs;
}

void x86_gsbase_write_inactive(u64 gsbase)
{
	bool irqs;

	if (!this_machine()->model.has_fsgsbase) {
		wrmsrl(MSR_KERNEL_GS_BASE, gsbase);
		return;
	}
	irqs = this_machine()->host.irqs_enabled[this_cpu()->id];
	local_irq_disable();
	native_swapgs();
	wrgsbase(gsbase);
	native_swapgs();
	if (irqs)
		local_irq_enable();
}

/* ---- syscall entry / exit to user mode (arch/x86/entry, kernel/entry/common.c) ---- */

void pk_enter_kernel(void)
{
	struct pk_machine *m = this_machine();
	u32 old = pk_path_enter(m, PK_PATH_OTHER);

	native_swapgs();
	m->host.in_user[this_cpu()->id] = false;
	pk_path_leave(m, old);
}

void pk_exit_to_user_mode(void)
{
	struct pk_machine *m = this_machine();
	struct pk_task *t = current_task();
	u32 old;

	pk_trace(m, PK_TR_USER_RETURN, this_cpu()->id, t->id, t->tif_user_return_notify);
	/* exit_to_user_mode_prepare() runs the exit work, notifiers included, IRQs off. */
	local_irq_disable();
	if (t->tif_user_return_notify) {
		old = pk_path_enter(m, PK_PATH_USER_RETURN);
		fire_user_return_notifiers();
		pk_path_leave(m, old);
	}
	old = pk_path_enter(m, PK_PATH_OTHER);
	native_swapgs();
	m->host.in_user[this_cpu()->id] = true;
	local_irq_enable();
	pk_path_leave(m, old);
	pk_observe_user(this_cpu());
}

/* ---- kernel/user-return-notifier.c ---- */

void user_return_notifier_register(struct user_return_notifier *urn)
{
	struct pk_machine *m = this_machine();
	struct user_return_notifier **list = m->host.return_notifiers[this_cpu()->id];

	for (int i = 0; i < PK_MAX_RETURN_NOTIFIERS; i++) {
		if (!list[i]) {
			list[i] = urn;
			break;
		}
	}
	current_task()->tif_user_return_notify = true;
}

void user_return_notifier_unregister(struct user_return_notifier *urn)
{
	struct pk_machine *m = this_machine();
	struct user_return_notifier **list = m->host.return_notifiers[this_cpu()->id];
	bool any = false;

	for (int i = 0; i < PK_MAX_RETURN_NOTIFIERS; i++) {
		if (list[i] == urn)
			list[i] = NULL;
		any |= list[i] != NULL;
	}
	if (!any)
		current_task()->tif_user_return_notify = false;
}

void fire_user_return_notifiers(void)
{
	struct pk_machine *m = this_machine();
	struct user_return_notifier **list = m->host.return_notifiers[this_cpu()->id];

	for (int i = 0; i < PK_MAX_RETURN_NOTIFIERS; i++)
		if (list[i])
			list[i]->on_user_return(list[i]);
}

/* ---- preemption and the context switch (kernel/sched/core.c, process_64.c) ---- */

void preempt_disable(void) { this_machine()->host.preempt_count[this_cpu()->id]++; }
void preempt_enable(void) { this_machine()->host.preempt_count[this_cpu()->id]--; }
void local_irq_disable(void) { this_machine()->host.irqs_enabled[this_cpu()->id] = false; }
void local_irq_enable(void) { this_machine()->host.irqs_enabled[this_cpu()->id] = true; }

void preempt_notifier_register(struct preempt_notifier *pn)
{
	struct pk_machine *m = this_machine();

	pn->task = m->host.current[this_cpu()->id];
	for (int i = 0; i < PK_MAX_PREEMPT_NOTIFIERS; i++) {
		if (m->host.preempt_notifiers[i] == pn)
			return;
	}
	for (int i = 0; i < PK_MAX_PREEMPT_NOTIFIERS; i++) {
		if (!m->host.preempt_notifiers[i]) {
			m->host.preempt_notifiers[i] = pn;
			return;
		}
	}
}

void preempt_notifier_unregister(struct preempt_notifier *pn)
{
	struct pk_machine *m = this_machine();

	for (int i = 0; i < PK_MAX_PREEMPT_NOTIFIERS; i++)
		if (m->host.preempt_notifiers[i] == pn)
			m->host.preempt_notifiers[i] = NULL;
	pn->task = -1;
}

/*
 * Switch `cpu` to task `next`: both are in the kernel. Preempt notifiers of prev run
 * first (sched_out), then __switch_to saves prev's user FS/GS bases and loads next's
 * (the user GS base is KERNEL_GS_BASE while in the kernel), the TIF_USER_RETURN_NOTIFY
 * flag moves to next, and next's notifiers run (sched_in).
 */
void pk_context_switch(int cpu_id, int next)
{
	struct pk_machine *m = this_machine();
	struct pk_cpu *saved = pk_this_cpu;
	struct pk_task *p, *n;
	int prev;

	pk_this_cpu = &m->cpu[cpu_id];
	prev = m->host.current[cpu_id];
	if (prev == next) {
		pk_this_cpu = saved;
		return;
	}
	p = &m->host.tasks[prev];
	n = &m->host.tasks[next];

	for (int i = 0; i < PK_MAX_PREEMPT_NOTIFIERS; i++) {
		struct preempt_notifier *pn = m->host.preempt_notifiers[i];
		if (pn && pn->task == prev)
			pn->sched_out(pn);
	}
	p->timer_budget = this_cpu()->insn_budget;
	/* save_fsgs / x86_fsgsbase_load */
	p->fsbase = rdfsbase();
	p->fsindex = savesegment(VCPU_SREG_FS);
	p->gsindex = savesegment(VCPU_SREG_GS);
	p->gsbase = x86_gsbase_read_inactive();
	if (n->fsindex != p->fsindex)
		loadsegment(VCPU_SREG_FS, n->fsindex);
	wrfsbase(n->fsbase);
	if (n->gsindex != p->gsindex)
		load_gs_index(n->gsindex);
	x86_gsbase_write_inactive(n->gsbase);
	if (n->cr3 != p->cr3)
		native_write_cr3(n->cr3);
	/* propagate_user_return_notify() */
	if (p->tif_user_return_notify) {
		p->tif_user_return_notify = false;
		n->tif_user_return_notify = true;
	}
	m->host.current[cpu_id] = next;
	n->cpu = cpu_id;
	pk_trace(m, PK_TR_SCHED_SWITCH, cpu_id, prev, next);
	for (int i = 0; i < PK_MAX_PREEMPT_NOTIFIERS; i++) {
		struct preempt_notifier *pn = m->host.preempt_notifiers[i];
		if (pn && pn->task == next)
			pn->sched_in(pn, cpu_id);
	}
	/* The task's timer runs while it runs. */
	this_cpu()->insn_budget = n->timer_budget;
	pk_this_cpu = saved;
}

int pk_migrate_task(int task, int cpu)
{
	struct pk_machine *m = this_machine();

	if (task < 0 || (u32)task >= m->host.nr_tasks || cpu < 0 || (u32)cpu >= m->nr_cpus)
		return -1;
	for (u32 c = 0; c < m->nr_cpus; c++)
		if (m->host.current[c] == task)
			return -1;	/* running: preempt it first */
	m->host.tasks[task].cpu = cpu;
	return 0;
}

/* The host timer fired on this CPU (an external interrupt): signal the running task. */
void pk_host_timer_interrupt(void)
{
	current_task()->signal_pending = true;
	this_cpu()->insn_budget = UINT64_MAX;
}

/*
 * The CPU's own user process gets the CPU (preempting whatever task had it), enters
 * the kernel and returns to user mode: a syscall, a tick, a context switch.
 */
int pk_host_run_other(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *saved = pk_this_cpu;

	if (cpu >= m->nr_cpus)
		return -1;
	pk_this_cpu = &m->cpu[cpu];
	if (m->host.in_user[cpu])
		pk_enter_kernel();
	pk_context_switch((int)cpu, (int)cpu);
	pk_exit_to_user_mode();
	pk_this_cpu = saved;
	return 0;
}
