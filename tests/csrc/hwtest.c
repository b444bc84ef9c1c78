// SPDX-License-Identifier: MIT
/*
 * TEST ONLY: the entry points of tests/csrc/hwtest.h, through which tests/test_hw_*.py
 * drive the simulated hardware directly. Nothing in pykvm calls them. The NMI counters
 * below are the only state here; they belong to the tests.
 */
#include "hwtest.h"
#include "asm/svm.h"
#include "asm/vmx.h"

/* svm.c: the intercept decision for an explicit VMCB. */
enum pk_icpt __svm_hw_intercept(struct pk_cpu *cpu, const struct vmcb *vmcb,
				const struct pk_guest_event *ev);

_Static_assert(PK_NR_MSRS <= 32, "struct pk_hwtest_cpu holds every MSR slot");
_Static_assert(NR_VCPU_GPRS == 16 && NR_VCPU_SREGS == 8, "struct pk_hwtest_cpu layout");

/* ---- Named constants ---- */

/* Host-side instructions pk_hwtest_insn runs. */
#define HWTEST_INSNS(X)							\
	X(RDMSRL_SAFE) X(WRMSRL_SAFE) X(RDMSRL) X(WRMSRL)		\
	X(RDFSBASE) X(RDGSBASE) X(WRFSBASE) X(WRGSBASE) X(SWAPGS)	\
	X(SAVESEGMENT) X(LOADSEGMENT) X(LOAD_GS_INDEX) X(LLDT) X(LTR)	\
	X(LGDT) X(SGDT) X(LIDT) X(SIDT)					\
	X(READ_CR0) X(READ_CR3) X(READ_CR4) X(WRITE_CR3)		\
	X(LFENCE) X(FILL_RSB)						\
	X(VMXON) X(VMXOFF) X(VMCLEAR) X(VMPTRLD) X(VMREAD) X(VMWRITE)	\
	X(VMLAUNCH) X(VMRESUME)						\
	X(VMRUN) X(VMLOAD) X(VMSAVE) X(CLGI) X(STGI)
#define __HWTEST_INSN_ENUM(name) HWTEST_INSN_##name,
enum { HWTEST_INSNS(__HWTEST_INSN_ENUM) HWTEST_NR_INSNS };
#undef __HWTEST_INSN_ENUM

struct hwtest_const {
	const char *name;
	int64_t value;
};

#define __C_OP(name)		{ "OP_" #name, PK_OP_##name },
#define __C_PATH(name)		{ "PATH_" #name, PK_PATH_##name },
#define __C_SLOT(name, idx)	{ "SLOT_" #name, PK_MSR_##name },
#define __C_VMCS(name, enc)	{ #name, enc },
#define __C_INSN(name)		{ "INSN_" #name, HWTEST_INSN_##name },
#define __C(prefix, name)	{ #name, prefix##name },
#define __C_VMCB(member)	{ "VMCB_" #member, offsetof(struct vmcb, member) },

static const struct hwtest_const hwtest_consts[] = {
	PK_OPS(__C_OP)
	PK_PATHS(__C_PATH)
	PK_PRICED_MSRS(__C_SLOT)
	{ "NR_MSRS", PK_NR_MSRS },
	{ "NR_PRICED_MSRS", PK_NR_PRICED_MSRS },	/* msr_ops index of "other" */
	VMCS_FIELDS(__C_VMCS)
	HWTEST_INSNS(__C_INSN)
	__C(PK_, GEXIT_NONE) __C(PK_, GEXIT_HLT) __C(PK_, GEXIT_CPUID) __C(PK_, GEXIT_IO)
	__C(PK_, GEXIT_RDMSR) __C(PK_, GEXIT_WRMSR) __C(PK_, GEXIT_VMCALL)
	__C(PK_, GEXIT_VMMCALL) __C(PK_, GEXIT_RDTSCP) __C(PK_, GEXIT_RDPID)
	__C(PK_, GEXIT_MMIO) __C(PK_, GEXIT_TRIPLE_FAULT) __C(PK_, GEXIT_EXTINT)
	__C(PK_, ICPT_NATIVE) __C(PK_, ICPT_EXIT) __C(PK_, ICPT_UD)
	__C(PK_, MODE_HOST) __C(PK_, MODE_VMX_GUEST) __C(PK_, MODE_SVM_GUEST) __C(PK_, MODE_BARE)
	__C(VCPU_, SREG_ES) __C(VCPU_, SREG_CS) __C(VCPU_, SREG_SS) __C(VCPU_, SREG_DS)
	__C(VCPU_, SREG_FS) __C(VCPU_, SREG_GS) __C(VCPU_, SREG_TR) __C(VCPU_, SREG_LDTR)
	__C_VMCB(control.intercepts) __C_VMCB(control.msrpm_base_pa)
	__C_VMCB(control.asid) __C_VMCB(control.exit_code) __C_VMCB(control.exit_code_hi)
	__C_VMCB(control.exit_info_1) __C_VMCB(control.exit_info_2)
	__C_VMCB(control.exit_int_info) __C_VMCB(control.event_inj)
	__C_VMCB(control.event_inj_err) __C_VMCB(control.nested_cr3)
	__C_VMCB(control.next_rip) __C_VMCB(control.insn_len)
	__C_VMCB(save.es) __C_VMCB(save.cs) __C_VMCB(save.ss) __C_VMCB(save.ds)
	__C_VMCB(save.fs) __C_VMCB(save.gs) __C_VMCB(save.gdtr) __C_VMCB(save.ldtr)
	__C_VMCB(save.idtr) __C_VMCB(save.tr) __C_VMCB(save.cpl) __C_VMCB(save.efer)
	__C_VMCB(save.cr4) __C_VMCB(save.cr3) __C_VMCB(save.cr0) __C_VMCB(save.dr7)
	__C_VMCB(save.rflags) __C_VMCB(save.rip) __C_VMCB(save.rsp) __C_VMCB(save.rax)
	__C_VMCB(save.star) __C_VMCB(save.lstar) __C_VMCB(save.cstar) __C_VMCB(save.sfmask)
	__C_VMCB(save.kernel_gs_base) __C_VMCB(save.sysenter_cs)
	__C_VMCB(save.sysenter_esp) __C_VMCB(save.sysenter_eip) __C_VMCB(save.cr2)
	__C_VMCB(save.g_pat) __C_VMCB(save.dbgctl) __C_VMCB(save.spec_ctrl)
	{ "VMCB_SIZE", sizeof(struct vmcb) },
	{ "VMCB_SEG_SIZE", sizeof(struct vmcb_seg) },
	{ "PK_VMCS_REVISION", PK_VMCS_REVISION },
};

int pk_hwtest_const(const char *name, int64_t *value)
{
	for (size_t i = 0; i < ARRAY_SIZE(hwtest_consts); i++) {
		if (!strcmp(hwtest_consts[i].name, name)) {
			*value = hwtest_consts[i].value;
			return 0;
		}
	}
	return -1;
}

/* ---- CPU state ---- */

static struct pk_cpu *hwtest_cpu(struct pk_machine *m, uint32_t cpu)
{
	return cpu < m->nr_cpus ? &m->cpu[cpu] : NULL;
}

int pk_hwtest_get_cpu(struct pk_machine *m, uint32_t id, struct pk_hwtest_cpu *out)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);

	if (!cpu)
		return -1;
	memset(out, 0, sizeof(*out));
	memcpy(out->regs, cpu->regs, sizeof(cpu->regs));
	out->rip = cpu->rip;
	out->rflags = cpu->rflags;
	out->cr0 = cpu->cr0;
	out->cr2 = cpu->cr2;
	out->cr3 = cpu->cr3;
	out->cr4 = cpu->cr4;
	for (int s = 0; s < NR_VCPU_SREGS; s++) {
		out->seg[s].base = cpu->seg[s].base;
		out->seg[s].limit = cpu->seg[s].limit;
		out->seg[s].ar = cpu->seg[s].ar;
		out->seg[s].selector = cpu->seg[s].selector;
	}
	out->gdtr.base = cpu->gdtr.base;
	out->gdtr.limit = cpu->gdtr.limit;
	out->idtr.base = cpu->idtr.base;
	out->idtr.limit = cpu->idtr.limit;
	memcpy(out->msr, cpu->msr, sizeof(cpu->msr));
	out->tsc = cpu->tsc;
	out->current_vmcs = cpu->current_vmcs;
	out->insn_budget = cpu->insn_budget;
	out->mode = cpu->mode;
	out->gif = cpu->gif;
	out->nmi_held = cpu->nmi_held;
	out->vmxon = cpu->vmxon;
	return 0;
}

int pk_hwtest_set_cpu(struct pk_machine *m, uint32_t id, const struct pk_hwtest_cpu *in)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);

	if (!cpu)
		return -1;
	memcpy(cpu->regs, in->regs, sizeof(cpu->regs));
	cpu->rip = in->rip;
	cpu->rflags = in->rflags;
	cpu->cr0 = in->cr0;
	cpu->cr2 = in->cr2;
	cpu->cr3 = in->cr3;
	cpu->cr4 = in->cr4;
	for (int s = 0; s < NR_VCPU_SREGS; s++) {
		cpu->seg[s].base = in->seg[s].base;
		cpu->seg[s].limit = in->seg[s].limit;
		cpu->seg[s].ar = in->seg[s].ar;
		cpu->seg[s].selector = in->seg[s].selector;
	}
	cpu->gdtr.base = in->gdtr.base;
	cpu->gdtr.limit = in->gdtr.limit;
	cpu->idtr.base = in->idtr.base;
	cpu->idtr.limit = in->idtr.limit;
	memcpy(cpu->msr, in->msr, sizeof(cpu->msr));
	cpu->tsc = in->tsc;
	cpu->current_vmcs = in->current_vmcs;
	cpu->insn_budget = in->insn_budget;
	cpu->mode = in->mode;
	cpu->gif = in->gif;
	cpu->nmi_held = in->nmi_held;
	cpu->vmxon = in->vmxon;
	return 0;
}

int pk_hwtest_msr_read(struct pk_machine *m, uint32_t id, uint32_t index, uint64_t *val)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);

	return cpu ? pk_msr_read(cpu, index, val) : -1;
}

int pk_hwtest_msr_write(struct pk_machine *m, uint32_t id, uint32_t index, uint64_t val)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);

	return cpu ? pk_msr_write(cpu, index, val) : -1;
}

/* ---- Host-side instructions ---- */

static int run_insn(int insn, uint64_t a, uint64_t b, uint64_t *out)
{
	struct pk_dtable dt = { .base = a, .limit = (u16)b };

	switch (insn) {
	case HWTEST_INSN_RDMSRL_SAFE:	return rdmsrl_safe((u32)a, out);
	case HWTEST_INSN_WRMSRL_SAFE:	return wrmsrl_safe((u32)a, b);
	case HWTEST_INSN_RDMSRL:	*out = rdmsrl((u32)a); return 0;
	case HWTEST_INSN_WRMSRL:	wrmsrl((u32)a, b); return 0;
	case HWTEST_INSN_RDFSBASE:	*out = rdfsbase(); return 0;
	case HWTEST_INSN_RDGSBASE:	*out = rdgsbase(); return 0;
	case HWTEST_INSN_WRFSBASE:	wrfsbase(a); return 0;
	case HWTEST_INSN_WRGSBASE:	wrgsbase(a); return 0;
	case HWTEST_INSN_SWAPGS:	native_swapgs(); return 0;
	case HWTEST_INSN_SAVESEGMENT:	*out = savesegment((int)a); return 0;
	case HWTEST_INSN_LOADSEGMENT:	loadsegment((int)a, (u16)b); return 0;
	case HWTEST_INSN_LOAD_GS_INDEX:	load_gs_index((u16)a); return 0;
	case HWTEST_INSN_LLDT:		native_lldt((u16)a); return 0;
	case HWTEST_INSN_LTR:		native_ltr((u16)a); return 0;
	case HWTEST_INSN_LGDT:		native_load_gdt(&dt); return 0;
	case HWTEST_INSN_SGDT:		native_store_gdt(&dt); *out = dt.base; return dt.limit;
	case HWTEST_INSN_LIDT:		native_load_idt(&dt); return 0;
	case HWTEST_INSN_SIDT:		native_store_idt(&dt); *out = dt.base; return dt.limit;
	case HWTEST_INSN_READ_CR0:	*out = native_read_cr0(); return 0;
	case HWTEST_INSN_READ_CR3:	*out = native_read_cr3(); return 0;
	case HWTEST_INSN_READ_CR4:	*out = native_read_cr4(); return 0;
	case HWTEST_INSN_WRITE_CR3:	native_write_cr3(a); return 0;
	case HWTEST_INSN_LFENCE:	pk_lfence(); return 0;
	case HWTEST_INSN_FILL_RSB:	pk_fill_return_buffer(); return 0;
	case HWTEST_INSN_VMXON:		return pk_vmxon();
	case HWTEST_INSN_VMXOFF:	return pk_vmxoff();
	case HWTEST_INSN_VMCLEAR:	return pk_vmclear(a);
	case HWTEST_INSN_VMPTRLD:	return pk_vmptrld(a);
	case HWTEST_INSN_VMREAD:	return pk_vmread((u32)a, out);
	case HWTEST_INSN_VMWRITE:	return pk_vmwrite((u32)a, b);
	case HWTEST_INSN_VMLAUNCH:	return pk_vmlaunch();
	case HWTEST_INSN_VMRESUME:	return pk_vmresume();
	case HWTEST_INSN_VMRUN:		return pk_vmrun(a);
	case HWTEST_INSN_VMLOAD:	return pk_vmload(a);
	case HWTEST_INSN_VMSAVE:	return pk_vmsave(a);
	case HWTEST_INSN_CLGI:		pk_clgi(); return 0;
	case HWTEST_INSN_STGI:		pk_stgi(); return 0;
	default:			return -1;
	}
}

int pk_hwtest_insn(struct pk_machine *m, uint32_t id, int insn, uint64_t a, uint64_t b,
		   uint64_t *out)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id), *saved = pk_this_cpu;
	uint64_t scratch = 0;
	int ret;

	if (!cpu || insn < 0 || insn >= HWTEST_NR_INSNS)
		return -1;
	pk_this_cpu = cpu;
	ret = run_insn(insn, a, b, out ? out : &scratch);
	pk_this_cpu = saved;
	return ret;
}

/* ---- Machine memory ---- */

uint64_t pk_hwtest_alloc(struct pk_machine *m, uint64_t size, uint64_t align)
{
	void *p;

	if (!align || (align & (align - 1)) || align > 4096 || size > m->kmem_reserved)
		return 0;
	p = pk_kzalloc(m, (size_t)size, (size_t)align);
	return p ? pk_pa(m, p) : 0;
}

int pk_hwtest_phys_read(struct pk_machine *m, uint64_t pa, void *buf, uint64_t len)
{
	const void *p = pk_hva(m, pa, len);

	if (!p)
		return -1;
	memcpy(buf, p, (size_t)len);
	return 0;
}

int pk_hwtest_phys_write(struct pk_machine *m, uint64_t pa, const void *buf, uint64_t len)
{
	void *p = pk_hva(m, pa, len);

	if (!p)
		return -1;
	memcpy(p, buf, (size_t)len);
	return 0;
}

uint64_t pk_hwtest_memslot(struct pk_machine *m, uint64_t gpa, uint8_t *hva, uint64_t size)
{
	struct pk_memslots *slots = pk_kzalloc(m, sizeof(*slots), _Alignof(struct pk_memslots));

	if (!slots)
		return 0;
	slots->nr = 1;
	slots->slot[0].gpa = gpa;
	slots->slot[0].size = size;
	slots->slot[0].hva = hva;
	return pk_pa(m, slots);
}

/* ---- Intercepts and events ---- */

int pk_hwtest_intercept(struct pk_machine *m, uint32_t id, uint64_t vmcb_pa,
			const struct pk_hwtest_event *hev)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);
	struct pk_guest_event ev = {
		.kind = hev->kind, .insn_len = hev->insn_len, .port = hev->port,
		.size = hev->size, .in = hev->in, .msr = hev->msr, .gpa = hev->gpa,
		.write = hev->write,
	};
	const struct vmcb *vmcb;

	if (!cpu)
		return -1;
	if (m->model.vendor == PK_VENDOR_INTEL)
		return (int)vmx_hw_intercept(cpu, &ev);
	vmcb = (vmcb_pa & 0xfff) ? NULL : pk_hva(m, vmcb_pa, sizeof(*vmcb));
	if (!vmcb)
		return -1;
	return (int)__svm_hw_intercept(cpu, vmcb, &ev);
}

int pk_hwtest_last_event(struct pk_machine *m, uint32_t id, struct pk_hwtest_event *out)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);

	if (!cpu)
		return -1;
	*out = (struct pk_hwtest_event){
		.kind = cpu->ev.kind, .msr = cpu->ev.msr, .port = cpu->ev.port,
		.size = cpu->ev.size, .in = cpu->ev.in, .insn_len = cpu->ev.insn_len,
		.write = cpu->ev.write, .gpa = cpu->ev.gpa,
	};
	return 0;
}

/* ---- NMIs: a counting host handler (test state) ---- */

static uint64_t hwtest_nmi_count[PK_MAX_CPUS];
static uint64_t hwtest_nmi_gsbase[PK_MAX_CPUS];

static void hwtest_nmi_handler(struct pk_cpu *cpu)
{
	if (cpu->id < PK_MAX_CPUS) {
		hwtest_nmi_count[cpu->id]++;
		hwtest_nmi_gsbase[cpu->id] = cpu->seg[VCPU_SREG_GS].base;
	}
}

void pk_hwtest_count_nmis(struct pk_machine *m)
{
	memset(hwtest_nmi_count, 0, sizeof(hwtest_nmi_count));
	memset(hwtest_nmi_gsbase, 0, sizeof(hwtest_nmi_gsbase));
	m->nmi_handler = hwtest_nmi_handler;
}

void pk_hwtest_nmi(struct pk_machine *m, uint32_t id)
{
	struct pk_cpu *cpu = hwtest_cpu(m, id);

	if (cpu)
		pk_nmi(cpu);
}

uint64_t pk_hwtest_nmis(uint32_t id)
{
	return id < PK_MAX_CPUS ? hwtest_nmi_count[id] : 0;
}

uint64_t pk_hwtest_nmi_gsbase(uint32_t id)
{
	return id < PK_MAX_CPUS ? hwtest_nmi_gsbase[id] : 0;
}

uint64_t pk_hwtest_host_bugs(struct pk_machine *m)
{
	return m->host_bugs;
}

/* ---- Costs ---- */

/* Counters are per CPU (machine.h); these tests drive one thread, so plain sums do. */
uint64_t pk_hwtest_ops(struct pk_machine *m, uint32_t path, uint32_t op)
{
	uint64_t n = 0;

	if (path >= PK_NR_PATHS || op >= PK_NR_OPS)
		return 0;
	for (u32 c = 0; c < m->nr_cpus; c++)
		n += m->costs[c].ops[path][op];
	return n;
}

uint64_t pk_hwtest_msr_ops(struct pk_machine *m, uint32_t path, uint32_t dir, uint32_t slot)
{
	uint64_t n = 0;

	if (path >= PK_NR_PATHS || dir > 1 || slot > PK_NR_PRICED_MSRS)
		return 0;
	for (u32 c = 0; c < m->nr_cpus; c++)
		n += m->costs[c].msr_ops[path][dir][slot];
	return n;
}

uint64_t pk_hwtest_cycles(struct pk_machine *m, uint32_t path)
{
	uint64_t n = 0;

	if (path >= PK_NR_PATHS)
		return 0;
	for (u32 c = 0; c < m->nr_cpus; c++)
		n += m->costs[c].cycles[path];
	return n;
}

void pk_hwtest_reset_costs(struct pk_machine *m)
{
	for (u32 c = 0; c < m->nr_cpus; c++) {
		u32 path = m->costs[c].path;

		memset(&m->costs[c], 0, sizeof(m->costs[c]));
		m->costs[c].path = path;
	}
}

void pk_hwtest_set_path(struct pk_machine *m, uint32_t path)
{
	if (path < PK_NR_PATHS)
		for (u32 c = 0; c < m->nr_cpus; c++)
			m->costs[c].path = path;
}

void pk_hwtest_set_op_cost(struct pk_machine *m, uint32_t op, uint32_t cycles)
{
	if (op < PK_NR_OPS)
		m->profile.op[op] = cycles;
}

void pk_hwtest_set_msr_cost(struct pk_machine *m, uint32_t dir, uint32_t slot, uint32_t cycles)
{
	if (slot >= PK_NR_PRICED_MSRS)
		return;
	if (dir)
		m->profile.wrmsr[slot] = cycles;
	else
		m->profile.rdmsr[slot] = cycles;
}
