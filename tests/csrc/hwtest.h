/* SPDX-License-Identifier: MIT */
/*
 * TEST ONLY, not in the shipped module: tests/hwtest.py builds it into a module of its
 * own, resolved against pykvm's at load time. Entry points through which
 * tests/test_hw_*.py drive the simulated hardware (csrc/arch/cpu.c, vmx_hw.c, svm_hw.c)
 * directly: run one host-side instruction on a chosen
 * CPU, read or replace a CPU's live state, allocate machine memory for a VMCS, VMCB,
 * MSR bitmap or memory slot, ask the intercept logic about a guest event, count NMIs.
 *
 * Nothing here is pykvm API: the package and the KVM model never call these. Names are
 * looked up by string (pk_hwtest_const) so that this cdef declares no enum or constant
 * that another area's cdef could also declare.
 */
#ifndef _PYKVM_HWTEST_H
#define _PYKVM_HWTEST_H

#include "pykvm/cpu.h"

/* cffi:begin */

struct pk_hwtest_seg {
	uint64_t base;
	uint32_t limit;
	uint32_t ar;
	uint16_t selector;
};

struct pk_hwtest_dt {
	uint64_t base;
	uint16_t limit;
};

/* A CPU's architectural state (struct pk_cpu without the pointers); msr[] by slot. */
struct pk_hwtest_cpu {
	uint64_t regs[16];
	uint64_t rip, rflags, cr0, cr2, cr3, cr4;
	struct pk_hwtest_seg seg[8];
	struct pk_hwtest_dt gdtr, idtr;
	uint64_t msr[32];
	uint64_t tsc;
	uint64_t current_vmcs;
	uint64_t insn_budget;
	uint32_t mode;
	uint8_t gif;
	uint8_t nmi_held;
	uint8_t vmxon;
};

/* A guest event, for pk_hwtest_intercept (kind: "GEXIT_*"). */
struct pk_hwtest_event {
	uint32_t kind;
	uint32_t msr;
	uint16_t port;
	uint8_t size;
	uint8_t in;
	uint8_t insn_len;
	uint8_t write;
	uint64_t gpa;
};

/*
 * Value of a named constant, 0 if found, -1 if not. Names: "OP_<op>", "PATH_<path>",
 * "SLOT_<msr>" (PK_MSRS), "NR_MSRS", "GEXIT_<kind>", "ICPT_<answer>", "MODE_<mode>",
 * "SREG_<seg>", "INSN_<insn>" (pk_hwtest_insn), VMCS field names ("GUEST_RIP"),
 * "VMCB_<field>" (byte offset in struct vmcb, e.g. "VMCB_save.rip").
 */
int pk_hwtest_const(const char *name, int64_t *value);

/* The live state of CPU `cpu`; set_cpu writes it back raw, with no architectural rule. */
int pk_hwtest_get_cpu(struct pk_machine *m, uint32_t cpu, struct pk_hwtest_cpu *out);
int pk_hwtest_set_cpu(struct pk_machine *m, uint32_t cpu, const struct pk_hwtest_cpu *in);

/* pk_msr_read/pk_msr_write on CPU `cpu`: 0 or the vector (13). */
int pk_hwtest_msr_read(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t *val);
int pk_hwtest_msr_write(struct pk_machine *m, uint32_t cpu, uint32_t index, uint64_t val);

/*
 * Run one host-side instruction ("INSN_*") on CPU `cpu` as this_cpu(), with operands a
 * and b; *out receives what it reads. Returns the instruction's own result (0/1) or 0.
 * -1: no such instruction or CPU.
 */
int pk_hwtest_insn(struct pk_machine *m, uint32_t cpu, int insn, uint64_t a, uint64_t b,
		   uint64_t *out);

/* Zeroed machine memory (kmem): its host PA, 0 when full. */
uint64_t pk_hwtest_alloc(struct pk_machine *m, uint64_t size, uint64_t align);
/* Copy to/from machine memory at a host PA: 0, or -1 outside the machine. */
int pk_hwtest_phys_read(struct pk_machine *m, uint64_t pa, void *buf, uint64_t len);
int pk_hwtest_phys_write(struct pk_machine *m, uint64_t pa, const void *buf, uint64_t len);
/* A struct pk_memslots in kmem with one slot [gpa, gpa + size) at hva: its host PA. */
uint64_t pk_hwtest_memslot(struct pk_machine *m, uint64_t gpa, uint8_t *hva, uint64_t size);

/*
 * The intercept decision (ICPT_*) for `ev` on CPU `cpu`: on Intel from the current VMCS,
 * on AMD from the VMCB at vmcb_pa. -1 on a bad CPU or VMCB address.
 */
int pk_hwtest_intercept(struct pk_machine *m, uint32_t cpu, uint64_t vmcb_pa,
			const struct pk_hwtest_event *ev);
/* The guest event of CPU `cpu`'s last exit. */
int pk_hwtest_last_event(struct pk_machine *m, uint32_t cpu, struct pk_hwtest_event *out);

/* NMIs: install a counting host handler (resets the counts), raise one, read the count
 * and the GS base the handler ran with. */
void pk_hwtest_count_nmis(struct pk_machine *m);
void pk_hwtest_nmi(struct pk_machine *m, uint32_t cpu);
uint64_t pk_hwtest_nmis(uint32_t cpu);
uint64_t pk_hwtest_nmi_gsbase(uint32_t cpu);

uint64_t pk_hwtest_host_bugs(struct pk_machine *m);

/* Cost accounting: counters, the profile, the current path. */
uint64_t pk_hwtest_ops(struct pk_machine *m, uint32_t path, uint32_t op);
uint64_t pk_hwtest_msr_ops(struct pk_machine *m, uint32_t path, uint32_t dir, uint32_t slot);
uint64_t pk_hwtest_cycles(struct pk_machine *m, uint32_t path);
void pk_hwtest_reset_costs(struct pk_machine *m);
void pk_hwtest_set_path(struct pk_machine *m, uint32_t path);
void pk_hwtest_set_op_cost(struct pk_machine *m, uint32_t op, uint32_t cycles);
void pk_hwtest_set_msr_cost(struct pk_machine *m, uint32_t dir, uint32_t slot, uint32_t cycles);
/* cffi:end */

#endif
