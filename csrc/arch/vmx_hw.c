// SPDX-License-Identifier: MIT
/*
 * VMX hardware (Intel SDM vol. 3C chapters 25-28): the VMCS, the VMX instructions,
 * VM-entry with its checks, VM-exit with its side effects, and the intercept decisions of
 * a running guest.
 *
 * The VMCS region lives at a host PA inside the machine (struct pk_vmcs_region). Its
 * fields sit in a dense array indexed by the position of the encoding in VMCS_FIELDS
 * (asm/vmx.h); vmcs_field_key_to_index[] turns any encoding into that index with one load,
 * since VMREAD/VMWRITE are on the hot path.
 *
 * Documented simplifications (MACHINE.md):
 * - EPT_POINTER holds the host PA of the VM's struct pk_memslots, not an EPT root: guest
 *   physical memory is the VM's slots (cpu->npt), an access outside them is an EPT
 *   misconfiguration exit, whose decoded access KVM reads from cpu->ev.
 * - VMXON takes no region, and no CR4.VMXE / feature-control checks are made.
 * - Only the VM-entry checks the world switch can trip over are made; each one says which.
 * - The checks that read only control and host-state fields are skipped while those
 *   fields are unchanged since a VM-entry that passed them (vmx_check_entry). Software
 *   that writes a current VMCS's memory directly instead of with VMWRITE is not seen;
 *   the SDM leaves that undefined (the CPU may keep the VMCS in its own cache).
 */
#define PK_CPU_IMPL		/* defines host instructions cpu.h wraps for attribution */
#include "pykvm/cpu.h"
#include "asm/vmx.h"

/* cpu.c: MSR-value rules the VM-entry/VM-exit checks share with WRMSR. */
u64 pk_efer_valid_bits(const struct pk_cpu *cpu);
bool pk_pat_valid(u64 pat);

/* Linux's LOCAL_TIMER_VECTOR: the host tick that ends a guest's instruction budget. */
#define PK_HOST_TIMER_VECTOR	0xec

#define VMX_MSR_LIST_MAX	512	/* recommended maximum, IA32_VMX_MISC[27:25] = 0 */

_Static_assert(offsetof(struct pk_vmcs_region, field) + VMCS_NR_FIELDS * sizeof(u64)
	       <= PK_VMCS_SIZE, "VMCS fields fit in the region");
_Static_assert(VMCS_NR_FIELDS < 255, "VMCS field index fits in a u8");

/* ---- Field encodings ---- */

/*
 * Bits 14:1 of an encoding (bit 0 is the "high" access type of 64-bit fields) index a
 * table holding the field's dense index + 1; 0 marks an unsupported encoding.
 */
#define VMCS_FIELD_KEY(enc)	(((enc) & 0x7ffeU) >> 1)
#define VMCS_FIELD_KEYS		0x4000

static const u8 vmcs_field_key_to_index[VMCS_FIELD_KEYS] = {
#define __VMCS_KEY(name, enc)	[VMCS_FIELD_KEY(enc)] = VMCS_IDX_##name + 1,
	VMCS_FIELDS(__VMCS_KEY)
#undef __VMCS_KEY
};

/* Dense index of a full-field encoding (access type "full"), or VMCS_NR_FIELDS. */
static inline u32 vmcs_index(u32 field)
{
	u32 i;

	if (field & ~0x7ffeU)
		return VMCS_NR_FIELDS;
	i = vmcs_field_key_to_index[VMCS_FIELD_KEY(field)];
	return i ? i - 1 : VMCS_NR_FIELDS;
}

u32 pk_vmcs_field_index(u32 field)
{
	return vmcs_index(field);
}

/* Encoding bits 14:13: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width (64 here). */
#define VMCS_FIELD_WIDTH(enc)	(((enc) >> 13) & 3)
#define VMCS_FIELD_WIDTH_64	1
#define VMCS_FIELD_TYPE(enc)	(((enc) >> 10) & 3)
#define VMCS_FIELD_TYPE_RO_DATA	1
#define VMCS_FIELD_TYPE_GUEST	2

static inline u64 vmcs_width_mask(u32 field)
{
	switch (VMCS_FIELD_WIDTH(field)) {
	case 0:
		return 0xffff;
	case 2:
		return 0xffffffff;
	default:
		return ~0ULL;
	}
}

/* Field access inside a region: F(f, GUEST_RIP). */
#define F(f, name)	((f)[VMCS_IDX_##name])

/* ---- VMX instruction outcomes (SDM 31.2) ---- */

#define RFLAGS_ARITH	(X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | \
			 X86_EFLAGS_SF | X86_EFLAGS_OF)

static inline int vmsucceed(struct pk_cpu *cpu)
{
	cpu->rflags &= ~(u64)RFLAGS_ARITH;
	return 0;
}

static int vmfail_invalid(struct pk_cpu *cpu)
{
	cpu->rflags = (cpu->rflags & ~(u64)RFLAGS_ARITH) | X86_EFLAGS_CF;
	return 1;
}

static int vmfail_valid(struct pk_cpu *cpu, struct pk_vmcs_region *v, u32 err)
{
	F(v->field, VM_INSTRUCTION_ERROR) = err;
	cpu->rflags = (cpu->rflags & ~(u64)RFLAGS_ARITH) | X86_EFLAGS_ZF;
	return 1;
}

static inline struct pk_vmcs_region *current_vmcs(struct pk_cpu *cpu)
{
	if (cpu->current_vmcs == (u64)-1)
		return NULL;
	return pk_hva(cpu->m, cpu->current_vmcs, PK_VMCS_SIZE);
}

/* VMfailValid if there is a current VMCS, else VMfailInvalid. */
static int vmfail(struct pk_cpu *cpu, u32 err)
{
	struct pk_vmcs_region *v = current_vmcs(cpu);

	return v ? vmfail_valid(cpu, v, err) : vmfail_invalid(cpu);
}

/*
 * A VMX instruction outside VMX operation (or on an AMD CPU) is #UD: in the kernel that
 * is an oops, a host bug. Returned to the caller as a failure.
 */
static bool vmx_operation(struct pk_cpu *cpu)
{
	if (likely(cpu->vmxon))
		return true;
	pk_host_bug(cpu->m);
	return false;
}

/* A 4 KiB-aligned page inside the machine, or NULL. */
static void *vmx_page(struct pk_machine *m, u64 pa)
{
	if (pa & 0xfff)
		return NULL;
	return pk_hva(m, pa, 4096);
}

/* ---- VMXON, VMXOFF, VMCLEAR, VMPTRLD, VMREAD, VMWRITE ---- */

int pk_vmxon(void)
{
	struct pk_cpu *cpu = this_cpu();

	if (cpu->m->model.vendor != PK_VENDOR_INTEL) {
		pk_host_bug(cpu->m);
		return 1;
	}
	if (cpu->vmxon)
		return vmfail(cpu, VMXERR_VMXON_IN_VMX_ROOT_OPERATION);
	cpu->vmxon = true;
	cpu->current_vmcs = (u64)-1;
	return vmsucceed(cpu);
}

/* VMXOFF leaves VMCSs active: software VMCLEARs them first (vmclear_local_loaded_vmcss). */
int pk_vmxoff(void)
{
	struct pk_cpu *cpu = this_cpu();

	if (!vmx_operation(cpu))
		return 1;
	cpu->vmxon = false;
	cpu->current_vmcs = (u64)-1;
	return vmsucceed(cpu);
}

int pk_vmclear(u64 pa)
{
	struct pk_cpu *cpu = this_cpu();
	struct pk_machine *m = cpu->m;
	struct pk_vmcs_region *v;

	pk_account(cpu, PK_OP_VMCLEAR);
	if (!vmx_operation(cpu))
		return 1;
	v = vmx_page(m, pa);
	if (!v)
		return vmfail(cpu, VMXERR_VMCLEAR_INVALID_ADDRESS);
	/*
	 * VMCLEAR flushes the VMCS from the CPU that has it cached: done on another CPU, that
	 * CPU keeps using (and later writes back) its copy. KVM IPIs the owner. Detectable
	 * for certain only when the VMCS is current there.
	 */
	if (v->active_cpu < m->nr_cpus && v->active_cpu != cpu->id &&
	    m->cpu[v->active_cpu].current_vmcs == pa)
		pk_host_bug(m);
	v->launched = 0;
	v->active_cpu = (u32)-1;
	v->entry_checked = 0;		/* the region may be written while not active */
	if (cpu->current_vmcs == pa)
		cpu->current_vmcs = (u64)-1;
	return vmsucceed(cpu);
}

int pk_vmptrld(u64 pa)
{
	struct pk_cpu *cpu = this_cpu();
	struct pk_vmcs_region *v;

	pk_account(cpu, PK_OP_VMPTRLD);
	if (!vmx_operation(cpu))
		return 1;
	v = vmx_page(cpu->m, pa);
	if (!v)
		return vmfail(cpu, VMXERR_VMPTRLD_INVALID_ADDRESS);
	if (v->revision_id != PK_VMCS_REVISION)
		return vmfail(cpu, VMXERR_VMPTRLD_INCORRECT_VMCS_REVISION_ID);
	/*
	 * Still active on another CPU (not VMCLEARed there): undefined in the SDM, data
	 * corruption in practice. The model refuses it. A never-cleared region reads as
	 * active on CPU 0: software must VMCLEAR a new VMCS before its first VMPTRLD.
	 */
	if (v->active_cpu != (u32)-1 && v->active_cpu != cpu->id) {
		pk_host_bug(cpu->m);
		return vmfail(cpu, VMXERR_VMPTRLD_INVALID_ADDRESS);
	}
	v->active_cpu = cpu->id;
	v->entry_checked = 0;
	cpu->current_vmcs = pa;
	return vmsucceed(cpu);
}

/*
 * The checks VMREAD and VMWRITE share: VMX operation, a current VMCS, a supported field.
 * Returns -1 with *v and *idx set when the access may go on, else the instruction's result.
 */
static inline __attribute__((always_inline)) int
vmcs_access(struct pk_cpu *cpu, u32 field, struct pk_vmcs_region **v, u32 *idx)
{
	if (unlikely(!vmx_operation(cpu)))
		return 1;
	*v = current_vmcs(cpu);
	if (unlikely(!*v))
		return vmfail_invalid(cpu);
	*idx = vmcs_index(field & ~1U);
	/* Access type "high" (bit 0) exists for 64-bit fields only. */
	if (unlikely(*idx >= VMCS_NR_FIELDS ||
		     ((field & 1) && VMCS_FIELD_WIDTH(field) != VMCS_FIELD_WIDTH_64)))
		return vmfail_valid(cpu, *v, VMXERR_UNSUPPORTED_VMCS_COMPONENT);
	return -1;
}

static inline __attribute__((always_inline)) int vmread(struct pk_cpu *cpu, u32 field, u64 *val)
{
	struct pk_vmcs_region *v;
	u32 idx;
	int r;

	r = vmcs_access(cpu, field, &v, &idx);
	if (r >= 0)
		return r;
	*val = (field & 1) ? v->field[idx] >> 32 : v->field[idx];
	return vmsucceed(cpu);
}

/*
 * VMREAD while the checker places events or attributes writes: the point, then the
 * same. Out of line, so that the common VMREAD makes no call (KVM's hot path reads
 * about ten fields per exit).
 */
static __attribute__((noinline, cold)) int vmread_point(struct pk_cpu *cpu, u32 field,
							u64 *val)
{
	pk_inject_point(cpu, PK_OP_VMREAD, 0);
	pk_count_op(cpu, PK_OP_VMREAD);
	return vmread(cpu, field, val);
}

int pk_vmread(u32 field, u64 *val)
{
	struct pk_cpu *cpu = this_cpu();

	if (pk_point_armed(cpu->m))
		return vmread_point(cpu, field, val);
	pk_count_op(cpu, PK_OP_VMREAD);
	return vmread(cpu, field, val);
}

int pk_vmwrite(u32 field, u64 val)
{
	struct pk_cpu *cpu = this_cpu();
	struct pk_vmcs_region *v;
	u32 idx;
	int r;

	pk_account(cpu, PK_OP_VMWRITE);
	r = vmcs_access(cpu, field, &v, &idx);
	if (r >= 0)
		return r;
	if (unlikely(VMCS_FIELD_TYPE(field) == VMCS_FIELD_TYPE_RO_DATA))
		return vmfail_valid(cpu, v, VMXERR_VMWRITE_READ_ONLY_VMCS_COMPONENT);
	/* A control or host-state field: the cached VM-entry checks read those. */
	if (VMCS_FIELD_TYPE(field) != VMCS_FIELD_TYPE_GUEST)
		v->entry_checked = 0;
	if (field & 1)
		v->field[idx] = (v->field[idx] & 0xffffffffULL) | (val << 32);
	else
		v->field[idx] = val & vmcs_width_mask(field);
	return vmsucceed(cpu);
}

/* ---- Segment fields ---- */

/* VMCS fields of each segment register, in the kernel's VCPU_SREG order. */
struct vmcs_seg_idx {
	u8 sel, base, limit, ar;
};
#define __SEG(s)	{ VMCS_IDX_GUEST_##s##_SELECTOR, VMCS_IDX_GUEST_##s##_BASE,	\
			  VMCS_IDX_GUEST_##s##_LIMIT, VMCS_IDX_GUEST_##s##_AR_BYTES }
static const struct vmcs_seg_idx guest_seg[NR_VCPU_SREGS] = {
	[VCPU_SREG_ES] = __SEG(ES), [VCPU_SREG_CS] = __SEG(CS), [VCPU_SREG_SS] = __SEG(SS),
	[VCPU_SREG_DS] = __SEG(DS), [VCPU_SREG_FS] = __SEG(FS), [VCPU_SREG_GS] = __SEG(GS),
	[VCPU_SREG_TR] = __SEG(TR), [VCPU_SREG_LDTR] = __SEG(LDTR),
};
#undef __SEG

/* Hidden parts VM-exit gives the host's segments (SDM 28.5.2), VMX AR format. */
#define AR_CODE64	0xa09bU		/* type 11, S, P, L, G */
#define AR_CODE32	0xc09bU		/* type 11, S, P, DB, G */
#define AR_DATA		0xc093U		/* type 3, S, P, DB, G */
#define AR_TSS_BUSY	0x008bU		/* 64-bit TSS, busy, P */

static void set_segment(struct pk_segment *seg, u16 sel, u64 base, u32 limit, u32 ar)
{
	seg->selector = sel;
	seg->base = base;
	seg->limit = limit;
	seg->ar = ar;
}

/* SS, DS, ES, FS, GS after VM-exit: flat data, unusable if the selector is null. */
static void host_data_segment(struct pk_segment *seg, u64 sel, u64 base)
{
	set_segment(seg, (u16)sel, base, 0xffffffff, AR_DATA | (sel ? 0 : VMX_AR_UNUSABLE_MASK));
}

/* ---- VM-entry checks (SDM 27.2, 27.3) ---- */

static bool secondary_enabled(const u64 *f, u32 bit)
{
	return (F(f, CPU_BASED_VM_EXEC_CONTROL) & CPU_BASED_ACTIVATE_SECONDARY_CONTROLS) &&
	       (F(f, SECONDARY_VM_EXEC_CONTROL) & bit);
}

/* An MSR-load/store list: count <= 512, 16-byte aligned, inside the machine. */
static bool msr_list_valid(struct pk_machine *m, u64 addr, u64 count)
{
	if (count == 0)
		return true;
	return count <= VMX_MSR_LIST_MAX && !(addr & 0xf) &&
	       pk_hva(m, addr, count * sizeof(struct vmx_msr_entry));
}

/*
 * The VM's memory slots at EPT_POINTER (see the header comment), or NULL: an invalid
 * "EPT pointer" is an invalid control field.
 */
static const struct pk_memslots *ept_memslots(struct pk_machine *m, u64 eptp)
{
	const struct pk_memslots *slots;

	if (eptp & (_Alignof(struct pk_memslots) - 1))
		return NULL;
	slots = pk_hva(m, eptp, sizeof(*slots));
	if (!slots || slots->nr > PK_MAX_MEMSLOTS)
		return NULL;
	return slots;
}

/*
 * The VM-entry checks are split by what they read, so that a VMCS whose control and
 * host-state fields have not changed since a VM-entry that passed them is not checked
 * again (struct pk_vmcs_region.entry_checked; a real CPU likewise keeps the active VMCS
 * in its own cache and is free to validate it when it is written). What these
 * "field" checks read: control and host-state fields, and the CPU model, which is
 * fixed for the machine's life. Every control or host-state field they read is
 * written only by VMWRITE (which clears entry_checked) or by VM-exit, which writes
 * two control fields: VM_ENTRY_CONTROLS' "IA-32e mode guest" bit and the valid bit of
 * VM_ENTRY_INTR_INFO_FIELD -- neither is read here (guest_state_valid and
 * check_controls_state read them, on every VM-entry). Checks whose inputs are machine
 * memory (the MSR bitmap page, MSR lists, the memory slots at EPT_POINTER) or CPU
 * state (EFER.LMA) are made on every VM-entry.
 */

/* SDM 27.2.1, the part that reads only control fields. 0 or error 7. */
static u32 check_control_fields(const struct pk_cpu_model *model, const u64 *f)
{
	u64 exit_ctl = F(f, VM_EXIT_CONTROLS), entry_ctl = F(f, VM_ENTRY_CONTROLS);

	/* Controls the CPU does not have are fixed to 0 by its capability MSRs. */
	if (!model->has_load_efer &&
	    ((exit_ctl & (VM_EXIT_SAVE_IA32_EFER | VM_EXIT_LOAD_IA32_EFER)) ||
	     (entry_ctl & VM_ENTRY_LOAD_IA32_EFER)))
		return VMXERR_ENTRY_INVALID_CONTROL_FIELD;
	if (secondary_enabled(f, SECONDARY_EXEC_ENABLE_RDTSCP) &&
	    !model->has_rdtscp && !model->has_rdpid)
		return VMXERR_ENTRY_INVALID_CONTROL_FIELD;
	return 0;
}

/*
 * SDM 27.2.1, the part that reads machine memory or a field VM-exit writes: the MSR
 * bitmap and MSR lists inside the machine, event injection, the memory slots at
 * EPT_POINTER (returned in *slots). 0 or error 7.
 */
static u32 check_controls_state(struct pk_cpu *cpu, const u64 *f,
				const struct pk_memslots **slots)
{
	struct pk_machine *m = cpu->m;
	u64 info = F(f, VM_ENTRY_INTR_INFO_FIELD);

	if ((F(f, CPU_BASED_VM_EXEC_CONTROL) & CPU_BASED_USE_MSR_BITMAPS) &&
	    !vmx_page(m, F(f, MSR_BITMAP)))
		return VMXERR_ENTRY_INVALID_CONTROL_FIELD;
	if (!msr_list_valid(m, F(f, VM_EXIT_MSR_STORE_ADDR), F(f, VM_EXIT_MSR_STORE_COUNT)) ||
	    !msr_list_valid(m, F(f, VM_EXIT_MSR_LOAD_ADDR), F(f, VM_EXIT_MSR_LOAD_COUNT)) ||
	    !msr_list_valid(m, F(f, VM_ENTRY_MSR_LOAD_ADDR), F(f, VM_ENTRY_MSR_LOAD_COUNT)))
		return VMXERR_ENTRY_INVALID_CONTROL_FIELD;

	/* Event injection: reserved bits 30:12, type 1 reserved, NMI is vector 2. */
	if (info & INTR_INFO_VALID_MASK) {
		u64 type = info & INTR_INFO_INTR_TYPE_MASK;

		if ((info & 0x7ffff000ULL) || type == (1U << 8) ||
		    (type == INTR_TYPE_NMI_INTR && (info & INTR_INFO_VECTOR_MASK) != X86_TRAP_NMI) ||
		    (type == INTR_TYPE_HARD_EXCEPTION && (info & INTR_INFO_VECTOR_MASK) > 31))
			return VMXERR_ENTRY_INVALID_CONTROL_FIELD;
	}

	*slots = ept_memslots(m, F(f, EPT_POINTER));
	if (!*slots)
		return VMXERR_ENTRY_INVALID_CONTROL_FIELD;
	return 0;
}

/* SDM 27.2.2-27.2.4: host-state area, the part that reads only fields. 0 or error 8. */
static u32 check_host_fields(struct pk_cpu *cpu, const u64 *f)
{
	u64 exit_ctl = F(f, VM_EXIT_CONTROLS);
	bool host64 = exit_ctl & VM_EXIT_HOST_ADDR_SPACE_SIZE;

	/* CR0 fixed-1 bits PE, NE, PG (IA32_VMX_CR0_FIXED0); a 64-bit host has CR4.PAE. */
	if ((F(f, HOST_CR0) & (X86_CR0_PE | BIT(5) | X86_CR0_PG)) !=
	    (X86_CR0_PE | BIT(5) | X86_CR0_PG))
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;
	if (host64 && !(F(f, HOST_CR4) & X86_CR4_PAE))
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;

	if (is_noncanonical_address(F(f, HOST_RIP)) ||
	    is_noncanonical_address(F(f, HOST_FS_BASE)) ||
	    is_noncanonical_address(F(f, HOST_GS_BASE)) ||
	    is_noncanonical_address(F(f, HOST_TR_BASE)) ||
	    is_noncanonical_address(F(f, HOST_GDTR_BASE)) ||
	    is_noncanonical_address(F(f, HOST_IDTR_BASE)) ||
	    is_noncanonical_address(F(f, HOST_IA32_SYSENTER_ESP)) ||
	    is_noncanonical_address(F(f, HOST_IA32_SYSENTER_EIP)))
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;

	/* Selectors: RPL and TI clear; CS and TR not null. */
	if ((F(f, HOST_ES_SELECTOR) | F(f, HOST_CS_SELECTOR) | F(f, HOST_SS_SELECTOR) |
	     F(f, HOST_DS_SELECTOR) | F(f, HOST_FS_SELECTOR) | F(f, HOST_GS_SELECTOR) |
	     F(f, HOST_TR_SELECTOR)) & 7)
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;
	if (!F(f, HOST_CS_SELECTOR) || !F(f, HOST_TR_SELECTOR))
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;

	if (exit_ctl & VM_EXIT_LOAD_IA32_PAT && !pk_pat_valid(F(f, HOST_IA32_PAT)))
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;
	if (exit_ctl & VM_EXIT_LOAD_IA32_EFER) {
		u64 efer = F(f, HOST_IA32_EFER);
		u64 lm = host64 ? EFER_LMA | EFER_LME : 0;

		if ((efer & ~pk_efer_valid_bits(cpu)) || (efer & (EFER_LMA | EFER_LME)) != lm)
			return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;
	}
	return 0;
}

/* SDM 27.2.4, the part that reads CPU state. 0 or error 8. */
static u32 check_host_cpu(struct pk_cpu *cpu, const u64 *f)
{
	/* In IA-32e mode at VM-entry, the host must be 64-bit after VM-exit. */
	if ((cpu->msr[PK_MSR_EFER] & EFER_LMA) &&
	    !(F(f, VM_EXIT_CONTROLS) & VM_EXIT_HOST_ADDR_SPACE_SIZE))
		return VMXERR_ENTRY_INVALID_HOST_STATE_FIELD;
	return 0;
}

/*
 * SDM 27.2: the checks on controls (error 7) then on host state (error 8), in that
 * order; the field-only ones skipped when entry_checked says they passed on unchanged
 * fields. entry_checked is set only when all passed.
 */
static u32 vmx_check_entry(struct pk_cpu *cpu, struct pk_vmcs_region *v,
			   const struct pk_memslots **slots)
{
	const u64 *f = v->field;
	bool checked = v->entry_checked;
	u32 err;

	if (!checked && (err = check_control_fields(&cpu->m->model, f)))
		return err;
	if ((err = check_controls_state(cpu, f, slots)))
		return err;
	if (!checked && (err = check_host_fields(cpu, f)))
		return err;
	if ((err = check_host_cpu(cpu, f)))
		return err;
	v->entry_checked = 1;
	return 0;
}

/* SDM 27.3.1: the guest-state checks the model makes. false: VM-entry fails (33). */
static bool guest_state_valid(struct pk_cpu *cpu, const u64 *f)
{
	u64 entry_ctl = F(f, VM_ENTRY_CONTROLS);
	bool ia32e = entry_ctl & VM_ENTRY_IA32E_MODE;
	u64 rflags = F(f, GUEST_RFLAGS);

	if (ia32e && (!(F(f, GUEST_CR0) & X86_CR0_PG) || !(F(f, GUEST_CR4) & X86_CR4_PAE)))
		return false;
	/* RFLAGS: bits 63:22, 15, 5, 3 reserved (0), bit 1 reserved (1). */
	if ((rflags & (~0x3fffffULL | BIT(15) | BIT(5) | BIT(3))) || !(rflags & X86_EFLAGS_FIXED))
		return false;
	if (F(f, GUEST_IA32_DEBUGCTL) & ~(BIT_ULL(0) | BIT_ULL(1)))
		return false;
	if (is_noncanonical_address(F(f, GUEST_FS_BASE)) ||
	    is_noncanonical_address(F(f, GUEST_GS_BASE)) ||
	    is_noncanonical_address(F(f, GUEST_TR_BASE)) ||
	    is_noncanonical_address(F(f, GUEST_GDTR_BASE)) ||
	    is_noncanonical_address(F(f, GUEST_IDTR_BASE)) ||
	    is_noncanonical_address(F(f, GUEST_SYSENTER_ESP)) ||
	    is_noncanonical_address(F(f, GUEST_SYSENTER_EIP)))
		return false;
	if ((entry_ctl & VM_ENTRY_LOAD_IA32_PAT) && !pk_pat_valid(F(f, GUEST_IA32_PAT)))
		return false;
	if (entry_ctl & VM_ENTRY_LOAD_IA32_EFER) {
		u64 efer = F(f, GUEST_IA32_EFER);

		if (efer & ~pk_efer_valid_bits(cpu))
			return false;
		if (!!(efer & EFER_LMA) != ia32e ||
		    ((F(f, GUEST_CR0) & X86_CR0_PG) && !!(efer & EFER_LME) != ia32e))
			return false;
	}
	return true;
}

/* ---- State loading and saving ---- */

static void load_guest_state(struct pk_cpu *cpu, const u64 *f)
{
	u64 entry_ctl = F(f, VM_ENTRY_CONTROLS);
	u64 *msr = cpu->msr;

	cpu->cr0 = F(f, GUEST_CR0);
	cpu->cr3 = F(f, GUEST_CR3);
	cpu->cr4 = F(f, GUEST_CR4);
	/* Unrolled, so each field index is a constant (guest_seg[] folds away). */
#pragma GCC unroll 8
	for (int s = 0; s < NR_VCPU_SREGS; s++) {
		struct pk_segment *seg = &cpu->seg[s];

		seg->selector = (u16)f[guest_seg[s].sel];
		seg->base = f[guest_seg[s].base];
		seg->limit = (u32)f[guest_seg[s].limit];
		seg->ar = (u32)f[guest_seg[s].ar];
	}
	cpu->gdtr.base = F(f, GUEST_GDTR_BASE);
	cpu->gdtr.limit = (u16)F(f, GUEST_GDTR_LIMIT);
	cpu->idtr.base = F(f, GUEST_IDTR_BASE);
	cpu->idtr.limit = (u16)F(f, GUEST_IDTR_LIMIT);
	cpu->rip = F(f, GUEST_RIP);
	cpu->regs[VCPU_REGS_RSP] = F(f, GUEST_RSP);
	cpu->rflags = F(f, GUEST_RFLAGS);

	msr[PK_MSR_SYSENTER_CS] = (u32)F(f, GUEST_SYSENTER_CS);
	msr[PK_MSR_SYSENTER_ESP] = F(f, GUEST_SYSENTER_ESP);
	msr[PK_MSR_SYSENTER_EIP] = F(f, GUEST_SYSENTER_EIP);
	msr[PK_MSR_DEBUGCTL] = F(f, GUEST_IA32_DEBUGCTL);	/* "load debug controls" */
	if (entry_ctl & VM_ENTRY_LOAD_IA32_PAT)
		msr[PK_MSR_PAT] = F(f, GUEST_IA32_PAT);
	if (entry_ctl & VM_ENTRY_LOAD_IA32_EFER) {
		msr[PK_MSR_EFER] = F(f, GUEST_IA32_EFER);
	} else {
		/*
		 * Only LMA/LME follow "IA-32e mode guest"; every other EFER bit stays the
		 * host's. Without the controls KVM switches EFER as a user-return MSR.
		 */
		msr[PK_MSR_EFER] &= ~(u64)(EFER_LMA | EFER_LME);
		if (entry_ctl & VM_ENTRY_IA32E_MODE)
			msr[PK_MSR_EFER] |= EFER_LMA | EFER_LME;
	}
}

/* MSRs an MSR-load list may not load (SDM 27.4, 28.6): they have VMCS fields. */
static bool msr_list_loadable(u32 index)
{
	return index != MSR_FS_BASE && index != MSR_GS_BASE && (index >> 8) != 0x8;
}

/*
 * Process an MSR-load list with WRMSR semantics. Returns 0, or the 1-based number of the
 * entry that failed (the exit qualification of a VM-entry failure).
 */
static u32 load_msr_list(struct pk_cpu *cpu, u64 addr, u64 count)
{
	const struct vmx_msr_entry *e;

	if (!count)
		return 0;
	e = pk_hva(cpu->m, addr, count * sizeof(*e));
	if (!e)
		return 1;
	for (u32 i = 0; i < count; i++) {
		if (e[i].reserved || !msr_list_loadable(e[i].index) ||
		    pk_msr_write(cpu, e[i].index, e[i].value))
			return i + 1;
	}
	return 0;
}

/* VMX abort (SDM 28.7): the CPU shuts down. In the model, a host bug noted in the VMCS. */
static void vmx_abort(struct pk_cpu *cpu, struct pk_vmcs_region *v, u32 indicator)
{
	v->abort = indicator;
	pk_host_bug(cpu->m);
}

static void store_msr_list(struct pk_cpu *cpu, struct pk_vmcs_region *v)
{
	u64 count = F(v->field, VM_EXIT_MSR_STORE_COUNT);
	struct vmx_msr_entry *e;

	if (!count)
		return;
	e = pk_hva(cpu->m, F(v->field, VM_EXIT_MSR_STORE_ADDR), count * sizeof(*e));
	if (!e) {
		vmx_abort(cpu, v, VMX_ABORT_SAVE_GUEST_MSR_FAIL);
		return;
	}
	for (u32 i = 0; i < count; i++) {
		if (e[i].reserved || (e[i].index >> 8) == 0x8 ||
		    pk_msr_read(cpu, e[i].index, &e[i].value)) {
			vmx_abort(cpu, v, VMX_ABORT_SAVE_GUEST_MSR_FAIL);
			return;
		}
	}
}

/* SDM 28.3: guest state into the VMCS. */
static void save_guest_state(struct pk_cpu *cpu, u64 *f)
{
	u64 exit_ctl = F(f, VM_EXIT_CONTROLS);
	const u64 *msr = cpu->msr;

	F(f, GUEST_RIP) = cpu->rip;
	F(f, GUEST_RSP) = cpu->regs[VCPU_REGS_RSP];
	F(f, GUEST_RFLAGS) = cpu->rflags;
	F(f, GUEST_CR0) = cpu->cr0;
	F(f, GUEST_CR3) = cpu->cr3;
	F(f, GUEST_CR4) = cpu->cr4;
#pragma GCC unroll 8
	for (int s = 0; s < NR_VCPU_SREGS; s++) {
		const struct pk_segment *seg = &cpu->seg[s];

		f[guest_seg[s].sel] = seg->selector;
		f[guest_seg[s].base] = seg->base;
		f[guest_seg[s].limit] = seg->limit;
		f[guest_seg[s].ar] = seg->ar;
	}
	F(f, GUEST_GDTR_BASE) = cpu->gdtr.base;
	F(f, GUEST_GDTR_LIMIT) = cpu->gdtr.limit;
	F(f, GUEST_IDTR_BASE) = cpu->idtr.base;
	F(f, GUEST_IDTR_LIMIT) = cpu->idtr.limit;
	F(f, GUEST_SYSENTER_CS) = (u32)msr[PK_MSR_SYSENTER_CS];
	F(f, GUEST_SYSENTER_ESP) = msr[PK_MSR_SYSENTER_ESP];
	F(f, GUEST_SYSENTER_EIP) = msr[PK_MSR_SYSENTER_EIP];
	F(f, GUEST_IA32_DEBUGCTL) = msr[PK_MSR_DEBUGCTL];	/* "save debug controls" */
	if (exit_ctl & VM_EXIT_SAVE_IA32_PAT)
		F(f, GUEST_IA32_PAT) = msr[PK_MSR_PAT];
	if (exit_ctl & VM_EXIT_SAVE_IA32_EFER)
		F(f, GUEST_IA32_EFER) = msr[PK_MSR_EFER];
	/* "IA-32e mode guest" follows EFER.LMA (SDM 28.2). */
	F(f, VM_ENTRY_CONTROLS) = (F(f, VM_ENTRY_CONTROLS) & ~(u64)VM_ENTRY_IA32E_MODE) |
				  ((msr[PK_MSR_EFER] & EFER_LMA) ? VM_ENTRY_IA32E_MODE : 0);
}

/*
 * SDM 28.5: load the host-state area, with the side effects software has to repair:
 * GDTR/IDTR limits 0xFFFF, TR limit 0x67, LDTR unusable, DEBUGCTL cleared, RFLAGS 0x2.
 * Then the VM-exit MSR-load list. Used by VM-exit and by VM-entry failures.
 */
static void load_host_state(struct pk_cpu *cpu, struct pk_vmcs_region *v)
{
	u64 *f = v->field;
	u64 exit_ctl = F(f, VM_EXIT_CONTROLS);
	u64 *msr = cpu->msr;
	u32 fail;

	cpu->cr0 = F(f, HOST_CR0);
	cpu->cr3 = F(f, HOST_CR3);
	cpu->cr4 = F(f, HOST_CR4);
	cpu->regs[VCPU_REGS_RSP] = F(f, HOST_RSP);
	cpu->rip = F(f, HOST_RIP);
	cpu->rflags = X86_EFLAGS_FIXED;

	set_segment(&cpu->seg[VCPU_SREG_CS], (u16)F(f, HOST_CS_SELECTOR), 0, 0xffffffff,
		    (exit_ctl & VM_EXIT_HOST_ADDR_SPACE_SIZE) ? AR_CODE64 : AR_CODE32);
	host_data_segment(&cpu->seg[VCPU_SREG_SS], F(f, HOST_SS_SELECTOR), 0);
	host_data_segment(&cpu->seg[VCPU_SREG_DS], F(f, HOST_DS_SELECTOR), 0);
	host_data_segment(&cpu->seg[VCPU_SREG_ES], F(f, HOST_ES_SELECTOR), 0);
	host_data_segment(&cpu->seg[VCPU_SREG_FS], F(f, HOST_FS_SELECTOR), F(f, HOST_FS_BASE));
	host_data_segment(&cpu->seg[VCPU_SREG_GS], F(f, HOST_GS_SELECTOR), F(f, HOST_GS_BASE));
	set_segment(&cpu->seg[VCPU_SREG_TR], (u16)F(f, HOST_TR_SELECTOR), F(f, HOST_TR_BASE),
		    0x67, AR_TSS_BUSY);
	set_segment(&cpu->seg[VCPU_SREG_LDTR], 0, 0, 0, VMX_AR_UNUSABLE_MASK);
	cpu->gdtr.base = F(f, HOST_GDTR_BASE);
	cpu->gdtr.limit = 0xffff;
	cpu->idtr.base = F(f, HOST_IDTR_BASE);
	cpu->idtr.limit = 0xffff;

	msr[PK_MSR_SYSENTER_CS] = (u32)F(f, HOST_IA32_SYSENTER_CS);
	msr[PK_MSR_SYSENTER_ESP] = F(f, HOST_IA32_SYSENTER_ESP);
	msr[PK_MSR_SYSENTER_EIP] = F(f, HOST_IA32_SYSENTER_EIP);
	if (exit_ctl & VM_EXIT_LOAD_IA32_PAT)
		msr[PK_MSR_PAT] = F(f, HOST_IA32_PAT);
	if (exit_ctl & VM_EXIT_LOAD_IA32_EFER) {
		msr[PK_MSR_EFER] = F(f, HOST_IA32_EFER);
	} else {
		msr[PK_MSR_EFER] &= ~(u64)(EFER_LMA | EFER_LME);
		if (exit_ctl & VM_EXIT_HOST_ADDR_SPACE_SIZE)
			msr[PK_MSR_EFER] |= EFER_LMA | EFER_LME;
	}
	msr[PK_MSR_DEBUGCTL] = 0;

	cpu->mode = PK_MODE_HOST;
	cpu->npt = NULL;

	fail = load_msr_list(cpu, F(f, VM_EXIT_MSR_LOAD_ADDR), F(f, VM_EXIT_MSR_LOAD_COUNT));
	if (fail)
		vmx_abort(cpu, v, VMX_ABORT_LOAD_HOST_MSR_FAIL);
}

/*
 * VM-entry failure after the checks of 27.2 (invalid guest state, MSR loading): the
 * processor loads host state as a VM-exit would, without saving guest state (27.8).
 */
static void vmx_entry_fail(struct pk_cpu *cpu, struct pk_vmcs_region *v, u32 reason, u64 qual)
{
	u64 *f = v->field;

	F(f, VM_EXIT_REASON) = reason | VMX_EXIT_REASONS_FAILED_VMENTRY;
	F(f, EXIT_QUALIFICATION) = qual;
	F(f, VM_EXIT_INTR_INFO) = 0;
	F(f, IDT_VECTORING_INFO_FIELD) = 0;
	F(f, VM_ENTRY_INTR_INFO_FIELD) &= ~(u64)INTR_INFO_VALID_MASK;
	pk_account(cpu, PK_OP_VMEXIT);
	load_host_state(cpu, v);
}

/* The guest event that ended guest execution -> exit reason and exit information. */
static void record_exit(struct pk_cpu *cpu, u64 *f)
{
	const struct pk_guest_event *ev = &cpu->ev;
	u32 reason;
	u64 qual = 0;
	u32 intr_info = 0;

	switch (ev->kind) {
	case PK_GEXIT_HLT:
		reason = EXIT_REASON_HLT;
		break;
	case PK_GEXIT_CPUID:
		reason = EXIT_REASON_CPUID;
		break;
	case PK_GEXIT_IO:
		reason = EXIT_REASON_IO_INSTRUCTION;
		qual = ((u64)(ev->size - 1) & VMX_IO_SIZE_MASK) | (ev->in ? VMX_IO_IN : 0) |
		       ((u64)ev->port << VMX_IO_PORT_SHIFT);
		break;
	case PK_GEXIT_RDMSR:
		reason = EXIT_REASON_MSR_READ;
		break;
	case PK_GEXIT_WRMSR:
		reason = EXIT_REASON_MSR_WRITE;
		break;
	case PK_GEXIT_VMCALL:
		reason = EXIT_REASON_VMCALL;
		break;
	case PK_GEXIT_RDTSCP:
		reason = EXIT_REASON_RDTSCP;
		break;
	case PK_GEXIT_MMIO:
		reason = EXIT_REASON_EPT_MISCONFIG;
		F(f, GUEST_PHYSICAL_ADDRESS) = ev->gpa;
		break;
	case PK_GEXIT_TRIPLE_FAULT:
		reason = EXIT_REASON_TRIPLE_FAULT;
		break;
	case PK_GEXIT_EXTINT:
		reason = EXIT_REASON_EXTERNAL_INTERRUPT;
		intr_info = INTR_INFO_VALID_MASK | INTR_TYPE_EXT_INTR | PK_HOST_TIMER_VECTOR;
		break;
	default:
		/* No VMX exit for it (cannot happen): KVM reports an unexpected exit. */
		reason = VMX_NR_EXIT_REASONS;
		break;
	}
	F(f, VM_EXIT_REASON) = reason;
	F(f, EXIT_QUALIFICATION) = qual;
	F(f, VM_EXIT_INTR_INFO) = intr_info;
	F(f, VM_EXIT_INTR_ERROR_CODE) = 0;
	F(f, IDT_VECTORING_INFO_FIELD) = 0;	/* event delivery is atomic in the model */
	F(f, VM_EXIT_INSTRUCTION_LEN) = ev->insn_len;
}

/* SDM chapter 28. */
static void vmx_vmexit(struct pk_cpu *cpu, struct pk_vmcs_region *v)
{
	u64 *f = v->field;

	pk_account(cpu, PK_OP_VMEXIT);
	record_exit(cpu, f);
	F(f, VM_ENTRY_INTR_INFO_FIELD) &= ~(u64)INTR_INFO_VALID_MASK;
	save_guest_state(cpu, f);
	store_msr_list(cpu, v);
	load_host_state(cpu, v);
}

/* Event injection (SDM 27.6). false: delivery ended in a triple fault (cpu->ev says so). */
static bool vmx_inject_event(struct pk_cpu *cpu, u64 *f)
{
	u32 info = (u32)F(f, VM_ENTRY_INTR_INFO_FIELD);
	u32 type = info & INTR_INFO_INTR_TYPE_MASK;

	if (!(info & INTR_INFO_VALID_MASK))
		return true;
	F(f, VM_ENTRY_INTR_INFO_FIELD) = info & ~INTR_INFO_VALID_MASK;
	/* Software events push the RIP after the instruction that raised them. */
	if (type == INTR_TYPE_SOFT_INTR || type == INTR_TYPE_PRIV_SW_EXCEPTION ||
	    type == INTR_TYPE_SOFT_EXCEPTION)
		cpu->rip += (u32)F(f, VM_ENTRY_INSTRUCTION_LEN);
	return pk_guest_deliver_exception(cpu, info & INTR_INFO_VECTOR_MASK,
					  info & INTR_INFO_DELIVER_CODE_MASK,
					  (u32)F(f, VM_ENTRY_EXCEPTION_ERROR_CODE));
}

/* VMLAUNCH / VMRESUME: 0 after a VM-exit (or a VM-entry failure), 1 on VMfail. */
static int vmx_vmentry(bool launch)
{
	struct pk_cpu *cpu = this_cpu();
	struct pk_machine *m = cpu->m;
	const struct pk_memslots *slots;
	struct pk_vmcs_region *v;
	u64 *f;
	u32 err, old_path;

	pk_account(cpu, launch ? PK_OP_VMLAUNCH : PK_OP_VMRESUME);
	if (!vmx_operation(cpu))
		return 1;
	v = current_vmcs(cpu);
	if (!v)
		return vmfail_invalid(cpu);
	f = v->field;
	if (launch && v->launched)
		return vmfail_valid(cpu, v, VMXERR_VMLAUNCH_NONCLEAR_VMCS);
	if (!launch && !v->launched)
		return vmfail_valid(cpu, v, VMXERR_VMRESUME_NONLAUNCHED_VMCS);
	err = vmx_check_entry(cpu, v, &slots);
	if (err)
		return vmfail_valid(cpu, v, err);

	if (!guest_state_valid(cpu, f)) {
		vmx_entry_fail(cpu, v, EXIT_REASON_INVALID_STATE, 0);
		return 0;
	}
	load_guest_state(cpu, f);
	err = load_msr_list(cpu, F(f, VM_ENTRY_MSR_LOAD_ADDR), F(f, VM_ENTRY_MSR_LOAD_COUNT));
	if (err) {
		vmx_entry_fail(cpu, v, EXIT_REASON_MSR_LOAD_FAIL, err);
		return 0;
	}
	v->launched = 1;
	cpu->mode = PK_MODE_VMX_GUEST;
	cpu->npt = slots;
	memset(&cpu->ev, 0, sizeof(cpu->ev));

	old_path = pk_path_enter(m, PK_PATH_GUEST);
	if (vmx_inject_event(cpu, f))
		pk_guest_exec(cpu);
	pk_path_leave(m, old_path);

	vmx_vmexit(cpu, v);
	return 0;
}

int pk_vmlaunch(void)
{
	return vmx_vmentry(true);
}

int pk_vmresume(void)
{
	return vmx_vmentry(false);
}

/* ---- Which guest events exit (SDM chapter 26) ---- */

/* The MSR bitmap (SDM 25.6.9): a set bit exits; MSRs outside both ranges always exit. */
static bool msr_bitmap_exit(struct pk_machine *m, u64 bitmap_pa, u32 msr, bool write)
{
	const u8 *bitmap = vmx_page(m, bitmap_pa);
	u32 base, bit;

	if (!bitmap)
		return true;
	if (msr <= 0x1fff) {
		base = write ? VMX_MSR_BITMAP_WRITE_LOW : VMX_MSR_BITMAP_READ_LOW;
		bit = msr;
	} else if (msr - 0xc0000000U <= 0x1fff) {
		base = write ? VMX_MSR_BITMAP_WRITE_HIGH : VMX_MSR_BITMAP_READ_HIGH;
		bit = msr - 0xc0000000U;
	} else {
		return true;
	}
	return bitmap[base + bit / 8] & BIT(bit % 8);
}

enum pk_icpt vmx_hw_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev)
{
	const struct pk_cpu_model *model = &cpu->m->model;
	struct pk_vmcs_region *v = current_vmcs(cpu);
	const u64 *f;
	u64 exec;

	if (unlikely(!v))
		return PK_ICPT_EXIT;
	f = v->field;
	exec = F(f, CPU_BASED_VM_EXEC_CONTROL);

	switch (ev->kind) {
	case PK_GEXIT_HLT:
		return (exec & CPU_BASED_HLT_EXITING) ? PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_RDMSR:
	case PK_GEXIT_WRMSR:
		if (!(exec & CPU_BASED_USE_MSR_BITMAPS))
			return PK_ICPT_EXIT;
		return msr_bitmap_exit(cpu->m, F(f, MSR_BITMAP), ev->msr,
				       ev->kind == PK_GEXIT_WRMSR) ? PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_VMMCALL:
		return PK_ICPT_UD;
	case PK_GEXIT_RDTSCP:
		if (!secondary_enabled(f, SECONDARY_EXEC_ENABLE_RDTSCP) || !model->has_rdtscp)
			return PK_ICPT_UD;
		return (exec & CPU_BASED_RDTSC_EXITING) ? PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_RDPID:
		if (!secondary_enabled(f, SECONDARY_EXEC_ENABLE_RDTSCP) || !model->has_rdpid)
			return PK_ICPT_UD;
		return PK_ICPT_NATIVE;
	case PK_GEXIT_IO:
		/*
		 * Exits with CPU_BASED_UNCOND_IO_EXITING, and without it too: the model has no
		 * native devices behind the guest's ports (and no I/O bitmaps).
		 */
	case PK_GEXIT_CPUID:
	case PK_GEXIT_VMCALL:
	default:
		return PK_ICPT_EXIT;
	}
}
