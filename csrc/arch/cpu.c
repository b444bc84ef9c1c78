// SPDX-License-Identifier: MIT
/*
 * The MSR file of the simulated CPU and the host-side instructions that touch the live
 * state (MACHINE.md section 1).
 *
 * pk_msr_read()/pk_msr_write() hold the architectural rules (Intel SDM vol. 4, AMD APM
 * vol. 2, and what kvm-unit-tests / KVM selftests observe: CONFORMANCE.md). Host code and
 * the guest's native (not intercepted) RDMSR/WRMSR both go through them, so a value the
 * guest can write is a value the hardware really holds.
 *
 * The kernel-named wrappers below them (rdmsrl_safe, native_swapgs, ...) run on
 * this_cpu() and account one operation each in the cost model (COSTS.md).
 */
#define PK_CPU_IMPL		/* defines host instructions cpu.h wraps for attribution */
#include "pykvm/cpu.h"
#include "asm/vmx.h"		/* VMX_AR_UNUSABLE_MASK: the segment AR format */

/* ---- The MSR file ---- */

/*
 * MSR index -> priced-MSR number (the file's slots, then PK_STATELESS_MSRS), by direct
 * table. Every RDMSR/WRMSR the host model executes looks its MSR up once, for its price
 * and for the MSR file (whose rules switch on the dense number: a jump table). The
 * priced MSRs all sit in three architectural ranges, so a table per range is one
 * compare and one load; the tables are filled from the same X-macros when the module
 * loads, so they cannot drift from them.
 */
#define MSR_RANGE_LOW		0x00000000u	/* architectural MSRs */
#define MSR_RANGE_C000		0xc0000000u	/* AMD64 / long-mode MSRs */
#define MSR_RANGE_C001		0xc0010000u	/* AMD SVM and model-specific MSRs */
#define MSR_RANGE_LOW_SIZE	0x800u
#define MSR_RANGE_HIGH_SIZE	0x200u

#define __PK_MSR_IN_RANGE(name, idx)						\
	_Static_assert((idx) - MSR_RANGE_LOW < MSR_RANGE_LOW_SIZE ||		\
		       (idx) - MSR_RANGE_C000 < MSR_RANGE_HIGH_SIZE ||		\
		       (idx) - MSR_RANGE_C001 < MSR_RANGE_HIGH_SIZE,		\
		       "priced MSR " #name " outside the lookup ranges");
PK_PRICED_MSRS(__PK_MSR_IN_RANGE)
#undef __PK_MSR_IN_RANGE

/* Priced-MSR number + 1 (0: none) by offset into each range. */
static u8 msr_low[MSR_RANGE_LOW_SIZE];
static u8 msr_c000[MSR_RANGE_HIGH_SIZE];
static u8 msr_c001[MSR_RANGE_HIGH_SIZE];
_Static_assert(PK_NR_PRICED_MSRS < 255, "priced-MSR number + 1 fits in a u8");

static void msr_table_add(u32 index, int priced)
{
	if (index - MSR_RANGE_LOW < MSR_RANGE_LOW_SIZE)
		msr_low[index - MSR_RANGE_LOW] = (u8)(priced + 1);
	else if (index - MSR_RANGE_C000 < MSR_RANGE_HIGH_SIZE)
		msr_c000[index - MSR_RANGE_C000] = (u8)(priced + 1);
	else
		msr_c001[index - MSR_RANGE_C001] = (u8)(priced + 1);
}

__attribute__((constructor)) static void msr_table_init(void)
{
#define __PK_MSR_ADD(name, idx) msr_table_add(idx, PK_MSR_##name);
	PK_PRICED_MSRS(__PK_MSR_ADD)
#undef __PK_MSR_ADD
}

/* The priced-MSR number of `index` (a slot, or one of PK_STATELESS_MSRS), or -1. */
static inline int priced_msr(u32 index)
{
	if (index - MSR_RANGE_LOW < MSR_RANGE_LOW_SIZE)
		return (int)msr_low[index - MSR_RANGE_LOW] - 1;
	if (index - MSR_RANGE_C000 < MSR_RANGE_HIGH_SIZE)
		return (int)msr_c000[index - MSR_RANGE_C000] - 1;
	if (index - MSR_RANGE_C001 < MSR_RANGE_HIGH_SIZE)
		return (int)msr_c001[index - MSR_RANGE_C001] - 1;
	return -1;
}

static inline int msr_slot(u32 index)
{
	int priced = priced_msr(index);

	return priced < PK_NR_MSRS ? priced : -1;
}

int pk_msr_slot(u32 index)
{
	return msr_slot(index);
}

static bool is_amd(const struct pk_cpu *cpu)
{
	return cpu->m->model.vendor == PK_VENDOR_AMD;
}

/* SPEC_CTRL bits this CPU model implements; the MSR exists iff any. */
static u64 spec_ctrl_valid_bits(const struct pk_cpu_model *model)
{
	return (model->has_ibrs ? SPEC_CTRL_IBRS : 0) |
	       (model->has_stibp ? SPEC_CTRL_STIBP : 0) |
	       (model->has_ssbd ? SPEC_CTRL_SSBD : 0);
}

/* EFER bits software may set; LMA is among them but read-only for WRMSR. */
u64 pk_efer_valid_bits(const struct pk_cpu *cpu)
{
	return EFER_SCE | EFER_LME | EFER_LMA | EFER_NX | (is_amd(cpu) ? EFER_SVME : 0);
}

/*
 * Every byte of PAT must be a valid memory type: UC, WC, WT, WP, WB, UC- (0,1,4,5,6,7),
 * i.e. no byte above 7 and none of the form 01x (2, 3: bit 1 set, bit 2 clear). Checked
 * on every VM-entry with the PAT controls, hence branch-free.
 */
bool pk_pat_valid(u64 pat)
{
	const u64 ones = 0x0101010101010101ULL;

	return !(pat & (0xf8 * ones)) && !((pat >> 1) & ~(pat >> 2) & ones);
}

#define DEBUGCTL_VALID_BITS	(BIT_ULL(0) | BIT_ULL(1))	/* LBR, BTF */
#define TSX_CTRL_VALID_BITS	(TSX_CTRL_RTM_DISABLE | TSX_CTRL_CPUID_CLEAR)
/* APIC base: BSP (8), x2APIC enable (10), global enable (11), base 51:12. */
#define APICBASE_VALID_BITS	(BIT_ULL(8) | BIT_ULL(10) | BIT_ULL(11) | 0x000ffffffffff000ULL)

/* Whether this CPU model implements the MSR in `slot`. */
static inline __attribute__((always_inline)) bool msr_present(const struct pk_cpu *cpu, int slot)
{
	const struct pk_cpu_model *model = &cpu->m->model;

	switch (slot) {
	case PK_MSR_TSC_AUX:
		return model->has_rdtscp || model->has_rdpid;
	case PK_MSR_SPEC_CTRL:
		return spec_ctrl_valid_bits(model) != 0;
	case PK_MSR_TSX_CTRL:
		return model->has_rtm;
	case PK_MSR_VIRT_SPEC_CTRL:
		return model->has_virt_ssbd;
	case PK_MSR_VM_HSAVE_PA:
		return is_amd(cpu);
	case PK_MSR_MISC_ENABLE:
		return !is_amd(cpu);
	default:
		return slot >= 0;
	}
}

/*
 * RDMSR of priced MSR `priced` (priced_msr(): -1 for an MSR the model does not have).
 * The rules switch on the dense number, not the sparse index: one jump table.
 */
static inline __attribute__((always_inline)) int msr_read(struct pk_cpu *cpu, int priced,
							   u64 *val)
{
	switch (priced) {
	case PK_MSR_FS_BASE:
		*val = cpu->seg[VCPU_SREG_FS].base;
		return 0;
	case PK_MSR_GS_BASE:
		*val = cpu->seg[VCPU_SREG_GS].base;
		return 0;
	case PK_MSR_TSC:
		*val = cpu->tsc;
		return 0;
	case PK_MSR_PRED_CMD:		/* write-only */
	case PK_MSR_FLUSH_CMD:
		return X86_TRAP_GP;
	}
	if (priced < 0 || priced >= PK_NR_MSRS || !msr_present(cpu, priced))
		return X86_TRAP_GP;
	*val = cpu->msr[priced];
	return 0;
}

int pk_msr_read(struct pk_cpu *cpu, u32 index, u64 *val)
{
	return msr_read(cpu, priced_msr(index), val);
}

/* 64-bit value that must be a canonical address (FS/GS bases, SYSCALL targets, ...). */
static int write_canonical(u64 *reg, u64 val)
{
	if (is_noncanonical_address(val))
		return X86_TRAP_GP;
	*reg = val;
	return 0;
}

/* WRMSR of priced MSR `priced` (-1: an MSR the model does not have), like msr_read(). */
static inline __attribute__((always_inline)) int msr_write(struct pk_cpu *cpu, int priced,
							    u64 val)
{
	const struct pk_cpu_model *model = &cpu->m->model;
	u64 *msr = cpu->msr;

	switch (priced) {
	case PK_MSR_FS_BASE:
		return write_canonical(&cpu->seg[VCPU_SREG_FS].base, val);
	case PK_MSR_GS_BASE:
		return write_canonical(&cpu->seg[VCPU_SREG_GS].base, val);
	case PK_MSR_KERNEL_GS_BASE:
		return write_canonical(&msr[PK_MSR_KERNEL_GS_BASE], val);
	case PK_MSR_LSTAR:
		return write_canonical(&msr[PK_MSR_LSTAR], val);
	case PK_MSR_CSTAR:
		return write_canonical(&msr[PK_MSR_CSTAR], val);
	case PK_MSR_TSC:
		cpu->tsc = val;
		return 0;
	case PK_MSR_PRED_CMD:
		/* The barrier itself has no state in the model; its cost is the host's. */
		if (val == 0 || (val == PRED_CMD_IBPB && model->has_ibpb))
			return 0;
		return X86_TRAP_GP;
	case PK_MSR_FLUSH_CMD:
		/*
		 * L1D_FLUSH: the microcode that mitigates L1TF brings this command MSR
		 * (X86_FEATURE_FLUSH_L1D); the flush has no state in the model.
		 */
		if (model->bug_l1tf && (val == 0 || val == L1D_FLUSH))
			return 0;
		return X86_TRAP_GP;
	case PK_MSR_EFER:
		if (val & ~pk_efer_valid_bits(cpu))
			return X86_TRAP_GP;
		/* LMA is read-only: the CPU sets it when paging is enabled with LME. */
		msr[PK_MSR_EFER] = (val & ~(u64)EFER_LMA) | (msr[PK_MSR_EFER] & EFER_LMA);
		return 0;
	case PK_MSR_STAR:
		msr[PK_MSR_STAR] = val;
		return 0;
	case PK_MSR_SYSCALL_MASK:		/* 32-bit register: upper bits ignored */
		msr[PK_MSR_SYSCALL_MASK] = (u32)val;
		return 0;
	case PK_MSR_TSC_AUX:
		if (!msr_present(cpu, PK_MSR_TSC_AUX))
			return X86_TRAP_GP;
		/* CONFORMANCE case 12: Intel faults on bits 63:32, AMD drops them. */
		if (!is_amd(cpu) && (val >> 32))
			return X86_TRAP_GP;
		msr[PK_MSR_TSC_AUX] = (u32)val;
		return 0;
	case PK_MSR_SPEC_CTRL:
		if (!spec_ctrl_valid_bits(model) || (val & ~spec_ctrl_valid_bits(model)))
			return X86_TRAP_GP;
		msr[PK_MSR_SPEC_CTRL] = val;
		return 0;
	case PK_MSR_SYSENTER_CS:	/* the VMCS/VMCB keep 32 bits of it */
		msr[PK_MSR_SYSENTER_CS] = (u32)val;
		return 0;
	case PK_MSR_SYSENTER_ESP:
	case PK_MSR_SYSENTER_EIP: {
		u64 *reg = &msr[priced];
		/* AMD implements 32 bits (CONFORMANCE case 2); Intel checks canonical. */
		if (is_amd(cpu)) {
			*reg = (u32)val;
			return 0;
		}
		return write_canonical(reg, val);
	}
	case PK_MSR_PAT:
		if (!pk_pat_valid(val))
			return X86_TRAP_GP;
		msr[PK_MSR_PAT] = val;
		return 0;
	case PK_MSR_DEBUGCTL:
		if (val & ~DEBUGCTL_VALID_BITS)
			return X86_TRAP_GP;
		msr[PK_MSR_DEBUGCTL] = val;
		return 0;
	case PK_MSR_TSX_CTRL:
		if (!model->has_rtm || (val & ~(u64)TSX_CTRL_VALID_BITS))
			return X86_TRAP_GP;
		msr[PK_MSR_TSX_CTRL] = val;
		return 0;
	case PK_MSR_VIRT_SPEC_CTRL:
		if (!model->has_virt_ssbd || (val & ~(u64)SPEC_CTRL_SSBD))
			return X86_TRAP_GP;
		msr[PK_MSR_VIRT_SPEC_CTRL] = val;
		return 0;
	case PK_MSR_VM_HSAVE_PA:
		if (!is_amd(cpu) || (val & 0xfff))
			return X86_TRAP_GP;
		msr[PK_MSR_VM_HSAVE_PA] = val;
		return 0;
	case PK_MSR_MISC_ENABLE:
		if (is_amd(cpu))
			return X86_TRAP_GP;
		/* CONFORMANCE case 3: bits 7, 11, 12 keep their value. */
		msr[PK_MSR_MISC_ENABLE] = (val & ~MSR_IA32_MISC_ENABLE_RO_MASK) |
					  (msr[PK_MSR_MISC_ENABLE] & MSR_IA32_MISC_ENABLE_RO_MASK);
		return 0;
	case PK_MSR_TSC_DEADLINE:
		msr[PK_MSR_TSC_DEADLINE] = val;
		return 0;
	case PK_MSR_APICBASE:
		if (val & ~APICBASE_VALID_BITS)
			return X86_TRAP_GP;
		msr[PK_MSR_APICBASE] = val;
		return 0;
	default:
		return X86_TRAP_GP;
	}
}

int pk_msr_write(struct pk_cpu *cpu, u32 index, u64 val)
{
	return msr_write(cpu, priced_msr(index), val);
}

/* Flat 64-bit segments as the host GDT describes them (VMX access-rights format). */
#define AR_CODE64	0xa09bU		/* type 11, S, P, L, G */
#define AR_DATA		0xc093U		/* type 3, S, P, DB, G */
#define AR_TSS_BUSY	0x008bU		/* 64-bit TSS, busy, P */
#define AR_LDT		0x0082U		/* LDT, P */

static void set_segment(struct pk_segment *s, u16 sel, u64 base, u32 limit, u32 ar)
{
	s->selector = sel;
	s->base = base;
	s->limit = limit;
	s->ar = ar;
}

/*
 * Power-on state (SDM vol. 3A 10.1.1), then long mode is the host kernel model's job:
 * pk_host_init() sets the host's CRs, segments, tables and MSRs afterwards.
 */
void pk_cpu_reset(struct pk_cpu *cpu)
{
	void *icache = cpu->icache;	/* a cache, not state: keep it across resets */
	struct pk_costs *costs = cpu->costs;	/* counters, not state: likewise */
	struct pk_machine *m = cpu->m;
	u32 id = cpu->id;

	memset(cpu, 0, sizeof(*cpu));
	cpu->m = m;
	cpu->id = id;
	cpu->icache = icache;
	cpu->costs = costs;
	cpu->mode = PK_MODE_HOST;

	cpu->rip = 0xfff0;
	cpu->rflags = X86_EFLAGS_FIXED;
	cpu->cr0 = 0x60000010;		/* CD, NW, ET */
	cpu->regs[VCPU_REGS_RDX] = 0x600;
	set_segment(&cpu->seg[VCPU_SREG_CS], 0xf000, 0xffff0000, 0xffff, 0x9b);
	for (int s = VCPU_SREG_ES; s <= VCPU_SREG_GS; s++)
		if (s != VCPU_SREG_CS)
			set_segment(&cpu->seg[s], 0, 0, 0xffff, 0x93);
	set_segment(&cpu->seg[VCPU_SREG_LDTR], 0, 0, 0xffff, AR_LDT);
	set_segment(&cpu->seg[VCPU_SREG_TR], 0, 0, 0xffff, AR_TSS_BUSY);
	cpu->gdtr.limit = 0xffff;
	cpu->idtr.limit = 0xffff;

	cpu->msr[PK_MSR_PAT] = 0x0007040600070406ULL;
	cpu->msr[PK_MSR_APICBASE] = 0xfee00000ULL | BIT(11) | (id == 0 ? BIT(8) : 0);
	if (!is_amd(cpu))		/* fast strings, perfmon available, ... */
		cpu->msr[PK_MSR_MISC_ENABLE] = 0x850089;

	cpu->gif = true;
	cpu->current_vmcs = (u64)-1;
}

/* ---- Host-side instructions on this_cpu(), each accounted once ---- */

/* A kernel fault where none may happen (non-_safe MSR access, #GP/#UD in kernel code). */
static void host_bug(struct pk_cpu *cpu)
{
	pk_host_bug(cpu->m);
}

/*
 * RDMSR/WRMSR cost: the per-MSR profile figure when the profile has one. `msr` is the
 * priced-MSR number the caller looked up once for this access and the MSR file both.
 */
static inline __attribute__((always_inline)) void account_msr(struct pk_cpu *cpu, int dir,
							      int msr)
{
	struct pk_machine *m = cpu->m;
	struct pk_costs *c = cpu->costs;
	enum pk_op op = dir ? PK_OP_WRMSR : PK_OP_RDMSR;
	u32 cycles = m->profile.op[op];
	u32 path = c->path;

	if (msr >= 0) {
		u32 per_msr = dir ? m->profile.wrmsr[msr] : m->profile.rdmsr[msr];

		if (per_msr)
			cycles = per_msr;
	} else {
		msr = PK_NR_PRICED_MSRS;	/* an MSR nobody prices on its own: "other" */
	}
	c->ops[path][op]++;
	c->msr_ops[path][dir][msr]++;
	c->cycles[path] += cycles;
}

/* RDMSR and WRMSR of priced MSR `priced` with their accounting (the injection point aside). */
static inline __attribute__((always_inline)) int rdmsr_counted(struct pk_cpu *cpu, int priced,
								u64 *val)
{
	account_msr(cpu, 0, priced);
	if (msr_read(cpu, priced, val)) {
		*val = 0;
		return 1;
	}
	return 0;
}

static inline __attribute__((always_inline)) int wrmsr_counted(struct pk_cpu *cpu, int priced,
								u64 val)
{
	account_msr(cpu, 1, priced);
	return msr_write(cpu, priced, val) ? 1 : 0;
}

/*
 * The accesses made while the checker places events or attributes writes: the point
 * first, then the same. Out of line and reached by a tail call, so that the common path
 * makes no call and keeps its values in scratch registers.
 */
static __attribute__((noinline, cold)) int rdmsrl_safe_point(struct pk_cpu *cpu, u32 index,
							     int priced, u64 *val)
{
	pk_inject_point(cpu, PK_OP_RDMSR, index);
	return rdmsr_counted(cpu, priced, val);
}

static __attribute__((noinline, cold)) int wrmsrl_safe_point(struct pk_cpu *cpu, u32 index,
							     int priced, u64 val)
{
	pk_inject_point(cpu, PK_OP_WRMSR, index);
	return wrmsr_counted(cpu, priced, val);
}

int rdmsrl_safe(u32 msr, u64 *val)
{
	struct pk_cpu *cpu = this_cpu();
	int priced = priced_msr(msr);

	if (pk_point_armed(cpu->m))
		return rdmsrl_safe_point(cpu, msr, priced, val);
	return rdmsr_counted(cpu, priced, val);
}

int wrmsrl_safe(u32 msr, u64 val)
{
	struct pk_cpu *cpu = this_cpu();
	int priced = priced_msr(msr);

	/*
	 * Command MSRs (PRED_CMD: IBPB, FLUSH_CMD: L1D flush) are WRMSRs too; what the
	 * barrier or flush costs is their per-MSR price (wrmsr.PRED_CMD, wrmsr.FLUSH_CMD).
	 */
	if (pk_point_armed(cpu->m))
		return wrmsrl_safe_point(cpu, msr, priced, val);
	return wrmsr_counted(cpu, priced, val);
}

u64 rdmsrl(u32 msr)
{
	u64 val;

	if (rdmsrl_safe(msr, &val))
		host_bug(this_cpu());	/* the kernel's "unchecked MSR access error" WARN */
	return val;
}

void wrmsrl(u32 msr, u64 val)
{
	if (wrmsrl_safe(msr, val))
		host_bug(this_cpu());
}

/* RD/WR{FS,GS}BASE are #UD unless CR4.FSGSBASE: the kernel would oops. */
static void check_fsgsbase(struct pk_cpu *cpu)
{
	if (unlikely(!(cpu->cr4 & X86_CR4_FSGSBASE)))
		host_bug(cpu);
}

u64 rdfsbase(void)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_RDFSBASE);
	check_fsgsbase(cpu);
	return cpu->seg[VCPU_SREG_FS].base;
}

u64 rdgsbase(void)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_RDGSBASE);
	check_fsgsbase(cpu);
	return cpu->seg[VCPU_SREG_GS].base;
}

static void wrbase(struct pk_cpu *cpu, int sreg, u64 base)
{
	check_fsgsbase(cpu);
	if (is_noncanonical_address(base)) {
		host_bug(cpu);		/* #GP */
		return;
	}
	cpu->seg[sreg].base = base;
}

void wrfsbase(u64 base)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_WRFSBASE);
	wrbase(cpu, VCPU_SREG_FS, base);
}

void wrgsbase(u64 base)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_WRGSBASE);
	wrbase(cpu, VCPU_SREG_GS, base);
}

static void __swapgs(struct pk_cpu *cpu)
{
	u64 tmp = cpu->seg[VCPU_SREG_GS].base;

	cpu->seg[VCPU_SREG_GS].base = cpu->msr[PK_MSR_KERNEL_GS_BASE];
	cpu->msr[PK_MSR_KERNEL_GS_BASE] = tmp;
}

void native_swapgs(void)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_SWAPGS);
	__swapgs(cpu);
}

u16 savesegment(int sreg)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_MOV_SREG);
	if (sreg < 0 || sreg >= NR_VCPU_SREGS) {
		host_bug(cpu);
		return 0;
	}
	return cpu->seg[sreg].selector;
}

/*
 * MOV to a data segment register in 64-bit mode. The host GDT's data descriptors are
 * flat, so the hidden base becomes 0 -- for GS too: a raw MOV GS in kernel mode wipes the
 * kernel's per-cpu base, which is why the kernel uses load_gs_index(). A null selector is
 * allowed and leaves the register unusable.
 */
static bool __loadsegment(struct pk_cpu *cpu, int sreg, u16 sel)
{
	switch (sreg) {
	case VCPU_SREG_ES:
	case VCPU_SREG_SS:
	case VCPU_SREG_DS:
	case VCPU_SREG_FS:
	case VCPU_SREG_GS:
		break;
	default:			/* CS, TR, LDTR: not loadable with MOV */
		return false;
	}
	if ((sel & ~3) == 0)
		set_segment(&cpu->seg[sreg], sel, 0, 0, VMX_AR_UNUSABLE_MASK);
	else
		set_segment(&cpu->seg[sreg], sel, 0, 0xffffffff, AR_DATA);
	return true;
}

void loadsegment(int sreg, u16 sel)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_MOV_SREG);
	if (!__loadsegment(cpu, sreg, sel))
		host_bug(cpu);
}

/*
 * SWAPGS; MOV GS, sel; SWAPGS (arch/x86/include/asm/special_insns.h): the MOV lands on the
 * user GS base, parked in KERNEL_GS_BASE while in the kernel, and zeroes it; the kernel's
 * per-cpu base survives. Costed as the three instructions it executes.
 */
void load_gs_index(u16 sel)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_SWAPGS);
	pk_account(cpu, PK_OP_MOV_SREG);
	pk_account(cpu, PK_OP_SWAPGS);
	__swapgs(cpu);
	__loadsegment(cpu, VCPU_SREG_GS, sel);
	__swapgs(cpu);
}

/*
 * A 16-byte system descriptor (LDT, TSS) in the GDT, read from machine memory like the
 * hardware does. NULL if the GDT does not live in the machine (a host model that keeps
 * it elsewhere) or the selector is beyond the GDT limit.
 */
static u8 *gdt_system_desc(struct pk_cpu *cpu, u16 sel)
{
	u32 off = sel & ~7U;

	if (off + 15 > cpu->gdtr.limit)
		return NULL;
	return pk_hva(cpu->m, cpu->gdtr.base + off, 16);
}

static u64 desc_base(const u8 *d)
{
	u64 lo = d[2] | ((u64)d[3] << 8) | ((u64)d[4] << 16) | ((u64)d[7] << 24);
	u64 hi = d[8] | ((u64)d[9] << 8) | ((u64)d[10] << 16) | ((u64)d[11] << 24);

	return lo | (hi << 32);
}

static u32 desc_limit(const u8 *d)
{
	u32 limit = d[0] | ((u32)d[1] << 8) | ((u32)(d[6] & 0xf) << 16);

	return (d[6] & 0x80) ? (limit << 12) | 0xfff : limit;	/* G: 4 KiB units */
}

/* Descriptor byte 5 (type, S, DPL, P) and the high nibble of byte 6 -> VMX AR format. */
static u32 desc_ar(const u8 *d)
{
	return d[5] | ((u32)(d[6] & 0xf0) << 8);
}

#define DESC_TYPE_LDT		0x2
#define DESC_TYPE_TSS_AVAIL	0x9
#define DESC_TSS_BUSY_BIT	0x2	/* type 9 -> 11 */
#define DESC_P			0x80

/* Fallback TSS limit when the GDT is not in machine memory: Linux's __KERNEL_TSS_LIMIT. */
#define PK_KERNEL_TSS_LIMIT	0x207f

void native_lldt(u16 sel)
{
	struct pk_cpu *cpu = this_cpu();
	const u8 *d;

	pk_account(cpu, PK_OP_LLDT);
	if ((sel & ~3) == 0) {
		set_segment(&cpu->seg[VCPU_SREG_LDTR], 0, 0, 0, VMX_AR_UNUSABLE_MASK);
		return;
	}
	d = gdt_system_desc(cpu, sel);
	if (!d) {
		set_segment(&cpu->seg[VCPU_SREG_LDTR], sel, 0, 0, AR_LDT);
		return;
	}
	if ((d[5] & 0x1f) != DESC_TYPE_LDT || !(d[5] & DESC_P)) {
		host_bug(cpu);		/* #GP / #NP */
		return;
	}
	set_segment(&cpu->seg[VCPU_SREG_LDTR], sel, desc_base(d), desc_limit(d), desc_ar(d));
}

/*
 * LTR: loads TR from an available TSS descriptor and marks the descriptor busy. LTR of a
 * busy TSS is #GP: software must mark it available first (force_reload_TR()).
 */
void native_ltr(u16 sel)
{
	struct pk_cpu *cpu = this_cpu();
	u8 *d;

	pk_account(cpu, PK_OP_LTR);
	if ((sel & ~3) == 0 || (sel & 4)) {
		host_bug(cpu);		/* null or LDT selector: #GP */
		return;
	}
	d = gdt_system_desc(cpu, sel);
	if (!d) {
		u64 base = cpu->id < PK_MAX_CPUS ? cpu->m->host.tss_base[cpu->id] : 0;

		set_segment(&cpu->seg[VCPU_SREG_TR], sel, base, PK_KERNEL_TSS_LIMIT, AR_TSS_BUSY);
		return;
	}
	if ((d[5] & 0x1f) != DESC_TYPE_TSS_AVAIL || !(d[5] & DESC_P)) {
		host_bug(cpu);		/* busy or not a TSS: #GP; not present: #NP */
		return;
	}
	d[5] |= DESC_TSS_BUSY_BIT;
	set_segment(&cpu->seg[VCPU_SREG_TR], sel, desc_base(d), desc_limit(d), desc_ar(d));
}

/*
 * Field by field: callers build the descriptor on their stack with two narrow stores,
 * which a 16-byte struct copy would read back with one wide load (a store-forwarding
 * stall on every vcpu_put).
 */
static inline void load_dtable(struct pk_dtable *to, const struct pk_dtable *from)
{
	to->base = from->base;
	to->limit = from->limit;
}

void native_load_gdt(const struct pk_dtable *dt)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_LGDT);
	if (is_noncanonical_address(dt->base)) {
		host_bug(cpu);
		return;
	}
	load_dtable(&cpu->gdtr, dt);
}

/* SGDT: the op list has one kind for storing a descriptor-table register (SIDT). */
void native_store_gdt(struct pk_dtable *dt)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_SIDT);
	load_dtable(dt, &cpu->gdtr);
}

void native_load_idt(const struct pk_dtable *dt)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_LIDT);
	if (is_noncanonical_address(dt->base)) {
		host_bug(cpu);
		return;
	}
	load_dtable(&cpu->idtr, dt);
}

void native_store_idt(struct pk_dtable *dt)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_SIDT);
	load_dtable(dt, &cpu->idtr);
}

/* MOV from a control register: not serializing. */
static u64 read_cr(struct pk_cpu *cpu, const u64 *reg)
{
	pk_account(cpu, PK_OP_MOV_FROM_CR);
	return *reg;
}

u64 native_read_cr0(void) { return read_cr(this_cpu(), &this_cpu()->cr0); }
u64 native_read_cr2(void) { return read_cr(this_cpu(), &this_cpu()->cr2); }
u64 native_read_cr3(void) { return read_cr(this_cpu(), &this_cpu()->cr3); }
u64 native_read_cr4(void) { return read_cr(this_cpu(), &this_cpu()->cr4); }

/* MOV to CR2/CR3: serializing (SDM vol. 3A 9.3), priced as op.MOV_TO_CR. */
void native_write_cr2(u64 val)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_MOV_TO_CR);
	cpu->cr2 = val;
}

void native_write_cr3(u64 val)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_MOV_TO_CR);
	cpu->cr3 = val;
}

/*
 * PTI's switch between the kernel and the user page tables (SWITCH_TO_KERNEL_CR3 /
 * SWITCH_TO_USER_CR3 in arch/x86/entry/calling.h): a MOV to CR3 on every kernel entry
 * and exit. Costed, not simulated: the model has one set of page tables per mm, so CR3
 * keeps the task's value (MACHINE.md: guest and host memory are flat).
 */
void pk_pti_switch_cr3(void)
{
	pk_account(this_cpu(), PK_OP_MOV_TO_CR);
}

/* VERW with a data-segment selector: the MDS CPU-buffer clear (mds_clear_cpu_buffers). */
void pk_verw(void)
{
	pk_account(this_cpu(), PK_OP_VERW);
}

/*
 * XSAVES / XRSTORS of a task's or a guest's FPU state (fpu_swap_kvm_fpstate). The model
 * keeps no FPU/XSAVE state (the guests do not use it): costed, not simulated.
 */
void pk_xsaves(void)
{
	pk_account(this_cpu(), PK_OP_XSAVES);
}

void pk_xrstors(void)
{
	pk_account(this_cpu(), PK_OP_XRSTORS);
}

void native_write_cr4(u64 val)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_MOV_TO_CR);
	cpu->cr4 = val;
}

void pk_lfence(void)
{
	pk_account(this_cpu(), PK_OP_LFENCE);
}

/* The RSB stuffing sequence after VM-exit (__FILL_RETURN_BUFFER), costed as one op. */
void pk_fill_return_buffer(void)
{
	pk_account(this_cpu(), PK_OP_RSB_FILL);
}
