// SPDX-License-Identifier: MIT
/* Guest code with no hypervisor around it (PK_MODE_BARE): see include/pykvm/exec.h. */
#include "arch/exec_impl.h"
#include "pykvm/smp.h"
#include "pykvm/cpu.h"
#include "pykvm/exec.h"

static struct pk_cpu *bare_cpu(struct pk_machine *m, u32 cpu)
{
	return cpu < m->nr_cpus ? &m->cpu[cpu] : NULL;
}

/* The slots of a bare CPU: its own, in the CPU (no kernel to allocate them). */
static struct pk_memslots *bare_slots(struct pk_cpu *c)
{
	c->npt = &c->bare_slots;
	return &c->bare_slots;
}

int pk_bare_map(struct pk_machine *m, u32 cpu, u64 gpa, u64 size, void *hva)
{
	struct pk_cpu *c = bare_cpu(m, cpu);
	struct pk_memslots *slots;

	if (!c || !hva || !size || gpa + size < gpa)
		return -1;
	slots = bare_slots(c);
	if (!slots || slots->nr >= PK_MAX_MEMSLOTS)
		return -1;
	slots->slot[slots->nr] = (struct pk_memslot){ .gpa = gpa, .size = size, .hva = hva };
	return (int)slots->nr++;
}

void pk_bare_unmap_all(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *c = bare_cpu(m, cpu);
	struct pk_memslots *slots = c ? bare_slots(c) : NULL;

	if (slots)
		memset(slots, 0, sizeof(*slots));
}

void pk_bare_long_mode(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (!c)
		return;
	c->cr0 = X86_CR0_PE | X86_CR0_PG | BIT(16) /* WP */ | BIT(5) /* NE */;
	c->cr4 = X86_CR4_PAE;
	c->msr[PK_MSR_EFER] = EFER_LME | EFER_LMA;
	c->rflags = X86_EFLAGS_FIXED;
	for (int i = 0; i < NR_VCPU_SREGS; i++)
		c->seg[i] = (struct pk_segment){ .selector = 0x10, .limit = 0xffffffff,
						 .ar = 0xc093 };
	c->seg[VCPU_SREG_CS] = (struct pk_segment){ .selector = 0x08, .limit = 0xffffffff,
						    .ar = 0xa09b };
	c->seg[VCPU_SREG_TR] = (struct pk_segment){ .selector = 0x40, .limit = 0x67,
						    .ar = 0x8b };
	c->seg[VCPU_SREG_LDTR] = (struct pk_segment){ .ar = BIT(16) };
	c->gdtr = (struct pk_dtable){ 0 };
	c->idtr = (struct pk_dtable){ 0 };
}

void pk_bare_get_state(struct pk_machine *m, u32 cpu, struct pk_bare_state *st)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (!c)
		return;
	memcpy(st->regs, c->regs, sizeof(st->regs));
	st->rip = c->rip;
	st->rflags = c->rflags;
	st->cr0 = c->cr0;
	st->cr2 = c->cr2;
	st->cr3 = c->cr3;
	st->cr4 = c->cr4;
	for (int i = 0; i < NR_VCPU_SREGS; i++) {
		st->seg_base[i] = c->seg[i].base;
		st->seg_limit[i] = c->seg[i].limit;
		st->seg_ar[i] = c->seg[i].ar;
		st->seg_sel[i] = c->seg[i].selector;
	}
	st->gdt_base = c->gdtr.base;
	st->gdt_limit = c->gdtr.limit;
	st->idt_base = c->idtr.base;
	st->idt_limit = c->idtr.limit;
	st->tsc = c->tsc;
	st->insn_budget = c->insn_budget;
}

void pk_bare_set_state(struct pk_machine *m, u32 cpu, const struct pk_bare_state *st)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (!c)
		return;
	memcpy(c->regs, st->regs, sizeof(c->regs));
	c->rip = st->rip;
	c->rflags = st->rflags;
	c->cr0 = st->cr0;
	c->cr2 = st->cr2;
	c->cr3 = st->cr3;
	c->cr4 = st->cr4;
	for (int i = 0; i < NR_VCPU_SREGS; i++)
		c->seg[i] = (struct pk_segment){ .base = st->seg_base[i],
						 .limit = st->seg_limit[i],
						 .ar = st->seg_ar[i],
						 .selector = st->seg_sel[i] };
	c->gdtr = (struct pk_dtable){ .base = st->gdt_base, .limit = st->gdt_limit };
	c->idtr = (struct pk_dtable){ .base = st->idt_base, .limit = st->idt_limit };
	c->tsc = st->tsc;
	c->insn_budget = st->insn_budget;
}

int pk_bare_get_msr(struct pk_machine *m, u32 cpu, u32 index, u64 *val)
{
	struct pk_cpu *c = bare_cpu(m, cpu);
	int slot = pk_msr_slot(index);

	if (!c)
		return -1;
	if (index == MSR_FS_BASE || index == MSR_GS_BASE) {
		*val = c->seg[index == MSR_FS_BASE ? VCPU_SREG_FS : VCPU_SREG_GS].base;
		return 0;
	}
	if (slot < 0)
		return -1;
	*val = c->msr[slot];
	return 0;
}

int pk_bare_set_msr(struct pk_machine *m, u32 cpu, u32 index, u64 val)
{
	struct pk_cpu *c = bare_cpu(m, cpu);
	int slot = pk_msr_slot(index);

	if (!c)
		return -1;
	if (index == MSR_FS_BASE || index == MSR_GS_BASE) {
		c->seg[index == MSR_FS_BASE ? VCPU_SREG_FS : VCPU_SREG_GS].base = val;
		return 0;
	}
	if (slot < 0)
		return -1;
	c->msr[slot] = val;
	return 0;
}

u32 pk_bare_run(struct pk_machine *m, u32 cpu, u64 budget)
{
	struct pk_cpu *c = bare_cpu(m, cpu);
	struct pk_cpu *old = pk_this_cpu;
	u32 kind;

	if (!c)
		return PK_GEXIT_NONE;
	pk_cpu_lock(m, cpu);		/* one thing at a time on a pCPU, its decode cache too */
	c->mode = PK_MODE_BARE;
	bare_slots(c);
	c->insn_budget = budget;
	pk_this_cpu = c;
	kind = pk_guest_exec(c);
	pk_this_cpu = old;
	pk_cpu_unlock(m, cpu);
	return kind;
}

void pk_bare_event(struct pk_machine *m, u32 cpu, struct pk_bare_event *ev)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (!c)
		return;
	*ev = (struct pk_bare_event){
		.kind = c->ev.kind, .insn_len = c->ev.insn_len, .port = c->ev.port,
		.size = c->ev.size, .in = c->ev.in, .msr = c->ev.msr, .gpa = c->ev.gpa,
		.len = c->ev.len, .write = c->ev.write, .data = c->ev.data,
	};
}

void pk_bare_mmio_fill(struct pk_machine *m, u32 cpu, u64 gpa, u64 data)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (!c)
		return;
	c->mmio_fill_valid = true;
	c->mmio_fill_gpa = gpa;
	c->mmio_fill_data = data;
}

bool pk_bare_deliver_exception(struct pk_machine *m, u32 cpu, u8 vector, bool has_error,
			       u32 error)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	return c && pk_guest_deliver_exception(c, vector, has_error, error);
}

u64 pk_bare_icache_ptr(struct pk_machine *m, u32 cpu)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	return c ? (u64)(uintptr_t)c->icache : 0;
}

void pk_bare_set_icache_ptr(struct pk_machine *m, u32 cpu, u64 ptr)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (c)
		c->icache = (void *)(uintptr_t)ptr;
}

u64 pk_bare_retired(struct pk_machine *m)
{
	u64 n = 0;

	for (u32 c = 0; c < m->nr_cpus; c++)
		n += m->costs[c].ops[PK_PATH_GUEST][PK_OP_GUEST_INSN];
	return n;
}

void pk_bare_icache_stats(struct pk_machine *m, u32 cpu, struct pk_icache_stats *st)
{
	struct pk_cpu *c = bare_cpu(m, cpu);

	if (c)
		pk_icache_stats(c, st);
	else
		memset(st, 0, sizeof(*st));
}

void pk_exec_set_native_runs(bool on)
{
	pk_native_set_enabled(on);
}
