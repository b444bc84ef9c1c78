// SPDX-License-Identifier: MIT
/*
 * Attribution by last write: which host instruction, in which kernel function, on which
 * CPU and in which checker step last wrote each register the oracle checks. At every
 * host point (while attribution is on: the replay of a violating trace) the registers of
 * every CPU are compared with what they held at the previous point, and a change is put
 * down to the instruction at that point. A VM-entry instruction stands for the guest run
 * and the VM-exit it contains; the records as they were before each guest run are kept,
 * for a violation the guest itself reports. No value is ever matched against anyone's:
 * the cause is the write, not a coincidence.
 */
#include <errno.h>
#include <stdlib.h>

#include "pykvm/events.h"

/* The registers attributed: the MSR file, then the rest the oracle names. */
enum {
	ATTR_FS_BASE = PK_NR_MSRS, ATTR_GS_BASE, ATTR_CS, ATTR_SS, ATTR_DS, ATTR_ES, ATTR_FS,
	ATTR_GS, ATTR_LDTR, ATTR_TR, ATTR_TR_BASE, ATTR_TR_LIMIT, ATTR_GDTR_BASE,
	ATTR_GDTR_LIMIT, ATTR_IDTR_BASE, ATTR_IDTR_LIMIT, ATTR_CR3, ATTR_CR4, PK_ATTR_NREGS
};

struct pk_attr {
	u64 shadow[PK_MAX_CPUS][PK_ATTR_NREGS];
	struct pk_attr_rec rec[PK_MAX_CPUS][PK_ATTR_NREGS];
	struct pk_attr_rec seen[PK_MAX_CPUS][PK_ATTR_NREGS];	/* before the last guest run */
	struct pk_attr_rec last;	/* the previous host point */
	u32 step;
};

u32 pk_msr_index(int s);

static u64 attr_value(const struct pk_cpu *c, u32 i)
{
	if (i < PK_NR_MSRS)
		return c->msr[i];
	switch (i) {
	case ATTR_FS_BASE: return c->seg[VCPU_SREG_FS].base;
	case ATTR_GS_BASE: return c->seg[VCPU_SREG_GS].base;
	case ATTR_CS: return c->seg[VCPU_SREG_CS].selector;
	case ATTR_SS: return c->seg[VCPU_SREG_SS].selector;
	case ATTR_DS: return c->seg[VCPU_SREG_DS].selector;
	case ATTR_ES: return c->seg[VCPU_SREG_ES].selector;
	case ATTR_FS: return c->seg[VCPU_SREG_FS].selector;
	case ATTR_GS: return c->seg[VCPU_SREG_GS].selector;
	case ATTR_LDTR: return c->seg[VCPU_SREG_LDTR].selector;
	case ATTR_TR: return c->seg[VCPU_SREG_TR].selector;
	case ATTR_TR_BASE: return c->seg[VCPU_SREG_TR].base;
	case ATTR_TR_LIMIT: return c->seg[VCPU_SREG_TR].limit;
	case ATTR_GDTR_BASE: return c->gdtr.base;
	case ATTR_GDTR_LIMIT: return c->gdtr.limit;
	case ATTR_IDTR_BASE: return c->idtr.base;
	case ATTR_IDTR_LIMIT: return c->idtr.limit;
	case ATTR_CR3: return c->cr3;
	default: return c->cr4;
	}
}

/* The attributed register an oracle register number names, or -1. */
static int attr_index(u32 reg)
{
	switch (reg) {
	case MSR_FS_BASE: return ATTR_FS_BASE;
	case MSR_GS_BASE: return ATTR_GS_BASE;
	case PK_REG_CS_SEL: return ATTR_CS;
	case PK_REG_SS_SEL: return ATTR_SS;
	case PK_REG_DS_SEL: return ATTR_DS;
	case PK_REG_ES_SEL: return ATTR_ES;
	case PK_REG_FS_SEL: return ATTR_FS;
	case PK_REG_GS_SEL: return ATTR_GS;
	case PK_REG_LDTR_SEL: return ATTR_LDTR;
	case PK_REG_TR_SEL: return ATTR_TR;
	case PK_REG_TR_BASE: return ATTR_TR_BASE;
	case PK_REG_TR_LIMIT: return ATTR_TR_LIMIT;
	case PK_REG_GDTR_BASE: return ATTR_GDTR_BASE;
	case PK_REG_GDTR_LIMIT: return ATTR_GDTR_LIMIT;
	case PK_REG_IDTR_BASE: return ATTR_IDTR_BASE;
	case PK_REG_IDTR_LIMIT: return ATTR_IDTR_LIMIT;
	case PK_REG_CR3: return ATTR_CR3;
	case PK_REG_CR4: return ATTR_CR4;
	}
	for (int s = 0; s < PK_NR_MSRS; s++)
		if (pk_msr_index(s) == reg)
			return s;
	return -1;
}

static bool is_guest_entry(u32 op)
{
	return op == PK_OP_VMLAUNCH || op == PK_OP_VMRESUME || op == PK_OP_VMRUN;
}

/* Put the changes since the previous point down to it. */
static void attr_flush(struct pk_machine *m)
{
	struct pk_attr *a = m->attr;

	if (a->last.valid && is_guest_entry(a->last.op))
		memcpy(a->seen[a->last.cpu], a->rec[a->last.cpu], sizeof(a->seen[0]));
	for (u32 c = 0; c < m->nr_cpus; c++) {
		for (u32 i = 0; i < PK_ATTR_NREGS; i++) {
			u64 v = attr_value(&m->cpu[c], i);

			if (v == a->shadow[c][i])
				continue;
			a->shadow[c][i] = v;
			a->rec[c][i] = a->last;
		}
	}
}

void pk_attr_point(struct pk_machine *m, struct pk_cpu *cpu, u32 op)
{
	struct pk_attr *a = m->attr;

	if (!a)
		return;
	attr_flush(m);
	a->last = (struct pk_attr_rec){ .fn = m->attr_site, .op = op, .path = cpu->costs->path,
					.cpu = cpu->id, .step = a->step, .valid = 1 };
}

void pk_attr_reset(struct pk_machine *m, u32 step)
{
	struct pk_attr *a = m->attr;

	if (!a)
		return;
	if (step == 0) {
		memset(a, 0, sizeof(*a));
		for (u32 c = 0; c < m->nr_cpus; c++)
			for (u32 i = 0; i < PK_ATTR_NREGS; i++)
				a->shadow[c][i] = attr_value(&m->cpu[c], i);
	}
	a->step = step;
}

/*
 * The cause of violation `v`: the last write of its register on its CPU; for what the
 * guest reports (it read the value during its last run), the last write before that run.
 */
void pk_attr_cause(struct pk_machine *m, struct pk_violation *v)
{
	struct pk_attr *a = m->attr;
	int i;

	if (!a || v->cpu >= m->nr_cpus)
		return;
	attr_flush(m);
	i = attr_index(v->reg);
	if (i < 0)
		return;
	v->cause = (v->obs == PK_OBS_GUEST || v->obs == PK_OBS_EXIT) ? a->seen[v->cpu][i]
								    : a->rec[v->cpu][i];
	if (!v->cause.valid)
		v->cause.valid = 2;	/* attributed: not written since the initial state */
}

int pk_attr_enable(struct pk_machine *m, bool on)
{
	if (!on) {
		free(m->attr);
		m->attr = NULL;
		return 0;
	}
	if (!m->attr && !(m->attr = calloc(1, sizeof(*m->attr))))
		return -ENOMEM;
	pk_attr_reset(m, 0);
	return 0;
}
