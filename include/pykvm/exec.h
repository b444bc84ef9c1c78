/* SPDX-License-Identifier: MIT */
/*
 * Running guest code with no hypervisor around it (PK_MODE_BARE): the entry points of
 * the interpreter's own tests and benchmarks (csrc/arch/exec_bare.c). A CPU in bare mode
 * owns cpu->npt (slots set with pk_bare_map); HLT, IN/OUT, CPUID and VMCALL/VMMCALL
 * stop it, MSR accesses run natively (see pk_virt_intercept()).
 */
#ifndef _PYKVM_EXEC_H
#define _PYKVM_EXEC_H

#include "pykvm/machine.h"

/* cffi:begin */

/* The architectural state a test sets and checks (selectors, hidden parts: VMX layout). */
struct pk_bare_state {
	u64 regs[NR_VCPU_GPRS];
	u64 rip;
	u64 rflags;
	u64 cr0, cr2, cr3, cr4;
	u64 seg_base[NR_VCPU_SREGS];
	u32 seg_limit[NR_VCPU_SREGS];
	u32 seg_ar[NR_VCPU_SREGS];
	u16 seg_sel[NR_VCPU_SREGS];
	u64 gdt_base, idt_base;
	u16 gdt_limit, idt_limit;
	u64 tsc;
	u64 insn_budget;
};

/* struct pk_guest_event, for Python (field for field). */
struct pk_bare_event {
	u32 kind;
	u8 insn_len;
	u16 port;
	u8 size;
	bool in;
	u32 msr;
	u64 gpa;
	u8 len;
	bool write;
	u64 data;
};

/* Map [gpa, gpa + size) to host memory hva as the next slot: slot index, or -1. */
int pk_bare_map(struct pk_machine *m, u32 cpu, u64 gpa, u64 size, void *hva);
void pk_bare_unmap_all(struct pk_machine *m, u32 cpu);
/* Flat 64-bit CPL 0 state: CS 0x08 (L), SS 0x10, long mode in CR0/CR4/EFER, RFLAGS 0x2. */
void pk_bare_long_mode(struct pk_machine *m, u32 cpu);
void pk_bare_get_state(struct pk_machine *m, u32 cpu, struct pk_bare_state *st);
void pk_bare_set_state(struct pk_machine *m, u32 cpu, const struct pk_bare_state *st);
/* The MSR file by index, raw (no architectural checks): 0, or -1 for an MSR without a slot. */
int pk_bare_get_msr(struct pk_machine *m, u32 cpu, u32 index, u64 *val);
int pk_bare_set_msr(struct pk_machine *m, u32 cpu, u32 index, u64 val);
/* Run guest code with that budget: the exit (enum pk_gexit); the event via pk_bare_event. */
u32 pk_bare_run(struct pk_machine *m, u32 cpu, u64 budget);
void pk_bare_event(struct pk_machine *m, u32 cpu, struct pk_bare_event *ev);
/* Complete an MMIO read: the value the access at gpa reads when re-executed. */
void pk_bare_mmio_fill(struct pk_machine *m, u32 cpu, u64 gpa, u64 data);
bool pk_bare_deliver_exception(struct pk_machine *m, u32 cpu, u8 vector, bool has_error,
			       u32 error);
/*
 * The CPU's decode cache, as an opaque number (0: none yet); pk_bare_set_icache_ptr()
 * overwrites the pointer the way restoring a memcpy snapshot of the machine does.
 */
u64 pk_bare_icache_ptr(struct pk_machine *m, u32 cpu);
void pk_bare_set_icache_ptr(struct pk_machine *m, u32 cpu, u64 ptr);
/* Guest instructions retired on the machine (cost accounting, PK_OP_GUEST_INSN). */
u64 pk_bare_retired(struct pk_machine *m);

/* What the CPU's decode cache holds and has done (zeros before its first run). */
struct pk_icache_stats {
	u64 blocks;		/* blocks in the table now */
	u64 bytes;		/* their memory */
	u64 native_bytes;	/* host code of their native runs */
	u64 builds;		/* blocks decoded, over the cache's life */
	u64 flushes;		/* times everything was dropped (memory map change, limit) */
	u64 epoch;
	u64 tracked_entries;	/* entries that kept the blocks' checks: no code written */
	u64 links;		/* linked runs linked on into the next, over the cache's life */
};
void pk_bare_icache_stats(struct pk_machine *m, u32 cpu, struct pk_icache_stats *st);
/*
 * Native runs (register-only instructions executed by the host CPU, exec_native.c) on or
 * off, for every CPU, from the next block decoded on: the differential tests compare
 * both ways. On by default.
 */
void pk_exec_set_native_runs(bool on);
/* cffi:end */

#endif
