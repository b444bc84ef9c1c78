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
#include "pykvm/printk.h"

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
	u32 *seen_node;			/* PK_REDUCE_SLEEP: its breadth-first node */
	u64 seen_cap, seen_n;
	u64 rng;
	bool stop_requested;		/* pk_checker_stop(), from another thread */
	u64 fired[PK_NR_INJ];		/* host events taken, by kind */
	u64 refused;			/* armed where the kernel would not take them */
	u32 reduce;			/* PK_REDUCE_* */
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

/*
 * Four independent lanes, so the hash runs at memory speed rather than at the latency of
 * one dependent multiply per word. Each lane takes a word as xxHash64's round does
 * (Y. Collet, github.com/Cyan4973/xxHash, xxhash.h: XXH64_round): multiply, add, rotate,
 * multiply. The rotation matters: with multiply and xor alone, a difference in a word's
 * high bits never reaches the lower ones, and two such differences in one lane cancel
 * about one time in four, which merged distinct states (two saved CR3 values differing in
 * bit 61 made the state count depend on where the host put the machine).
 */
#define HASH_P1 0x9e3779b185ebca87ULL
#define HASH_P2 0xc2b2ae3d27d4eb4fULL
#define HASH_P3 0x165667b19e3779f9ULL

static inline u64 rotl64(u64 x, unsigned int r)
{
	return x << r | x >> (64 - r);
}

static inline u64 hash_round(u64 acc, u64 w)
{
	return rotl64(acc + w * HASH_P2, 31) * HASH_P1;
}

static u64 hash_bytes(u64 h, const void *p, size_t n)
{
	const u8 *b = p;
	u64 l0 = h + HASH_P1 + HASH_P2, l1 = h + HASH_P2, l2 = h, l3 = h - HASH_P1, w[4];

	for (; n >= 32; n -= 32, b += 32) {
		memcpy(w, b, 32);
		l0 = hash_round(l0, w[0]);
		l1 = hash_round(l1, w[1]);
		l2 = hash_round(l2, w[2]);
		l3 = hash_round(l3, w[3]);
	}
	h = rotl64(l0, 1) + rotl64(l1, 7) + rotl64(l2, 12) + rotl64(l3, 18);
	for (; n >= 8; n -= 8, b += 8) {
		memcpy(w, b, 8);
		h = rotl64(h ^ hash_round(0, w[0]), 27) * HASH_P1 + HASH_P3;
	}
	while (n--)
		h = rotl64(h ^ (*b++ * HASH_P3), 11) * HASH_P1;
	h ^= h >> 33;
	h *= HASH_P2;
	h ^= h >> 29;
	h *= HASH_P3;
	return h ^ (h >> 32);
}

u64 pk_check_hash(const void *p, size_t n, u64 seed)
{
	return hash_bytes(seed, p, n);
}

/*
 * The state hash made comparable between processes (pykvm/swarm.py): a word that points
 * into the machine object, into the guest memory or into this module's code and data is
 * hashed as its offset there (with a tag per area), not as an address, so the same state
 * hashes equal in every process (and in every checker with the same configuration).
 */
struct rebase {
	u64 lo[3], len[3];
	u64 min, span;			/* all three areas lie in [min, min + span) */
};

static void rebase_init(struct pk_checker *c, struct rebase *rb)
{
	/* The module's code and data lie within 32 MiB of any of its functions. */
	u64 text = (u64)(uintptr_t)&pk_checker_new, hi = 0;

	*rb = (struct rebase){
		.lo = { (u64)(uintptr_t)c->m, (u64)(uintptr_t)c->cfg.gmem, text - (32ULL << 20) },
		/* the machine object runs on into its kernel memory (kmem[]) */
		.len = { offsetof(struct pk_machine, kmem) + c->m->kmem_used, c->cfg.gmem_size,
			 64ULL << 20 },
		.min = UINT64_MAX,
	};
	for (u32 a = 0; a < 3; a++) {
		if (rb->lo[a] < rb->min)
			rb->min = rb->lo[a];
		if (rb->lo[a] + rb->len[a] > hi)
			hi = rb->lo[a] + rb->len[a];
	}
	rb->span = hi - rb->min;
}

static u64 hash_rebased(u64 h, const struct rebase *rb, const void *p, size_t n)
{
	u64 buf[512];
	const u8 *b = p;

	while (n) {
		size_t chunk = n < sizeof(buf) ? n : sizeof(buf), words = chunk / 8;

		memcpy(buf, b, chunk);
		for (size_t i = 0; i < words; i++) {
			/* Most words are small numbers or guest values: one compare says so. */
			if (likely(buf[i] - rb->min >= rb->span))
				continue;
			for (u32 a = 0; a < 3; a++)
				if (buf[i] - rb->lo[a] < rb->len[a]) {
					buf[i] = (buf[i] - rb->lo[a]) | ((u64)(a + 1) << 60);
					break;
				}
		}
		h = hash_bytes(h, buf, chunk);
		b += chunk;
		n -= chunk;
	}
	return h;
}

static u64 hash_region(u64 h, const struct rebase *rb, const void *p, size_t n)
{
	return rb ? hash_rebased(h, rb, p, n) : hash_bytes(h, p, n);
}

/*
 * KVM's sleeping locks are malloc'd beside the machine (include/pykvm/smp.h): where they
 * lie is not state, and differs between processes, so the hash sees NULL in their place.
 * Restored in reverse: vCPUs of one VM share its kvm->lock.
 */
struct hidden_locks {
	struct mutex *saved[PK_CHECK_MAX_VCPUS][3];
};

static struct mutex **vcpu_lock_slot(struct kvm_vcpu *vcpu, u32 i)
{
	return i == 0 ? &vcpu->mutex : i == 1 ? &vcpu->kvm->lock : &vcpu->kvm->slots_lock;
}

static void locks_hide(struct pk_checker *c, struct hidden_locks *hl)
{
	for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
		for (u32 i = 0; i < 3; i++) {
			struct mutex **slot = vcpu_lock_slot(c->cfg.vcpus[v], i);

			hl->saved[v][i] = *slot;
			*slot = NULL;
		}
}

static void locks_restore(struct pk_checker *c, const struct hidden_locks *hl)
{
	for (u32 v = c->cfg.nr_vcpus; v-- > 0;)
		for (u32 i = 3; i-- > 0;)
			*vcpu_lock_slot(c->cfg.vcpus[v], i) = hl->saved[v][i];
}

/* The state: the CPUs, the host, kernel memory and the guest's tables; with `rb`, every
 * pointer as an offset (see struct rebase). */
static u64 hash_state(struct pk_checker *c, const struct rebase *rb)
{
	struct pk_machine *m = c->m;
	u64 h = 0xcbf29ce484222325ULL;
	struct hidden_locks hl;

	locks_hide(c, &hl);

	for (u32 i = 0; i < m->nr_cpus; i++) {
		struct pk_cpu cpu = m->cpu[i];

		cpu.icache = NULL;		/* the decode cache is not state, */
		cpu.costs = NULL;		/* nor are the counters beside the machine */
		h = hash_region(h, rb, &cpu, sizeof(cpu));
	}
	h = hash_region(h, rb, &m->host, sizeof(m->host));
	h = hash_region(h, rb, m->kmem, m->kmem_used);
	locks_restore(c, &hl);
	for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
		h = hash_bytes(h, c->cfg.gmem + c->cfg.table_gpa[v], 8 * c->cfg.nr_regs);
	return h ? h : 1;
}

static u64 state_hash(struct pk_checker *c)
{
	return hash_state(c, NULL);
}

/*
 * true if the state must be explored: never seen, or seen with fewer steps left (a
 * bounded search that met a state deep must look again when it meets it shallower).
 */
static bool seen_insert_at(struct pk_checker *c, u64 h, u32 left, u64 *slot)
{
	u64 i = h & (c->seen_cap - 1);

	*slot = UINT64_MAX;
	while (c->seen[i]) {
		if (c->seen[i] == h) {
			*slot = i;
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
	*slot = i;
	return true;
}

static bool seen_insert(struct pk_checker *c, u64 h, u32 left)
{
	u64 slot;

	return seen_insert_at(c, h, left, &slot);
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
	free(c->seen_node);
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

int pk_checker_set_reduce(struct pk_checker *c, u32 reduce)
{
	const u32 known = PK_REDUCE_REVISIT | PK_REDUCE_SLEEP | PK_REDUCE_VERIFY;

	if (reduce & ~known)
		return pk_err(-EINVAL, "unknown reductions %#x", reduce & ~known);
	/* Sleep sets are kept on the breadth-first search's nodes (see struct bfs_node). */
	if ((reduce & PK_REDUCE_SLEEP) && !(reduce & PK_REDUCE_REVISIT))
		return pk_err(-EINVAL, "sleep sets need the breadth-first search (revisit)");
	if ((reduce & PK_REDUCE_VERIFY) && !(reduce & PK_REDUCE_SLEEP))
		return pk_err(-EINVAL, "verify checks the sleep sets: it needs sleep");
	c->reduce = reduce;
	return 0;
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

/* One step counted in the result; the search stops at its deadline or when asked to. */
static void count_step(struct explore *x)
{
	x->res->events++;
	x->res->exits += exits_taken(x->c);
	if ((x->res->events & 255) == 0 && x->deadline && now() > x->deadline)
		x->stop = true;
	if (stop_requested(x->c)) {
		x->res->interrupted = 1;
		x->stop = true;
	}
}

static void dfs(struct explore *x, u32 d);

/* Where each injection kind can fire in a run, as seen while counting its points. */
struct eligible {
	u64 irq_ok[PK_INJ_OK_WORDS], preempt_ok[PK_INJ_OK_WORDS];
};

/*
 * Apply `s` to the state at depth d, as the d-th step of the path (a violation is
 * reported): apply()'s 0, 1 (violation) or 2 (the branch ends). With `el`, what the step
 * found eligible for injection.
 */
static int step_from(struct explore *x, u32 d, const struct pk_step *s, u32 *points,
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
	if (r == 1)
		found(x, d + 1);
	return r;
}

/* Try `s` from the state at depth d; recurse from the result. */
static void try_step(struct explore *x, u32 d, const struct pk_step *s, u32 *points,
		     struct eligible *el)
{
	struct pk_checker *c = x->c;
	int r = step_from(x, d, s, points, el);

	if (r == 1)
		return;
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

/* Whether the explorer tries run step `s` (whose plain run gave `el`) with an event of
 * `kind` before host instruction `at`: dfs() and pk_checker_expand() ask the same. */
static bool injection_tried(const struct pk_check_cfg *cfg, const struct pk_step *s,
			    u32 kind, u32 at, const struct eligible *el)
{
	if (!(cfg->inject_mask & BIT(kind)))
		return false;
	if (kind == PK_INJ_PREEMPT_VM && other_vm_vcpu(cfg, s->vcpu) < 0)
		return false;
	return eligible(kind, at - 1, el->irq_ok, el->preempt_ok);
}

/* Every injected variant of run step `s` (whose plain run counted `points`). */
static void try_injections(struct explore *x, u32 d, const struct pk_step *s, u32 points,
			   const struct eligible *el)
{
	const struct pk_check_cfg *cfg = &x->c->cfg;

	for (u32 k = PK_INJ_NMI; k < PK_NR_INJ && !x->stop; k++) {
		for (u32 at = 1; at <= points && !x->stop; at++) {
			struct pk_step t = *s;

			if (!injection_tried(cfg, s, k, at, el))
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

/*
 * ---- Breadth-first, each state once (PK_REDUCE_REVISIT) ----
 *
 * Iterative deepening searches the whole space again for each bound: a state within
 * reach is expanded once per bound beyond its depth, and once per depth it is met at
 * within one bound. Here each distinct state is expanded once, at the depth it is first
 * met (its shallowest: breadth-first), and a level that brings no new state closes the
 * search. The states within bound - 1 steps and the steps tried from them are those of
 * the deepening search's last iteration; only their order differs (level by level), and
 * that order is pk_checker_expand()'s, so pykvm/swarm.py's level-split search meets the
 * same first violation.
 *
 * A state is kept as a node naming its parent and the step from it (not a snapshot: a
 * level can hold far more states than snapshots fit in memory); it is reached again by
 * replaying its path, from the deepest snapshot it shares with the node expanded
 * before it (siblings are adjacent, so that is usually its parent).
 */
struct bfs_node {
	u32 parent;			/* index of the parent node; the root is node 0 */
	struct pk_step step;		/* from the parent to this state */
	u64 sleep[2];			/* PK_REDUCE_SLEEP: the classes asleep here */
};

/*
 * ---- Sleep sets (PK_REDUCE_SLEEP) ----
 *
 * Expanding state p tries its steps in order. Take x = p.t, a child that is a new state
 * (a node), and u a step tried from p before t that reached a state Y = p.u (new or
 * not). If u and t are independent at p (below), then x.u is Y.t: the same state, met
 * with the same observations on the way. So u need not be tried from x, provided t is
 * tried from Y: then u sleeps in x. t is tried from Y unless t sleeps in Y; Y's sleep
 * set holds only steps tried before the step that first reached it, so that is
 * guaranteed when Y was first reached from p (before t), and otherwise checked against
 * Y's own sleep set. Y is at most as deep as x, so Y.t is met by the level after x's:
 * every state is met, at its shallowest depth, and every violation is still seen at the
 * step that shows it (u showed none from p, and does the same from x). Steps are saved,
 * never states. Sleep sets are not passed on to grandchildren (Godefroid's full sleep
 * sets are): in a search that expands each state once, with one sleep set, what would
 * justify them depends on states met by other paths; kept to one generation, the
 * argument above is the whole argument.
 *
 * Steps sleep by class (step_class(): kind, vCPU, pCPU, task change, injected event;
 * not the instruction an event is injected before): a class sleeps in x when every
 * step of it tried from p qualifies. A class asleep in x is asleep for all its steps.
 *
 * Independence of u and t at p: the pCPUs and vCPUs each acts on (step_footprint()) are
 * disjoint, and the bytes of the snapshot (the machine with its kernel memory, the
 * guests' tables; after normalize()) that each changed from p are disjoint. That is
 * sound under the locality of the model: a step reads and writes only the state of its
 * pCPUs, of its vCPUs (and their threads) and state shared by all, and it neither reads
 * nor rewrites (with the value it holds) a byte that a step on other pCPUs and vCPUs
 * changes. The changed bytes are measured, not assumed; the locality is what the
 * reduction relies on, and PK_REDUCE_VERIFY checks it for every step left out (both
 * orders tried and compared).
 */
#define SLEEP_CLASSES		128
#define SLEEP_MAX_RUNS		4096	/* a step changing more is taken to touch all */

struct footprint {
	u32 pcpus, vcpus;		/* masks; all bits: acts on everything */
};

struct dirty_run {
	u32 lo, hi;			/* bytes [lo, hi) of the snapshot changed */
};

/* A child of the node being expanded that is a new state (a node). */
struct sleep_child {
	u32 node;
	u32 pos;			/* its rank among the steps tried from the parent */
	int cls;			/* step_class(), or -1 */
	struct footprint fp;
	u32 run, nr_runs;		/* in bfs.runs; nr_runs == UINT32_MAX: everything */
};

/* The steps of one class tried from the node being expanded. */
struct sleep_class {
	bool used;			/* some step of it was tried */
	bool bad;			/* it cannot sleep in any child */
	u32 last;			/* rank of its last step tried */
	struct footprint fp;
	u64 older[2];			/* the sleep sets of older nodes its steps reached */
	u8 *dirty;			/* a bit per snapshot byte its steps changed */
};

struct bfs {
	struct bfs_node *node;
	u32 n, cap;
	struct pk_step cur[PK_CHECK_MAX_STEPS];	/* the path whose states stack[] holds */
	u32 cur_len;
	/* PK_REDUCE_SLEEP, for the node being expanded: */
	u32 first_child;		/* the index of its first new child */
	u32 tried;			/* steps tried from it so far */
	int vcpu_cpu[PK_CHECK_MAX_VCPUS];	/* where each vCPU's thread is there */
	struct sleep_child *sc;		/* its new children, in the order they came */
	u32 nr_sc, sc_cap;
	struct dirty_run *runs;		/* the bytes each of them changed */
	u32 nr_runs, runs_cap;
	struct sleep_class cls[SLEEP_CLASSES];
	u8 *bitmaps;			/* behind cls[].dirty */
	size_t bitmap_bytes;
};

static int bfs_push(struct bfs *q, u32 parent, const struct pk_step *s)
{
	if (q->n == q->cap) {
		u32 cap = q->cap ? q->cap * 2 : 1024;
		struct bfs_node *n;

		if (cap <= q->cap || !(n = realloc(q->node, (size_t)cap * sizeof(*n))))
			return -ENOMEM;
		q->node = n;
		q->cap = cap;
	}
	q->node[q->n++] = (struct bfs_node){ .parent = parent, .step = *s };
	return 0;
}

/* The pCPUs and vCPUs step `s` acts on, at the node being expanded. Conservative: a
 * run with an event that reaches beyond its pCPU (the virtualization-disable IPI, a
 * machine check, another VM's vCPU thread) and virtualization off/on (it clears the
 * VMCSs of every vCPU last loaded there) act on everything. */
static struct footprint step_footprint(const struct pk_checker *c, const struct bfs *q,
				       const struct pk_step *s)
{
	const struct footprint all = { UINT32_MAX, UINT32_MAX };
	u32 v = s->vcpu;

	switch (s->kind) {
	case PK_STEP_RUN:
		if (s->inject == PK_INJ_DISABLE_IPI || s->inject == PK_INJ_MC ||
		    s->inject == PK_INJ_PREEMPT_VM)
			return all;
		/* fall through */
	case PK_STEP_SET_MSRS:
	case PK_STEP_GET_MSRS:
	case PK_STEP_VMM_TASK:
		if (v >= c->cfg.nr_vcpus || q->vcpu_cpu[v] < 0 || q->vcpu_cpu[v] >= 32)
			return all;
		return (struct footprint){ BIT(q->vcpu_cpu[v]), BIT(v) };
	case PK_STEP_MIGRATE:
		if (v >= c->cfg.nr_vcpus || q->vcpu_cpu[v] < 0 || q->vcpu_cpu[v] >= 32 ||
		    s->cpu >= 32)
			return all;
		return (struct footprint){ BIT(q->vcpu_cpu[v]) | BIT(s->cpu), BIT(v) };
	case PK_STEP_OTHER:
	case PK_STEP_USER_INSNS:
	case PK_STEP_KTHREAD:
		if (s->cpu >= 32)
			return all;
		return (struct footprint){ BIT(s->cpu), 0 };
	default:
		return all;
	}
}

/* Whether f meets every step's footprint (each step acts on some pCPU): then it can
 * neither sleep nor let another sleep, and its changed bytes are not worth measuring. */
static bool footprint_all(const struct pk_checker *c, const struct footprint *f)
{
	u32 cpus = c->m->nr_cpus >= 32 ? UINT32_MAX : (u32)BIT(c->m->nr_cpus) - 1;

	return (f->pcpus & cpus) == cpus;
}

/* The class a step sleeps by (see above): 0..SLEEP_CLASSES - 1, or -1 (never sleeps). */
static int step_class(const struct pk_checker *c, const struct pk_step *s)
{
	u32 ncpu = c->m->nr_cpus, per = PK_NR_INJ + 2 + ncpu + PK_NR_TASK_CHANGES, id;

	if (s->cpu >= ncpu || s->inject >= PK_NR_INJ || s->arg >= PK_NR_TASK_CHANGES)
		return -1;
	switch (s->kind) {
	case PK_STEP_RUN:
	case PK_STEP_SET_MSRS:
	case PK_STEP_GET_MSRS:
	case PK_STEP_MIGRATE:
	case PK_STEP_VMM_TASK:
		if (s->vcpu >= c->cfg.nr_vcpus)
			return -1;
		id = s->vcpu * per + (s->kind == PK_STEP_RUN ? s->inject :
				      s->kind == PK_STEP_SET_MSRS ? PK_NR_INJ :
				      s->kind == PK_STEP_GET_MSRS ? PK_NR_INJ + 1 :
				      s->kind == PK_STEP_MIGRATE ? PK_NR_INJ + 2 + s->cpu :
				      PK_NR_INJ + 2 + ncpu + s->arg);
		break;
	case PK_STEP_OTHER:
	case PK_STEP_DISABLE:
	case PK_STEP_USER_INSNS:
	case PK_STEP_KTHREAD:
		id = c->cfg.nr_vcpus * per + s->cpu * 4 +
		     (s->kind == PK_STEP_OTHER ? 0 : s->kind == PK_STEP_DISABLE ? 1 :
		      s->kind == PK_STEP_USER_INSNS ? 2 : 3);
		break;
	default:
		return -1;
	}
	return id < SLEEP_CLASSES ? (int)id : -1;
}

static bool class_in(const u64 *set, int cls)
{
	return cls >= 0 && (set[cls / 64] >> (cls % 64) & 1);
}

/* Add byte `at` to the runs being built (n of them so far): false when there are
 * too many, or no memory. */
static bool run_add(struct bfs *q, u32 *n, u32 at)
{
	if (*n && q->runs[q->nr_runs - 1].hi == at) {
		q->runs[q->nr_runs - 1].hi = at + 1;
		return true;
	}
	if (*n == SLEEP_MAX_RUNS)
		return false;
	if (q->nr_runs == q->runs_cap) {
		u32 cap = q->runs_cap ? q->runs_cap * 2 : 4096;
		struct dirty_run *r = realloc(q->runs, (size_t)cap * sizeof(*r));

		if (!r)
			return false;
		q->runs = r;
		q->runs_cap = cap;
	}
	q->runs[q->nr_runs++] = (struct dirty_run){ at, at + 1 };
	(*n)++;
	return true;
}

/* Append the runs of bytes the machine (now the child) changed from the parent's
 * snapshot to q->runs: how many, or UINT32_MAX (too many, or no memory: all). Compared
 * 32 bytes at a time: this runs once per step, over the whole snapshot. */
static u32 dirty_runs(struct pk_checker *c, struct bfs *q, const u8 *parent)
{
	const u8 *now[2] = { (const u8 *)c->m, c->cfg.gmem + c->cfg.gmem_dirty_lo };
	const u8 *was[2] = { parent, parent + c->mach_bytes };
	size_t len[2] = { c->mach_bytes, c->gmem_bytes }, base[2] = { 0, c->mach_bytes };
	u32 first = q->nr_runs, n = 0;

	if (c->snap_bytes >= UINT32_MAX)
		return UINT32_MAX;
	for (u32 a = 0; a < 2; a++) {
		size_t off = 0;

		for (; off + 32 <= len[a]; off += 32) {
			u64 x[4], y[4];

			memcpy(x, now[a] + off, 32);
			memcpy(y, was[a] + off, 32);
			if (!((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])))
				continue;
			for (size_t i = off; i < off + 32; i++)
				if (now[a][i] != was[a][i] && !run_add(q, &n, (u32)(base[a] + i)))
					goto all;
		}
		for (; off < len[a]; off++)
			if (now[a][off] != was[a][off] && !run_add(q, &n, (u32)(base[a] + off)))
				goto all;
	}
	return n;
all:
	q->nr_runs = first;
	return UINT32_MAX;
}

static void bits_set(u8 *bm, u32 lo, u32 hi)
{
	for (u32 b = lo; b < hi; b++)
		bm[b / 8] |= (u8)(1u << (b % 8));
}

static bool bits_any(const u8 *bm, u32 lo, u32 hi)
{
	for (u32 b = lo; b < hi; b++)
		if (bm[b / 8] >> (b % 8) & 1)
			return true;
	return false;
}

/*
 * Step s, the pos-th tried from the node being expanded (its state in `parent`),
 * reached the state in the machine: new (node `node`, just pushed), or already met
 * (node `node`, or UINT32_MAX if the table was full and it is not known). What the
 * sleep sets of the new children need: its class's footprint and changed bytes, and
 * for a new child its own. -ENOMEM: the search stops.
 */
static int sleep_note(struct pk_checker *c, struct bfs *q, const u8 *parent,
		      const struct pk_step *s, u32 pos, u32 node, bool fresh)
{
	int cls = step_class(c, s);
	struct footprint fp = step_footprint(c, q, s);
	struct sleep_class *k = cls >= 0 ? &q->cls[cls] : NULL;
	u32 run = q->nr_runs, n;

	if (k && !k->used) {
		if (!q->bitmaps) {
			q->bitmap_bytes = (c->snap_bytes + 7) / 8;
			q->bitmaps = malloc(SLEEP_CLASSES * q->bitmap_bytes);
			if (!q->bitmaps)
				return -ENOMEM;
		}
		*k = (struct sleep_class){ .used = true, .fp = fp,
					   .dirty = q->bitmaps + cls * q->bitmap_bytes };
		memset(k->dirty, 0, q->bitmap_bytes);
	}
	if (k) {
		k->last = pos;
		if (footprint_all(c, &fp) || node == UINT32_MAX)
			k->bad = true;
	}
	/* The bytes it changed: for its class, unless that cannot sleep anyway, and for a
	 * new child that can have a sleep set. */
	if ((k && !k->bad) || (fresh && !footprint_all(c, &fp)))
		n = dirty_runs(c, q, parent);
	else
		n = UINT32_MAX;
	if (k && !k->bad) {
		if (n == UINT32_MAX)
			k->bad = true;
		else
			for (u32 r = run; r < run + n; r++)
				bits_set(k->dirty, q->runs[r].lo, q->runs[r].hi);
		/* t must be tried from where u led: an older node may have it asleep. */
		if (!fresh && node != UINT32_MAX && node < q->first_child) {
			k->older[0] |= q->node[node].sleep[0];
			k->older[1] |= q->node[node].sleep[1];
		}
	}
	if (!fresh) {
		q->nr_runs = run;
		return 0;
	}
	if (q->nr_sc == q->sc_cap) {
		u32 cap = q->sc_cap ? q->sc_cap * 2 : 64;
		struct sleep_child *p = realloc(q->sc, (size_t)cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		q->sc = p;
		q->sc_cap = cap;
	}
	q->sc[q->nr_sc++] = (struct sleep_child){ .node = node, .pos = pos, .cls = cls,
						  .fp = fp, .run = run, .nr_runs = n };
	return 0;
}

/* A step of class k tried from the node being expanded that ended the branch. */
static void sleep_note_end(struct pk_checker *c, struct bfs *q, const struct pk_step *s,
			   u32 pos)
{
	int cls = step_class(c, s);

	if (cls >= 0 && q->cls[cls].used)
		q->cls[cls].last = pos;
	else if (cls >= 0)
		/* no state from it: nothing it could leave out (bad: no bitmap either) */
		q->cls[cls] = (struct sleep_class){ .used = true, .bad = true, .last = pos };
}

/* After expanding a node: the sleep set of each new child. */
static void sleep_sets(const struct pk_checker *c, struct bfs *q)
{
	for (u32 j = 0; j < q->nr_sc; j++) {
		const struct sleep_child *t = &q->sc[j];
		u64 *set = q->node[t->node].sleep;

		set[0] = set[1] = 0;
		if (t->nr_runs == UINT32_MAX || footprint_all(c, &t->fp))
			continue;
		for (int cls = 0; cls < SLEEP_CLASSES; cls++) {
			const struct sleep_class *k = &q->cls[cls];
			bool meets = false;

			if (!k->used || k->bad || cls == t->cls || k->last >= t->pos ||
			    (k->fp.pcpus & t->fp.pcpus) || (k->fp.vcpus & t->fp.vcpus) ||
			    class_in(k->older, t->cls))
				continue;
			for (u32 r = t->run; r < t->run + t->nr_runs && !meets; r++)
				meets = bits_any(k->dirty, q->runs[r].lo, q->runs[r].hi);
			if (!meets)
				set[cls / 64] |= 1ULL << (cls % 64);
		}
	}
}

/* Restore the state of node i (at depth d) into the machine, and its path into
 * x->path[0..d); stack[d] then holds it too. */
static void bfs_reach(struct explore *x, struct bfs *q, u32 i, u32 d)
{
	struct pk_checker *c = x->c;
	u32 same = 0;

	for (u32 k = d, j = i; k-- > 0; j = q->node[j].parent)
		x->path[k] = q->node[j].step;
	while (same < d && same < q->cur_len &&
	       !memcmp(&x->path[same], &q->cur[same], sizeof(x->path[0])))
		same++;
	for (u32 k = same; k < d; k++) {
		snap_restore(c, c->stack[k]);
		/* It went on when it was met: the same step from the same state does again. */
		apply(c, &x->path[k], NULL);
		x->res->replayed++;
		normalize(c);
		snap_save(c, c->stack[k + 1]);
	}
	memcpy(q->cur, x->path, d * sizeof(x->path[0]));
	q->cur_len = d;
}

/* One child of the state in stack[d]: 1 if the search stops (violation, budget). */
static int bfs_child(struct explore *x, struct bfs *q, u32 parent, u32 d,
		     const struct pk_step *s, u32 *points, struct eligible *el)
{
	struct pk_checker *c = x->c;
	u64 before = c->seen_n, slot;
	bool sleep = c->reduce & PK_REDUCE_SLEEP, fresh;
	u32 pos = q->tried++, node;
	int r = step_from(x, d, s, points, el);

	if (r == 1)
		return 1;
	if (r == 2 && sleep)
		sleep_note_end(c, q, s, pos);
	if (r == 2 || d + 1 >= x->bound || x->stop)
		return x->stop;
	normalize(c);
	fresh = seen_insert_at(c, state_hash(c), 0, &slot);
	if (!fresh) {
		/* seen_node exists whenever sleep sets are on (pk_checker_explore) */
		node = slot == UINT64_MAX ? UINT32_MAX : sleep ? c->seen_node[slot] : 0;
		if (sleep && sleep_note(c, q, c->stack[d], s, pos, node, false))
			x->stop = true;
		return x->stop;
	}
	if (c->seen_n != before)
		x->res->states++;
	node = q->n;
	if (bfs_push(q, parent, s)) {
		x->stop = true;
		return 1;
	}
	if (sleep) {
		if (slot != UINT64_MAX)
			c->seen_node[slot] = node;
		if (sleep_note(c, q, c->stack[d], s, pos, node, true)) {
			x->stop = true;
			return 1;
		}
	}
	if (x->res->states >= x->max_states)
		x->stop = true;
	return x->stop;
}

/*
 * PK_REDUCE_VERIFY: step u sleeps in node x = p.t (depth d; stack[d - 1] holds p):
 * whether p.t.u and p.u.t are the same state, both without a violation. The host
 * events counted stay those of the search.
 */
static bool sleep_holds(struct explore *x, u32 d, const struct pk_step *t,
			const struct pk_step *u)
{
	struct pk_checker *c = x->c;
	u64 fired[PK_NR_INJ], refused = c->refused, h1, h2;
	int r1, r2;

	memcpy(fired, c->fired, sizeof(fired));
	snap_restore(c, c->stack[d]);
	r1 = apply(c, u, NULL);
	normalize(c);
	h1 = state_hash(c);
	snap_restore(c, c->stack[d - 1]);
	r2 = apply(c, u, NULL);
	normalize(c);
	if (r2 == 0) {
		r2 = apply(c, t, NULL);
		normalize(c);
	}
	h2 = state_hash(c);
	memcpy(c->fired, fired, sizeof(fired));
	c->refused = refused;
	x->res->sleep_checked++;
	if (r1 == 0 && r2 == 0 && h1 == h2)
		return true;
	x->res->sleep_mismatch++;
	return false;
}

/* Whether step s is left out at node i (at depth d; `sleep`: its sleep set). */
static bool sleeps(struct explore *x, struct bfs *q, u32 i, u32 d, const struct pk_step *s,
		   const u64 *sleep)
{
	if (!class_in(sleep, step_class(x->c, s)))
		return false;
	if ((x->c->reduce & PK_REDUCE_VERIFY) && !sleep_holds(x, d, &q->node[i].step, s))
		return false;
	x->res->slept++;
	return true;
}

/* Every child dfs() would try from node i (depth d), in its order; with sleep sets,
 * those not asleep in node i. */
static void bfs_expand(struct explore *x, struct bfs *q, u32 i, u32 d)
{
	struct pk_checker *c = x->c;
	struct pk_step steps[PK_MAX_BASE_STEPS];
	u64 sleep[2] = { q->node[i].sleep[0], q->node[i].sleep[1] };
	u32 n;

	bfs_reach(x, q, i, d);
	q->first_child = q->n;
	q->tried = q->nr_sc = q->nr_runs = 0;
	if (c->reduce & PK_REDUCE_SLEEP) {
		for (u32 k = 0; k < SLEEP_CLASSES; k++)
			q->cls[k].used = false;
		/* The machine holds node i's state (bfs_reach). */
		for (u32 v = 0; v < c->cfg.nr_vcpus; v++)
			q->vcpu_cpu[v] = step_vcpu_cpu(c, v);
	}
	n = base_steps(c, steps);
	for (u32 b = 0; b < n && !x->stop; b++) {
		struct eligible el;
		u32 points = 0;
		bool injected = steps[b].kind == PK_STEP_RUN && c->cfg.inject_mask;

		/* A run asleep is still run when it has injected variants: they need the
		 * points it counts, and may be awake. */
		if (!injected && sleeps(x, q, i, d, &steps[b], sleep))
			continue;
		if (bfs_child(x, q, i, d, &steps[b], &points, &el))
			return;
		if (!injected)
			continue;
		for (u32 k = PK_INJ_NMI; k < PK_NR_INJ; k++)
			for (u32 at = 1; at <= points; at++) {
				struct pk_step t = steps[b];

				if (!injection_tried(&c->cfg, &steps[b], k, at, &el))
					continue;
				t.inject = k;
				t.at = at;
				if (sleeps(x, q, i, d, &t, sleep))
					continue;
				if (bfs_child(x, q, i, d, &t, NULL, NULL))
					return;
			}
	}
	if (c->reduce & PK_REDUCE_SLEEP)
		sleep_sets(c, q);
}

static int bfs(struct explore *x, u32 bound)
{
	struct pk_checker *c = x->c;
	struct pk_step none = { 0 };
	struct bfs q = { 0 };
	u32 lo = 0, hi;

	if (bfs_push(&q, 0, &none))
		return -ENOMEM;
	x->bound = bound;
	snap_save(c, c->stack[0]);	/* the root, normalized when it was taken */
	for (u32 d = 0; d < bound && !x->stop; d++) {
		hi = q.n;
		for (u32 i = lo; i < hi && !x->stop; i++)
			bfs_expand(x, &q, i, d);
		if (x->stop)
			break;
		x->res->depth_done = d + 1;
		lo = hi;
		if (q.n == hi && d + 1 < bound) {	/* no new state: nothing deeper */
			x->res->closed = 1;
			x->res->depth_done = bound;
			break;
		}
	}
	free(q.node);
	free(q.sc);
	free(q.runs);
	free(q.bitmaps);
	return 0;
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
	if (!c->seen || !c->seen_left)
		return -ENOMEM;
	free(c->seen_node);
	c->seen_node = NULL;
	if ((c->reduce & PK_REDUCE_SLEEP) &&
	    !(c->seen_node = calloc(c->seen_cap, sizeof(*c->seen_node))))
		return -ENOMEM;
	x.deadline = seconds > 0 ? start + seconds : 0;

	memset(c->seen, 0, c->seen_cap * sizeof(u64));
	c->seen_n = 0;
	snap_restore(c, c->root);
	if (c->reduce & PK_REDUCE_REVISIT) {
		if (bound && bfs(&x, bound))
			return -ENOMEM;
		bound = 0;		/* done: no deepening */
	}
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

/*
 * ---- A search spread over processes (pykvm/swarm.py) ----
 *
 * A task of the distributed engine names the state it starts from by the steps that lead
 * there from the initial state (a prefix), never by a snapshot: snapshots hold pointers
 * and are only meaningful in the process that took them. Two entry points: expand one
 * state by one level (a breadth-first search whose visited set the driver keeps), and
 * explore from a prefix as pk_checker_explore() explores from the initial state.
 */
#include <errno.h>

static u64 portable_hash(struct pk_checker *c)
{
	struct rebase rb;

	rebase_init(c, &rb);
	return hash_state(c, &rb);
}

/* Apply prefix[0..n) from the initial state as the search does (each step from a
 * normalized state): 0, or apply()'s 1 (violation) / 2 (the branch ends) with *at the
 * step that did it. */
static int apply_prefix(struct pk_checker *c, const struct pk_step *prefix, u32 n, u32 *at)
{
	int r = 0;

	snap_restore(c, c->root);
	for (*at = 0; *at < n; (*at)++) {
		normalize(c);
		r = apply(c, &prefix[*at], NULL);
		if (r)
			return r;
	}
	return 0;
}

static void found_at(struct pk_checker *c, struct pk_check_result *res,
		     const struct pk_step *prefix, u32 n, const struct pk_step *last)
{
	res->violated = 1;
	res->violation = c->m->oracle->first;
	memcpy(res->steps, prefix, n * sizeof(*prefix));
	if (last)
		res->steps[n++] = *last;
	res->nr_steps = n;
}

/* Try child `s` of the state in `snap`; record it in out[*nr] (if room), and where host
 * events can be taken in it (if el). 1: violation. Hashing a state costs about a third
 * of a step: done only when asked. */
static int expand_one(struct pk_checker *c, const u8 *snap, const struct pk_step *s,
		      u32 *points, struct eligible *el, struct pk_child *out, u32 max, u32 *nr,
		      bool hashes, struct pk_check_result *res)
{
	int r;

	snap_restore(c, snap);
	r = apply(c, s, points);
	if (el) {
		memcpy(el->irq_ok, c->m->inject.irq_ok, sizeof(el->irq_ok));
		memcpy(el->preempt_ok, c->m->inject.preempt_ok, sizeof(el->preempt_ok));
	}
	res->events++;
	res->exits += exits_taken(c);
	if (*nr < max) {
		out[*nr].step = *s;
		out[*nr].hash = 0;
		if (r == 0 && hashes) {
			normalize(c);
			out[*nr].hash = portable_hash(c);
		} else if (r == 0) {
			out[*nr].hash = 1;	/* goes on; which state, the caller did not ask */
		}
	}
	(*nr)++;
	return r == 1;
}

int pk_checker_expand(struct pk_checker *c, const struct pk_step *prefix, u32 n,
		      struct pk_child *out, u32 max, bool hashes, struct pk_check_result *res)
{
	struct pk_step steps[PK_MAX_BASE_STEPS];
	u32 at, nr = 0, nbase;
	u8 *snap;
	int r;

	memset(res, 0, sizeof(*res));
	if (n + 1 > PK_CHECK_MAX_STEPS)
		return -EINVAL;
	r = apply_prefix(c, prefix, n, &at);
	if (r == 1)
		found_at(c, res, prefix, at + 1, NULL);
	if (r) {
		snap_restore(c, c->root);
		return r == 1 ? 0 : -ECHILD;
	}
	normalize(c);
	snap = malloc(c->snap_bytes);
	if (!snap)
		return -ENOMEM;
	snap_save(c, snap);
	/*
	 * The children dfs() tries, in its order: each step, and each run again with every
	 * allowed host event before each host instruction where it can be taken.
	 */
	nbase = base_steps(c, steps);
	for (u32 i = 0; i < nbase && !res->violated; i++) {
		struct eligible el;
		u32 points = 0;

		if (expand_one(c, snap, &steps[i], &points, &el, out, max, &nr, hashes, res)) {
			found_at(c, res, prefix, n, &steps[i]);
			break;
		}
		if (steps[i].kind != PK_STEP_RUN || !c->cfg.inject_mask)
			continue;
		for (u32 k = PK_INJ_NMI; k < PK_NR_INJ && !res->violated; k++) {
			for (u32 a = 1; a <= points; a++) {
				struct pk_step s = steps[i];

				if (!injection_tried(&c->cfg, &steps[i], k, a, &el))
					continue;
				s.inject = k;
				s.at = a;
				if (expand_one(c, snap, &s, NULL, NULL, out, max, &nr, hashes, res)) {
					found_at(c, res, prefix, n, &s);
					break;
				}
			}
		}
	}
	snap_restore(c, c->root);
	free(snap);
	return nr > max ? -ENOSPC : (int)nr;
}

int pk_checker_explore_from(struct pk_checker *c, const struct pk_step *prefix, u32 n,
			    u32 bound, u64 max_states, u64 walks, u32 walk_len, u64 seed,
			    double seconds, struct pk_check_result *res)
{
	u8 *root = c->root, *sub;
	u32 at;
	int r;

	memset(res, 0, sizeof(*res));
	if (n > PK_CHECK_MAX_STEPS || bound > PK_CHECK_MAX_STEPS - n ||
	    walk_len > PK_CHECK_MAX_STEPS - n)
		return -EINVAL;
	r = apply_prefix(c, prefix, n, &at);
	if (r == 1)
		found_at(c, res, prefix, at + 1, NULL);
	if (r) {
		snap_restore(c, root);
		return r == 1 ? 0 : -ECHILD;
	}
	normalize(c);
	sub = malloc(c->snap_bytes);
	if (!sub)
		return -ENOMEM;
	snap_save(c, sub);
	c->root = sub;			/* explore, and walk, from here */
	r = pk_checker_explore(c, bound, max_states, walks, walk_len, seed, seconds, res);
	c->root = root;
	snap_restore(c, root);
	free(sub);
	if (r == 0 && res->violated) {
		memmove(res->steps + n, res->steps, res->nr_steps * sizeof(res->steps[0]));
		memcpy(res->steps, prefix, n * sizeof(*prefix));
		res->nr_steps += n;
	}
	return r;
}
