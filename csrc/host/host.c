// SPDX-License-Identifier: MIT
/*
 * The host kernel around KVM, only as far as it reads or writes switched state:
 * syscall entry/exit (SWAPGS), return-to-user notifiers, preempt notifiers and the
 * context switch of FS/GS bases (arch/x86/kernel/process_64.c), tasks on CPUs.
 */
#include <errno.h>

#include "pykvm/events.h"
#include "pykvm/module.h"
#include "pykvm/smp.h"
#include "pykvm/printk.h"

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

/* The state of a CPU whose task `t` runs in user mode (as SYSRETQ and the switch leave it). */
static void host_cpu_enter_user(struct pk_cpu *cpu, struct pk_task *t)
{
	struct pk_host *h = &cpu->m->host;

	cpu->seg[VCPU_SREG_CS] = (struct pk_segment){ .selector = __USER_CS, .limit = 0xffffffff, .ar = 0xa0fb };
	cpu->seg[VCPU_SREG_SS] = (struct pk_segment){ .selector = __USER_DS, .limit = 0xffffffff, .ar = 0xc0f3 };
	cpu->seg[VCPU_SREG_DS].selector = t->ds;
	cpu->seg[VCPU_SREG_ES].selector = t->es;
	cpu->seg[VCPU_SREG_FS].base = t->fsbase;
	cpu->seg[VCPU_SREG_GS].base = t->gsbase;
	cpu->seg[VCPU_SREG_FS].selector = t->fsindex;
	cpu->seg[VCPU_SREG_GS].selector = t->gsindex;
	cpu->seg[VCPU_SREG_LDTR].selector = t->ldt;
	cpu->msr[PK_MSR_KERNEL_GS_BASE] = h->per_cpu_offset[cpu->id];
	cpu->cr3 = t->cr3;
	h->loaded_cr3[cpu->id] = t->cr3;
	cpu->cr4 = h->cr4 | (t->notsc ? X86_CR4_TSD : 0);
	h->cr4_shadow[cpu->id] = cpu->cr4;
	h->in_user[cpu->id] = true;
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
	PK_PARAM(struct pk_host_params, vmm_ldt, false,
		 "the VMM has an LDT (modify_ldt): VM-exit leaves LDTR unusable, so KVM must "
		 "reload it before the VMM returns to user mode"),
	PK_PARAM(struct pk_host_params, ret_uses_percpu, true,
		 "a RET touches per-cpu data (call depth tracking, v6.2+), so the first RET after "
		 "a VM-exit needs the host GS base"),
	PK_PARAM(struct pk_host_params, kernel_ibrs, true,
		 "legacy IBRS: the host kernel sets SPEC_CTRL.IBRS on every kernel entry and "
		 "clears it on the way back to user mode (spectre_v2=ibrs, X86_FEATURE_KERNEL_IBRS, "
		 "2dbb887e875b, v5.19; the spectre_v2=auto choice on Intel CPUs with retbleed), "
		 "where the CPU has IBRS and no eIBRS: a Skylake host; 0: retpolines only"),
	PK_PARAM(struct pk_host_params, pti, true,
		 "page-table isolation on CPUs with Meltdown (pti=auto, v4.15+): a CR3 switch on "
		 "every kernel entry and exit to user mode"),
	PK_PARAM(struct pk_host_params, mds, true,
		 "MDS mitigation on affected CPUs (mds=full, v5.2+): VERW before returning to user "
		 "mode (and before VM-entry, in KVM)"),
	{ }		/* end */
};

/* Built-in parameters of the host kernel (the boot command line's kernel.*): no init. */
static struct pk_module kernel_module = {
	.name = "kernel",
	.kp = host_param_table,
};
module_init(kernel_module);

/*
 * A kernel.* parameter set the host cannot have: the reason, or NULL. None is refused
 * today: each mitigation parameter applies where the CPU has the bug or the feature it
 * is about (pk_host_kernel_ibrs, pk_host_pti, pk_host_mds_clear), as the kernel's =auto.
 */
const char *pk_host_params_invalid(struct pk_machine *m)
{
	(void)m;
	return NULL;
}

/* X86_FEATURE_KERNEL_IBRS: asked for, and an Intel CPU with IBRS and without eIBRS. */
bool pk_host_kernel_ibrs(const struct pk_machine *m)
{
	const struct pk_cpu_model *cm = &m->model;

	return m->host.params.kernel_ibrs && cm->vendor == PK_VENDOR_INTEL && cm->has_ibrs &&
	       !cm->has_eibrs;
}

bool pk_host_pti(const struct pk_machine *m)
{
	return m->host.params.pti && m->model.bug_meltdown;
}

bool pk_host_mds_clear(const struct pk_machine *m)
{
	return m->host.params.mds && m->model.bug_mds;
}

/*
 * SPEC_CTRL while in the kernel (x86_spec_ctrl_current, what KVM restores after a
 * VM-exit) and in user mode: they differ only on a legacy-IBRS host.
 */
u64 pk_host_spec_ctrl_kernel(const struct pk_machine *m)
{
	return m->host.spec_ctrl | (pk_host_kernel_ibrs(m) ? SPEC_CTRL_IBRS : 0);
}

u64 pk_host_spec_ctrl_user(const struct pk_machine *m)
{
	return m->host.spec_ctrl;
}

/*
 * The CPU number as the paranoid entry finds it with FSGSBASE (GET_PERCPU_BASE: LSL of
 * the CPUNODE segment of the GDT the CPU holds, arch/x86/include/asm/segment.h; not
 * RDPID since "x86/entry/64: Do not use RDPID in paranoid entry"): -1 if GDTR does not
 * hold a per-CPU GDT.
 */
static int paranoid_cpu_from_gdt(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;

	for (u32 i = 0; i < m->nr_cpus; i++)
		if (cpu->gdtr.base == m->host.gdt_base[i])
			return (int)i;
	return -1;
}

/*
 * An NMI or machine check in host mode. The paranoid entry cannot trust the GS state it
 * finds: with FSGSBASE it saves GS_BASE and writes the per-cpu base of the CPU number it
 * reads from the GDT; before that it read GS_BASE and SWAPGSed if that was not a kernel
 * address (or, in the RDPID variant, indexed the per-cpu offsets with TSC_AUX). Then the
 * handler touches per-cpu data and runs RETs (pk_observe_handler), and the exit path
 * puts GS back.
 */
static void host_paranoid_handler(struct pk_cpu *cpu, u32 vector)
{
	struct pk_machine *m = cpu->m;
	struct pk_host *h = &m->host;
	u64 gs = cpu->seg[VCPU_SREG_GS].base, kgs = cpu->msr[PK_MSR_KERNEL_GS_BASE], spec;
	bool ibrs_enter;

	pk_trace(m, PK_TR_NMI_HANDLER, cpu->id, gs, vector);
	if (h->params.paranoid_entry_rdpid) {
		u64 aux = cpu->msr[PK_MSR_TSC_AUX] & 0xfff;
		u64 base = aux < m->nr_cpus ? h->per_cpu_offset[aux] : ~0ULL;

		if (base != h->per_cpu_offset[cpu->id]) {
			if (m->oracle)
				pk_oracle_violation(m, PK_OBS_NMI, cpu->id, MSR_TSC_AUX, cpu->id,
						    cpu->msr[PK_MSR_TSC_AUX]);
			return;
		}
		cpu->seg[VCPU_SREG_GS].base = base;
	} else if (h->params.paranoid_entry_fsgsbase) {
		int found = paranoid_cpu_from_gdt(cpu);

		if (found != (int)cpu->id) {
			if (m->oracle)
				pk_oracle_violation(m, PK_OBS_NMI, cpu->id, PK_REG_GDTR_BASE,
						    h->gdt_base[cpu->id], cpu->gdtr.base);
			return;
		}
		cpu->seg[VCPU_SREG_GS].base = h->per_cpu_offset[found];
	} else if ((s64)gs >= 0) {	/* a user GS base: the kernel's is in KERNEL_GS_BASE */
		cpu->seg[VCPU_SREG_GS].base = kgs;
		cpu->msr[PK_MSR_KERNEL_GS_BASE] = gs;
	}
	/*
	 * IBRS_ENTER save_reg=%r15 / IBRS_EXIT save_reg=%r15 (arch/x86/entry/calling.h, in
	 * paranoid_entry and paranoid_exit): with legacy kernel IBRS the handler runs with
	 * the kernel's SPEC_CTRL unless IBRS was already set, and the exit writes back what
	 * it found (the guest's, if the NMI hit the VM-exit window).
	 */
	spec = cpu->msr[PK_MSR_SPEC_CTRL];
	ibrs_enter = pk_host_kernel_ibrs(m) && !(spec & SPEC_CTRL_IBRS);
	if (ibrs_enter)
		cpu->msr[PK_MSR_SPEC_CTRL] = pk_host_spec_ctrl_kernel(m);
	pk_observe_handler(cpu, PK_OBS_NMI, vector);
	if (pk_host_kernel_ibrs(m))
		cpu->msr[PK_MSR_SPEC_CTRL] = spec;
	cpu->seg[VCPU_SREG_GS].base = gs;
	cpu->msr[PK_MSR_KERNEL_GS_BASE] = kgs;
}

void pk_host_nmi(struct pk_cpu *cpu)
{
	host_paranoid_handler(cpu, X86_TRAP_NMI);
}

/* #MC: the same paranoid entry, but not held by GIF = 0 (it can land anywhere). */
void pk_host_machine_check(struct pk_cpu *cpu)
{
	host_paranoid_handler(cpu, X86_TRAP_MC);
}

/*
 * A device interrupt in host kernel mode (IRQs on): the entry trusts GS (it came from
 * kernel mode, so no SWAPGS); the handler and the softirqs irq_exit() runs on its way
 * out (__do_softirq: timers, RCU, networking) read per-cpu data and run RETs.
 */
void pk_host_irq(struct pk_cpu *cpu, u32 vector, bool softirqs)
{
	struct pk_machine *m = cpu->m;

	pk_trace(m, PK_TR_IRQ, cpu->id, vector, softirqs);
	pk_observe_handler(cpu, PK_OBS_IRQ, vector);
}

int pk_host_init(struct pk_machine *m)
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
	/*
	 * x86_spec_ctrl_base, the value in user mode: eIBRS hosts keep IBRS set; others run
	 * with 0 (or SSBD per task). Legacy kernel IBRS adds IBRS in the kernel only
	 * (pk_host_spec_ctrl_kernel).
	 */
	h->spec_ctrl = m->model.has_eibrs ? SPEC_CTRL_IBRS : 0;
	h->poking_cr3 = 0x3000000ULL;		/* text_poke's mm, made at boot */
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
	h->free_task = -1;
	/* One user process per CPU, with user FS/GS bases of its own, in user mode. */
	for (u32 i = 0; i < m->nr_cpus; i++) {
		int t = pk_host_create_task(m, i, false);

		if (t < 0)
			return t;
		h->current[i] = t;
		host_cpu_init(m, &m->cpu[i]);
		host_cpu_enter_user(&m->cpu[i], pk_task(m, t));
	}
	for (u32 i = 0; i < PK_MAX_CPUS; i++) {
		h->idle_task[i] = h->kworker[i] = -1;
		h->rq_head[i] = h->rq_tail[i] = -1;
	}
	/*
	 * Each CPU's idle task and kernel worker exist from boot, as in Linux: created when
	 * first needed, their ids and kernel memory would depend on which need came first
	 * (and the checker would meet one state once per order).
	 */
	for (u32 i = 0; i < m->nr_cpus; i++)
		if (pk_host_idle_task(m, i) < 0 || pk_host_kworker(m, i) < 0)
			return -ENOMEM;
	return 0;
}

/*
 * A new task on `cpu` (a thread of the VMM or another process): its id, or -EAGAIN at
 * pid_max, -ENOMEM without memory for it. Ids of exited tasks are reused, as pids are.
 */
int pk_host_create_task(struct pk_machine *m, int cpu, bool is_vcpu_thread)
{
	struct pk_host *h = &m->host;
	struct pk_task *t;
	int id;

	if (cpu < 0 || (u32)cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "no CPU %d for a new task", cpu);
	pk_tasklist_lock(m);
	if (h->free_task >= 0) {
		id = h->free_task;
		h->free_task = pk_task(m, id)->next_free;
	} else if (h->nr_tasks >= PK_PID_MAX) {
		pk_tasklist_unlock(m);
		return pk_err(-EAGAIN, "pid_max reached: %u tasks", PK_PID_MAX);
	} else {
		u32 chunk = h->nr_tasks >> PK_TASK_CHUNK_SHIFT;

		if (!h->task_chunk[chunk]) {
			h->task_chunk[chunk] = pk_kzalloc(m, PK_TASK_CHUNK * sizeof(struct pk_task), 64);
			if (!h->task_chunk[chunk]) {
				pk_tasklist_unlock(m);
				return pk_err(-ENOMEM, "no kernel memory for a task (%zu KiB in use)",
					      m->kmem_in_use >> 10);
			}
		}
		id = (int)h->nr_tasks++;
	}
	h->nr_live_tasks++;
	t = pk_task(m, id);
	memset(t, 0, sizeof(*t));
	t->id = id;
	t->cpu = cpu;
	t->alive = true;
	t->next_free = -1;
	t->is_vcpu_thread = is_vcpu_thread;
	/* Distinct, recognisable user TLS bases and page tables per task. */
	t->fsbase = 0x00007f0000000000ULL | ((u64)t->id << 20) | 0x740;
	t->gsbase = is_vcpu_thread ? 0 : 0x00007e0000000000ULL | ((u64)t->id << 20);
	/* A 32-bit VMM's GS is a flat user data selector: base 0. */
	if (is_vcpu_thread && m->host.params.vmm_32bit_gs)
		t->gsindex = __USER_DS;
	t->user_fsbase = t->fsbase;
	t->user_gsbase = t->gsbase;
	/* start_thread(): DS and ES hold the user data selector. */
	t->ds = t->es = __USER_DS;
	t->user_ds = t->user_es = __USER_DS;
	if (is_vcpu_thread && m->host.params.vmm_ldt)
		t->ldt = GDT_ENTRY_LDT * 8;
	/* Page aligned: the low 12 bits are the PCID (ASID) the mm has on its CPU. */
	t->cr3 = 0x1000000ULL + ((u64)t->id << 12);
	t->timer_budget = UINT64_MAX;
	t->state = TASK_RUNNING;
	t->rq_next = -1;
	pk_tasklist_unlock(m);
	return id;
}

/*
 * The task exits (do_exit): if it is the one on its CPU, the CPU's own user process
 * takes over, as schedule() picks another task. The caller holds the task's CPU.
 */
void pk_host_exit_task(struct pk_machine *m, int id)
{
	struct pk_task *t = pk_task(m, id);
	struct pk_host *h = &m->host;

	if (h->current[t->cpu] == id)
		pk_host_run_other_locked(m, t->cpu);
	pk_host_dequeue_task(m, id);
	pk_tasklist_lock(m);
	t->alive = false;
	t->next_free = h->free_task;
	h->free_task = id;
	h->nr_live_tasks--;
	pk_tasklist_unlock(m);
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

/*
 * SYSCALL / SYSRETQ load CS and SS from STAR (SDM vol. 2B): the host consumes the STAR
 * it finds on every kernel entry and exit, so a guest value left there shows in the
 * selectors the host runs with.
 */
static void host_syscall_segments(struct pk_cpu *cpu, bool to_user)
{
	u16 sel = (u16)(cpu->msr[PK_MSR_STAR] >> (to_user ? 48 : 32));

	pk_attr_mark(cpu, to_user ? "SYSRETQ (exit to user mode)" : "SYSCALL (kernel entry)");
	if (to_user) {
		cpu->seg[VCPU_SREG_CS].selector = (u16)((sel + 16) | 3);
		cpu->seg[VCPU_SREG_SS].selector = (u16)((sel + 8) | 3);
	} else {
		cpu->seg[VCPU_SREG_CS].selector = sel & 0xfffc;
		cpu->seg[VCPU_SREG_SS].selector = (u16)((sel & 0xfffc) + 8);
	}
}

/*
 * Kernel entry (entry_SYSCALL_64, and the same mitigations on an interrupt from user
 * mode): SWAPGS, PTI's switch to the kernel page tables, IBRS_ENTER for legacy kernel
 * IBRS (arch/x86/entry/entry_64.S, calling.h), then the C entry and the syscall dispatch.
 * Entry code runs with IRQs off until syscall_enter_from_user_mode() turns them on.
 */
void pk_enter_kernel(void)
{
	struct pk_machine *m = this_machine();
	u32 old = pk_path_enter(m, PK_PATH_SYSCALL);

	host_syscall_segments(this_cpu(), false);
	native_swapgs();
	if (pk_host_pti(m))
		pk_pti_switch_cr3();
	/* IBRS_ENTER (arch/x86/entry/calling.h): legacy IBRS is on while in the kernel. */
	if (pk_host_kernel_ibrs(m))
		wrmsrl(MSR_IA32_SPEC_CTRL, pk_host_spec_ctrl_kernel(m));
	m->host.in_user[this_cpu()->id] = false;
	pk_sw(PK_OP_SW_SYSCALL_ENTRY);
	pk_path_leave(m, old);
}

/*
 * Exit to user mode (syscall_exit_to_user_mode, then the asm return): the exit work with
 * IRQs off (user-return notifiers among it), the MDS buffer clear, IBRS_EXIT, PTI's switch
 * to the user page tables, SWAPGS, SYSRET.
 */
void pk_exit_to_user_mode(void)
{
	struct pk_machine *m = this_machine();
	struct pk_task *t = current_task();
	u32 old;

	pk_trace(m, PK_TR_USER_RETURN, this_cpu()->id, t->id, t->tif_user_return_notify);
	/* exit_to_user_mode_prepare() runs the exit work, notifiers included, IRQs off. */
	local_irq_disable();
	old = pk_path_enter(m, PK_PATH_SYSCALL);
	pk_sw(PK_OP_SW_SYSCALL_EXIT);
	pk_path_leave(m, old);
	if (t->tif_user_return_notify) {
		old = pk_path_enter(m, PK_PATH_USER_RETURN);
		fire_user_return_notifiers();
		pk_path_leave(m, old);
	}
	old = pk_path_enter(m, PK_PATH_SYSCALL);
	if (pk_host_mds_clear(m))
		pk_verw();
	/* IBRS_EXIT: user mode runs without IBRS. */
	if (pk_host_kernel_ibrs(m))
		wrmsrl(MSR_IA32_SPEC_CTRL, pk_host_spec_ctrl_user(m));
	if (pk_host_pti(m))
		pk_pti_switch_cr3();
	native_swapgs();
	host_syscall_segments(this_cpu(), true);
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

/* kernel: preempt_notifier_register() adds to current->preempt_notifiers. */
void preempt_notifier_register(struct preempt_notifier *pn)
{
	struct pk_machine *m = this_machine();
	int cur = m->host.current[this_cpu()->id];
	struct pk_task *t = pk_task(m, cur);

	if (pn->task == cur)
		return;
	if (pn->task >= 0)
		preempt_notifier_unregister(pn);
	pn->task = cur;
	pn->next = t->preempt_notifiers;
	t->preempt_notifiers = pn;
}

void preempt_notifier_unregister(struct preempt_notifier *pn)
{
	struct pk_machine *m = this_machine();
	struct preempt_notifier **link;

	if (pn->task < 0)
		return;
	for (link = &pk_task(m, pn->task)->preempt_notifiers; *link; link = &(*link)->next) {
		if (*link == pn) {
			*link = pn->next;
			break;
		}
	}
	pn->next = NULL;
	pn->task = -1;
}

/*
 * The host timer tick: the interpreter stops the guest every PK_TICK_INSNS guest
 * instructions with an external interrupt, as a real host's timer does (HZ ticks, each
 * a VM-exit). A tick ends the run if the task's own timer has run out (the run's
 * instruction budget: its timer signal) or a signal was sent to the thread (a kick,
 * e.g. Ctrl-C); otherwise the next slice starts.
 */
#define PK_TICK_INSNS	(1ull << 24)

/* Give the CPU's guest its next slice of the running task's instruction budget. */
void pk_timer_slice_start(struct pk_cpu *cpu, struct pk_task *t)
{
	u64 slice = t->timer_budget < PK_TICK_INSNS ? t->timer_budget : PK_TICK_INSNS;

	if (t->timer_budget != UINT64_MAX)
		t->timer_budget -= slice;
	cpu->insn_budget = slice;
}

/* The slice's unused part goes back to the task when it leaves the CPU. */
static void pk_timer_slice_stop(struct pk_cpu *cpu, struct pk_task *t)
{
	if (t->timer_budget != UINT64_MAX && cpu->insn_budget != UINT64_MAX)
		t->timer_budget += cpu->insn_budget;
	cpu->insn_budget = UINT64_MAX;
}

/* A signal to the task from another thread (kill(), or kvm_vcpu_kick's request). */
void pk_signal_task(struct pk_machine *m, int task)
{
	__atomic_store_n(&pk_task(m, task)->signal_sent, true, __ATOMIC_RELEASE);
}

/*
 * switch_mm_irqs_off() (arch/x86/mm/tlb.c): the next task's page tables (with the PCID
 * its mm has on this CPU) and its LDT (switch_ldt()).
 */
static void switch_mm_irqs_off(struct pk_task *p, struct pk_task *n)
{
	struct pk_host *h = &this_machine()->host;
	u32 id = this_cpu()->id;

	/*
	 * A kernel thread has no mm and borrows the one loaded (lazy TLB), so switching to
	 * it, or back to the task whose mm it borrowed, leaves CR3.
	 */
	if (n->is_kthread)
		n->cr3 = h->loaded_cr3[id];
	if (n->cr3 != h->loaded_cr3[id]) {
		native_write_cr3(n->cr3);
		h->loaded_cr3[id] = n->cr3;
	}
	if (p->ldt || n->ldt)
		native_lldt(n->ldt);
}

/*
 * __switch_to() (arch/x86/kernel/process_64.c): save prev's user FS/GS (the user GS base
 * is the inactive one while in the kernel) and DS/ES, load next's; __switch_to_xtra()
 * flips CR4.TSD between tasks with different TSC modes and hands the
 * TIF_USER_RETURN_NOTIFY flag on (propagate_user_return_notify()).
 */
static void __switch_to(struct pk_task *p, struct pk_task *n)
{
	struct pk_host *h = &this_machine()->host;
	u32 id = this_cpu()->id;

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
	p->es = savesegment(VCPU_SREG_ES);
	if (n->es | p->es)
		loadsegment(VCPU_SREG_ES, n->es);
	p->ds = savesegment(VCPU_SREG_DS);
	if (n->ds | p->ds)
		loadsegment(VCPU_SREG_DS, n->ds);
	if (p->notsc != n->notsc) {
		h->cr4_shadow[id] ^= X86_CR4_TSD;
		native_write_cr4(h->cr4_shadow[id]);
	}
	if (p->tif_user_return_notify) {
		p->tif_user_return_notify = false;
		n->tif_user_return_notify = true;
	}
}

/*
 * Switch `cpu` to task `next`: both are in the kernel. __schedule() runs with
 * preemption off and, under the runqueue lock, IRQs off: prev's preempt notifiers
 * (sched_out) fire, then switch_mm and switch_to; finish_task_switch() turns IRQs back
 * on before next's notifiers (sched_in). So an NMI may land anywhere in here, an IRQ
 * only during sched_in, a preemption nowhere. The caller holds `cpu`.
 */
void pk_context_switch(int cpu_id, int next)
{
	struct pk_machine *m = this_machine();
	struct pk_cpu *saved = pk_this_cpu;
	struct preempt_notifier *pn;
	struct pk_task *p, *n;
	int prev;

	pk_this_cpu = &m->cpu[cpu_id];
	prev = m->host.current[cpu_id];
	if (prev == next) {
		pk_this_cpu = saved;
		return;
	}
	p = pk_task(m, prev);
	n = pk_task(m, next);

	preempt_disable();
	local_irq_disable();
	for (pn = p->preempt_notifiers; pn; pn = pn->next)
		pn->sched_out(pn);
	pk_timer_slice_stop(this_cpu(), p);
	switch_mm_irqs_off(p, n);
	__switch_to(p, n);
	m->host.current[cpu_id] = next;
	/*
	 * A task switches in where it was placed (pk_migrate_task moves it), so this stores
	 * nothing in practice; not storing keeps the vCPU thread's unlocked read of its own
	 * task's CPU (kvm_ioctl_enter) free of a data race.
	 */
	if (n->cpu != (u32)cpu_id)
		n->cpu = cpu_id;
	pk_trace(m, PK_TR_SCHED_SWITCH, cpu_id, prev, next);
	local_irq_enable();
	for (pn = n->preempt_notifiers; pn; pn = pn->next)
		pn->sched_in(pn, cpu_id);
	preempt_enable();
	/* The task's timer runs while it runs. */
	pk_timer_slice_start(this_cpu(), n);
	pk_this_cpu = saved;
}

/* Move a task that is not running to another CPU; it runs there from its next switch. */
int pk_migrate_task(int task, int cpu)
{
	struct pk_machine *m = this_machine();
	struct pk_task *t;

	if (task < 0 || (u32)task >= m->host.nr_tasks || cpu < 0 || (u32)cpu >= m->nr_cpus)
		return -1;
	t = pk_task(m, task);
	if (!t->alive || m->host.current[t->cpu] == task)
		return -1;	/* running: preempt it first */
	t->cpu = cpu;
	return 0;
}

/* The host timer fired on this CPU (an external interrupt): see PK_TICK_INSNS. */
void pk_host_timer_interrupt(void)
{
	struct pk_task *t = current_task();

	if (t->timer_budget == 0 || __atomic_exchange_n(&t->signal_sent, false, __ATOMIC_ACQUIRE)) {
		t->signal_pending = true;
		this_cpu()->insn_budget = UINT64_MAX;
		return;
	}
	pk_timer_slice_start(this_cpu(), t);
}

/*
 * The CPU's own user process gets the CPU (preempting whatever task had it), enters
 * the kernel and returns to user mode: a syscall, a tick, a context switch. The caller
 * holds `cpu`.
 */
void pk_host_run_other_locked(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *saved = pk_this_cpu;

	pk_this_cpu = &m->cpu[cpu];
	if (m->host.in_user[cpu])
		pk_enter_kernel();
	/* Woken (by what it waited for), it gets the CPU: the CPU's own task is running. */
	pk_task(m, (int)cpu)->state = TASK_RUNNING;
	pk_context_switch((int)cpu, (int)cpu);
	pk_exit_to_user_mode();
	pk_this_cpu = saved;
}

int pk_host_run_other(struct pk_machine *m, u32 cpu)
{
	if (cpu >= m->nr_cpus)
		return pk_err(-EINVAL, "cpu %u: the machine has CPUs 0..%u", cpu, m->nr_cpus - 1);
	pk_cpu_lock(m, cpu);
	pk_host_run_other_locked(m, cpu);
	pk_cpu_unlock(m, cpu);
	return 0;
}
