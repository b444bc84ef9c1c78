// SPDX-License-Identifier: MIT
/* Names and read-out of the cost counters (hardware accounting: see machine.h). */
#include "pykvm/smp.h"

#define __NAME(name, ...) #name,
static const char *const op_names[] = { PK_OPS(__NAME) };
static const char *const path_names[] = { PK_PATHS(__NAME) };
/* The MSR-file slots first, then the priced MSRs without a slot (machine.h). */
static const char *const msr_names[] = { PK_PRICED_MSRS(__NAME) };
#undef __NAME
#define __INDEX(name, idx) idx,
static const u32 msr_indices[] = { PK_PRICED_MSRS(__INDEX) };
#undef __INDEX
_Static_assert(ARRAY_SIZE(msr_names) == PK_NR_PRICED_MSRS, "priced MSR names");

int pk_nr_ops(void) { return PK_NR_OPS; }
int pk_nr_paths(void) { return PK_NR_PATHS; }
int pk_nr_msrs(void) { return PK_NR_MSRS; }
int pk_nr_priced_msrs(void) { return PK_NR_PRICED_MSRS; }
const char *pk_op_name(int op) { return op >= 0 && op < PK_NR_OPS ? op_names[op] : NULL; }
const char *pk_path_name(int p) { return p >= 0 && p < PK_NR_PATHS ? path_names[p] : NULL; }
/* Names and indices of priced MSRs: s < pk_nr_msrs() are also the MSR-file slots. */
const char *pk_msr_name(int s) { return s >= 0 && s < PK_NR_PRICED_MSRS ? msr_names[s] : NULL; }
u32 pk_msr_index(int s) { return s >= 0 && s < PK_NR_PRICED_MSRS ? msr_indices[s] : 0; }

/* A counter added up over the CPUs, each read while its CPU is held (no torn sums). */
#define SUM_OVER_CPUS(m, field)						\
({									\
	u64 __sum = 0;							\
	for (u32 __c = 0; __c < (m)->nr_cpus; __c++) {			\
		pk_cpu_lock((struct pk_machine *)(m), __c);		\
		__sum += (m)->costs[__c].field;				\
		pk_cpu_unlock((struct pk_machine *)(m), __c);		\
	}								\
	__sum;								\
})

u64 pk_cost_ops(const struct pk_machine *m, int path, int op)
{
	if (path < 0 || path >= PK_NR_PATHS || op < 0 || op >= PK_NR_OPS)
		return 0;
	return SUM_OVER_CPUS(m, ops[path][op]);
}

/* Accesses of priced MSR `msr` (PK_NR_PRICED_MSRS: every other MSR) on `path`. */
u64 pk_cost_msr_ops(const struct pk_machine *m, int path, int write, int msr)
{
	if (path < 0 || path >= PK_NR_PATHS || msr < 0 || msr > PK_NR_PRICED_MSRS)
		return 0;
	return SUM_OVER_CPUS(m, msr_ops[path][!!write][msr]);
}

u64 pk_cost_cycles(const struct pk_machine *m, int path)
{
	return path >= 0 && path < PK_NR_PATHS ? SUM_OVER_CPUS(m, cycles[path]) : 0;
}

int pk_profile_set(struct pk_machine *m, int kind, int idx, u32 cycles)
{
	switch (kind) {
	case 0:
		if (idx < 0 || idx >= PK_NR_OPS)
			return -1;
		m->profile.op[idx] = cycles;
		return 0;
	case 1:
	case 2:
		if (idx < 0 || idx >= PK_NR_PRICED_MSRS)
			return -1;
		(kind == 1 ? m->profile.rdmsr : m->profile.wrmsr)[idx] = cycles;
		return 0;
	default:
		return -1;
	}
}

u64 pk_machine_host_bugs(const struct pk_machine *m)
{
	return __atomic_load_n(&m->host_bugs, __ATOMIC_RELAXED);
}
