// SPDX-License-Identifier: MIT
/*
 * The host kernel's memory allocator, for everything KVM owns (the kernel's page
 * allocator and kmalloc slabs, much simplified). It hands out memory inside the machine
 * object (kmem[]), so a host physical address is an offset into the machine and a copy
 * of the machine is a snapshot (include/pykvm/machine.h).
 *
 * - Runs of pages (objects above 2 KiB or aligned beyond 64 bytes): first fit in a list
 *   of free runs kept in address order and merged with their neighbours; the list's
 *   links live in the first page of each free run. Freed pages go back to the host
 *   (MADV_DONTNEED: they read as zero and cost no memory until used again), and a free
 *   run at the top lowers the high-water mark.
 * - Small objects: power-of-two classes from 16 to 2048 bytes carved out of whole pages,
 *   with a free list per class (links in the freed objects).
 * - When no free memory fits, kmem grows (pk_machine_grow), up to what the machine
 *   reserved: as much as the host has.
 *
 * Callers free with the size and alignment they allocated with (as kmem_cache_free()
 * and free_pages() know the object's cache or order). The allocator's lock is a leaf.
 */
#include <sys/mman.h>

#include "pykvm/smp.h"

#define KMEM_PAGE		4096u
#define KMEM_MIN_CLASS_SHIFT	4	/* 16 bytes */
#define KMEM_NR_CLASSES		8	/* 16 .. 2048 */
#define KMEM_MAX_OBJ		(1u << (KMEM_MIN_CLASS_SHIFT + KMEM_NR_CLASSES - 1))
#define KMEM_OBJ_ALIGN		64u

_Static_assert(KMEM_NR_CLASSES == ARRAY_SIZE(((struct pk_machine *)0)->kmem_free_objs),
	       "one free list per class");

/* The link at the start of a free run of pages. */
struct free_run {
	u64 next;			/* offset + 1 of the next free run, 0: none */
	u64 npages;
};

static bool kmem_is_small(size_t size, size_t align)
{
	return size <= KMEM_MAX_OBJ && align <= KMEM_OBJ_ALIGN;
}

static int kmem_class(size_t size)
{
	int c = 0;

	while ((1ul << (KMEM_MIN_CLASS_SHIFT + c)) < size)
		c++;
	return c;
}

static struct free_run *run_at(struct pk_machine *m, u64 off)
{
	return (struct free_run *)(m->kmem + off);
}

static void pages_release(struct pk_machine *m, u64 off, u64 npages)
{
	if (npages)
		madvise(m->kmem + off, npages * KMEM_PAGE, MADV_DONTNEED);
}

/* npages from the first free run that has them, else from the top. Lock held. */
static void *alloc_pages(struct pk_machine *m, u64 npages)
{
	u64 *link = &m->kmem_free_pages;

	while (*link) {
		u64 off = *link - 1;
		struct free_run *r = run_at(m, off);

		if (r->npages >= npages) {
			u64 next = r->next, left = r->npages - npages;

			if (left) {
				struct free_run *rest = run_at(m, off + npages * KMEM_PAGE);

				rest->next = next;
				rest->npages = left;
				*link = off + npages * KMEM_PAGE + 1;
			} else {
				*link = next;
			}
			memset(r, 0, sizeof(*r));	/* the rest of a free run reads zero */
			return m->kmem + off;
		}
		link = &r->next;
	}
	if (npages > (m->kmem_reserved - m->kmem_used) / KMEM_PAGE ||
	    pk_machine_grow(m, m->kmem_used + npages * KMEM_PAGE))
		return NULL;
	m->kmem_used += npages * KMEM_PAGE;
	return m->kmem + m->kmem_used - npages * KMEM_PAGE;
}

/* Give npages at off back: into the free list, merged, or off the top. Lock held. */
static void free_pages(struct pk_machine *m, u64 off, u64 npages)
{
	u64 *link = &m->kmem_free_pages, prev = 0;
	bool have_prev = false;
	struct free_run *r;

	pages_release(m, off, npages);
	while (*link && *link - 1 < off) {
		prev = *link - 1;
		have_prev = true;
		link = &run_at(m, prev)->next;
	}
	r = run_at(m, off);
	r->next = *link;
	r->npages = npages;
	*link = off + 1;
	/* Merge with the run after it: that run's first page becomes plain free memory. */
	if (r->next && r->next - 1 == off + npages * KMEM_PAGE) {
		struct free_run *n = run_at(m, r->next - 1);

		r->npages += n->npages;
		r->next = n->next;
		pages_release(m, off + npages * KMEM_PAGE, 1);
	}
	/* ... and with the one before it. */
	if (have_prev) {
		struct free_run *p = run_at(m, prev);

		if (prev + p->npages * KMEM_PAGE == off) {
			p->npages += r->npages;
			p->next = r->next;
			pages_release(m, off, 1);
			off = prev;
			r = p;
		}
	}
	/* A free run at the top lowers the high-water mark (and what snapshots copy). */
	if (off + r->npages * KMEM_PAGE == m->kmem_used && !r->next) {
		u64 *l = &m->kmem_free_pages;

		while (*l != off + 1)
			l = &run_at(m, *l - 1)->next;
		*l = 0;
		m->kmem_used = off;
		pages_release(m, off, 1);
	}
}

static void *alloc_obj(struct pk_machine *m, int c)
{
	size_t size = 1ul << (KMEM_MIN_CLASS_SHIFT + c);
	u64 *head = &m->kmem_free_objs[c];
	u8 *page, *obj;

	if (!*head) {
		page = alloc_pages(m, 1);
		if (!page)
			return NULL;
		/* All but the first object of the new slab go on the free list. */
		for (size_t o = KMEM_PAGE - size; o >= size; o -= size) {
			memcpy(page + o, head, sizeof(*head));
			*head = (u64)(page + o - m->kmem) + 1;
		}
		return page;
	}
	obj = m->kmem + *head - 1;
	memcpy(head, obj, sizeof(*head));
	memset(obj, 0, size);
	return obj;
}

void *pk_kzalloc(struct pk_machine *m, size_t size, size_t align)
{
	void *p;

	if (!size)
		size = 1;
	if (!align || (align & (align - 1)) || align > KMEM_PAGE)
		return NULL;
	pk_kmem_lock(m);
	if (kmem_is_small(size, align)) {
		int c = kmem_class(size > align ? size : align);

		p = alloc_obj(m, c);
		if (p)
			m->kmem_in_use += 1ul << (KMEM_MIN_CLASS_SHIFT + c);
	} else {
		u64 npages = (size + KMEM_PAGE - 1) / KMEM_PAGE;

		p = alloc_pages(m, npages);
		if (p)
			m->kmem_in_use += npages * KMEM_PAGE;
	}
	pk_kmem_unlock(m);
	return p;
}

void pk_kfree(struct pk_machine *m, void *p, size_t size, size_t align)
{
	u64 off;

	if (!p)
		return;
	off = (u64)((u8 *)p - m->kmem);
	if (!size)
		size = 1;
	pk_kmem_lock(m);
	if (kmem_is_small(size, align ? align : 1)) {
		int c = kmem_class(size > align ? size : align);
		u64 *head = &m->kmem_free_objs[c];

		memcpy(p, head, sizeof(*head));
		*head = off + 1;
		m->kmem_in_use -= 1ul << (KMEM_MIN_CLASS_SHIFT + c);
	} else {
		u64 npages = (size + KMEM_PAGE - 1) / KMEM_PAGE;

		free_pages(m, off, npages);
		m->kmem_in_use -= npages * KMEM_PAGE;
	}
	pk_kmem_unlock(m);
}
