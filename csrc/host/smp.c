// SPDX-License-Identifier: MIT
/*
 * Who runs where, when several threads drive one machine (include/pykvm/smp.h): the
 * runqueue lock of each pCPU, cross-CPU calls (kernel/smp.c's smp_call_function_single),
 * the kernel's sleeping mutex, and the machine's leaf locks.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "pykvm/smp.h"

struct mutex {
	pthread_mutex_t m;
};

struct mutex *mutex_create(void)
{
	struct mutex *lock = malloc(sizeof(*lock));

	if (lock && pthread_mutex_init(&lock->m, NULL)) {
		free(lock);
		return NULL;
	}
	return lock;
}

void mutex_destroy(struct mutex *lock)
{
	if (!lock)
		return;
	pthread_mutex_destroy(&lock->m);
	free(lock);
}

void mutex_lock(struct mutex *lock) { pthread_mutex_lock(&lock->m); }
void mutex_unlock(struct mutex *lock) { pthread_mutex_unlock(&lock->m); }

/* A function one CPU asks another to run (kernel: struct __call_single_data). */
struct pk_call {
	void (*func)(void *info);
	void *info;
	u32 path;			/* the caller's cost path: the work is done for it */
	bool done;
	struct pk_call *next;
};

/* A pCPU's runqueue: a ticket lock (FIFO), and the calls queued for its holder. */
struct pk_rq {
	atomic_uint next;		/* the next ticket to hand out */
	atomic_uint owner;		/* the ticket being served: its holder runs on the CPU */
	atomic_uint nr_calls;		/* how many are queued: looked at without the lock */
	struct pk_call *calls;		/* under pk_locks.wait */
};

struct pk_locks {
	pthread_mutex_t wait;		/* sleeping for a pCPU or a call; the call queues */
	pthread_cond_t wake;		/* a ticket moved on, or a call completed */
	atomic_uint sleepers;
	struct pk_rq rq[PK_MAX_CPUS];
	pthread_mutex_t kmem, tasklist, oracle;
	struct mutex *kvm_lock;
};

/* The pCPUs this thread holds, of one machine at a time (initial-exec: no call to find them). */
static __thread const struct pk_machine *held_m __attribute__((tls_model("initial-exec")));
static __thread u32 held_mask __attribute__((tls_model("initial-exec")));
/* How many times more than once this thread has taken each pCPU it holds. */
static __thread u8 held_again[PK_MAX_CPUS] __attribute__((tls_model("initial-exec")));

int pk_locks_init(struct pk_machine *m)
{
	struct pk_locks *L = calloc(1, sizeof(*L));

	if (!L)
		return -ENOMEM;
	pthread_mutex_init(&L->wait, NULL);
	pthread_cond_init(&L->wake, NULL);
	pthread_mutex_init(&L->kmem, NULL);
	pthread_mutex_init(&L->tasklist, NULL);
	pthread_mutex_init(&L->oracle, NULL);
	L->kvm_lock = mutex_create();
	if (!L->kvm_lock) {
		free(L);
		return -ENOMEM;
	}
	m->locks = L;
	return 0;
}

void pk_locks_free(struct pk_machine *m)
{
	struct pk_locks *L = m->locks;

	if (!L)
		return;
	pthread_mutex_destroy(&L->wait);
	pthread_cond_destroy(&L->wake);
	pthread_mutex_destroy(&L->kmem);
	pthread_mutex_destroy(&L->tasklist);
	pthread_mutex_destroy(&L->oracle);
	mutex_destroy(L->kvm_lock);
	free(L);
	m->locks = NULL;
}

bool pk_cpu_held(const struct pk_machine *m, u32 cpu)
{
	return held_m == m && (held_mask & BIT(cpu));
}

/* Sleep on `wake` for a while; the caller holds L->wait and re-checks what it waits for. */
static void wait_a_while(struct pk_locks *L)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 1000 * 1000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	atomic_fetch_add(&L->sleepers, 1);
	pthread_cond_timedwait(&L->wake, &L->wait, &ts);
	atomic_fetch_sub(&L->sleepers, 1);
}

static void wake_sleepers(struct pk_locks *L)
{
	if (atomic_load(&L->sleepers)) {
		pthread_mutex_lock(&L->wait);
		pthread_cond_broadcast(&L->wake);
		pthread_mutex_unlock(&L->wait);
	}
}

/* Run func on `cpu` (held by this thread), accounting it to `path`, then come back. */
static void run_on(struct pk_machine *m, u32 cpu, void (*func)(void *), void *info, u32 path)
{
	struct pk_cpu *saved = pk_this_cpu;
	struct pk_costs *c = m->cpu[cpu].costs;
	u32 old = c->path;

	pk_this_cpu = &m->cpu[cpu];
	c->path = path;
	func(info);
	c->path = old;
	pk_this_cpu = saved;
}

/* The IPIs queued for `cpu`, which this thread holds: taken now. */
static void __take_calls(struct pk_machine *m, u32 cpu)
{
	struct pk_locks *L = m->locks;
	struct pk_call *c;

	while (atomic_load(&L->rq[cpu].nr_calls)) {
		pthread_mutex_lock(&L->wait);
		c = L->rq[cpu].calls;
		if (c) {
			L->rq[cpu].calls = c->next;
			atomic_fetch_sub(&L->rq[cpu].nr_calls, 1);
		}
		pthread_mutex_unlock(&L->wait);
		if (!c)
			return;
		run_on(m, cpu, c->func, c->info, c->path);
		pthread_mutex_lock(&L->wait);
		c->done = true;
		pthread_cond_broadcast(&L->wake);
		pthread_mutex_unlock(&L->wait);
	}
}

/*
 * Most of the time nothing is queued: one load says so. A call queued just after it is
 * not lost: its poster keeps trying to get the CPU (and take it) until it is done.
 */
static inline void take_calls(struct pk_machine *m, u32 cpu)
{
	if (unlikely(atomic_load_explicit(&m->locks->rq[cpu].nr_calls, memory_order_relaxed)))
		__take_calls(m, cpu);
}

/* While waiting for anything, a thread takes the IPIs sent to the pCPUs it holds. */
static void take_held_calls(struct pk_machine *m)
{
	if (held_m != m)
		return;
	for (u32 cpu = 0; cpu < m->nr_cpus; cpu++)
		if (held_mask & BIT(cpu))
			take_calls(m, cpu);
}

static void got_cpu(struct pk_machine *m, u32 cpu)
{
	if (held_m != m)
		held_mask = 0;
	held_m = m;
	held_mask |= BIT(cpu);
	take_calls(m, cpu);
}

void pk_cpu_lock(struct pk_machine *m, u32 cpu)
{
	struct pk_locks *L = m->locks;
	struct pk_rq *rq = &L->rq[cpu];
	unsigned int ticket;

	if (pk_cpu_held(m, cpu)) {		/* a task run inline on a CPU this thread has */
		held_again[cpu]++;
		return;
	}
	ticket = atomic_fetch_add(&rq->next, 1);

	for (int spin = 0; spin < 64; spin++) {
		if (atomic_load_explicit(&rq->owner, memory_order_acquire) == ticket)
			goto got;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
	pthread_mutex_lock(&L->wait);
	while (atomic_load(&rq->owner) != ticket) {
		pthread_mutex_unlock(&L->wait);
		take_held_calls(m);
		pthread_mutex_lock(&L->wait);
		if (atomic_load(&rq->owner) != ticket)
			wait_a_while(L);
	}
	pthread_mutex_unlock(&L->wait);
got:
	got_cpu(m, cpu);
}

static bool pk_cpu_trylock(struct pk_machine *m, u32 cpu)
{
	struct pk_rq *rq = &m->locks->rq[cpu];
	unsigned int owner = atomic_load(&rq->owner);
	unsigned int expect = owner;

	/* Free: nobody holds it and nobody waits (next == owner). */
	if (!atomic_compare_exchange_strong(&rq->next, &expect, owner + 1))
		return false;
	got_cpu(m, cpu);
	return true;
}

void pk_cpu_unlock(struct pk_machine *m, u32 cpu)
{
	struct pk_locks *L = m->locks;

	if (held_again[cpu]) {
		held_again[cpu]--;
		return;
	}

	take_calls(m, cpu);
	held_mask &= ~BIT(cpu);
	atomic_fetch_add_explicit(&L->rq[cpu].owner, 1, memory_order_release);
	wake_sleepers(L);
}

/*
 * smp_call_function_single(cpu, func, info, wait=1). The work runs as if on `cpu` (its
 * this_cpu(), its counters); the calling thread's own pCPU keeps taking the IPIs sent
 * to it while this one waits, as a CPU spinning in csd_lock_wait() with IRQs on does.
 */
static int smp_call(struct pk_machine *m, int cpu, void (*func)(void *info), void *info,
		    u32 path)
{
	struct pk_locks *L = m->locks;
	struct pk_call call = { .func = func, .info = info, .path = path };

	if (cpu < 0 || (u32)cpu >= m->nr_cpus)
		return -ENXIO;
	if (pk_cpu_held(m, cpu)) {
		run_on(m, cpu, func, info, path);
		return 0;
	}
	if (pk_cpu_trylock(m, cpu)) {
		run_on(m, cpu, func, info, path);
		pk_cpu_unlock(m, cpu);
		return 0;
	}
	pthread_mutex_lock(&L->wait);
	call.next = L->rq[cpu].calls;
	L->rq[cpu].calls = &call;
	atomic_fetch_add(&L->rq[cpu].nr_calls, 1);
	while (!call.done) {
		pthread_mutex_unlock(&L->wait);
		take_held_calls(m);
		/* Its holder may have let it go without seeing the call: take it ourselves. */
		if (pk_cpu_trylock(m, cpu))
			pk_cpu_unlock(m, cpu);
		pthread_mutex_lock(&L->wait);
		if (!call.done)
			wait_a_while(L);
	}
	pthread_mutex_unlock(&L->wait);
	return 0;
}

int smp_call_function_single(int cpu, void (*func)(void *info), void *info)
{
	return smp_call(this_machine(), cpu, func, info, pk_this_cpu->costs->path);
}

int pk_smp_call_from_user(struct pk_machine *m, int cpu, void (*func)(void *info), void *info,
			  u32 path)
{
	return smp_call(m, cpu, func, info, path);
}

void pk_kmem_lock(struct pk_machine *m) { pthread_mutex_lock(&m->locks->kmem); }
void pk_kmem_unlock(struct pk_machine *m) { pthread_mutex_unlock(&m->locks->kmem); }
void pk_tasklist_lock(struct pk_machine *m) { pthread_mutex_lock(&m->locks->tasklist); }
void pk_tasklist_unlock(struct pk_machine *m) { pthread_mutex_unlock(&m->locks->tasklist); }
void pk_oracle_lock(struct pk_machine *m) { pthread_mutex_lock(&m->locks->oracle); }
void pk_oracle_unlock(struct pk_machine *m) { pthread_mutex_unlock(&m->locks->oracle); }
struct mutex *pk_kvm_lock(struct pk_machine *m) { return m->locks->kvm_lock; }
