// SPDX-License-Identifier: MIT
/*
 * The oracle: what the host must see at each observation point, derived from the host
 * kernel model alone (task bases, per-cpu bases, the host's MSR values), never from KVM.
 */
#include "pykvm/events.h"
#include "pykvm/smp.h"

void pk_oracle_violation(struct pk_machine *m, u32 obs, u32 cpu, u32 reg, u64 exp, u64 act)
{
	struct pk_oracle *o = m->oracle;

	if (!o || !o->enabled)
		return;
	/* Any CPU may find one: the verdict is the machine's, under its lock. */
	pk_oracle_lock(m);
	if (!o->nr_violations)
		pk_trace(m, PK_TR_VIOLATION, cpu, obs, reg);
	if (!o->nr_violations++) {
		o->first.obs = obs;
		o->first.cpu = cpu;
		o->first.reg = reg;
		o->first.task = m->host.current[cpu];
		o->first.expected = exp;
		o->first.actual = act;
		memset(&o->first.cause, 0, sizeof(o->first.cause));
		pk_attr_cause(m, &o->first);
	}
	pk_oracle_unlock(m);
}

static void expect(struct pk_machine *m, u32 obs, u32 cpu, u32 reg, u64 exp, u64 act)
{
	if (exp != act)
		pk_oracle_violation(m, obs, cpu, reg, exp, act);
}

static void expect_at_least(struct pk_machine *m, u32 obs, u32 cpu, u32 reg, u64 min, u64 act)
{
	if (act < min)
		pk_oracle_violation(m, obs, cpu, reg, min, act);
}

/*
 * Kernel mode on `cpu`: its page tables (the CR3 cpu_tlbstate says is loaded), kernel
 * CS/SS, and the descriptor tables an interrupt or exception is delivered through: the
 * IDT (its limit must cover the vector), this CPU's GDT and TSS (IST stacks; the TR
 * limit must reach them). VM-exit leaves the GDTR/IDTR limits at 0xffff and the TR
 * limit at 0x67, all of which still cover what the kernel uses.
 */
static void expect_kernel(struct pk_cpu *cpu, u32 obs, u32 vector, bool check_tr)
{
	struct pk_machine *m = cpu->m;
	struct pk_host *h = &m->host;
	u32 id = cpu->id;
	u16 ss = cpu->seg[VCPU_SREG_SS].selector;

	expect(m, obs, id, PK_REG_CR3, h->loaded_cr3[id], cpu->cr3);
	expect(m, obs, id, PK_REG_CS_SEL, __KERNEL_CS, cpu->seg[VCPU_SREG_CS].selector);
	if (ss != 0)		/* interrupts from user mode leave a null SS */
		expect(m, obs, id, PK_REG_SS_SEL, __KERNEL_DS, ss);
	expect(m, obs, id, PK_REG_IDTR_BASE, h->idt_base, cpu->idtr.base);
	expect_at_least(m, obs, id, PK_REG_IDTR_LIMIT, vector * 16 + 15, cpu->idtr.limit);
	expect(m, obs, id, PK_REG_GDTR_BASE, h->gdt_base[id], cpu->gdtr.base);
	expect_at_least(m, obs, id, PK_REG_GDTR_LIMIT, 0x7f, cpu->gdtr.limit);
	if (!check_tr)
		return;
	expect(m, obs, id, PK_REG_TR_SEL, __TSS_SEL, cpu->seg[VCPU_SREG_TR].selector);
	expect(m, obs, id, PK_REG_TR_BASE, h->tss_base[id], cpu->seg[VCPU_SREG_TR].base);
	expect_at_least(m, obs, id, PK_REG_TR_LIMIT, 0x67, cpu->seg[VCPU_SREG_TR].limit);
}

/* smp_processor_id() found the kernel state wrong in host kernel mode (it checks, inline). */
void pk_percpu_read(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;

	expect(m, PK_OBS_PERCPU, cpu->id, MSR_GS_BASE, m->host.per_cpu_offset[cpu->id],
	       cpu->seg[VCPU_SREG_GS].base);
	expect_kernel(cpu, PK_OBS_PERCPU, 0xff, true);
}

/* The MSRs whose host value is the same in kernel and user mode. */
static void expect_host_msrs(struct pk_cpu *cpu, u32 obs)
{
	struct pk_machine *m = cpu->m;
	struct pk_host *h = &m->host;
	u32 id = cpu->id;

	expect(m, obs, id, MSR_STAR, h->star, cpu->msr[PK_MSR_STAR]);
	expect(m, obs, id, MSR_LSTAR, h->lstar, cpu->msr[PK_MSR_LSTAR]);
	expect(m, obs, id, MSR_CSTAR, h->cstar, cpu->msr[PK_MSR_CSTAR]);
	expect(m, obs, id, MSR_SYSCALL_MASK, h->syscall_mask, cpu->msr[PK_MSR_SYSCALL_MASK]);
	if (m->model.has_rdtscp || m->model.has_rdpid)
		expect(m, obs, id, MSR_TSC_AUX, id, cpu->msr[PK_MSR_TSC_AUX]);
	if (m->model.has_rtm)
		expect(m, obs, id, MSR_IA32_TSX_CTRL, 0, cpu->msr[PK_MSR_TSX_CTRL]);
	/* EFER.SVME is the host's own while SVM is enabled. */
	expect(m, obs, id, MSR_EFER, h->efer, cpu->msr[PK_MSR_EFER] & ~(u64)EFER_SVME);
}

/* A host task is in user mode on `cpu`: everything must be the task's or the host's. */
void pk_observe_user(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;
	struct pk_host *h = &m->host;
	struct pk_task *t = pk_task(m, h->current[cpu->id]);
	u32 id = cpu->id;

	if (!m->oracle)
		return;
	expect_host_msrs(cpu, PK_OBS_USER);
	expect(m, PK_OBS_USER, id, MSR_FS_BASE, t->user_fsbase, cpu->seg[VCPU_SREG_FS].base);
	expect(m, PK_OBS_USER, id, MSR_GS_BASE, t->user_gsbase, cpu->seg[VCPU_SREG_GS].base);
	expect(m, PK_OBS_USER, id, MSR_KERNEL_GS_BASE, h->per_cpu_offset[id],
	       cpu->msr[PK_MSR_KERNEL_GS_BASE]);
	expect(m, PK_OBS_USER, id, MSR_IA32_SPEC_CTRL, pk_host_spec_ctrl_user(m),
	       cpu->msr[PK_MSR_SPEC_CTRL]);
	expect(m, PK_OBS_USER, id, MSR_IA32_SYSENTER_EIP, h->sysenter_eip,
	       cpu->msr[PK_MSR_SYSENTER_EIP]);
	expect(m, PK_OBS_USER, id, MSR_IA32_SYSENTER_ESP, h->entry_stack[id],
	       cpu->msr[PK_MSR_SYSENTER_ESP]);
	/* Segments: SYSRETQ's CS/SS, the task's own DS/ES/FS/GS and LDT. */
	expect(m, PK_OBS_USER, id, PK_REG_CS_SEL, __USER_CS, cpu->seg[VCPU_SREG_CS].selector);
	expect(m, PK_OBS_USER, id, PK_REG_SS_SEL, __USER_DS, cpu->seg[VCPU_SREG_SS].selector);
	expect(m, PK_OBS_USER, id, PK_REG_DS_SEL, t->user_ds, cpu->seg[VCPU_SREG_DS].selector);
	expect(m, PK_OBS_USER, id, PK_REG_ES_SEL, t->user_es, cpu->seg[VCPU_SREG_ES].selector);
	expect(m, PK_OBS_USER, id, PK_REG_FS_SEL, t->fsindex, cpu->seg[VCPU_SREG_FS].selector);
	expect(m, PK_OBS_USER, id, PK_REG_GS_SEL, t->gsindex, cpu->seg[VCPU_SREG_GS].selector);
	expect(m, PK_OBS_USER, id, PK_REG_LDTR_SEL, t->ldt, cpu->seg[VCPU_SREG_LDTR].selector);
	/* Descriptor tables: SGDT/SIDT/LSL see them; the next interrupt uses them. */
	expect(m, PK_OBS_USER, id, PK_REG_GDTR_BASE, h->gdt_base[id], cpu->gdtr.base);
	expect(m, PK_OBS_USER, id, PK_REG_GDTR_LIMIT, 0x7f, cpu->gdtr.limit);
	expect(m, PK_OBS_USER, id, PK_REG_IDTR_BASE, h->idt_base, cpu->idtr.base);
	expect_at_least(m, PK_OBS_USER, id, PK_REG_IDTR_LIMIT, 0xfff, cpu->idtr.limit);
	expect(m, PK_OBS_USER, id, PK_REG_TR_SEL, __TSS_SEL, cpu->seg[VCPU_SREG_TR].selector);
	expect(m, PK_OBS_USER, id, PK_REG_TR_BASE, h->tss_base[id], cpu->seg[VCPU_SREG_TR].base);
	expect_at_least(m, PK_OBS_USER, id, PK_REG_TR_LIMIT, 0x67, cpu->seg[VCPU_SREG_TR].limit);
	/* Page tables and CR4 as the kernel believes them loaded, for this task. */
	expect(m, PK_OBS_USER, id, PK_REG_CR3, t->cr3, cpu->cr3);
	expect(m, PK_OBS_USER, id, PK_REG_CR3, h->loaded_cr3[id], cpu->cr3);
	expect(m, PK_OBS_USER, id, PK_REG_CR4, h->cr4_shadow[id], cpu->cr4);
	expect(m, PK_OBS_USER, id, PK_REG_CR4, h->cr4 | (t->notsc ? X86_CR4_TSD : 0), cpu->cr4);
}

/* The first RET after a VM-exit: it must run with the host's SPEC_CTRL. */
void pk_observe_ret(struct pk_cpu *cpu)
{
	struct pk_machine *m = cpu->m;

	if (!m->oracle)
		return;
	expect(m, PK_OBS_RET, cpu->id, MSR_IA32_SPEC_CTRL, pk_host_spec_ctrl_kernel(m),
	       cpu->msr[PK_MSR_SPEC_CTRL]);
	if (m->host.params.ret_uses_percpu)
		pk_observe_percpu(cpu, PK_OBS_RET);
	expect_kernel(cpu, PK_OBS_RET, 0xff, false);	/* a RET needs no TSS */
}

/*
 * A host handler after its entry code: NMI/#MC after the paranoid entry (which set the
 * GS base it trusts), an IRQ after the plain kernel-mode entry (which trusts GS as it
 * is). The handler reads per-cpu data and runs RETs, so GS base and SPEC_CTRL must be
 * the host's; except that inside the guest-state window (guest_state_enter_irqoff ..
 * guest_state_exit_irqoff) Linux knowingly runs with the guest's SPEC_CTRL, and on SVM
 * with the guest's TR between the guest and host VMLOADs: a machine check there is
 * taken as fatal, so only what its paranoid entry computes is checked.
 */
void pk_observe_handler(struct pk_cpu *cpu, u32 obs, u32 vector)
{
	struct pk_machine *m = cpu->m;
	bool window = m->host.guest_ctx[cpu->id];

	if (!m->oracle)
		return;
	pk_observe_percpu(cpu, obs);
	if (!window)
		expect(m, obs, cpu->id, MSR_IA32_SPEC_CTRL, pk_host_spec_ctrl_kernel(m),
		       cpu->msr[PK_MSR_SPEC_CTRL]);
	expect_kernel(cpu, obs, vector, !(window && vector == X86_TRAP_MC));
}

/* Virtualization is off on `cpu`: no guest value may stay in the MSRs KVM switched. */
void pk_observe_virt_off(struct pk_cpu *cpu, bool svm)
{
	if (!cpu->m->oracle)
		return;
	expect_host_msrs(cpu, PK_OBS_VIRT_OFF);
	/* Between ioctls the IPI interrupts user mode, whose entry the model leaves out. */
	if (!cpu->m->host.in_user[cpu->id])
		expect_kernel(cpu, PK_OBS_VIRT_OFF, 0xff, true);
	(void)svm;
}

_Static_assert(sizeof(struct pk_oracle) <= sizeof(struct pk_oracle_state), "oracle storage");

/* Turn the oracle on for this machine (it is part of the machine's state). */
void pk_oracle_enable(struct pk_machine *m, bool on)
{
	m->oracle = (struct pk_oracle *)&m->oracle_storage;
	m->oracle->enabled = on;
	if (!on)
		m->oracle = NULL;
}

int pk_oracle_result(struct pk_machine *m, struct pk_violation *first, u64 *count)
{
	struct pk_oracle *o = (struct pk_oracle *)&m->oracle_storage;

	pk_oracle_lock(m);
	*count = o->nr_violations;
	*first = o->first;
	pk_oracle_unlock(m);
	return 0;
}

void pk_oracle_reset(struct pk_machine *m)
{
	struct pk_oracle *o = (struct pk_oracle *)&m->oracle_storage;

	pk_oracle_lock(m);
	o->nr_violations = 0;
	memset(&o->first, 0, sizeof(o->first));
	pk_oracle_unlock(m);
}
