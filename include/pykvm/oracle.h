/* SPDX-License-Identifier: MIT */
/*
 * The oracle (MACHINE.md section 5): at each observation point it knows what the host
 * must see, independently of the vendor code, and records the first violation: which
 * register, where, expected and actual.
 */
#ifndef _PYKVM_ORACLE_H
#define _PYKVM_ORACLE_H

#include "pykvm/machine.h"

/* cffi:begin */
enum pk_obs {
	PK_OBS_USER,		/* a host task in user mode */
	PK_OBS_PERCPU,		/* kernel code reading per-cpu data through GS */
	PK_OBS_NMI,		/* an NMI handler's per-cpu access */
	PK_OBS_RET,		/* the first RET after a VM-exit */
	PK_OBS_VIRT_OFF,	/* a CPU right after virtualization was disabled */
	PK_OBS_GUEST,		/* the guest read something it did not write */
	PK_OBS_GET_MSRS,	/* KVM_GET_MSRS returned something the guest did not write */
	PK_OBS_HOST_BUG,	/* a host WARN: a faulting WRMSR, a VMX instruction failing */
	PK_OBS_EXIT,		/* the guest stopped with an exit its program never takes */
	PK_OBS_IRQ,		/* a host interrupt handler (and the softirqs on its way out) */
	PK_NR_OBS
};
/* cffi:end */

/* cffi:begin */
/* Pseudo register numbers for what is not an MSR. */
#define PK_REG_GDTR_BASE	0x10000001
#define PK_REG_GDTR_LIMIT	0x10000002
#define PK_REG_TR_BASE		0x10000003
#define PK_REG_FS_SEL		0x10000004
#define PK_REG_GS_SEL		0x10000005
#define PK_REG_CR3		0x10000006
#define PK_REG_DS_SEL		0x10000007
#define PK_REG_ES_SEL		0x10000008
#define PK_REG_SS_SEL		0x10000009
#define PK_REG_CS_SEL		0x1000000a
#define PK_REG_LDTR_SEL		0x1000000b
#define PK_REG_IDTR_BASE	0x1000000c
#define PK_REG_IDTR_LIMIT	0x1000000d
#define PK_REG_TR_LIMIT		0x1000000e
#define PK_REG_TR_SEL		0x1000000f
#define PK_REG_CR4		0x10000010
#define PK_REG_RIP		0x10000011	/* where the guest's SYSCALL landed */
#define PK_REG_EFER_SCE		0x10000012	/* SYSCALL ran (or #UD) against EFER.SCE */

/*
 * The last write of a register, as attribution records it (csrc/check/attr.c): which
 * host instruction (enum pk_op; PK_NR_OPS: a plain store the host model marked), in
 * which kernel function and path, on which CPU, in which checker step. A VM-entry
 * instruction stands for the guest run it contains (the VM-exit is an instruction of
 * its own).
 */
struct pk_attr_rec {
	const char *fn;
	u32 op;
	u32 path;
	u32 cpu;
	u32 step;
	u32 valid;		/* 0: attribution off; 1: this write; 2: never written */
};

struct pk_violation {
	u32 obs;		/* enum pk_obs */
	u32 cpu;
	u32 reg;		/* MSR index or PK_REG_* */
	u32 task;
	u64 expected;
	u64 actual;
	struct pk_attr_rec cause;	/* with attribution on: the register's last write */
};

/* Attribution by last write: on (allocates its records) or off. Not machine state. */
int pk_attr_enable(struct pk_machine *m, bool on);
/* cffi:end */

struct pk_oracle {
	u64 nr_violations;
	struct pk_violation first;
	bool enabled;
};

/* cffi:begin */
void pk_oracle_enable(struct pk_machine *m, bool on);
int pk_oracle_result(struct pk_machine *m, struct pk_violation *first, u64 *count);
void pk_oracle_reset(struct pk_machine *m);
/* cffi:end */
void pk_oracle_violation(struct pk_machine *m, u32 obs, u32 cpu, u32 reg, u64 exp, u64 act);
/* Attribution (csrc/check/attr.c), all no-ops unless m->attr. */
struct pk_attr;
void pk_attr_point(struct pk_machine *m, struct pk_cpu *cpu, u32 op);
void pk_attr_reset(struct pk_machine *m, u32 step);
void pk_attr_cause(struct pk_machine *m, struct pk_violation *v);
/* A register change the host model makes with a plain store (SYSCALL's selectors...). */
static inline void pk_attr_mark(struct pk_cpu *cpu, const char *what)
{
	if (unlikely(cpu->m->attr != NULL)) {
		cpu->m->attr_site = what;
		pk_attr_point(cpu->m, cpu, PK_NR_OPS);
	}
}

void pk_observe_user(struct pk_cpu *cpu);
void pk_observe_ret(struct pk_cpu *cpu);
void pk_observe_virt_off(struct pk_cpu *cpu, bool svm);
/*
 * A host interrupt or exception handler runs on `cpu` (kernel mode): the CPU delivered
 * `vector` through the IDT (and, for IST vectors, the TSS); the handler reads per-cpu
 * data and runs RETs. `paranoid`: NMI/#MC, whose entry computed the GS base itself.
 */
void pk_observe_handler(struct pk_cpu *cpu, u32 obs, u32 vector);

/* Kernel code reading per-cpu data: GS_BASE must be this CPU's per-cpu base. */
static inline void pk_observe_percpu(struct pk_cpu *cpu, u32 obs)
{
	struct pk_machine *m = cpu->m;

	if (unlikely(m->oracle && cpu->seg[VCPU_SREG_GS].base != m->host.per_cpu_offset[cpu->id]))
		pk_oracle_violation(m, obs, cpu->id, MSR_GS_BASE, m->host.per_cpu_offset[cpu->id],
				    cpu->seg[VCPU_SREG_GS].base);
}

#endif
