/* SPDX-License-Identifier: MIT */
/*
 * The instructions of the simulated CPU, as host code (the host kernel model and KVM)
 * executes them on this_cpu(), plus the interfaces between the guest interpreter and the
 * virtualization hardware. Every host-side instruction is counted and costed.
 *
 * Implemented in csrc/arch: cpu.c (MSR file, segments, descriptor tables, CRs), vmx_hw.c
 * (VMX instructions, VM-entry/VM-exit), svm_hw.c (SVM instructions, VMRUN/#VMEXIT), virt.c
 * (intercept dispatch), exec.c (the guest x86-64 interpreter).
 */
#ifndef _PYKVM_CPU_H
#define _PYKVM_CPU_H

#include "pykvm/machine.h"

#define X86_TRAP_DE	0
#define X86_TRAP_DB	1
#define X86_TRAP_NMI	2
#define X86_TRAP_BP	3
#define X86_TRAP_UD	6
#define X86_TRAP_DF	8
#define X86_TRAP_TS	10
#define X86_TRAP_NP	11
#define X86_TRAP_SS	12
#define X86_TRAP_GP	13
#define X86_TRAP_PF	14
#define X86_TRAP_MC	18

#define X86_EFLAGS_CF	BIT(0)
#define X86_EFLAGS_FIXED BIT(1)
#define X86_EFLAGS_PF	BIT(2)
#define X86_EFLAGS_AF	BIT(4)
#define X86_EFLAGS_ZF	BIT(6)
#define X86_EFLAGS_SF	BIT(7)
#define X86_EFLAGS_TF	BIT(8)
#define X86_EFLAGS_IF	BIT(9)
#define X86_EFLAGS_DF	BIT(10)
#define X86_EFLAGS_OF	BIT(11)

#define X86_CR0_PE	BIT(0)
#define X86_CR0_NW	BIT(29)
#define X86_CR0_CD	BIT(30)
#define X86_CR0_PG	BIT(31)
#define X86_CR4_VME	BIT(0)
#define X86_CR4_PVI	BIT(1)
#define X86_CR4_TSD	BIT(2)
#define X86_CR4_DE	BIT(3)
#define X86_CR4_PSE	BIT(4)
#define X86_CR4_PAE	BIT(5)
#define X86_CR4_MCE	BIT(6)
#define X86_CR4_PGE	BIT(7)
#define X86_CR4_PCE	BIT(8)
#define X86_CR4_OSFXSR	BIT(9)
#define X86_CR4_OSXMMEXCPT BIT(10)
#define X86_CR4_UMIP	BIT(11)
#define X86_CR4_LA57	BIT(12)
#define X86_CR4_VMXE	BIT(13)
#define X86_CR4_FSGSBASE BIT(16)
#define X86_CR4_PCIDE	BIT(17)
#define X86_CR4_OSXSAVE	BIT(18)
#define X86_CR4_SMEP	BIT(20)
#define X86_CR4_SMAP	BIT(21)
#define X86_CR4_PKE	BIT(22)
#define X86_CR4_CET	BIT(23)
#define X86_CR4_LAM_SUP	BIT(28)

/* ---- MSR file (cpu.c): architectural rules, shared by host and guest accesses ---- */
int pk_msr_slot(u32 index);			/* enum pk_msr, or -1 if the CPU lacks it */
/* 0 on success, X86_TRAP_GP if the access faults. No cost accounting. */
int pk_msr_read(struct pk_cpu *cpu, u32 index, u64 *val);
int pk_msr_write(struct pk_cpu *cpu, u32 index, u64 val);
void pk_cpu_reset(struct pk_cpu *cpu);		/* power-on state */

/* ---- Host-side instructions on this_cpu() (kernel names; counted) ---- */
int rdmsrl_safe(u32 msr, u64 *val);		/* 0, or -EIO-like 1 if it faulted */
int wrmsrl_safe(u32 msr, u64 val);
u64 rdmsrl(u32 msr);				/* a fault is a host bug: counted in m->host_bugs */
void wrmsrl(u32 msr, u64 val);
u64 rdfsbase(void);
u64 rdgsbase(void);
void wrfsbase(u64 base);
void wrgsbase(u64 base);
void native_swapgs(void);
u16 savesegment(int sreg);
void loadsegment(int sreg, u16 sel);		/* with the GS rule: see load_gs_index */
void load_gs_index(u16 sel);			/* SWAPGS; MOV GS; SWAPGS: keeps kernel GS base */
void native_lldt(u16 sel);
void native_ltr(u16 sel);
void native_load_gdt(const struct pk_dtable *dt);
void native_store_gdt(struct pk_dtable *dt);
void native_load_idt(const struct pk_dtable *dt);
void native_store_idt(struct pk_dtable *dt);
u64 native_read_cr0(void);
u64 native_read_cr2(void);
u64 native_read_cr3(void);
u64 native_read_cr4(void);
void native_write_cr2(u64 val);
void native_write_cr3(u64 val);
void pk_pti_switch_cr3(void);			/* costed only: see cpu.c */
void pk_verw(void);				/* MDS CPU-buffer clear */
void pk_xsaves(void);				/* FPU state save/restore: costed only */
void pk_xrstors(void);
void native_write_cr4(u64 val);
void pk_lfence(void);
void pk_fill_return_buffer(void);

/* ---- VMX instructions (vmx.c). Return 0 on VMsucceed, 1 on VMfail. ---- */
int pk_vmxon(void);
int pk_vmxoff(void);
int pk_vmclear(u64 pa);
int pk_vmptrld(u64 pa);
int pk_vmread(u32 field, u64 *val);
int pk_vmwrite(u32 field, u64 val);
/*
 * VMLAUNCH / VMRESUME: checks, loads guest state, runs the guest until a VM-exit,
 * performs the VM-exit (host-state loading with its side effects) and returns 0; returns
 * 1 on VMfail (VM_INSTRUCTION_ERROR set). Guest GPRs are whatever is in cpu->regs
 * (except RSP); the caller saves them after return, like vmenter.S.
 */
int pk_vmlaunch(void);
int pk_vmresume(void);
u32 pk_vmcs_field_index(u32 field);		/* dense index or VMCS_NR_FIELDS */
/* Region layout of a simulated VMCS: revision, abort, launch state, fields. */
struct pk_vmcs_region {
	u32 revision_id;
	u32 abort;
	u32 launched;
	u32 active_cpu;				/* hardware-private: CPU with it active, or -1 */
	/*
	 * Hardware-private: the VM-entry checks that read only control and host-state
	 * fields passed on the last VM-entry and none of those fields changed since
	 * (vmx_hw.c: vmx_vmentry). Cleared by VMCLEAR, VMPTRLD and every VMWRITE of a
	 * control or host-state field.
	 */
	u32 entry_checked;
	u64 field[];
};
#define PK_VMCS_REVISION	0x12
#define PK_VMCS_SIZE		4096

/* ---- SVM instructions (svm.c) ---- */
/* VMRUN with RAX = VMCB PA: saves host state to VM_HSAVE_PA, runs the guest to #VMEXIT.
 * Returns 0 after #VMEXIT; 1 if VMRUN itself faulted (#GP: not enabled, bad address). */
int pk_vmrun(u64 vmcb_pa);
int pk_vmload(u64 vmcb_pa);
int pk_vmsave(u64 vmcb_pa);
void pk_clgi(void);
void pk_stgi(void);

/*
 * Attribution (csrc/check/attr.c): the host instructions that write registers note the
 * kernel function executing them. The files that define them see the functions.
 */
static inline void pk_attr_site(const char *fn)
{
	struct pk_cpu *c = pk_this_cpu;

	if (c && unlikely(c->m->attr != NULL))
		c->m->attr_site = fn;
}
#ifndef PK_CPU_IMPL
#define wrmsrl(msr, val)	(pk_attr_site(__func__), wrmsrl(msr, val))
#define wrmsrl_safe(msr, val)	(pk_attr_site(__func__), wrmsrl_safe(msr, val))
#define wrfsbase(b)		(pk_attr_site(__func__), wrfsbase(b))
#define wrgsbase(b)		(pk_attr_site(__func__), wrgsbase(b))
#define native_swapgs()		(pk_attr_site(__func__), native_swapgs())
#define loadsegment(s, sel)	(pk_attr_site(__func__), loadsegment(s, sel))
#define load_gs_index(sel)	(pk_attr_site(__func__), load_gs_index(sel))
#define native_lldt(sel)	(pk_attr_site(__func__), native_lldt(sel))
#define native_ltr(sel)		(pk_attr_site(__func__), native_ltr(sel))
#define native_load_gdt(dt)	(pk_attr_site(__func__), native_load_gdt(dt))
#define native_load_idt(dt)	(pk_attr_site(__func__), native_load_idt(dt))
#define native_write_cr3(v)	(pk_attr_site(__func__), native_write_cr3(v))
#define native_write_cr4(v)	(pk_attr_site(__func__), native_write_cr4(v))
#define pk_vmload(pa)		(pk_attr_site(__func__), pk_vmload(pa))
#define pk_vmrun(pa)		(pk_attr_site(__func__), pk_vmrun(pa))
#define pk_vmlaunch()		(pk_attr_site(__func__), pk_vmlaunch())
#define pk_vmresume()		(pk_attr_site(__func__), pk_vmresume())
#endif

/* ---- Guest execution (exec.c) and its questions to the hardware (virt.c) ---- */
/*
 * Run guest code on cpu (already in guest mode) until something exits: an intercepted
 * instruction (asked through pk_virt_intercept), an access outside every slot of
 * cpu->npt, a triple fault, or the instruction budget reaching 0. Fills cpu->ev and
 * returns its kind. RIP stays at the exiting instruction; everything before it retired.
 */
u32 pk_guest_exec(struct pk_cpu *cpu);
/* Deliver an exception through the guest IDT (event injection on VM-entry).
 * false: delivery escalated to a triple fault (cpu->ev is set to it). */
bool pk_guest_deliver_exception(struct pk_cpu *cpu, u8 vector, bool has_error, u32 error);
enum pk_icpt pk_virt_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev);
enum pk_icpt vmx_hw_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev);
enum pk_icpt svm_hw_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev);
/* Guest memory translation: host pointer for [gpa, gpa + len) in one slot, or NULL. */
u8 *pk_gpa_to_hva(const struct pk_memslots *slots, u64 gpa, u64 len);
void pk_icache_free(struct pk_cpu *cpu);

/* ---- NMIs (virt.c): held while GIF = 0, delivered at STGI ---- */
void pk_nmi(struct pk_cpu *cpu);		/* runs m->nmi_handler unless held */

#endif
