// SPDX-License-Identifier: MIT
/*
 * The checker's exploration loop: steps (userspace ioctls, scheduling, CPU events, host
 * tasks in user mode, each run optionally with one host event injected before its n-th
 * host instruction) applied to snapshots of the whole machine. Exhaustive up to a bound
 * by iterative deepening (every sequence of length d, injected runs included, before
 * any of length d + 1, so the first violation found is a shortest one), depth-first
 * within a depth with states deduplicated by hash; then random walks. Stops at the
 * first violation the oracle or the guest reports, with the steps that led to it.
 */
#include <stdlib.h>
#include <time.h>

#include "pykvm/check.h"

int kvm_arch_enable_virtualization_cpu(void);
int pk_vcpu_task(struct kvm_vcpu *vcpu);

struct pk_checker {
	struct pk_machine *m;
	struct pk_check_cfg cfg;
	size_t mach_bytes;		/* snapshot: machine header + used kmem */
	size_t gmem_bytes;		/* the guest memory the guest writes */
	size_t snap_bytes;		/* + that guest memory */
	u8 *root;
	u8 *stack[PK_CHECK_MAX_STEPS + 1];
	u64 *seen;			/* open addressing, 0 = empty */
	u8 *seen_left;			/* steps left when it was explored */
	u64 seen_cap, seen_n;
	u64 rng;
	u64 fired[PK_NR_INJ];		/* host events taken, by kind */
	u64 refused;			/* armed where the kernel would not take them */
};

/* ---- another VM's vCPU preempting (PK_INJ_PREEMPT_VM): its userspace's KVM_RUN ---- */

static __thread u64 other_budget;	/* the run budget of the caller's checker */

static void run_other_vcpu(struct pk_machine *m, void *vcpu)
{
	pk_vcpu_run_ex(vcpu, other_budget, false);
}

void pk_inject_set_other_vcpu(struct pk_machine *m, struct kvm_vcpu *vcpu, u64 budget)
{
	other_budget = budget;
	pk_inject_set_other(m, vcpu ? pk_vcpu_task(vcpu) : -1, run_other_vcpu, vcpu);
}

/* ---- snapshots ---- */

static void snap_save(struct pk_checker *c, u8 *buf)
{
	memcpy(buf, c->m, c->mach_bytes);
	memcpy(buf + c->mach_bytes, c->cfg.gmem + c->cfg.gmem_dirty_lo, c->gmem_bytes);
}

static void snap_restore(struct pk_checker *c, const u8 *buf)
{
	struct pk_trace *trace = c->m->trace;
	struct pk_point_log *log = c->m->point_log;
	struct pk_attr *attr = c->m->attr;

	memcpy(c->m, buf, c->mach_bytes);
	memcpy(c->cfg.gmem + c->cfg.gmem_dirty_lo, buf + c->mach_bytes, c->gmem_bytes);
	/* Recorders, not state. */
	c->m->trace = trace;
	c->m->point_log = log;
	c->m->attr = attr;
}

/* Fields that count rather than describe: cleared so equal states hash equal. */
static void normalize(struct pk_checker *c)
{
	struct pk_machine *m = c->m;

	memset(&m->costs.ops, 0, sizeof(m->costs) - offsetof(struct pk_costs, ops));
	for (u32 i = 0; i < m->nr_cpus; i++) {
		m->cpu[i].tsc = 0;
		m->cpu[i].insn_budget = UINT64_MAX;
	}
	for (u32 t = 0; t < m->host.nr_tasks; t++)
		m->host.tasks[t].timer_budget = UINT64_MAX;
	for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
		memset(&c->cfg.vcpus[v]->stat, 0, sizeof(c->cfg.vcpus[v]->stat));
	m->inject = (struct pk_inject){ 0 };
}

/* Four independent multiply-xor lanes: the hash runs at memory speed, not at the
 * latency of one dependent multiply per word. */
static u64 hash_bytes(u64 h, const void *p, size_t n)
{
	const u8 *b = p;
	u64 l0 = h, l1 = h ^ 0x9e3779b97f4a7c15ULL, l2 = h + 0x632be59bd9b4e019ULL,
	    l3 = h ^ 0x85ebca77c2b2ae63ULL, w[4];

	for (; n >= 32; n -= 32, b += 32) {
		memcpy(w, b, 32);
		l0 = (l0 ^ w[0]) * 0x100000001b3ULL;
		l1 = (l1 ^ w[1]) * 0x100000001b3ULL;
		l2 = (l2 ^ w[2]) * 0x100000001b3ULL;
		l3 = (l3 ^ w[3]) * 0x100000001b3ULL;
	}
	h = l0 ^ (l1 << 17 | l1 >> 47) ^ (l2 << 31 | l2 >> 33) ^ (l3 << 47 | l3 >> 17);
	while (n--)
		h = (h ^ *b++) * 0x100000001b3ULL;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 32);
}

static u64 state_hash(struct pk_checker *c)
{
	struct pk_machine *m = c->m;
	u64 h = 0xcbf29ce484222325ULL;

	for (u32 i = 0; i < m->nr_cpus; i++) {
		struct pk_cpu cpu = m->cpu[i];

		cpu.icache = NULL;		/* the decode cache is not state */
		h = hash_bytes(h, &cpu, sizeof(cpu));
	}
	h = hash_bytes(h, &m->host, sizeof(m->host));
	h = hash_bytes(h, m->kmem, m->kmem_used);
	for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
		h = hash_bytes(h, c->cfg.gmem + c->cfg.table_gpa[v], 8 * c->cfg.nr_regs);
	return h ? h : 1;
}

/*
 * true if the state must be explored: never seen, or seen with fewer steps left (a
 * bounded search that met a state deep must look again when it meets it shallower).
 */
static bool seen_insert(struct pk_checker *c, u64 h, u32 left)
{
	u64 i = h & (c->seen_cap - 1);

	while (c->seen[i]) {
		if (c->seen[i] == h) {
			if (c->seen_left[i] >= left)
				return false;
			c->seen_left[i] = left;
			return true;
		}
		i = (i + 1) & (c->seen_cap - 1);
	}
	if (c->seen_n * 2 >= c->seen_cap)
		return true;		/* full: explore without remembering */
	c->seen[i] = h;
	c->seen_left[i] = left;
	c->seen_n++;
	return true;
}

/* ---- steps ---- */

static u64 *table(struct pk_checker *c, u32 v)
{
	return (u64 *)(c->cfg.gmem + c->cfg.table_gpa[v]);
}

static u64 mark(struct pk_checker *c, u32 v)
{
	return *(u64 *)(c->cfg.gmem + c->cfg.table_gpa[v] + PK_CHECK_MARK_OFFSET);
}

static int reg_index(const struct pk_check_cfg *cfg, u32 msr)
{
	for (u32 i = 0; i < cfg->nr_regs; i++)
		if (cfg->regs[i] == msr)
			return (int)i;
	return -1;
}

/* VM-exits the vCPUs took since the last normalize() (which clears their stats). */
static u64 exits_taken(struct pk_checker *c)
{
	u64 n = 0;

	for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
		n += c->cfg.vcpus[v]->stat.exits + c->cfg.vcpus[v]->stat.fastpath_exits;
	return n;
}

static int step_vcpu_cpu(struct pk_checker *c, u32 v)
{
	return pk_vcpu_cpu(c->cfg.vcpus[v]);
}

/* A vCPU of the other VM than v's, or -1 (PK_INJ_PREEMPT_VM needs one). */
static int other_vm_vcpu(const struct pk_check_cfg *cfg, u32 v)
{
	for (u32 o = 0; o < cfg->nr_vcpus; o++)
		if (cfg->vm_of[o] != cfg->vm_of[v])
			return (int)o;
	return -1;
}

/*
 * How vCPU v's run ended, as its guest program says: a sync (fine), a report on the
 * violation port (register, what it wrote, what it found), or any other exit, which
 * its program never takes. Then the mark it left says what it was doing: a SYSCALL that
 * went to a foreign LSTAR, a SYSRETQ that faulted on STAR, or a SYSCALL that should
 * have raised #UD (EFER.SCE clear) and did not.
 */
static void check_run_exit(struct pk_checker *c, u32 v, u32 cpu)
{
	struct pk_machine *m = c->m;
	const struct pk_check_cfg *cfg = &c->cfg;
	struct kvm_vcpu *vcpu = cfg->vcpus[v];
	struct kvm_run *run = pk_vcpu_run_struct(vcpu);
	u64 act;
	int i;

	if (run->exit_reason == KVM_EXIT_IO && run->io.port == cfg->sync_port)
		return;
	if (run->exit_reason == KVM_EXIT_IO && run->io.port == cfg->violation_port) {
		pk_oracle_violation(m, PK_OBS_GUEST, cpu, (u32)vcpu->arch.regs[VCPU_REGS_RDI],
				    vcpu->arch.regs[VCPU_REGS_RSI], vcpu->arch.regs[VCPU_REGS_RDX]);
		return;
	}
	/* An instruction fetch outside every slot is an MMIO exit at the address. */
	act = run->exit_reason == KVM_EXIT_MMIO ? run->mmio.phys_addr : run->exit_reason;
	switch (mark(c, v)) {
	case PK_MARK_SYSCALL:
		i = reg_index(cfg, MSR_LSTAR);
		pk_oracle_violation(m, PK_OBS_EXIT, cpu, MSR_LSTAR, i < 0 ? 0 : table(c, v)[i], act);
		return;
	case PK_MARK_SYSRET:
		i = reg_index(cfg, MSR_STAR);
		pk_oracle_violation(m, PK_OBS_EXIT, cpu, MSR_STAR, i < 0 ? 0 : table(c, v)[i], act);
		return;
	case PK_MARK_SYSCALL_UD:
		pk_oracle_violation(m, PK_OBS_EXIT, cpu, PK_REG_EFER_SCE, 0, act);
		return;
	default:
		pk_oracle_violation(m, PK_OBS_EXIT, cpu, 0, KVM_EXIT_IO, run->exit_reason);
	}
}

static void apply_run(struct pk_checker *c, const struct pk_step *s, u32 *points)
{
	struct pk_machine *m = c->m;
	const struct pk_check_cfg *cfg = &c->cfg;
	struct kvm_vcpu *vcpu = cfg->vcpus[s->vcpu];
	u32 cpu = step_vcpu_cpu(c, s->vcpu);
	int other = other_vm_vcpu(cfg, s->vcpu);
	bool other_ran;

	pk_inject_set_other_vcpu(m, other >= 0 ? cfg->vcpus[other] : NULL, cfg->run_budget);
	pk_inject_arm(m, cpu, s->inject ? s->at : 0, s->inject);
	pk_vcpu_run(vcpu, cfg->run_budget);
	if (points)
		*points = m->inject.points;
	c->fired[s->inject] += m->inject.fired;
	c->refused += m->inject.refused;
	other_ran = m->inject.other_ran;
	pk_inject_disarm(m);
	if (m->inject.dead)	/* a CPU went down: only what was seen until then counts */
		return;
	check_run_exit(c, s->vcpu, cpu);
	if (other_ran)
		check_run_exit(c, (u32)other, cpu);
}

static void apply_msrs(struct pk_checker *c, const struct pk_step *s, bool set)
{
	struct pk_machine *m = c->m;
	const struct pk_check_cfg *cfg = &c->cfg;
	struct kvm_vcpu *vcpu = cfg->vcpus[s->vcpu];
	struct kvm_msr_entry e[PK_CHECK_MAX_REGS];
	u64 *t = table(c, s->vcpu);
	u32 n = cfg->nr_regs, cpu = step_vcpu_cpu(c, s->vcpu);

	for (u32 i = 0; i < n; i++) {
		e[i].index = cfg->regs[i];
		e[i].data = set ? t[i] ^ cfg->delta[i] : 0;
	}
	if ((set ? pk_vcpu_set_msrs(vcpu, e, n) : pk_vcpu_get_msrs(vcpu, e, n)) != (int)n) {
		pk_oracle_violation(m, PK_OBS_GET_MSRS, cpu, 0, n, 0);
		return;
	}
	for (u32 i = 0; i < n; i++) {
		if (set)
			t[i] = e[i].data;
		else if (e[i].data != t[i])
			pk_oracle_violation(m, PK_OBS_GET_MSRS, cpu, cfg->regs[i], t[i], e[i].data);
	}
}

/* 0: fine, 1: violation, 2: this branch ends (a CPU went down under a running path). */
static int apply(struct pk_checker *c, const struct pk_step *s, u32 *points)
{
	struct pk_machine *m = c->m;
	const struct pk_check_cfg *cfg = &c->cfg;
	struct kvm_vcpu *vcpu = s->vcpu < cfg->nr_vcpus ? cfg->vcpus[s->vcpu] : NULL;
	u64 bugs = m->host_bugs;

	if (!vcpu && (s->kind <= PK_STEP_MIGRATE || s->kind == PK_STEP_VMM_TASK))
		return 2;
	if (s->kind != PK_STEP_VMM_TASK && s->kind >= PK_STEP_MIGRATE && s->cpu >= m->nr_cpus)
		return 2;
	if (s->kind == PK_STEP_KTHREAD && pk_host_run_kthread(m, s->cpu))
		return 2;
	switch (s->kind) {
	case PK_STEP_RUN:
		apply_run(c, s, points);
		if (m->inject.dead)
			return m->oracle && m->oracle->nr_violations ? 1 : 2;
		break;
	case PK_STEP_SET_MSRS:
	case PK_STEP_GET_MSRS:
		apply_msrs(c, s, s->kind == PK_STEP_SET_MSRS);
		break;
	case PK_STEP_MIGRATE:
		if ((int)s->cpu == step_vcpu_cpu(c, s->vcpu))
			return 2;
		pk_vcpu_migrate(vcpu, s->cpu);
		break;
	case PK_STEP_OTHER:
		pk_host_run_other(m, s->cpu);
		break;
	case PK_STEP_DISABLE: {
		struct pk_cpu *saved = pk_this_cpu;

		pk_kvm_disable_virtualization_cpu(m, s->cpu);
		/* ... and back online: KVM snapshots the host values again. */
		pk_this_cpu = &m->cpu[s->cpu];
		if (!kvm_arch_enable_virtualization_cpu())
			((struct kvm_x86_global *)m->kvm_global)->virtualization_enabled[s->cpu] = true;
		pk_this_cpu = saved;
		break;
	}
	case PK_STEP_USER_INSNS:
		if (pk_host_user_insns(m, s->cpu))
			return 2;
		break;
	case PK_STEP_VMM_TASK:
		if (pk_host_task_change(m, (u32)pk_vcpu_task(vcpu), s->arg))
			return 2;
		break;
	case PK_STEP_KTHREAD:		/* applied above */
		break;
	default:
		return 2;
	}
	if (m->host_bugs != bugs)
		pk_oracle_violation(m, PK_OBS_HOST_BUG, 0, 0, bugs, m->host_bugs);
	return m->oracle && m->oracle->nr_violations ? 1 : 0;
}

/* The steps allowed from the current state, without injections. */
#define PK_MAX_BASE_STEPS	128
static u32 base_steps(struct pk_checker *c, struct pk_step *out)
{
	const struct pk_check_cfg *cfg = &c->cfg;
	u32 n = 0, ncpu = c->m->nr_cpus, mask = cfg->step_mask;

#define STEP(k, v, cpu_, arg_) \
	(out[n++] = (struct pk_step){ .kind = (k), .vcpu = (v), .cpu = (cpu_), .arg = (arg_) })
	for (u32 v = 0; v < cfg->nr_vcpus; v++) {
		if (mask & BIT(PK_STEP_RUN))
			STEP(PK_STEP_RUN, v, 0, 0);
		if (mask & BIT(PK_STEP_SET_MSRS))
			STEP(PK_STEP_SET_MSRS, v, 0, 0);
		if (mask & BIT(PK_STEP_GET_MSRS))
			STEP(PK_STEP_GET_MSRS, v, 0, 0);
		if (mask & BIT(PK_STEP_MIGRATE))
			for (u32 cpu = 0; cpu < ncpu; cpu++)
				if ((int)cpu != step_vcpu_cpu(c, v))
					STEP(PK_STEP_MIGRATE, v, cpu, 0);
		if (mask & BIT(PK_STEP_VMM_TASK))
			for (u32 how = 0; how < PK_NR_TASK_CHANGES; how++)
				if (how != PK_TASK_WRFSBASE || c->m->model.has_fsgsbase)
					STEP(PK_STEP_VMM_TASK, v, 0, how);
	}
	for (u32 cpu = 0; cpu < ncpu; cpu++) {
		if (mask & BIT(PK_STEP_OTHER))
			STEP(PK_STEP_OTHER, 0, cpu, 0);
		if (mask & BIT(PK_STEP_DISABLE))
			STEP(PK_STEP_DISABLE, 0, cpu, 0);
		if (mask & BIT(PK_STEP_USER_INSNS))
			STEP(PK_STEP_USER_INSNS, 0, cpu, 0);
		if (mask & BIT(PK_STEP_KTHREAD))
			STEP(PK_STEP_KTHREAD, 0, cpu, 0);
	}
#undef STEP
	return n;
}

/* Where an event of `kind` can be taken before host instruction p + 1 of a run. */
static bool eligible(u32 kind, u32 p, const u64 *irq_ok, const u64 *preempt_ok)
{
	const u64 *ok;

	switch (pk_inject_class(kind)) {
	case PK_INJ_CLASS_IRQ: ok = irq_ok; break;
	case PK_INJ_CLASS_PREEMPT: ok = preempt_ok; break;
	default: return true;
	}
	return p < PK_INJ_OK_POINTS && (ok[p / 64] & (1ULL << (p % 64)));
}

/* ---- the public face ---- */

struct pk_checker *pk_checker_new(struct pk_machine *m, const struct pk_check_cfg *cfg)
{
	struct pk_checker *c = calloc(1, sizeof(*c));

	if (!c || cfg->nr_vcpus == 0 || cfg->nr_vcpus > PK_CHECK_MAX_VCPUS ||
	    cfg->nr_regs > PK_CHECK_MAX_REGS)
		goto fail;
	for (u32 v = 0; v < cfg->nr_vcpus; v++)
		if (cfg->table_gpa[v] + 8ULL * cfg->nr_regs > cfg->gmem_size)
			goto fail;
	c->m = m;
	c->cfg = *cfg;
	c->mach_bytes = offsetof(struct pk_machine, kmem) + m->kmem_used;
	if (cfg->gmem_dirty_hi > cfg->gmem_size || cfg->gmem_dirty_lo > cfg->gmem_dirty_hi)
		goto fail;
	c->gmem_bytes = cfg->gmem_dirty_hi - cfg->gmem_dirty_lo;
	c->snap_bytes = c->mach_bytes + c->gmem_bytes;
	c->root = malloc(c->snap_bytes);
	if (!c->root)
		goto fail;
	pk_oracle_enable(m, true);
	pk_oracle_reset(m);
	normalize(c);
	snap_save(c, c->root);
	return c;
fail:
	free(c);
	return NULL;
}

void pk_checker_free(struct pk_checker *c)
{
	if (!c)
		return;
	free(c->root);
	for (u32 i = 0; i <= PK_CHECK_MAX_STEPS; i++)
		free(c->stack[i]);
	free(c->seen);
	free(c->seen_left);
	free(c);
}

void pk_checker_reset(struct pk_checker *c)
{
	snap_restore(c, c->root);
}

int pk_checker_replay(struct pk_checker *c, const struct pk_step *steps, u32 n,
		      struct pk_violation *v, bool trace)
{
	struct pk_machine *m = c->m;
	int r = 0;

	snap_restore(c, c->root);
	for (u32 i = 0; i < n && r == 0; i++) {
		if (trace)
			pk_trace(m, PK_TR_STEP, 0, i, steps[i].kind);
		pk_attr_reset(m, i);
		r = apply(c, &steps[i], NULL);
	}
	if (r == 1 && v)
		*v = m->oracle->first;
	return r == 1;
}

int pk_checker_points(struct pk_checker *c, const struct pk_step *steps, u32 idx,
		      u64 irq_ok[PK_INJ_OK_WORDS], u64 preempt_ok[PK_INJ_OK_WORDS])
{
	struct pk_machine *m = c->m;
	struct pk_step s;
	u32 points = 0;

	snap_restore(c, c->root);
	for (u32 i = 0; i < idx; i++)
		if (apply(c, &steps[i], NULL))
			return -1;
	s = steps[idx];
	s.inject = PK_INJ_NONE;
	s.at = 0;
	if (s.kind != PK_STEP_RUN)
		return 0;
	if (apply(c, &s, &points) == 2)
		return -1;
	memcpy(irq_ok, m->inject.irq_ok, sizeof(m->inject.irq_ok));
	memcpy(preempt_ok, m->inject.preempt_ok, sizeof(m->inject.preempt_ok));
	return (int)points;
}

static u64 rng_next(struct pk_checker *c)
{
	u64 x = c->rng;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return c->rng = x;
}

struct explore {
	struct pk_checker *c;
	struct pk_check_result *res;
	u32 bound;			/* of the current iteration */
	u64 max_states;
	struct pk_step path[PK_CHECK_MAX_STEPS];
	double deadline;
	bool stop;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void found(struct explore *x, u32 len)
{
	struct pk_check_result *res = x->res;

	res->violated = 1;
	res->violation = x->c->m->oracle->first;
	res->nr_steps = len;
	memcpy(res->steps, x->path, len * sizeof(x->path[0]));
	x->stop = true;
}

/* One step counted in the result; true if the deadline has passed. */
static void count_step(struct explore *x)
{
	x->res->events++;
	x->res->exits += exits_taken(x->c);
	if ((x->res->events & 255) == 0 && x->deadline && now() > x->deadline)
		x->stop = true;
}

static void dfs(struct explore *x, u32 d);

/* Where each injection kind can fire in a run, as seen while counting its points. */
struct eligible {
	u64 irq_ok[PK_INJ_OK_WORDS], preempt_ok[PK_INJ_OK_WORDS];
};

/* Try `s` from the state at depth d; recurse from the result. */
static void try_step(struct explore *x, u32 d, const struct pk_step *s, u32 *points,
		     struct eligible *el)
{
	struct pk_checker *c = x->c;
	int r;

	snap_restore(c, c->stack[d]);
	r = apply(c, s, points);
	if (el) {
		memcpy(el->irq_ok, c->m->inject.irq_ok, sizeof(el->irq_ok));
		memcpy(el->preempt_ok, c->m->inject.preempt_ok, sizeof(el->preempt_ok));
	}
	count_step(x);
	x->path[d] = *s;
	if (r == 1) {
		found(x, d + 1);
		return;
	}
	if (r == 2 || d + 1 >= x->bound || x->stop)
		return;
	normalize(c);
	{
		u64 before = c->seen_n;

		if (!seen_insert(c, state_hash(c), x->bound - (d + 1)))
			return;
		if (c->seen_n != before)
			x->res->states++;
	}
	if (x->res->states >= x->max_states) {
		x->stop = true;
		return;
	}
	dfs(x, d + 1);
}

/* Every injected variant of run step `s` (whose plain run counted `points`). */
static void try_injections(struct explore *x, u32 d, const struct pk_step *s, u32 points,
			   const struct eligible *el)
{
	const struct pk_check_cfg *cfg = &x->c->cfg;

	for (u32 k = PK_INJ_NMI; k < PK_NR_INJ && !x->stop; k++) {
		if (!(cfg->inject_mask & BIT(k)))
			continue;
		if (k == PK_INJ_PREEMPT_VM && other_vm_vcpu(cfg, s->vcpu) < 0)
			continue;
		for (u32 at = 1; at <= points && !x->stop; at++) {
			struct pk_step t = *s;

			if (!eligible(k, at - 1, el->irq_ok, el->preempt_ok))
				continue;
			t.inject = k;
			t.at = at;
			try_step(x, d, &t, NULL, NULL);
		}
	}
}

static void dfs(struct explore *x, u32 d)
{
	struct pk_checker *c = x->c;
	struct pk_step steps[PK_MAX_BASE_STEPS];
	u32 n;

	snap_save(c, c->stack[d]);
	n = base_steps(c, steps);
	for (u32 i = 0; i < n && !x->stop; i++) {
		struct eligible el;
		u32 points = 0;

		try_step(x, d, &steps[i], &points, &el);
		if (steps[i].kind == PK_STEP_RUN && c->cfg.inject_mask)
			try_injections(x, d, &steps[i], points, &el);
	}
}

/* Random walks from the initial state, beyond the exhaustive bound. */
static void random_walks(struct explore *x, u64 walks, u32 walk_len, u64 seed)
{
	struct pk_checker *c = x->c;
	struct pk_check_result *res = x->res;

	c->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
	for (u64 w = 0; w < walks && !x->stop; w++) {
		snap_restore(c, c->root);
		res->walks++;
		for (u32 d = 0; d < walk_len && !x->stop; d++) {
			struct pk_step steps[PK_MAX_BASE_STEPS];
			u32 n = base_steps(c, steps);
			struct pk_step s = steps[rng_next(c) % n];
			int r;

			if (s.kind == PK_STEP_RUN && c->cfg.inject_mask && (rng_next(c) & 1)) {
				u32 k = 1 + rng_next(c) % (PK_NR_INJ - 1);

				if (c->cfg.inject_mask & BIT(k)) {
					s.inject = k;
					s.at = 1 + rng_next(c) % 200;
				}
			}
			r = apply(c, &s, NULL);
			count_step(x);
			for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
				memset(&c->cfg.vcpus[v]->stat, 0, sizeof(c->cfg.vcpus[v]->stat));
			x->path[d] = s;
			if (r == 1) {
				found(x, d + 1);
				break;
			}
			if (r == 2)
				break;
		}
	}
}

int pk_checker_explore(struct pk_checker *c, u32 bound, u64 max_states, u64 walks,
		       u32 walk_len, u64 seed, double seconds, struct pk_check_result *res)
{
	struct explore x = { .c = c, .res = res, .max_states = max_states };
	double start = now();

	memset(res, 0, sizeof(*res));
	memset(c->fired, 0, sizeof(c->fired));
	c->refused = 0;
	if (bound > PK_CHECK_MAX_STEPS || walk_len > PK_CHECK_MAX_STEPS)
		return -EINVAL;
	for (u32 i = 0; i <= bound && i <= PK_CHECK_MAX_STEPS; i++) {
		if (!c->stack[i] && !(c->stack[i] = malloc(c->snap_bytes)))
			return -ENOMEM;
	}
	free(c->seen);
	free(c->seen_left);
	c->seen_cap = 1;
	while (c->seen_cap < max_states * 2 + 2)
		c->seen_cap <<= 1;
	c->seen = calloc(c->seen_cap, sizeof(u64));
	c->seen_left = calloc(c->seen_cap, 1);
	if (!c->seen || !c->seen_left)
		return -ENOMEM;
	x.deadline = seconds > 0 ? start + seconds : 0;

	/* Iterative deepening: all of depth b (injections included) before depth b + 1. */
	for (u32 b = 1; b <= bound && !x.stop; b++) {
		memset(c->seen, 0, c->seen_cap * sizeof(u64));
		c->seen_n = 0;
		res->states = 0;
		x.bound = b;
		snap_restore(c, c->root);
		dfs(&x, 0);
		if (!x.stop)
			res->depth_done = b;
	}
	random_walks(&x, walks, walk_len, seed);
	memcpy(res->injected, c->fired, sizeof(res->injected));
	res->refused = c->refused;
	snap_restore(c, c->root);
	return 0;
}
