// SPDX-License-Identifier: MIT
/* Creating the machine, and the kernel-memory allocator everything KVM owns comes from. */
#include <stdlib.h>

#include "pykvm/host.h"

__thread struct pk_cpu *pk_this_cpu __attribute__((tls_model("initial-exec")));

struct pk_machine *pk_machine_create(u32 nr_cpus, const struct pk_cpu_model *model)
{
	struct pk_machine *m;

	if (nr_cpus == 0 || nr_cpus > PK_MAX_CPUS)
		return NULL;
	m = aligned_alloc(4096, sizeof(*m));
	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	m->nr_cpus = nr_cpus;
	m->model = *model;
	for (u32 i = 0; i < nr_cpus; i++) {
		m->cpu[i].m = m;
		m->cpu[i].id = i;
		pk_cpu_reset(&m->cpu[i]);
	}
	pk_this_cpu = &m->cpu[0];
	pk_host_init(m);
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
	free(m);
}

/* Make `cpu` the CPU the calling thread's host code runs on. */
int pk_machine_set_cpu(struct pk_machine *m, u32 cpu)
{
	if (cpu >= m->nr_cpus)
		return -1;
	pk_this_cpu = &m->cpu[cpu];
	return 0;
}

void *pk_kzalloc(struct pk_machine *m, size_t size, size_t align)
{
	size_t off = (m->kmem_used + align - 1) & ~(align - 1);

	if (off > sizeof(m->kmem) || size > sizeof(m->kmem) - off)
		return NULL;
	m->kmem_used = off + size;
	memset(m->kmem + off, 0, size);
	return m->kmem + off;
}

/* Compiled in, checked at import: a stale build fails loudly instead of misbehaving. */
const char *pk_version(void)
{
	return PYKVM_VERSION;
}
