/* SPDX-License-Identifier: MIT */
/*
 * The checker (csrc/check/explore.c): event sequences over a machine with one VM,
 * explored exhaustively up to a bound (with state deduplication), then by random walks;
 * the first sequence that makes the oracle report a violation is returned.
 */
#ifndef _PYKVM_CHECK_H
#define _PYKVM_CHECK_H

#include "pykvm/kvm_api.h"
#include "pykvm/events.h"

/* cffi:begin */

#define PK_CHECK_MAX_VCPUS	4
#define PK_CHECK_MAX_REGS	16
#define PK_CHECK_MAX_STEPS	64

enum pk_step_kind {
	PK_STEP_RUN,		/* KVM_RUN until the guest's next sync (one pass of its loop) */
	PK_STEP_SET_MSRS,	/* userspace KVM_SET_MSRS of the guest's registers */
	PK_STEP_GET_MSRS,	/* userspace KVM_GET_MSRS, compared with what the guest wrote */
	PK_STEP_MIGRATE,	/* the vCPU thread moves to another CPU */
	PK_STEP_OTHER,		/* another task runs on a CPU and returns to user mode */
	PK_STEP_DISABLE,	/* virtualization off and on again on a CPU, between ioctls */
	PK_NR_STEP_KINDS
};

struct pk_step {
	u8 kind;		/* enum pk_step_kind */
	u8 vcpu;
	u8 cpu;
	u8 inject;		/* enum pk_inject_kind, for PK_STEP_RUN */
	u32 at;			/* inject before the at-th host instruction (1-based) */
};

struct pk_check_cfg {
	struct kvm_vcpu *vcpus[PK_CHECK_MAX_VCPUS];
	u32 nr_vcpus;
	u8 *gmem;			/* the VM's memory (one slot at GPA 0) */
	u64 gmem_size;
	u64 gmem_dirty_lo, gmem_dirty_hi;	/* the part the guest writes: snapshotted */
	u64 table_gpa[PK_CHECK_MAX_VCPUS];	/* each vCPU's table of what it wrote */
	u32 regs[PK_CHECK_MAX_REGS];	/* MSR indices, in table order */
	u32 nr_regs;
	u32 violation_port;		/* the guest OUTs here when it reads a wrong value */
	u32 sync_port;
	u64 run_budget;
	u32 step_mask;			/* BIT(enum pk_step_kind) allowed */
	u32 inject_mask;		/* BIT(enum pk_inject_kind) allowed */
};

struct pk_check_result {
	u64 events;			/* steps applied */
	u64 exits;			/* VM-exits inside those steps */
	u64 states;			/* distinct states seen (exhaustive part) */
	u32 depth_done;			/* exhaustive bound fully explored */
	u32 violated;
	struct pk_violation violation;
	u32 nr_steps;
	struct pk_step steps[PK_CHECK_MAX_STEPS];
	u64 walks;
	u32 interrupted;		/* pk_checker_stop() ended it early */
};

struct pk_checker;
struct pk_checker *pk_checker_new(struct pk_machine *m, const struct pk_check_cfg *cfg);
void pk_checker_free(struct pk_checker *c);
/* Back to the state the checker was created in. */
void pk_checker_reset(struct pk_checker *c);
/* Apply steps from the initial state; 1 if the oracle reports a violation. */
int pk_checker_replay(struct pk_checker *c, const struct pk_step *steps, u32 n,
		      struct pk_violation *v, bool trace);
int pk_checker_explore(struct pk_checker *c, u32 bound, u64 max_states, u64 walks,
		       u32 walk_len, u64 seed, double seconds, struct pk_check_result *res);
/* From another thread: the running explore stops after its current step (Ctrl-C). */
void pk_checker_stop(struct pk_checker *c);
/* cffi:end */

#endif
