// SPDX-License-Identifier: MIT
/*
 * SVM hardware (AMD APM vol. 2 chapter 15): VMRUN and #VMEXIT with the host save area,
 * VMLOAD/VMSAVE, CLGI/STGI and the global interrupt flag, and the intercept decisions of
 * a running guest.
 *
 * What moves where (APM 15.5, 15.6, 15.30.4): VMRUN saves a small part of the host state
 * to the host save area at VM_HSAVE_PA and loads the guest's from the VMCB save area;
 * #VMEXIT does the reverse. FS, GS, TR, LDTR, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK
 * and SYSENTER_* are untouched by both: VMLOAD/VMSAVE move exactly that set.
 *
 * Documented simplification (MACHINE.md): control.nested_cr3 holds the host PA of the
 * VM's struct pk_memslots, not a nested page table root; an access outside the slots is
 * a nested page fault whose decoded access KVM reads from cpu->ev.
 */
#define PK_CPU_IMPL		/* defines host instructions cpu.h wraps for attribution */
#include "pykvm/cpu.h"
#include "asm/svm.h"

/* cpu.c: MSR-value rules the VMRUN consistency checks share with WRMSR. */
u64 pk_efer_valid_bits(const struct pk_cpu *cpu);
bool pk_pat_valid(u64 pat);

/*
 * The host save area. Its format is implementation-specific (APM 15.30.4) and no software
 * reads it; the model keeps exact copies of what VMRUN saves, the VMCB being run, and the
 * host values of the registers the real CPU keeps apart for the guest: g_PAT (PAT seen
 * by the guest under nested paging) and, with V_SPEC_CTRL, the host SPEC_CTRL.
 *
 * It sits at the start of the page, where a VMCB has its control area: KVM VMSAVEs and
 * VMLOADs the very page it programs into VM_HSAVE_PA (sd->save_area_pa), and those touch
 * only save-area fields (offset 0x400 on), so the two uses never overlap -- as on
 * hardware, where VMRUN's and VMSAVE's fields of the page are disjoint.
 */
struct svm_host_save_area {
	u64 vmcb_pa;
	struct pk_segment es, cs, ss, ds;
	struct pk_dtable gdtr, idtr;
	u64 efer, cr0, cr3, cr4;
	u64 rflags, rip, rsp, rax;
	u64 pat;
	u64 spec_ctrl;
};
_Static_assert(sizeof(struct svm_host_save_area) <= offsetof(struct vmcb, save),
	       "the host save area stays clear of the fields VMSAVE/VMLOAD use");

/* Segment attributes: VMCB "compressed" format <-> VMX AR format (unusable = !P). */
#define SVM_ATTRIB_P		0x80U

static u16 ar_to_attrib(u32 ar)
{
	u16 attrib = (u16)((ar & 0xff) | ((ar >> 4) & 0xf00));

	return (ar & VMX_AR_UNUSABLE_MASK) ? attrib & ~SVM_ATTRIB_P : attrib;
}

static u32 attrib_to_ar(u16 attrib)
{
	u32 ar = (attrib & 0xffU) | ((u32)(attrib & 0xf00) << 4);

	return (attrib & SVM_ATTRIB_P) ? ar : ar | VMX_AR_UNUSABLE_MASK;
}

static void seg_from_vmcb(struct pk_segment *s, const struct vmcb_seg *v)
{
	s->selector = v->selector;
	s->ar = attrib_to_ar(v->attrib);
	s->limit = v->limit;
	s->base = v->base;
}

static void seg_to_vmcb(struct vmcb_seg *v, const struct pk_segment *s)
{
	v->selector = s->selector;
	v->attrib = ar_to_attrib(s->ar);
	v->limit = s->limit;
	v->base = s->base;
}

static bool intercepted(const struct vmcb *vmcb, u32 bit)
{
	return vmcb->control.intercepts[bit / 32] & BIT(bit % 32);
}

/* A 4 KiB-aligned page inside the machine, or NULL (#GP for VMRUN/VMLOAD/VMSAVE). */
static void *svm_page(struct pk_machine *m, u64 pa)
{
	if (pa & 0xfff)
		return NULL;
	return pk_hva(m, pa, 4096);
}

static bool svm_enabled(const struct pk_cpu *cpu)
{
	return cpu->m->model.vendor == PK_VENDOR_AMD && (cpu->msr[PK_MSR_EFER] & EFER_SVME);
}

/*
 * An SVM instruction that cannot run: #UD without EFER.SVME (on Intel: always). VMRUN,
 * VMLOAD and VMSAVE report it to the caller, as the kernel's exception fixup does while
 * rebooting; on an Intel CPU, and for CLGI/STGI, it is a host bug (an oops).
 */
static int svm_ud(struct pk_cpu *cpu, bool reported)
{
	if (!reported || cpu->m->model.vendor != PK_VENDOR_AMD)
		pk_host_bug(cpu->m);
	return 1;
}

/* ---- Which guest events exit ---- */

static const u32 msrpm_ranges[] = { 0, 0xc0000000, 0xc0010000 };

/*
 * The MSR permission map (APM 15.11; kernel: svm_msrpm_offset): three 2 KiB ranges,
 * two bits per MSR, read then write, starting at bit 2 * (msr - base) of the range. The
 * kernel addresses the same bits as bit 2 * (msr & 0xf) (+1) of the u32 at byte offset
 * (msr - base) / 4 + range * 2048, rounded down to 4 (little-endian). A set bit exits.
 */
static bool msrpm_exit(struct pk_machine *m, const struct vmcb *vmcb, u32 msr, bool write)
{
	for (u32 r = 0; r < ARRAY_SIZE(msrpm_ranges); r++) {
		u32 off = msr - msrpm_ranges[r], bit;
		const u8 *msrpm;

		if (off >= MSRPM_MSRS_PER_RANGE)
			continue;
		/* Bits 11:0 of MSRPM_BASE_PA are ignored. */
		msrpm = pk_hva(m, vmcb->control.msrpm_base_pa & ~0xfffULL, MSRPM_SIZE);
		if (!msrpm)
			return true;
		bit = r * MSRPM_RANGE_BYTES * 8 + 2 * off + write;
		return msrpm[bit / 8] & BIT(bit % 8);
	}
	return true;			/* outside every range: always intercepted */
}

/* The intercept decision for a given VMCB (svm_hw_intercept finds the running one). */
enum pk_icpt __svm_hw_intercept(struct pk_cpu *cpu, const struct vmcb *vmcb,
				const struct pk_guest_event *ev)
{
	const struct pk_cpu_model *model = &cpu->m->model;

	switch (ev->kind) {
	case PK_GEXIT_HLT:
		return intercepted(vmcb, INTERCEPT_HLT) ? PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_CPUID:
		return intercepted(vmcb, INTERCEPT_CPUID) ? PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_RDMSR:
	case PK_GEXIT_WRMSR:
		if (!intercepted(vmcb, INTERCEPT_MSR_PROT))
			return PK_ICPT_NATIVE;
		return msrpm_exit(cpu->m, vmcb, ev->msr, ev->kind == PK_GEXIT_WRMSR) ?
		       PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_VMMCALL:
		return intercepted(vmcb, INTERCEPT_VMMCALL) ? PK_ICPT_EXIT : PK_ICPT_UD;
	case PK_GEXIT_VMCALL:
		return PK_ICPT_UD;
	case PK_GEXIT_RDTSCP:
		if (!model->has_rdtscp)
			return PK_ICPT_UD;
		return intercepted(vmcb, INTERCEPT_RDTSCP) ? PK_ICPT_EXIT : PK_ICPT_NATIVE;
	case PK_GEXIT_RDPID:
		return model->has_rdpid ? PK_ICPT_NATIVE : PK_ICPT_UD;
	case PK_GEXIT_IO:
		/* With or without INTERCEPT_IOIO_PROT: no native devices behind the ports. */
	default:
		return PK_ICPT_EXIT;
	}
}

/* The VMCB being run is recorded in the host save area by VMRUN. */
enum pk_icpt svm_hw_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev)
{
	const struct svm_host_save_area *hsave = svm_page(cpu->m, cpu->msr[PK_MSR_VM_HSAVE_PA]);
	const struct vmcb *vmcb = hsave ? svm_page(cpu->m, hsave->vmcb_pa) : NULL;

	if (unlikely(!vmcb))
		return PK_ICPT_EXIT;
	return __svm_hw_intercept(cpu, vmcb, ev);
}

/* ---- VMRUN and #VMEXIT ---- */

static void save_host_state(struct pk_cpu *cpu, struct svm_host_save_area *hsave)
{
	hsave->es = cpu->seg[VCPU_SREG_ES];
	hsave->cs = cpu->seg[VCPU_SREG_CS];
	hsave->ss = cpu->seg[VCPU_SREG_SS];
	hsave->ds = cpu->seg[VCPU_SREG_DS];
	hsave->gdtr = cpu->gdtr;
	hsave->idtr = cpu->idtr;
	hsave->efer = cpu->msr[PK_MSR_EFER];
	hsave->cr0 = cpu->cr0;
	hsave->cr3 = cpu->cr3;
	hsave->cr4 = cpu->cr4;
	hsave->rflags = cpu->rflags;
	hsave->rip = cpu->rip;
	hsave->rsp = cpu->regs[VCPU_REGS_RSP];
	hsave->rax = cpu->regs[VCPU_REGS_RAX];
	hsave->pat = cpu->msr[PK_MSR_PAT];
	hsave->spec_ctrl = cpu->msr[PK_MSR_SPEC_CTRL];
}

static void load_host_state(struct pk_cpu *cpu, const struct svm_host_save_area *hsave)
{
	cpu->seg[VCPU_SREG_ES] = hsave->es;
	cpu->seg[VCPU_SREG_CS] = hsave->cs;
	cpu->seg[VCPU_SREG_SS] = hsave->ss;
	cpu->seg[VCPU_SREG_DS] = hsave->ds;
	cpu->gdtr = hsave->gdtr;
	cpu->idtr = hsave->idtr;
	cpu->msr[PK_MSR_EFER] = hsave->efer;
	cpu->cr0 = hsave->cr0;
	cpu->cr3 = hsave->cr3;
	cpu->cr4 = hsave->cr4;
	cpu->rflags = hsave->rflags;
	cpu->rip = hsave->rip;
	cpu->regs[VCPU_REGS_RSP] = hsave->rsp;
	cpu->regs[VCPU_REGS_RAX] = hsave->rax;
	cpu->msr[PK_MSR_PAT] = hsave->pat;
	if (cpu->m->model.has_v_spec_ctrl)
		cpu->msr[PK_MSR_SPEC_CTRL] = hsave->spec_ctrl;
	cpu->mode = PK_MODE_HOST;
	cpu->npt = NULL;
	cpu->gif = false;		/* #VMEXIT clears GIF: the host's STGI sets it */
}

/* The VM's memory slots at nested_cr3 (see the header comment), or NULL. */
static const struct pk_memslots *npt_memslots(struct pk_machine *m, u64 ncr3)
{
	const struct pk_memslots *slots;

	if (ncr3 & (_Alignof(struct pk_memslots) - 1))
		return NULL;
	slots = pk_hva(m, ncr3, sizeof(*slots));
	if (!slots || slots->nr > PK_MAX_MEMSLOTS)
		return NULL;
	return slots;
}

/*
 * VMRUN's consistency checks (APM 15.5.1) that the model makes; a failure is
 * #VMEXIT(VMEXIT_INVALID).
 */
static bool vmcb_valid(struct pk_cpu *cpu, const struct vmcb *vmcb,
		       const struct pk_memslots **slots)
{
	const struct vmcb_control_area *c = &vmcb->control;
	const struct vmcb_save_area *s = &vmcb->save;
	u64 efer = s->efer;
	u32 evt_type = c->event_inj & (7U << 8);

	if (!(efer & EFER_SVME) || (efer & ~pk_efer_valid_bits(cpu)))
		return false;
	if ((efer & EFER_LME) && (s->cr0 & X86_CR0_PG) &&
	    (!(s->cr4 & X86_CR4_PAE) || !(s->cr0 & X86_CR0_PE)))
		return false;
	/* CS.L and CS.D both set in long mode (attrib bits 9 and 10). */
	if ((efer & EFER_LMA) && (s->cs.attrib & 0x200) && (s->cs.attrib & 0x400))
		return false;
	if (!intercepted(vmcb, INTERCEPT_VMRUN) || c->asid == 0)
		return false;
	if (!pk_pat_valid(s->g_pat))
		return false;
	if ((c->event_inj & SVM_EVTINJ_VALID) && evt_type != 0 && evt_type != SVM_EVTINJ_TYPE_NMI &&
	    evt_type != SVM_EVTINJ_TYPE_EXEPT && evt_type != (4U << 8))
		return false;
	if (intercepted(vmcb, INTERCEPT_MSR_PROT) &&
	    !pk_hva(cpu->m, c->msrpm_base_pa & ~0xfffULL, MSRPM_SIZE))
		return false;
	*slots = npt_memslots(cpu->m, c->nested_cr3);
	return *slots != NULL;
}

static void load_guest_state(struct pk_cpu *cpu, const struct vmcb *vmcb)
{
	const struct vmcb_save_area *s = &vmcb->save;

	seg_from_vmcb(&cpu->seg[VCPU_SREG_ES], &s->es);
	seg_from_vmcb(&cpu->seg[VCPU_SREG_CS], &s->cs);
	seg_from_vmcb(&cpu->seg[VCPU_SREG_SS], &s->ss);
	seg_from_vmcb(&cpu->seg[VCPU_SREG_DS], &s->ds);
	cpu->gdtr.base = s->gdtr.base;
	cpu->gdtr.limit = (u16)s->gdtr.limit;
	cpu->idtr.base = s->idtr.base;
	cpu->idtr.limit = (u16)s->idtr.limit;
	cpu->msr[PK_MSR_EFER] = s->efer;
	cpu->cr0 = s->cr0;
	cpu->cr2 = s->cr2;
	cpu->cr3 = s->cr3;
	cpu->cr4 = s->cr4;
	/* DR7: the model has no debug registers. CPL: the model's is CS.RPL, loaded above. */
	cpu->rflags = s->rflags | X86_EFLAGS_FIXED;
	cpu->rip = s->rip;
	cpu->regs[VCPU_REGS_RSP] = s->rsp;
	cpu->regs[VCPU_REGS_RAX] = s->rax;
	cpu->msr[PK_MSR_PAT] = s->g_pat;
	if (cpu->m->model.has_v_spec_ctrl)
		cpu->msr[PK_MSR_SPEC_CTRL] = s->spec_ctrl;
}

static void save_guest_state(struct pk_cpu *cpu, struct vmcb *vmcb)
{
	struct vmcb_save_area *s = &vmcb->save;

	seg_to_vmcb(&s->es, &cpu->seg[VCPU_SREG_ES]);
	seg_to_vmcb(&s->cs, &cpu->seg[VCPU_SREG_CS]);
	seg_to_vmcb(&s->ss, &cpu->seg[VCPU_SREG_SS]);
	seg_to_vmcb(&s->ds, &cpu->seg[VCPU_SREG_DS]);
	s->gdtr.base = cpu->gdtr.base;
	s->gdtr.limit = cpu->gdtr.limit;
	s->idtr.base = cpu->idtr.base;
	s->idtr.limit = cpu->idtr.limit;
	s->efer = cpu->msr[PK_MSR_EFER];
	s->cr0 = cpu->cr0;
	s->cr2 = cpu->cr2;
	s->cr3 = cpu->cr3;
	s->cr4 = cpu->cr4;
	s->rflags = cpu->rflags;
	s->rip = cpu->rip;
	s->rsp = cpu->regs[VCPU_REGS_RSP];
	s->rax = cpu->regs[VCPU_REGS_RAX];
	s->cpl = cpu->seg[VCPU_SREG_CS].selector & 3;
	s->g_pat = cpu->msr[PK_MSR_PAT];
	if (cpu->m->model.has_v_spec_ctrl)
		s->spec_ctrl = cpu->msr[PK_MSR_SPEC_CTRL];
}

/* IOIO exit_info_1 size bits: SZ8 (bit 4), SZ16 (bit 5), SZ32 (bit 6). */
static u64 ioio_size_bits(u8 size)
{
	switch (size) {
	case 1:
		return BIT(SVM_IOIO_SIZE_SHIFT);
	case 2:
		return BIT(SVM_IOIO_SIZE_SHIFT + 1);
	default:
		return BIT(SVM_IOIO_SIZE_SHIFT + 2);
	}
}

#define PFERR_WRITE_MASK	BIT_ULL(1)
#define PFERR_GUEST_FINAL_MASK	BIT_ULL(32)

/* The guest event that ended guest execution -> exit code and exit information. */
static void record_exit(struct pk_cpu *cpu, struct vmcb *vmcb)
{
	const struct pk_guest_event *ev = &cpu->ev;
	struct vmcb_control_area *c = &vmcb->control;
	u64 next_rip = cpu->rip + ev->insn_len;
	u32 code;
	u64 info1 = 0, info2 = 0;

	c->insn_len = 0;
	switch (ev->kind) {
	case PK_GEXIT_HLT:
		code = SVM_EXIT_HLT;
		break;
	case PK_GEXIT_CPUID:
		code = SVM_EXIT_CPUID;
		break;
	case PK_GEXIT_IO:
		code = SVM_EXIT_IOIO;
		info1 = ((u64)ev->port << SVM_IOIO_PORT_SHIFT) | ioio_size_bits(ev->size) |
			(ev->in ? SVM_IOIO_TYPE_MASK : 0);
		info2 = next_rip;
		break;
	case PK_GEXIT_RDMSR:
	case PK_GEXIT_WRMSR:
		code = SVM_EXIT_MSR;
		info1 = ev->kind == PK_GEXIT_WRMSR;
		break;
	case PK_GEXIT_VMMCALL:
		code = SVM_EXIT_VMMCALL;
		break;
	case PK_GEXIT_RDTSCP:
		code = SVM_EXIT_RDTSCP;
		break;
	case PK_GEXIT_MMIO:
		code = SVM_EXIT_NPF;
		info1 = PFERR_GUEST_FINAL_MASK | (ev->write ? PFERR_WRITE_MASK : 0);
		info2 = ev->gpa;
		c->insn_len = ev->insn_len;	/* decode assists: bytes fetched */
		break;
	case PK_GEXIT_TRIPLE_FAULT:
		code = SVM_EXIT_SHUTDOWN;
		break;
	case PK_GEXIT_EXTINT:
		code = SVM_EXIT_INTR;
		break;
	default:
		/* No SVM exit for it (cannot happen): KVM reports a failed VMRUN. */
		code = SVM_EXIT_ERR;
		break;
	}
	c->exit_code = code;
	c->exit_code_hi = code == SVM_EXIT_ERR ? ~0U : 0;
	c->exit_info_1 = info1;
	c->exit_info_2 = info2;
	c->exit_int_info = 0;			/* event delivery is atomic in the model */
	c->exit_int_info_err = 0;
	c->next_rip = next_rip;
}

/* #VMEXIT (APM 15.6): guest state into the VMCB, host state back, GIF = 0. */
static void svm_vmexit(struct pk_cpu *cpu, struct vmcb *vmcb,
		       const struct svm_host_save_area *hsave)
{
	pk_account(cpu, PK_OP_VMEXIT);
	record_exit(cpu, vmcb);
	save_guest_state(cpu, vmcb);
	load_host_state(cpu, hsave);
}

/* A #VMEXIT before any guest state was loaded: VMEXIT_INVALID, or an NMI pending. */
static void svm_vmexit_early(struct pk_cpu *cpu, struct vmcb *vmcb,
			     const struct svm_host_save_area *hsave, u32 code)
{
	struct vmcb_control_area *c = &vmcb->control;

	pk_account(cpu, PK_OP_VMEXIT);
	c->exit_code = code;
	c->exit_code_hi = code == SVM_EXIT_ERR ? ~0U : 0;
	c->exit_info_1 = 0;
	c->exit_info_2 = 0;
	c->exit_int_info = 0;
	c->next_rip = 0;
	load_host_state(cpu, hsave);
}

/* Event injection (APM 15.20). false: delivery ended in a triple fault (cpu->ev says so). */
static bool svm_inject_event(struct pk_cpu *cpu, struct vmcb *vmcb)
{
	u32 evt = vmcb->control.event_inj;

	if (!(evt & SVM_EVTINJ_VALID))
		return true;
	vmcb->control.event_inj = evt & ~SVM_EVTINJ_VALID;
	return pk_guest_deliver_exception(cpu, evt & SVM_EVTINJ_VEC_MASK,
					  evt & SVM_EVTINJ_VALID_ERR, vmcb->control.event_inj_err);
}

int pk_vmrun(u64 vmcb_pa)
{
	struct pk_cpu *cpu = this_cpu();
	struct pk_machine *m = cpu->m;
	struct svm_host_save_area *hsave;
	const struct pk_memslots *slots;
	struct vmcb *vmcb;
	u32 old_path;

	pk_account(cpu, PK_OP_VMRUN);
	if (!svm_enabled(cpu))
		return svm_ud(cpu, true);
	vmcb = svm_page(m, vmcb_pa);
	hsave = svm_page(m, cpu->msr[PK_MSR_VM_HSAVE_PA]);
	if (!vmcb || !hsave)
		return 1;			/* #GP */

	save_host_state(cpu, hsave);
	hsave->vmcb_pa = vmcb_pa;
	if (!vmcb_valid(cpu, vmcb, &slots)) {
		svm_vmexit_early(cpu, vmcb, hsave, SVM_EXIT_ERR);
		return 0;
	}
	load_guest_state(cpu, vmcb);
	cpu->gif = true;
	/* An NMI held since CLGI is taken as soon as GIF is set: it exits if intercepted. */
	if (cpu->nmi_held && intercepted(vmcb, INTERCEPT_NMI)) {
		svm_vmexit_early(cpu, vmcb, hsave, SVM_EXIT_NMI);
		return 0;
	}
	cpu->mode = PK_MODE_SVM_GUEST;
	cpu->npt = slots;
	memset(&cpu->ev, 0, sizeof(cpu->ev));

	old_path = pk_path_enter(m, PK_PATH_GUEST);
	if (svm_inject_event(cpu, vmcb))
		pk_guest_exec(cpu);
	pk_path_leave(m, old_path);

	svm_vmexit(cpu, vmcb, hsave);
	return 0;
}

/* ---- VMLOAD / VMSAVE (APM 15.5.2): exactly this set, nothing else ---- */

int pk_vmload(u64 vmcb_pa)
{
	struct pk_cpu *cpu = this_cpu();
	const struct vmcb_save_area *s;
	const struct vmcb *vmcb;
	u64 *msr = cpu->msr;

	pk_account(cpu, PK_OP_VMLOAD);
	if (!svm_enabled(cpu))
		return svm_ud(cpu, true);
	vmcb = svm_page(cpu->m, vmcb_pa);
	if (!vmcb)
		return 1;			/* #GP */
	s = &vmcb->save;
	seg_from_vmcb(&cpu->seg[VCPU_SREG_FS], &s->fs);
	seg_from_vmcb(&cpu->seg[VCPU_SREG_GS], &s->gs);
	seg_from_vmcb(&cpu->seg[VCPU_SREG_TR], &s->tr);
	seg_from_vmcb(&cpu->seg[VCPU_SREG_LDTR], &s->ldtr);
	msr[PK_MSR_KERNEL_GS_BASE] = s->kernel_gs_base;
	msr[PK_MSR_STAR] = s->star;
	msr[PK_MSR_LSTAR] = s->lstar;
	msr[PK_MSR_CSTAR] = s->cstar;
	msr[PK_MSR_SYSCALL_MASK] = (u32)s->sfmask;
	/* 32-bit registers on AMD (CONFORMANCE case 2). */
	msr[PK_MSR_SYSENTER_CS] = (u32)s->sysenter_cs;
	msr[PK_MSR_SYSENTER_ESP] = (u32)s->sysenter_esp;
	msr[PK_MSR_SYSENTER_EIP] = (u32)s->sysenter_eip;
	return 0;
}

int pk_vmsave(u64 vmcb_pa)
{
	struct pk_cpu *cpu = this_cpu();
	struct vmcb_save_area *s;
	struct vmcb *vmcb;
	const u64 *msr = cpu->msr;

	pk_account(cpu, PK_OP_VMSAVE);
	if (!svm_enabled(cpu))
		return svm_ud(cpu, true);
	vmcb = svm_page(cpu->m, vmcb_pa);
	if (!vmcb)
		return 1;			/* #GP */
	s = &vmcb->save;
	seg_to_vmcb(&s->fs, &cpu->seg[VCPU_SREG_FS]);
	seg_to_vmcb(&s->gs, &cpu->seg[VCPU_SREG_GS]);
	seg_to_vmcb(&s->tr, &cpu->seg[VCPU_SREG_TR]);
	seg_to_vmcb(&s->ldtr, &cpu->seg[VCPU_SREG_LDTR]);
	s->kernel_gs_base = msr[PK_MSR_KERNEL_GS_BASE];
	s->star = msr[PK_MSR_STAR];
	s->lstar = msr[PK_MSR_LSTAR];
	s->cstar = msr[PK_MSR_CSTAR];
	s->sfmask = msr[PK_MSR_SYSCALL_MASK];
	s->sysenter_cs = msr[PK_MSR_SYSENTER_CS];
	s->sysenter_esp = msr[PK_MSR_SYSENTER_ESP];
	s->sysenter_eip = msr[PK_MSR_SYSENTER_EIP];
	return 0;
}

/* ---- GIF (APM 15.17): NMI, SMI, INTR are held while it is clear ---- */

void pk_clgi(void)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_CLGI);
	if (!svm_enabled(cpu)) {
		svm_ud(cpu, false);
		return;
	}
	cpu->gif = false;
}

void pk_stgi(void)
{
	struct pk_cpu *cpu = this_cpu();

	pk_account(cpu, PK_OP_STGI);
	if (!svm_enabled(cpu)) {
		svm_ud(cpu, false);
		return;
	}
	cpu->gif = true;
	if (cpu->nmi_held) {
		cpu->nmi_held = 0;
		if (cpu->m->nmi_handler)
			cpu->m->nmi_handler(cpu);
	}
}
