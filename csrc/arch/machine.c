// SPDX-License-Identifier: MIT
/*
 * Creating the machine: its CPUs, the host kernel on them, and the physical memory its
 * kernel allocates from (csrc/host/kmem.c).
 *
 * The machine object is one mapping: the header (CPUs, host kernel, costs profile) then
 * kmem[]. Address space for kmem[] is reserved up front -- as much as the host has, so
 * VMs and vCPUs are bounded by memory alone -- and made usable as it is needed; pages
 * never touched cost nothing. What is not state (per-CPU cost counters, locks) is
 * allocated beside it.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pykvm/api.h"
#include "pykvm/smp.h"
#include "pykvm/printk.h"

#define KMEM_GROW_STEP		(1ul << 20)		/* commit kmem[] 1 MiB at a time */
#define KMEM_MIN_RESERVE	(64ul << 20)
#define KMEM_MAX_RESERVE	(64ul << 30)

__thread struct pk_cpu *pk_this_cpu __attribute__((tls_model("initial-exec")));

static size_t machine_header(void)
{
	return offsetof(struct pk_machine, kmem);
}

/* The host's memory: what kmem[] may grow to (and at least enough to be useful). */
static size_t kmem_reserve_size(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	size_t ram = pages > 0 && psize > 0 ? (size_t)pages * (size_t)psize : KMEM_MIN_RESERVE;

	if (ram > KMEM_MAX_RESERVE)
		ram = KMEM_MAX_RESERVE;
	if (ram < KMEM_MIN_RESERVE)
		ram = KMEM_MIN_RESERVE;
	return ram & ~(KMEM_GROW_STEP - 1);
}

int pk_machine_grow(struct pk_machine *m, size_t bytes)
{
	size_t want;

	if (bytes <= m->kmem_committed)
		return 0;
	if (bytes > m->kmem_reserved)
		return -ENOMEM;
	want = (bytes + KMEM_GROW_STEP - 1) & ~(KMEM_GROW_STEP - 1);
	if (want > m->kmem_reserved)
		want = m->kmem_reserved;
	if (mprotect(m->kmem + m->kmem_committed, want - m->kmem_committed,
		     PROT_READ | PROT_WRITE))
		return -ENOMEM;
	m->kmem_committed = want;
	return 0;
}

struct pk_machine *pk_machine_create(u32 nr_cpus, const struct pk_cpu_model *model)
{
	size_t reserve = kmem_reserve_size(), header = machine_header();
	struct pk_machine *m = MAP_FAILED;

	if (nr_cpus == 0 || nr_cpus > PK_MAX_CPUS) {
		pk_err(-EINVAL, "a machine has 1 to %d CPUs, not %u", PK_MAX_CPUS, nr_cpus);
		return NULL;
	}
	/* Fewer bytes of address space when the process has little left. */
	for (; reserve >= KMEM_MIN_RESERVE && m == MAP_FAILED; reserve /= 2)
		m = mmap(NULL, header + reserve, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED) {
		pk_err(-ENOMEM, "no address space for a machine");
		return NULL;
	}
	reserve *= 2;
	if (mprotect(m, header, PROT_READ | PROT_WRITE)) {
		munmap(m, header + reserve);
		pk_err(-ENOMEM, "no memory for a machine");
		return NULL;
	}
	m->kmem_reserved = reserve;
	m->nr_cpus = nr_cpus;
	m->model = *model;
	m->costs = calloc(nr_cpus, sizeof(*m->costs));
	if (!m->costs || pk_locks_init(m)) {
		pk_machine_destroy(m);
		pk_err(-ENOMEM, "no memory for a machine");
		return NULL;
	}
	for (u32 i = 0; i < nr_cpus; i++) {
		m->cpu[i].m = m;
		m->cpu[i].id = i;
		m->cpu[i].costs = &m->costs[i];
		pk_cpu_reset(&m->cpu[i]);
	}
	pk_this_cpu = &m->cpu[0];
	if (pk_host_init(m)) {
		pk_machine_destroy(m);
		pk_err(-ENOMEM, "no memory for the host's tasks");
		return NULL;
	}
	pk_oracle_enable(m, true);
	return m;
}

void pk_machine_destroy(struct pk_machine *m)
{
	if (!m)
		return;
	for (u32 i = 0; i < m->nr_cpus; i++)
		pk_icache_free(&m->cpu[i]);
	if (pk_this_cpu && pk_this_cpu->m == m)
		pk_this_cpu = NULL;
	pk_locks_free(m);
	free(m->costs);
	munmap(m, machine_header() + m->kmem_reserved);
}

/* Make `cpu` the CPU the calling thread's host code runs on (tests of the hardware). */
int pk_machine_set_cpu(struct pk_machine *m, u32 cpu)
{
	if (cpu >= m->nr_cpus)
		return -EINVAL;
	pk_this_cpu = &m->cpu[cpu];
	return 0;
}

/* Kernel memory in bytes: allocated now, the high-water mark, made usable, reserved. */
void pk_machine_kmem(const struct pk_machine *m, u64 *in_use, u64 *used, u64 *committed,
		     u64 *reserved)
{
	*in_use = m->kmem_in_use;
	*used = m->kmem_used;
	*committed = m->kmem_committed;
	*reserved = m->kmem_reserved;
}

/* Compiled in, checked at import: a stale build fails loudly instead of misbehaving. */
const char *pk_version(void)
{
	return PYKVM_VERSION;
}
