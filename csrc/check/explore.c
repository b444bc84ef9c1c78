// SPDX-License-Identifier: MIT
/*
 * The checker's exploration loop: steps (userspace ioctls, scheduling, CPU events, each
 * run optionally with one host event injected before its n-th host instruction) applied
 * to snapshots of the whole machine. Depth-first and exhaustive up to a bound, with
 * states deduplicated by hash; then random walks. Stops at the first violation the
 * oracle reports, with the steps that led to it.
 */
#include <stdlib.h>
#include <time.h>

#include "pykvm/check.h"
#include "pykvm/printk.h"

int kvm_arch_enable_virtualization_cpu(void);

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
	bool stop_requested;		/* pk_checker_stop(), from another thread */
};

/* ---- snapshots ---- */

static void snap_save(struct pk_checker *c, u8 *buf)
{
	memcpy(buf, c->m, c->mach_bytes);
	memcpy(buf + c->mach_bytes, c->cfg.gmem + c->cfg.gmem_dirty_lo, c->gmem_bytes);
}

static void snap_restore(struct pk_checker *c, const u8 *buf)
{
	struct pk_trace *trace = c->m->trace;

	memcpy(c->m, buf, c->mach_bytes);
	memcpy(c->cfg.gmem + c->cfg.gmem_dirty_lo, buf + c->mach_bytes, c->gmem_bytes);
	c->m->trace = trace;
}

/* Fields that count rather than describe: cleared so equal states hash equal. */
static void normalize(struct pk_checker *c)
{
	struct pk_machine *m = c->m;

	for (u32 i = 0; i < m->nr_cpus; i++) {
		m->cpu[i].tsc = 0;
		m->cpu[i].insn_budget = UINT64_MAX;
	}
	for (u32 t = 0; t < m->host.nr_tasks; t++)
		pk_task(m, t)->timer_budget = UINT64_MAX;
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

/* The guest's next value for register i: its current one with one bit flipped. */
static u64 next_value(u32 msr, u64 cur)
{
	switch (msr) {
	case MSR_IA32_SPEC_CTRL: return cur ^ SPEC_CTRL_IBRS;
	case MSR_IA32_TSX_CTRL: return cur ^ TSX_CTRL_RTM_DISABLE;
	case MSR_EFER: return cur ^ EFER_SCE;
	case MSR_TSC_AUX: return cur ^ 0x10;
	case MSR_SYSCALL_MASK: return cur ^ 0x100;
	case MSR_IA32_SYSENTER_CS: return cur ^ 0x8;
	case MSR_STAR: return cur ^ 0x10000000ULL;
	default: return cur ^ 0x1000;
	}
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

/* 0: fine, 1: violation, 2: this branch ends (a CPU went down under a running path). */
static int apply(struct pk_checker *c, const struct pk_step *s, u32 *points)
{
	struct pk_machine *m = c->m;
	const struct pk_check_cfg *cfg = &c->cfg;
	struct kvm_vcpu *vcpu = s->vcpu < cfg->nr_vcpus ? cfg->vcpus[s->vcpu] : NULL;
	u64 bugs = m->host_bugs;
	struct kvm_msr_entry e[PK_CHECK_MAX_REGS];
	u32 n = cfg->nr_regs;

	if (!vcpu && (s->kind <= PK_STEP_MIGRATE))
		return 2;
	switch (s->kind) {
	case PK_STEP_RUN: {
		struct kvm_run *run = pk_vcpu_run_struct(vcpu);
		u32 cpu = step_vcpu_cpu(c, s->vcpu);

		if (s->inject)
			pk_inject_arm(m, cpu, s->at, s->inject);
		else
			pk_inject_arm(m, cpu, 0, PK_INJ_NONE);
		pk_vcpu_run(vcpu, cfg->run_budget);
		if (points)
			*points = m->inject.points;
		pk_inject_disarm(m);
		if (m->inject.dead)	/* a CPU went down: only what was seen until then counts */
			return m->oracle && m->oracle->nr_violations ? 1 : 2;
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == cfg->violation_port) {
			pk_oracle_violation(m, PK_OBS_GUEST, cpu, (u32)vcpu->arch.regs[VCPU_REGS_RDI],
					    vcpu->arch.regs[VCPU_REGS_RSI],
					    vcpu->arch.regs[VCPU_REGS_RDX]);
		} else if (run->exit_reason != KVM_EXIT_IO || run->io.port != cfg->sync_port) {
			/* The guest program only syncs: anything else is the switch's fault. */
			pk_oracle_violation(m, PK_OBS_GUEST, cpu, 0, KVM_EXIT_IO, run->exit_reason);
		}
		break;
	}
	case PK_STEP_SET_MSRS:
		for (u32 i = 0; i < n; i++) {
			e[i].index = cfg->regs[i];
			e[i].data = next_value(cfg->regs[i], table(c, s->vcpu)[i]);
		}
		if (pk_vcpu_set_msrs(vcpu, e, n) != (int)n)
			pk_oracle_violation(m, PK_OBS_GET_MSRS, step_vcpu_cpu(c, s->vcpu), 0, n, 0);
		for (u32 i = 0; i < n; i++)
			table(c, s->vcpu)[i] = e[i].data;
		break;
	case PK_STEP_GET_MSRS:
		for (u32 i = 0; i < n; i++)
			e[i].index = cfg->regs[i];
		if (pk_vcpu_get_msrs(vcpu, e, n) != (int)n) {
			pk_oracle_violation(m, PK_OBS_GET_MSRS, step_vcpu_cpu(c, s->vcpu), 0, n, 0);
			break;
		}
		for (u32 i = 0; i < n; i++)
			if (e[i].data != table(c, s->vcpu)[i])
				pk_oracle_violation(m, PK_OBS_GET_MSRS, step_vcpu_cpu(c, s->vcpu),
						    cfg->regs[i], table(c, s->vcpu)[i], e[i].data);
		break;
	case PK_STEP_MIGRATE:
		if ((int)s->cpu == step_vcpu_cpu(c, s->vcpu) || s->cpu >= m->nr_cpus)
			return 2;
		pk_vcpu_migrate(vcpu, s->cpu);
		break;
	case PK_STEP_OTHER:
		if (s->cpu >= m->nr_cpus)
			return 2;
		pk_host_run_other(m, s->cpu);
		break;
	case PK_STEP_DISABLE: {
		struct pk_cpu *saved = pk_this_cpu;

		if (s->cpu >= m->nr_cpus)
			return 2;
		pk_kvm_disable_virtualization_cpu(m, s->cpu);
		/* ... and back online: KVM snapshots the host values again. */
		pk_this_cpu = &m->cpu[s->cpu];
		if (!kvm_arch_enable_virtualization_cpu())
			((struct kvm_x86_global *)m->kvm_global)->virtualization_enabled[s->cpu] = true;
		pk_this_cpu = saved;
		break;
	}
	default:
		return 2;
	}
	if (m->host_bugs != bugs)
		pk_oracle_violation(m, PK_OBS_HOST_BUG, 0, 0, bugs, m->host_bugs);
	return m->oracle && m->oracle->nr_violations ? 1 : 0;
}

/* The steps allowed from the current state, without injections. */
static u32 base_steps(struct pk_checker *c, struct pk_step *out)
{
	const struct pk_check_cfg *cfg = &c->cfg;
	u32 n = 0, ncpu = c->m->nr_cpus;

	for (u32 v = 0; v < cfg->nr_vcpus; v++) {
		if (cfg->step_mask & BIT(PK_STEP_RUN))
			out[n++] = (struct pk_step){ PK_STEP_RUN, v, 0, 0, 0 };
		if (cfg->step_mask & BIT(PK_STEP_SET_MSRS))
			out[n++] = (struct pk_step){ PK_STEP_SET_MSRS, v, 0, 0, 0 };
		if (cfg->step_mask & BIT(PK_STEP_GET_MSRS))
			out[n++] = (struct pk_step){ PK_STEP_GET_MSRS, v, 0, 0, 0 };
		if (cfg->step_mask & BIT(PK_STEP_MIGRATE))
			for (u32 cpu = 0; cpu < ncpu; cpu++)
				if ((int)cpu != step_vcpu_cpu(c, v))
					out[n++] = (struct pk_step){ PK_STEP_MIGRATE, v, cpu, 0, 0 };
	}
	for (u32 cpu = 0; cpu < ncpu; cpu++) {
		if (cfg->step_mask & BIT(PK_STEP_OTHER))
			out[n++] = (struct pk_step){ PK_STEP_OTHER, 0, cpu, 0, 0 };
		if (cfg->step_mask & BIT(PK_STEP_DISABLE))
			out[n++] = (struct pk_step){ PK_STEP_DISABLE, 0, cpu, 0, 0 };
	}
	return n;
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

/* Ask a running pk_checker_explore() (on another thread) to stop after its current step. */
void pk_checker_stop(struct pk_checker *c)
{
	__atomic_store_n(&c->stop_requested, true, __ATOMIC_RELAXED);
}

static bool stop_requested(struct pk_checker *c)
{
	return __atomic_load_n(&c->stop_requested, __ATOMIC_RELAXED);
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
		r = apply(c, &steps[i], NULL);
	}
	if (r == 1 && v)
		*v = m->oracle->first;
	return r == 1;
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
	u32 bound;
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

/* Try `s` from the state at depth d; recurse from the result. */
static void dfs(struct explore *x, u32 d);

/* Where each injection kind can fire in a run, as seen while counting its points. */
struct eligible {
	u64 irq_ok[4], preempt_ok[4];
};

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
	x->res->events++;
	x->res->exits += exits_taken(c);
	if ((x->res->events & 255) == 0 && x->deadline && now() > x->deadline)
		x->stop = true;
	if (stop_requested(c)) {
		x->res->interrupted = 1;
		x->stop = true;
	}
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

static void dfs(struct explore *x, u32 d)
{
	struct pk_checker *c = x->c;
	struct pk_step steps[64];
	u32 n;

	snap_save(c, c->stack[d]);
	n = base_steps(c, steps);
	for (u32 i = 0; i < n && !x->stop; i++) {
		struct eligible el;
		u32 points = 0;

		try_step(x, d, &steps[i], &points, &el);
		if (steps[i].kind != PK_STEP_RUN || !c->cfg.inject_mask)
			continue;
		/*
		 * The same run with one host event before each of its host instructions, where
		 * that event can be taken (a disable IPI needs IRQs on, a preemption a
		 * preemptible vCPU thread; past 256 points, everywhere).
		 */
		for (u32 k = PK_INJ_NMI; k < PK_NR_INJ && !x->stop; k++) {
			const u64 *ok = k == PK_INJ_DISABLE_IPI ? el.irq_ok :
					k == PK_INJ_PREEMPT ? el.preempt_ok : NULL;

			if (!(c->cfg.inject_mask & BIT(k)))
				continue;
			for (u32 at = 1; at <= points && !x->stop; at++) {
				struct pk_step s = steps[i];
				u32 p = at - 1;

				if (ok && p < 256 && !(ok[p / 64] & (1ULL << (p % 64))))
					continue;
				s.inject = k;
				s.at = at;
				try_step(x, d, &s, NULL, NULL);
			}
		}
	}
}

int pk_checker_explore(struct pk_checker *c, u32 bound, u64 max_states, u64 walks,
		       u32 walk_len, u64 seed, double seconds, struct pk_check_result *res)
{
	struct explore x = { .c = c, .res = res, .bound = bound, .max_states = max_states };
	double start = now();

	memset(res, 0, sizeof(*res));
	if (bound > PK_CHECK_MAX_STEPS || walk_len > PK_CHECK_MAX_STEPS)
		return pk_err(-EINVAL, "bound %u and walk length %u must be <= %d", bound, walk_len,
			      PK_CHECK_MAX_STEPS);
	__atomic_store_n(&c->stop_requested, false, __ATOMIC_RELAXED);
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
	c->seen_n = 0;
	if (!c->seen || !c->seen_left)
		return -ENOMEM;
	x.deadline = seconds > 0 ? start + seconds : 0;

	snap_restore(c, c->root);
	if (bound) {
		dfs(&x, 0);
		if (!x.stop)
			res->depth_done = bound;
	}

	/* Random walks beyond the bound. */
	c->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
	for (u64 w = 0; w < walks && !x.stop; w++) {
		snap_restore(c, c->root);
		res->walks++;
		for (u32 d = 0; d < walk_len && !x.stop; d++) {
			struct pk_step steps[64];
			u32 n = base_steps(c, steps);
			struct pk_step s = steps[rng_next(c) % n];
			int r;

			if (s.kind == PK_STEP_RUN && c->cfg.inject_mask && (rng_next(c) & 1)) {
				u32 k = 1 + rng_next(c) % (PK_NR_INJ - 1);

				if (c->cfg.inject_mask & BIT(k)) {
					s.inject = k;
					s.at = 1 + rng_next(c) % 80;
				}
			}
			r = apply(c, &s, NULL);
			res->events++;
			res->exits += exits_taken(c);
			for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
				memset(&c->cfg.vcpus[v]->stat, 0, sizeof(c->cfg.vcpus[v]->stat));
			x.path[d] = s;
			if (r == 1) {
				found(&x, d + 1);
				break;
			}
			if (r == 2)
				break;
			if ((res->events & 255) == 0 && x.deadline && now() > x.deadline)
				x.stop = true;
			if (stop_requested(c)) {
				res->interrupted = 1;
				x.stop = true;
			}
		}
	}
	snap_restore(c, c->root);
	return 0;
}
