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

#define PK_INJ_OK_POINTS	1024
#define PK_INJ_OK_WORDS		16	/* PK_INJ_OK_POINTS / 64 */
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
	PK_STEP_USER_INSNS,	/* the task in user mode on a CPU runs RDTSCP, RDPID, RD*BASE, SYSCALL */
	PK_STEP_VMM_TASK,	/* the vCPU's thread changes its FS/GS base or TSC mode (arg) */
	PK_STEP_KTHREAD,	/* a kernel thread preempts the task on a CPU and gives it back */
	PK_NR_STEP_KINDS
};

struct pk_step {
	u8 kind;		/* enum pk_step_kind */
	u8 vcpu;
	u8 cpu;
	u8 inject;		/* enum pk_inject_kind, for PK_STEP_RUN */
	u8 arg;			/* PK_STEP_VMM_TASK: PK_TASK_* */
	u8 pad[3];
	u32 at;			/* inject before the at-th host instruction (1-based) */
};

/*
 * What the checker's guest keeps at table_gpa of each vCPU: the value it last wrote to
 * each register (u64, in regs[] order), and at PK_CHECK_MARK_OFFSET what it is doing
 * (a PK_MARK_*), so that a run ending in an exit its program never takes names the
 * register that sent it astray.
 */
#define PK_CHECK_MARK_OFFSET	0xf0
enum pk_check_mark {
	PK_MARK_NONE,
	PK_MARK_SYSRET,		/* SYSRETQ to its user part: STAR's user selectors */
	PK_MARK_SYSCALL,	/* SYSCALL from user mode: lands at LSTAR */
	PK_MARK_SYSCALL_UD,	/* SYSCALL with EFER.SCE clear: must #UD */
};

struct pk_check_cfg {
	struct kvm_vcpu *vcpus[PK_CHECK_MAX_VCPUS];
	u32 nr_vcpus;
	u8 vm_of[PK_CHECK_MAX_VCPUS];	/* which VM each vCPU belongs to (0 or 1) */
	u8 *gmem;			/* the VMs' memory (one slot at GPA 0, shared) */
	u64 gmem_size;
	u64 gmem_dirty_lo, gmem_dirty_hi;	/* the part the guest writes: snapshotted */
	u64 table_gpa[PK_CHECK_MAX_VCPUS];	/* each vCPU's table of what it wrote */
	u32 regs[PK_CHECK_MAX_REGS];	/* MSR indices, in table order */
	u64 delta[PK_CHECK_MAX_REGS];	/* what the guest flips in each between runs */
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
	u32 closed;			/* a level brought no new state: every depth explored */
	u64 replayed;			/* steps re-applied to reach a state to expand (BFS) */
	u64 injected[PK_NR_INJ];	/* host events taken, by kind */
	u64 refused;			/* events not taken: the kernel forbids them there */
	u64 slept;			/* steps not tried: in the state's sleep set (BFS) */
	u64 sleep_checked;		/* PK_REDUCE_VERIFY: sleeping steps tried both ways */
	u64 sleep_mismatch;		/* ... where the two orders did not agree */
};

/* The vCPU (of another VM) whose thread PK_INJ_PREEMPT_VM runs, and its run budget. */
void pk_inject_set_other_vcpu(struct pk_machine *m, struct kvm_vcpu *vcpu, u64 budget);

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
/*
 * The search's reductions (a mask of PK_REDUCE_*; 0: plain iterative deepening, every
 * bound searched again from the initial state). PK_REDUCE_REVISIT: breadth-first once,
 * each distinct state expanded at its shallowest depth and never again (the same
 * states, violations as short, each step tried once).
 */
#define PK_REDUCE_REVISIT	1
/*
 * PK_REDUCE_SLEEP (with PK_REDUCE_REVISIT): sleep sets. A state's child step that
 * commutes, by the independence relation of explore.c, with the step that led to the
 * state, and that an earlier sibling state tries in the other order, is not tried
 * again: fewer steps, the same states and violations as long as that relation holds.
 * PK_REDUCE_VERIFY (with PK_REDUCE_SLEEP): every step the sleep sets leave out is
 * tried both ways anyway and the two results compared (sleep_checked, sleep_mismatch);
 * a mismatch is explored as if it had not slept. For tests: it costs more than it saves.
 */
#define PK_REDUCE_SLEEP		2
#define PK_REDUCE_VERIFY	4
int pk_checker_set_reduce(struct pk_checker *c, u32 reduce);
/*
 * The host points of step `idx` after steps[0..idx) from the initial state: their
 * number (-1 if an earlier step ends the branch), and where an interrupt and a
 * preemption can be taken (bit p of irq_ok/preempt_ok: before host instruction p + 1).
 */
int pk_checker_points(struct pk_checker *c, const struct pk_step *steps, u32 idx,
		      u64 irq_ok[PK_INJ_OK_WORDS], u64 preempt_ok[PK_INJ_OK_WORDS]);

/*
 * For a search spread over processes (pykvm/swarm.py): a task names its state by the
 * steps that lead to it from the initial state (`prefix`, n steps).
 *
 * pk_checker_expand: every step pk_checker_explore() would try from that state (its
 * order: each step, then each run with each host event before each host instruction
 * where the event can be taken), each with the hash of the state it leads to: the same
 * in every process (0: the branch ends there; 1 for every other child unless `hashes`).
 * Returns how many (-ENOSPC: more than max; -ECHILD: the prefix ends the branch). Stops at the first child that violates,
 * with the whole path in res (a violation within the prefix: the prefix up to it).
 *
 * pk_checker_explore_from: pk_checker_explore() from that state (bound and walks count
 * from it); a violation's steps in res include the prefix.
 */
struct pk_child {
	struct pk_step step;
	u64 hash;
};
int pk_checker_expand(struct pk_checker *c, const struct pk_step *prefix, u32 n,
		      struct pk_child *out, u32 max, bool hashes, struct pk_check_result *res);
int pk_checker_explore_from(struct pk_checker *c, const struct pk_step *prefix, u32 n,
			    u32 bound, u64 max_states, u64 walks, u32 walk_len, u64 seed,
			    double seconds, struct pk_check_result *res);

/* The hash that names states (seeded with `seed`): exported so its quality is tested. */
u64 pk_check_hash(const void *p, size_t n, u64 seed);
/* cffi:end */

#endif
