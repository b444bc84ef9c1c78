// SPDX-License-Identifier: MIT
/*
 * Write tracking for the decode cache: which pages of guest memory anyone wrote.
 *
 * Guest memory is the VMM's own memory (a memslot is a range of its address space, as
 * with KVM_SET_USER_MEMORY_REGION): Python writes it through the slot's mapping, the host
 * model and other vCPUs through their pointers, the kernel through read() into it. The
 * decode cache must see all of that at the next entry, so without help it compares every
 * cached block with memory the first time it runs after an entry (exec.c, "epoch").
 *
 * Linux (6.7 and later) can say instead which pages were written, for any writer: a
 * userfaultfd in asynchronous write-protect mode (UFFD_FEATURE_WP_ASYNC: the kernel lifts
 * the protection itself on the first write, nothing waits for a handler) and the
 * PAGEMAP_SCAN ioctl of /proc/self/pagemap, which lists the pages no longer protected
 * and protects them again in the same call (PM_SCAN_WP_MATCHING). A page that was never
 * protected is listed as written, so the first scan of a range reports all of it.
 * Documented in the kernel's Documentation/admin-guide/mm/userfaultfd.rst and pagemap.rst;
 * the constants below are the uapi's (include/uapi/linux/userfaultfd.h, fs.h), defined
 * here where the build host's headers are older than the running kernel.
 *
 * Only private memory is tracked: a shared mapping can be written through another
 * process's page tables, which our protection does not see. Where anything is missing
 * (an older kernel, a forbidden userfaultfd, memory the kernel cannot protect, a forked
 * child whose mappings lost the registration), a scan fails or no tracker is made, and
 * the caller compares as before: tracking only ever saves work.
 *
 * Several decode caches (one per CPU) may share a range. A scan protects the pages it
 * reports again, so the reports go into a log per range, and each cache reads the log
 * from where it last was.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "arch/exec_impl.h"

#if defined(__linux__) && defined(SYS_userfaultfd)
#include <linux/userfaultfd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY		1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM	(1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED	(1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC		(1 << 15)
#endif

/* fs.h, PAGEMAP_SCAN (6.7) */
struct wt_page_region {
	u64 start, end, categories;
};

struct wt_scan_arg {
	u64 size, flags, start, end, walk_end, vec, vec_len, max_pages;
	u64 category_inverted, category_mask, category_anyof_mask, return_mask;
};

#define WT_PAGEMAP_SCAN		_IOWR('f', 16, struct wt_scan_arg)
#define WT_PM_SCAN_WP_MATCHING	(1 << 0)
#define WT_PM_SCAN_CHECK_WPASYNC (1 << 1)
#define WT_PAGE_IS_WRITTEN	(1 << 1)

#define WT_LOG		64		/* written ranges kept per tracked range */
#define WT_VEC		32		/* ranges one scan may report */

struct wt_entry {
	u64 gen;
	u64 lo, hi;			/* pages [lo, hi) of the range */
};

struct pk_wtrack {
	struct pk_wtrack *next;
	u8 *hva;
	u64 size;
	unsigned refs;
	bool broken;			/* a scan failed: never trusted again */
	pthread_mutex_t lock;
	u64 gen;			/* the newest entry's generation */
	struct wt_entry log[WT_LOG];	/* log[gen % WT_LOG] */
};

static struct {
	pthread_mutex_t lock;
	int uffd;			/* -2: not tried yet, -1: none */
	int pagemap;
	pid_t pid;			/* the process that registered: a fork child is not */
	struct pk_wtrack *list;
} wt = { .lock = PTHREAD_MUTEX_INITIALIZER, .uffd = -2, .pagemap = -1 };

/* A userfaultfd in asynchronous write-protect mode, or -1. wt.lock held. */
static int wt_open(void)
{
	static const int modes[] = { UFFD_USER_MODE_ONLY, 0 };
	const u64 want = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;

	for (unsigned i = 0; i < 2; i++) {
		/* shared memory too where the kernel has it (Python's mmap is MAP_SHARED) */
		const u64 features[] = { want | UFFD_FEATURE_WP_HUGETLBFS_SHMEM, want };

		for (unsigned j = 0; j < 2; j++) {
			int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | modes[i]);
			struct uffdio_api api = { .api = UFFD_API, .features = features[j] };

			if (fd < 0)
				break;
			if (!ioctl(fd, UFFDIO_API, &api))
				return fd;
			close(fd);	/* UFFDIO_API is allowed once per descriptor */
		}
	}
	return -1;
}

/*
 * Is [start, end) private memory of this process (every mapping over it MAP_PRIVATE)?
 * Shared memory can be written through another process's page tables, which the
 * protection of ours does not see (a forked child, a memfd or /dev/shm file).
 */
static bool range_private(uintptr_t start, uintptr_t end)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512], perms[8];
	unsigned long lo, hi;
	uintptr_t covered = start;

	if (!f)
		return false;
	while (covered < end && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
			break;
		if (hi <= covered || lo >= end)
			continue;
		if (lo > covered || perms[3] != 'p')
			break;		/* a hole, or a shared mapping */
		covered = hi;
	}
	fclose(f);
	return covered >= end;
}

struct pk_wtrack *pk_wtrack_get(u8 *hva, u64 size)
{
	struct pk_wtrack *t = NULL;
	struct uffdio_register reg;

	if (((uintptr_t)hva | size) & 4095 || !size)
		return NULL;		/* whole pages only: the protection is per page */
	if (!range_private((uintptr_t)hva, (uintptr_t)hva + size))
		return NULL;
	pthread_mutex_lock(&wt.lock);
	if (wt.uffd == -2) {
		wt.uffd = wt_open();
		wt.pagemap = wt.uffd < 0 ? -1 : open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (wt.pagemap < 0 && wt.uffd >= 0) {
			close(wt.uffd);
			wt.uffd = -1;
		}
		wt.pid = getpid();
	}
	if (wt.uffd < 0 || wt.pid != getpid())
		goto out;
	for (t = wt.list; t; t = t->next) {
		if (t->hva == hva && t->size == size) {
			t->refs++;
			goto out;
		}
	}
	reg = (struct uffdio_register){
		.range = { .start = (uintptr_t)hva, .len = size },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(wt.uffd, UFFDIO_REGISTER, &reg))
		goto out;		/* t is NULL: memory the kernel cannot protect */
	t = calloc(1, sizeof(*t));
	if (!t) {
		ioctl(wt.uffd, UFFDIO_UNREGISTER, &reg.range);
		goto out;
	}
	t->hva = hva;
	t->size = size;
	t->refs = 1;
	pthread_mutex_init(&t->lock, NULL);
	t->next = wt.list;
	wt.list = t;
out:
	pthread_mutex_unlock(&wt.lock);
	return t;
}

void pk_wtrack_put(struct pk_wtrack *t)
{
	struct pk_wtrack **p;

	if (!t)
		return;
	pthread_mutex_lock(&wt.lock);
	if (--t->refs == 0) {
		struct uffdio_range r = { .start = (uintptr_t)t->hva, .len = t->size };

		for (p = &wt.list; *p != t; p = &(*p)->next)
			;
		*p = t->next;
		if (wt.pid == getpid())		/* an unmapped range fails: nothing to undo */
			ioctl(wt.uffd, UFFDIO_UNREGISTER, &r);
		pthread_mutex_destroy(&t->lock);
		free(t);
	}
	pthread_mutex_unlock(&wt.lock);
}

/* Scan pages [lo, hi) into the log; false if the scan failed or could not finish. */
static bool wt_scan(struct pk_wtrack *t, u64 lo, u64 hi)
{
	struct wt_page_region vec[WT_VEC];
	struct wt_scan_arg a = {
		.size = sizeof(a),
		.flags = WT_PM_SCAN_WP_MATCHING | WT_PM_SCAN_CHECK_WPASYNC,
		.start = (uintptr_t)t->hva + (lo << 12),
		.end = (uintptr_t)t->hva + (hi << 12),
		.vec = (uintptr_t)vec,
		.vec_len = WT_VEC,
		.category_mask = WT_PAGE_IS_WRITTEN,
		.return_mask = WT_PAGE_IS_WRITTEN,
	};
	long n = ioctl(wt.pagemap, WT_PAGEMAP_SCAN, &a);

	if (n < 0 || n > WT_VEC) {
		t->broken = true;	/* not registered (any more), or no PAGEMAP_SCAN */
		return false;
	}
	for (long i = 0; i < n; i++) {
		struct wt_entry *e = &t->log[++t->gen % WT_LOG];

		e->gen = t->gen;
		e->lo = (vec[i].start - (uintptr_t)t->hva) >> 12;
		e->hi = (vec[i].end - (uintptr_t)t->hva + 4095) >> 12;
	}
	return a.walk_end >= a.end;	/* else the vector filled up before the end */
}

bool pk_wtrack_unchanged(struct pk_wtrack *t, u64 lo, u64 hi, const u8 *code, u64 *seen)
{
	bool same;

	if (lo >= hi)
		return true;
	pthread_mutex_lock(&t->lock);
	same = !t->broken && wt.pid == getpid() && wt_scan(t, lo, hi);
	/* entries this cache has not read yet, unless the log has lost some of them */
	if (same && t->gen - *seen > WT_LOG)
		same = false;
	for (u64 g = *seen + 1; same && g <= t->gen; g++) {
		const struct wt_entry *e = &t->log[g % WT_LOG];

		for (u64 p = e->lo > lo ? e->lo : lo; p < e->hi && p < hi; p++) {
			if (code[p]) {
				same = false;
				break;
			}
		}
	}
	*seen = t->gen;
	pthread_mutex_unlock(&t->lock);
	return same;
}

#else	/* no userfaultfd: nothing is tracked, every entry compares */

struct pk_wtrack *pk_wtrack_get(u8 *hva, u64 size)
{
	(void)hva;
	(void)size;
	return NULL;
}

void pk_wtrack_put(struct pk_wtrack *t)
{
	(void)t;
}

bool pk_wtrack_unchanged(struct pk_wtrack *t, u64 lo, u64 hi, const u8 *code, u64 *seen)
{
	(void)t; (void)lo; (void)hi; (void)code; (void)seen;
	return false;
}

#endif
