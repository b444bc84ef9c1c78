// SPDX-License-Identifier: MIT
/*
 * The guest x86-64 interpreter: the simulated CPU executing guest code in long mode
 * (MACHINE.md section 4). 64-bit code only, CPL 0 or 3, flat: a linear address is the
 * guest-physical address (paging structures are not walked), memory is cpu->npt, an
 * access outside every slot (or straddling two) is an MMIO exit.
 *
 * The decode cache (struct pk_icache, cpu->icache) keeps straight-line blocks of
 * pre-decoded instructions (struct dins, exec_decode.c) in an open-addressing hash
 * table keyed by guest-physical address; table and block memory grow with the code the
 * guest runs (up to IC_MAX_BYTES, then everything is dropped once). Each block ends with
 * a pseudo-instruction (X_END) or a branch, remembers the blocks that followed it
 * (succ[]), and each handler dispatches to the next instruction's handler itself
 * (labels as values), so a block runs with no test between instructions. Runs of
 * register-only instructions inside a block execute on the host CPU itself
 * (X_NATIVE, exec_native.c). A block that is one such run and falls through to the next
 * (straight-line code longer than a block) is a linked run: once the next block is
 * known and checked in the current epoch, its host code jumps straight into the next
 * one's (link_runs()); a new epoch sends every linked run back here at its end.
 *
 * Code changes are always seen. A block keeps a copy of the bytes it was decoded from,
 * and the cache an epoch: a block is compared with guest memory the first time it is
 * entered in an epoch. A new epoch starts
 * - with every pk_guest_exec(): the host (or another CPU) may have written guest memory
 *   between two runs. Where the cache holds 16 pages of code or more and the host kernel
 *   can say which pages anyone wrote (exec_track.c), only when a page with code was;
 * - when a guest store hits a 64-byte line that holds cached code: the cache marks, per
 *   slot, the pages (a byte each) and lines (a bit each) its blocks were decoded from,
 *   so a store pays one byte-map test; a store into the block being run also ends the
 *   block after the storing instruction, so the next instruction is the one in memory;
 * - after an exception or interrupt delivery (it writes a frame to guest memory) and at
 *   the serializing instructions the interpreter has (WRMSR, IRETQ, LGDT, LIDT; CPUID
 *   always exits), which is when the SDM (vol. 3A 9.1.3) lets another processor's
 *   writes to code take effect.
 *
 * Arithmetic flags are lazy (struct lf): the last flag-setting operation's result, its
 * second operand and its kind; a flag is computed when something reads it. ZF is always
 * "res == 0", so JNZ/JZ need no computation.
 *
 * Instruction budget: cpu->insn_budget is decremented per retired instruction (and per
 * exception delivered, so that a guest faulting in a loop is bounded too); at 0 the
 * interpreter returns PK_GEXIT_EXTINT, between two instructions. A block is charged
 * whole on entry (and what did not retire is given back); a block longer than what is
 * left of the budget runs from a copy cut to the budget. A REP string instruction retires
 * once, whatever its count.
 *
 * MMIO: nothing of the instruction is retired when it exits. Re-executing it completes
 * it: a read at cpu->mmio_fill_gpa takes cpu->mmio_fill_data (when mmio_fill_valid); the
 * values an instruction already obtained, and the writes it already reported, are kept
 * (a small replay log, like KVM's emulator read cache) until it retires, so instructions
 * with more than one MMIO access make progress and a write is reported once. A REP
 * string instruction exits between iterations with the iterations done committed
 * (RCX, RSI, RDI updated), as an interrupted REP does on hardware.
 *
 * Not modelled (documented simplifications): paging, segment bases and limits other than
 * the FS/GS bases, compatibility and legacy modes (code is always decoded as 64-bit; CS.L
 * and EFER.LMA are not checked), RFLAGS.RF (never set in fault frames), alignment checks,
 * debug registers, interrupt shadows. Instructions outside the subset of MACHINE.md
 * section 4 are #UD (INS/OUTS, MOV to/from CR/DR/Sreg, far transfers, x87 and SIMD,
 * SYSRET to compatibility mode ...); near branches ignore 66h as on Intel.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "arch/exec_impl.h"
#include "pykvm/exec.h"

/* machine.h: events leave the interpreter as compound literals, so no hidden padding. */
_Static_assert(sizeof(struct pk_guest_event) == 32, "struct pk_guest_event has padding");

#define IC_HASH_MIN	4096			/* table slots at first (a power of 2) */
#define IC_CHUNK_SIZE	(1u << 20)		/* block memory comes in chunks of this */
#define IC_MAX_BYTES	(256u << 20)		/* blocks + native code: then start over */
#define IC_MAX_MAP_PAGES (1ull << 24)		/* code maps for slots up to 64 GiB */
#define BLK_MAX_INSNS	1023			/* bounds the stack arrays of blk_build() */
#define BLK_MAX_BYTES	4096
#define NATIVE_MIN	3			/* shorter register-only runs: interpreted */
#define NATIVE_MAX_REGS	14			/* one host GPR (besides RSP) stays free */
#define CANON_LIMIT	(1ull << 47)		/* the lower canonical half */
#define REPLAY_MAX	24			/* 15 fetched bytes + the data of IRET */

#define X86_EFLAGS_NT	BIT(14)
#define X86_EFLAGS_RF	BIT(16)
#define X86_EFLAGS_VM	BIT(17)
#define X86_EFLAGS_AC	BIT(18)
#define X86_EFLAGS_VIF	BIT(19)
#define X86_EFLAGS_VIP	BIT(20)
#define X86_EFLAGS_ID	BIT(21)
#define X86_EFLAGS_IOPL	(3u << 12)
#define ARITH_FLAGS	(X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF | X86_EFLAGS_ZF | \
			 X86_EFLAGS_SF | X86_EFLAGS_OF)
#define X86_CR4_TSD	BIT(2)
#define X86_CR4_UMIP	BIT(11)

/*
 * A block of pre-decoded instructions, followed in memory by the bytes they came from.
 * ins[] holds the instructions and, before each native run, its X_NATIVE entry; the
 * last entry is X_END (or the block ends with a branch before it).
 */
struct blk {
	u64 gpa;
	const u8 *hva;			/* where the bytes are in guest memory */
	struct blk *succ[2];		/* the blocks that followed (checked on use) */
	u64 epoch;			/* the cache's epoch when last compared with memory */
	u16 nbytes;
	u16 ninsn;			/* instructions (not counting X_NATIVE and X_END) */
	u16 nslots;			/* entries of ins[] (X_END included) */
	const u8 *bytes;
	void *lentry;			/* a linked run: where the one before comes in */
	void **lslot;			/* and where it goes on (exec_native.c) */
	struct dins ins[];
};

struct replay {
	u64 gpa;
	u64 data;
	u8 len;
	bool write;
};

/* Where cached code came from in one slot: pages (a byte each) and 64-byte lines. */
struct codemap {
	u8 *pages;			/* non-zero: some line of the page holds code */
	u64 *lines;			/* per page, bit n: line n holds code */
	u64 npages;
	u64 lo, hi;			/* the pages with code are in [lo, hi) */
	u64 ncode;			/* pages with code */
	struct pk_wtrack *wt;		/* who wrote the slot's pages (exec_track.c) */
	u64 wt_seen;
	bool wt_none;			/* no tracker can be had: do not ask again */
};

struct chunk {
	struct chunk *next;
	size_t size;
	u8 mem[];
};

struct pk_icache {
	struct pk_cpu *owner;		/* the CPU it belongs to (see icaches) */
	const struct pk_memslots *npt;	/* the slots the blocks were decoded from */
	struct pk_memslots slots;
	u64 retired;			/* instructions retired over the cache's life */
	u64 epoch;			/* see the top of this file */
	/* MMIO accesses already done by the instruction at replay_rip, not yet retired */
	u64 replay_rip, replay_seq, replay_aux;
	unsigned nreplay;
	struct replay replay[REPLAY_MAX];
	/* blocks by gpa: open addressing, linear probing; NULL: no cache, decode each time */
	struct blk **tab;
	u32 tab_mask, nblk;
	struct chunk *chunks;		/* newest first; blocks are carved from the newest */
	size_t chunk_used, bytes;
	struct codemap cmap[PK_MAX_MEMSLOTS];
	struct pk_native *native;
	u64 code_pages;			/* the codemaps' ncode summed: one test per entry */
	u64 builds, flushes;		/* statistics: pk_icache_stats() */
	u64 tracked_entries;
	u64 nlinked;			/* link_runs() calls: pk_icache_stats() */
	u64 gen;			/* flushes of any kind: pointers into blocks expire */
	struct blk *entry;		/* the first block of the last run: runs ending in
					 * VM-exits usually resume at the same place */
	void ***links;			/* slots of linked runs linked in this epoch */
	size_t nlinks, links_cap;
};

/*
 * Lazy arithmetic flags: op is LF_<kind> << 2 | log2(operand bytes). The kinds up to
 * LF_RES keep CF in src bit 0 (one test gets CF for the DEC of a loop counter).
 */
enum { LF_EAGER, LF_INC, LF_DEC, LF_RES, LF_ADD, LF_ADC1, LF_SUB, LF_SBB1, LF_LOGIC };
#define LF(kind, lg)	((kind) << 2 | (lg))
struct lf {
	u64 res;	/* result, truncated; LF_EAGER: 0 iff ZF (ZF is always res == 0) */
	u64 src;	/* ADD/ADC1/SUB/SBB1: second operand; INC/DEC: CF kept;
			 * RES: CF | OF << 11; EAGER: the six flags */
	u32 op;
};

/* The interpreter's working state for one pk_guest_exec(). */
struct xs {
	struct pk_cpu *cpu;
	u64 *R;
	struct pk_icache *ic;
	const struct pk_memslots *slots;
	u64 flags;		/* RFLAGS without the arithmetic flags */
	struct lf lf;
	/* the window: the slot of the last access, cut to the lower canonical half and
	 * short of its last 7 bytes, so one compare checks an access of up to 8 bytes */
	u64 m_gpa, m_lim;
	u8 *m_hva;
	const u8 *m_pages;	/* its code map's pages, or NULL */
	int m_slot;		/* its index in s->slots, or -1 */
	/* the block being run */
	struct blk *b;
	u64 start_budget, blk_budget, deliveries;
	bool smc;		/* a slow-path store hit the running block */
	bool flushed;		/* the cache was dropped: forget pointers into it */
	/* a failed access or instruction: fvec >= 0 a fault, -1 an exit in ev */
	int fvec;
	u32 ferr;
	struct pk_guest_event ev;
};

static const u64 szmask[9] = {
	0, 0xff, 0xffff, 0, 0xffffffff, 0, 0, 0, ~0ull,
};
static const u64 lgmask[4] = { 0xff, 0xffff, 0xffffffff, ~0ull };
static const u8 sz_lg[9] = { 0, 0, 1, 0, 2, 0, 0, 0, 3 };

/* ---- guest memory translation ---- */

u8 *pk_gpa_to_hva(const struct pk_memslots *slots, u64 gpa, u64 len)
{
	u32 nr;

	if (!slots)
		return NULL;
	nr = slots->nr < PK_MAX_MEMSLOTS ? slots->nr : PK_MAX_MEMSLOTS;
	for (u32 i = 0; i < nr; i++) {
		const struct pk_memslot *s = &slots->slot[i];
		u64 off = gpa - s->gpa;

		if (s->hva && off < s->size && len <= s->size - off)
			return s->hva + off;
	}
	return NULL;
}

static int find_slot(const struct pk_memslots *slots, u64 gpa)
{
	u32 nr;

	if (!slots)
		return -1;
	nr = slots->nr < PK_MAX_MEMSLOTS ? slots->nr : PK_MAX_MEMSLOTS;
	for (u32 i = 0; i < nr; i++) {
		const struct pk_memslot *s = &slots->slot[i];

		if (s->hva && gpa - s->gpa < s->size)
			return (int)i;
	}
	return -1;
}

/* ---- the decode cache ---- */

static void codemaps_free(struct pk_icache *ic)
{
	for (unsigned i = 0; i < PK_MAX_MEMSLOTS; i++) {
		free(ic->cmap[i].pages);
		free(ic->cmap[i].lines);
		pk_wtrack_put(ic->cmap[i].wt);
		ic->cmap[i] = (struct codemap){ 0 };
	}
	ic->code_pages = 0;
}

static void chunks_free(struct chunk *c)
{
	while (c) {
		struct chunk *next = c->next;

		free(c);
		c = next;
	}
}

/* Drop every block (and the native code and code maps with them). */
static void icache_flush(struct pk_icache *ic)
{
	if (ic->nblk || ic->bytes)
		ic->flushes++;
	if (ic->tab)
		memset(ic->tab, 0, sizeof(*ic->tab) * ((size_t)ic->tab_mask + 1));
	ic->nblk = 0;
	if (ic->chunks) {
		chunks_free(ic->chunks->next);	/* keep one chunk for what comes next */
		ic->chunks->next = NULL;
	}
	ic->chunk_used = 0;
	ic->bytes = 0;
	ic->nlinks = 0;			/* their slots go with the native code */
	pk_native_reset(ic->native);
	codemaps_free(ic);
	ic->epoch++;
	ic->gen++;
	ic->entry = NULL;
}

/*
 * Every decode cache, by the CPU it belongs to. The machine is copied and restored with
 * memcpy (snapshots, csrc/check), which copies or resets cpu->icache with it: a CPU whose
 * pointer is NULL or another CPU's finds its own cache here rather than allocating (and
 * leaking) a new one per restore. Consulted only when cpu->icache is not the CPU's own.
 */
static struct {
	atomic_flag lock;
	struct pk_icache **v;
	size_t n, cap;
} icaches = { .lock = ATOMIC_FLAG_INIT };

static void icaches_lock(void)
{
	while (atomic_flag_test_and_set_explicit(&icaches.lock, memory_order_acquire))
		;
}

static void icaches_unlock(void)
{
	atomic_flag_clear_explicit(&icaches.lock, memory_order_release);
}

/* The cache registered for cpu, removed from the registry if `take`. Lock held. */
static struct pk_icache *icaches_find(const struct pk_cpu *cpu, bool take)
{
	for (size_t i = 0; i < icaches.n; i++) {
		struct pk_icache *ic = icaches.v[i];

		if (ic->owner != cpu)
			continue;
		if (take)
			icaches.v[i] = icaches.v[--icaches.n];
		return ic;
	}
	return NULL;
}

static bool icaches_add(struct pk_icache *ic)
{
	if (icaches.n == icaches.cap) {
		size_t cap = icaches.cap ? 2 * icaches.cap : 16;
		struct pk_icache **v = realloc(icaches.v, cap * sizeof(*v));

		if (!v)
			return false;
		icaches.v = v;
		icaches.cap = cap;
	}
	icaches.v[icaches.n++] = ic;
	return true;
}

static void icache_destroy(struct pk_icache *ic)
{
	if (!ic)
		return;
	free(ic->tab);
	free(ic->links);
	chunks_free(ic->chunks);
	codemaps_free(ic);
	pk_native_destroy(ic->native);
	free(ic);
}

void pk_icache_free(struct pk_cpu *cpu)
{
	struct pk_icache *ic;

	icaches_lock();
	ic = icaches_find(cpu, true);
	icaches_unlock();
	cpu->icache = NULL;
	icache_destroy(ic);
}

/* cpu's decode cache when cpu->icache is not it; NULL only if there is no memory. */
static __attribute__((noinline)) struct pk_icache *icache_find_or_create(struct pk_cpu *cpu)
{
	struct pk_icache *ic;
	bool added;

	icaches_lock();
	ic = icaches_find(cpu, false);
	icaches_unlock();
	if (ic) {
		cpu->icache = ic;
		return ic;
	}
	ic = calloc(1, sizeof(*ic));
	if (!ic)
		return NULL;
	ic->owner = cpu;
	ic->tab = calloc(IC_HASH_MIN, sizeof(*ic->tab));
	ic->tab_mask = IC_HASH_MIN - 1;
	ic->native = pk_native_create();	/* NULL: no native runs */
	if (!ic->tab) {				/* run uncached: decode every instruction */
		ic->tab_mask = 0;
	}
	icaches_lock();
	added = icaches_add(ic);
	icaches_unlock();
	if (!added) {
		icache_destroy(ic);
		return NULL;
	}
	cpu->icache = ic;
	return ic;
}

/* cpu's decode cache; NULL only if there is no memory for one. */
static inline struct pk_icache *icache_get(struct pk_cpu *cpu)
{
	struct pk_icache *ic = cpu->icache;

	if (likely(ic && ic->owner == cpu))
		return ic;
	return icache_find_or_create(cpu);
}

static inline bool slots_equal(const struct pk_memslots *a, const struct pk_memslots *b)
{
	u32 nr = b->nr < PK_MAX_MEMSLOTS ? b->nr : PK_MAX_MEMSLOTS;

	if (a->nr != b->nr)
		return false;
	for (u32 i = 0; i < nr; i++)	/* one or two slots, usually: no memcmp call */
		if (a->slot[i].gpa != b->slot[i].gpa || a->slot[i].size != b->slot[i].size ||
		    a->slot[i].hva != b->slot[i].hva)
			return false;
	return true;
}

static __attribute__((noinline)) void icache_set_slots(struct pk_icache *ic,
						       const struct pk_memslots *npt);

/* Drop the cache when the memory map changed since the blocks were decoded. */
static inline void icache_check_slots(struct pk_icache *ic, const struct pk_memslots *npt)
{
	if (likely(ic->npt == npt && (!npt || slots_equal(&ic->slots, npt))))
		return;
	icache_set_slots(ic, npt);
}

static void icache_set_slots(struct pk_icache *ic, const struct pk_memslots *npt)
{
	icache_flush(ic);
	ic->npt = npt;
	memset(&ic->slots, 0, sizeof(ic->slots));
	if (npt) {
		ic->slots.nr = npt->nr;
		memcpy(ic->slots.slot, npt->slot,
		       (npt->nr < PK_MAX_MEMSLOTS ? npt->nr : PK_MAX_MEMSLOTS) *
		       sizeof(npt->slot[0]));
	}
}

static inline u32 blk_hash(u64 gpa)
{
	return (u32)((gpa * 0x9e3779b97f4a7c15ull) >> 32);
}

static struct blk *tab_find(const struct pk_icache *ic, u64 gpa)
{
	for (u32 i = blk_hash(gpa) & ic->tab_mask;; i = (i + 1) & ic->tab_mask) {
		struct blk *b = ic->tab[i];

		if (!b || b->gpa == gpa)
			return b;
	}
}

/* Put b in the table, in place of the block at the same gpa if there is one. */
static void tab_put(struct pk_icache *ic, struct blk *b)
{
	u32 i = blk_hash(b->gpa) & ic->tab_mask;

	for (;; i = (i + 1) & ic->tab_mask) {
		if (!ic->tab[i] || ic->tab[i]->gpa == b->gpa)
			break;
	}
	if (!ic->tab[i])
		ic->nblk++;
	ic->tab[i] = b;
}

/* Double the table when it is half full. false: no memory (the caller flushes). */
static bool tab_grow(struct pk_icache *ic)
{
	u32 size = ic->tab_mask + 1, nsize = 2 * size;
	struct blk **old = ic->tab, **tab;

	if (ic->nblk + 1 < size / 2)
		return true;
	if (nsize < size || !(tab = calloc(nsize, sizeof(*tab))))
		return false;
	ic->tab = tab;
	ic->tab_mask = nsize - 1;
	ic->nblk = 0;
	for (u32 i = 0; i < size; i++)
		if (old[i])
			tab_put(ic, old[i]);
	free(old);
	return true;
}

/* size bytes (16-aligned) of block memory, or NULL. */
static void *blk_alloc(struct pk_icache *ic, size_t size)
{
	struct chunk *c = ic->chunks;

	size = (size + 15) & ~(size_t)15;
	if (!c || c->size - ic->chunk_used < size) {
		size_t csize = size > IC_CHUNK_SIZE ? size : IC_CHUNK_SIZE;

		c = malloc(sizeof(*c) + csize);
		if (!c)
			return NULL;
		c->size = csize;
		c->next = ic->chunks;
		ic->chunks = c;
		ic->chunk_used = 0;
	}
	ic->chunk_used += size;
	ic->bytes += size;
	return c->mem + ic->chunk_used - size;
}

/*
 * A new epoch: every block is compared with memory before it runs again, and linked
 * runs go back to the interpreter at their end until their successor is checked.
 */
static void icache_new_epoch(struct pk_icache *ic)
{
	ic->epoch++;
	for (size_t i = 0; i < ic->nlinks; i++)
		ic->links[i][0] = ic->links[i][1];
	ic->nlinks = 0;
}

/* Link a's linked run on into b's (b follows a and is checked in this epoch). */
static void link_runs(struct pk_icache *ic, struct blk *a, const struct blk *b)
{
	if (ic->nlinks == ic->links_cap) {
		size_t cap = ic->links_cap ? 2 * ic->links_cap : 256;
		void ***v = realloc(ic->links, cap * sizeof(*v));

		if (!v)
			return;		/* not linked: a goes back to the interpreter */
		ic->links = v;
		ic->links_cap = cap;
	}
	ic->links[ic->nlinks++] = a->lslot;
	a->lslot[0] = b->lentry;
	ic->nlinked++;
}

/* ---- code maps: which lines of guest memory hold cached code ---- */

/*
 * Has anyone written a page with cached code since the last entry? Asked of the host
 * kernel (exec_track.c) only for this much code: a scan costs about a microsecond, the
 * comparisons it saves about as much for each 16 KiB of hot code.
 */
#define WT_MIN_PAGES	16

static bool code_unwritten(struct pk_icache *ic)
{
	for (u32 i = 0; i < ic->slots.nr && i < PK_MAX_MEMSLOTS; i++) {
		struct codemap *cm = &ic->cmap[i];

		if (!cm->ncode)
			continue;
		if (!cm->wt && !cm->wt_none) {
			cm->wt = pk_wtrack_get(ic->slots.slot[i].hva, ic->slots.slot[i].size);
			cm->wt_none = !cm->wt;
		}
		if (!cm->wt || !pk_wtrack_unchanged(cm->wt, cm->lo, cm->hi, cm->pages,
						    &cm->wt_seen))
			return false;
	}
	return true;
}

/*
 * Entering the interpreter: the host or another CPU may have written guest memory since
 * the last run. Unless the host kernel says no page with code was written, start a new
 * epoch: every block is compared with memory before it runs again.
 */
static void icache_enter(struct pk_icache *ic)
{
	if (ic->code_pages >= WT_MIN_PAGES && code_unwritten(ic)) {
		ic->tracked_entries++;
		return;
	}
	icache_new_epoch(ic);
}

static struct codemap *codemap_get(struct pk_icache *ic, int slot)
{
	struct codemap *cm = &ic->cmap[slot];
	u64 npages = (ic->slots.slot[slot].size + 4095) >> 12;

	if (cm->pages || npages > IC_MAX_MAP_PAGES)
		return cm->pages ? cm : NULL;
	cm->pages = calloc(npages, 1);
	cm->lines = calloc(npages, sizeof(u64));
	if (!cm->pages || !cm->lines) {
		free(cm->pages);
		free(cm->lines);
		cm->pages = NULL;
		cm->lines = NULL;
		return NULL;
	}
	cm->npages = npages;
	return cm;
}

/* Mark [off, off + len) of the slot as code. */
static void codemap_mark(struct pk_icache *ic, struct codemap *cm, u64 off, u64 len)
{
	for (u64 line = off >> 6; line <= (off + len - 1) >> 6; line++) {
		u64 page = line >> 6;

		if (!cm->pages[page]) {
			cm->pages[page] = 1;
			cm->lo = cm->ncode && cm->lo < page ? cm->lo : page;
			cm->hi = cm->hi > page + 1 ? cm->hi : page + 1;
			cm->ncode++;
			ic->code_pages++;
		}
		cm->lines[page] |= 1ull << (line & 63);
	}
}

/* Does [off, off + len) of the slot hold cached code (its pages already tested)? */
static bool codemap_hit(const struct codemap *cm, u64 off, u64 len)
{
	for (u64 line = off >> 6; line <= (off + len - 1) >> 6; line++)
		if (cm->lines[line >> 6] & (1ull << (line & 63)))
			return true;
	return false;
}

/* The window onto slot i (see struct xs), or none (i < 0). */
static void window_set(struct xs *s, int i)
{
	const struct pk_memslot *slot;
	u64 size;

	s->m_slot = i;
	s->m_pages = NULL;
	if (i < 0) {
		s->m_gpa = 0;
		s->m_lim = 0;
		s->m_hva = NULL;
		s->m_slot = -1;
		return;
	}
	slot = &s->slots->slot[i];
	size = slot->size;
	if (slot->gpa >= CANON_LIMIT) {
		s->m_gpa = 0;
		s->m_lim = 0;
		s->m_slot = -1;
		return;
	}
	if (size > CANON_LIMIT - slot->gpa)
		size = CANON_LIMIT - slot->gpa;
	s->m_gpa = slot->gpa;
	s->m_lim = size >= 8 ? size - 7 : 0;
	s->m_hva = slot->hva;
	s->m_pages = s->ic->cmap[i].pages;
}

/*
 * A store to [a, a + len) in slot i hit a page with code: if it hit a line of it, start
 * a new epoch. true if it hit the block being run.
 */
static __attribute__((noinline)) bool smc_store(struct xs *s, int i, u64 a, u64 len)
{
	const struct codemap *cm = &s->ic->cmap[i];
	u64 off = a - s->slots->slot[i].gpa;

	if (!cm->pages || !codemap_hit(cm, off, len))
		return false;
	icache_new_epoch(s->ic);
	return a < s->b->gpa + s->b->nbytes && a + len > s->b->gpa;
}

static inline bool code_page(const u8 *pages, u64 off, unsigned len)
{
	return pages && (pages[off >> 12] | pages[(off + len - 1) >> 12]);
}

/* Does guest memory still hold the bytes the block was decoded from? */
static inline bool blk_valid(const struct blk *b)
{
	const u8 *p = b->hva, *q = b->bytes;
	unsigned n = b->nbytes;
	u64 x0, x1, y0, y1;
	u32 a0, a1, c0, c1;

	if (n > 16)
		return !memcmp(p, q, n);
	if (n >= 8) {		/* two loads, overlapping when n < 16 */
		memcpy(&x0, p, 8);
		memcpy(&y0, q, 8);
		memcpy(&x1, p + n - 8, 8);
		memcpy(&y1, q + n - 8, 8);
		return !((x0 ^ y0) | (x1 ^ y1));
	}
	if (n >= 4) {
		memcpy(&a0, p, 4);
		memcpy(&c0, q, 4);
		memcpy(&a1, p + n - 4, 4);
		memcpy(&c1, q + n - 4, 4);
		return !((a0 ^ c0) | (a1 ^ c1));
	}
	if (n >= 2) {
		u16 h0, h1, k0, k1;

		memcpy(&h0, p, 2);
		memcpy(&k0, q, 2);
		memcpy(&h1, p + n - 2, 2);
		memcpy(&k1, q + n - 2, 2);
		return !((h0 ^ k0) | (h1 ^ k1));
	}
	return !n || p[0] == q[0];
}

/* ---- flags ---- */

static inline u64 parity_flag(u64 res)
{
	return __builtin_parity((unsigned)(res & 0xff)) ? 0 : X86_EFLAGS_PF;
}

static inline u64 lf_cf(const struct lf *f)
{
	u64 m = lgmask[f->op & 3];

	if (f->op < LF(LF_ADD, 0))		/* EAGER, INC, DEC, RES */
		return f->src & 1;
	switch (f->op >> 2) {
	case LF_ADD: return f->res < f->src;
	case LF_ADC1: return f->res <= f->src;
	case LF_SUB: return ((f->res + f->src) & m) < f->src;
	case LF_SBB1: return ((f->res + f->src + 1) & m) <= f->src;
	case LF_LOGIC: return 0;
	default: return f->src & 1;		/* EAGER, INC, DEC, RES */
	}
}

/* The six arithmetic flags, in their RFLAGS positions. */
static u64 lf_arith(const struct lf *f)
{
	unsigned sh = (8u << (f->op & 3)) - 1;
	u64 m = lgmask[f->op & 3], r = f->res, b = f->src, a, cf, of, af;

	switch (f->op >> 2) {
	case LF_EAGER:
		return f->src;
	case LF_ADD:
		a = (r - b) & m;
		cf = r < b;
		goto add;
	case LF_ADC1:
		a = (r - b - 1) & m;
		cf = r <= b;
add:
		of = ((a ^ r) & (b ^ r)) >> sh;
		af = a ^ b ^ r;
		break;
	case LF_SUB:
		a = (r + b) & m;
		cf = a < b;
		goto sub;
	case LF_SBB1:
		a = (r + b + 1) & m;
		cf = a <= b;
sub:
		of = ((a ^ b) & (a ^ r)) >> sh;
		af = a ^ b ^ r;
		break;
	case LF_LOGIC:
		cf = of = af = 0;
		break;
	case LF_INC:		/* r = a + 1 */
		cf = b;
		of = r == (1ull << sh);
		af = (r & 0xf) == 0 ? X86_EFLAGS_AF : 0;
		break;
	case LF_DEC:		/* r = a - 1 */
		cf = b;
		of = r == (m >> 1);
		af = (r & 0xf) == 0xf ? X86_EFLAGS_AF : 0;
		break;
	default:		/* LF_RES: CF and OF computed, AF cleared */
		cf = b & 1;
		of = (b >> 11) & 1;
		af = 0;
		break;
	}
	return (cf & 1) | parity_flag(r) | (af & X86_EFLAGS_AF) | (r ? 0 : X86_EFLAGS_ZF) |
	       (((r >> sh) & 1) << 7) | ((of & 1) << 11);
}

static inline void lf_set(struct lf *f, u64 arith)
{
	f->op = LF(LF_EAGER, 3);
	f->src = arith & ARITH_FLAGS;
	f->res = !(arith & X86_EFLAGS_ZF);
}

static inline bool lf_zf(const struct lf *f)
{
	return f->res == 0;
}

/* Condition code cc (the low nibble of Jcc/SETcc/CMOVcc). */
static inline bool lf_cond(const struct lf *f, unsigned cc)
{
	u64 fl;
	bool v;

	switch (cc >> 1) {
	case 1: v = lf_cf(f); break;				/* B */
	case 2: v = lf_zf(f); break;				/* E */
	case 3: v = lf_zf(f) || lf_cf(f); break;		/* BE */
	default:
		fl = lf_arith(f);
		switch (cc >> 1) {
		case 0: v = fl & X86_EFLAGS_OF; break;		/* O */
		case 4: v = fl & X86_EFLAGS_SF; break;		/* S */
		case 5: v = fl & X86_EFLAGS_PF; break;		/* P */
		case 6: v = !(fl & X86_EFLAGS_SF) != !(fl & X86_EFLAGS_OF); break;	/* L */
		default: v = (fl & X86_EFLAGS_ZF) ||
			     !(fl & X86_EFLAGS_SF) != !(fl & X86_EFLAGS_OF); break;	/* LE */
		}
	}
	return v ^ (cc & 1);
}

static inline u64 get_rflags(const struct xs *s)
{
	return s->flags | lf_arith(&s->lf);
}

static inline void set_rflags(struct xs *s, u64 v)
{
	s->flags = (v & ~(u64)ARITH_FLAGS) | X86_EFLAGS_FIXED;
	lf_set(&s->lf, v);
}

/* Result flags of a shift or a multiply: SF/ZF/PF from res, AF cleared (undefined). */
static inline void lf_result(struct lf *f, u64 res, unsigned sz, u64 cf, u64 of)
{
	f->op = LF(LF_RES, sz_lg[sz]);
	f->res = res;
	f->src = (cf & 1) | ((of & 1) << 11);
}

static inline u64 alu(struct lf *f, unsigned op, unsigned sz, u64 a, u64 b)
{
	u64 m = szmask[sz], r;
	unsigned lg = sz_lg[sz], kind;

	switch (op) {
	case ALU_ADD:
		r = (a + b) & m;
		kind = LF_ADD;
		break;
	case ALU_ADC:
		if (lf_cf(f)) {
			r = (a + b + 1) & m;
			kind = LF_ADC1;
		} else {
			r = (a + b) & m;
			kind = LF_ADD;
		}
		break;
	case ALU_SBB:
		if (lf_cf(f)) {
			r = (a - b - 1) & m;
			kind = LF_SBB1;
		} else {
			r = (a - b) & m;
			kind = LF_SUB;
		}
		break;
	case ALU_SUB:
	case ALU_CMP:
		r = (a - b) & m;
		kind = LF_SUB;
		break;
	case ALU_OR:
		r = a | b;
		kind = LF_LOGIC;
		break;
	case ALU_AND:
		r = a & b;
		kind = LF_LOGIC;
		break;
	default:
		r = a ^ b;
		kind = LF_LOGIC;
		break;
	}
	f->res = r;
	f->src = b;
	f->op = LF(kind, lg);
	return r;
}

/* INC, DEC: CF is kept. */
static inline u64 lf_incdec(struct lf *f, bool inc, unsigned sz, u64 a)
{
	u64 cf = lf_cf(f), r = (inc ? a + 1 : a - 1) & szmask[sz];

	f->res = r;
	f->src = cf;
	f->op = LF(inc ? LF_INC : LF_DEC, sz_lg[sz]);
	return r;
}

static u64 shift(struct lf *f, unsigned kind, unsigned sz, u64 x, u64 count)
{
	unsigned bits = sz * 8, c = count & (sz == 8 ? 0x3f : 0x1f), k;
	u64 m = szmask[sz], r, cf, of, fl, sx;

	if (!c)
		return x;			/* no flag changes */
	switch (kind) {
	case SH_ROL:
		k = c % bits;
		r = k ? ((x << k) | (x >> (bits - k))) & m : x;
		cf = r & 1;
		of = ((r >> (bits - 1)) & 1) ^ cf;
		goto rotate;
	case SH_ROR:
		k = c % bits;
		r = k ? ((x >> k) | (x << (bits - k))) & m : x;
		cf = (r >> (bits - 1)) & 1;
		of = cf ^ ((r >> (bits - 2)) & 1);
		goto rotate;
	case SH_RCL:
	case SH_RCR:
		k = sz == 1 ? c % 9 : sz == 2 ? c % 17 : c;
		if (!k)
			return x;
		r = x;
		cf = lf_cf(f);
		of = ((x >> (bits - 1)) & 1) ^ cf;	/* RCR, count 1 */
		for (unsigned i = 0; i < k; i++) {
			u64 out;

			if (kind == SH_RCL) {
				out = (r >> (bits - 1)) & 1;
				r = ((r << 1) | cf) & m;
			} else {
				out = r & 1;
				r = (r >> 1) | (cf << (bits - 1));
			}
			cf = out;
		}
		if (kind == SH_RCL)
			of = ((r >> (bits - 1)) & 1) ^ cf;
		goto rotate;
	case SH_SHL:
	case SH_SAL:
		r = c < bits ? (x << c) & m : 0;
		cf = c <= bits ? (x >> (bits - c)) & 1 : 0;
		of = ((r >> (bits - 1)) & 1) ^ cf;
		break;
	case SH_SHR:
		r = c < bits ? x >> c : 0;
		cf = c <= bits ? (x >> (c - 1)) & 1 : 0;
		of = (x >> (bits - 1)) & 1;
		break;
	default:	/* SAR */
		sx = (u64)((s64)(x << (64 - bits)) >> (64 - bits));
		r = (u64)((s64)sx >> (c < 63 ? c : 63)) & m;
		cf = ((s64)sx >> (c - 1 < 63 ? c - 1 : 63)) & 1;
		of = 0;
		break;
	}
	lf_result(f, r, sz, cf, of);
	return r;

rotate:		/* rotates change CF and OF only */
	fl = lf_arith(f) & ~(u64)(X86_EFLAGS_CF | X86_EFLAGS_OF);
	lf_set(f, fl | cf | (of << 11));
	return r;
}

static inline u64 sext(u64 v, unsigned sz)
{
	unsigned sh = 64 - 8 * sz;

	return (u64)((s64)(v << sh) >> sh);
}

/* ---- registers and memory ---- */

static inline u64 rget(const u64 *R, unsigned r, unsigned sz)
{
	if (sz == 1 && r >= XR_HIGH8)
		return (R[r - XR_HIGH8] >> 8) & 0xff;
	return R[r] & szmask[sz];
}

static inline void rset(u64 *R, unsigned r, unsigned sz, u64 v)
{
	switch (sz) {
	case 8:
		R[r] = v;
		break;
	case 4:
		R[r] = (u32)v;			/* 32-bit writes zero-extend */
		break;
	case 2:
		R[r] = (R[r] & ~0xffffull) | (u16)v;
		break;
	default:
		if (r >= XR_HIGH8) {
			r -= XR_HIGH8;
			R[r] = (R[r] & ~0xff00ull) | ((v & 0xff) << 8);
		} else {
			R[r] = (R[r] & ~0xffull) | (v & 0xff);
		}
		break;
	}
}

/* Effective address (what LEA computes): no segment base. */
static inline u64 ea_off(const struct xs *s, const struct dins *d)
{
	u64 a = d->disp;

	if (d->base != XR_NONE)
		a += s->R[d->base];
	if (d->index != XR_NONE)
		a += s->R[d->index] << d->scale;
	if (d->flags & DI_ASZ32)
		a = (u32)a;
	return a;
}

/* Linear (= guest-physical) address of the memory operand. */
static inline u64 ea(const struct xs *s, const struct dins *d)
{
	u64 a = ea_off(s, d);

	if (d->seg)
		a += s->cpu->seg[d->seg].base;
	return a;
}

static inline u64 ldn(const u8 *p, unsigned sz)
{
	u8 v8;
	u16 v16;
	u32 v32;
	u64 v64;

	switch (sz) {
	case 1: memcpy(&v8, p, 1); return v8;
	case 2: memcpy(&v16, p, 2); return v16;
	case 4: memcpy(&v32, p, 4); return v32;
	default: memcpy(&v64, p, 8); return v64;
	}
}

static inline void stn(u8 *p, unsigned sz, u64 v)
{
	u8 v8 = (u8)v;
	u16 v16 = (u16)v;
	u32 v32 = (u32)v;

	switch (sz) {
	case 1: memcpy(p, &v8, 1); break;
	case 2: memcpy(p, &v16, 2); break;
	case 4: memcpy(p, &v32, 4); break;
	default: memcpy(p, &v, 8); break;
	}
}

static inline u64 cur_rip(const struct xs *s, const struct dins *d)
{
	return s->b->gpa + d->off;
}

/* Retired instructions before d, over the cache's life: with RIP, names an execution. */
static inline u64 cur_seq(const struct xs *s, const struct dins *d)
{
	return s->ic->retired + s->start_budget - s->deliveries - s->blk_budget + d->idx;
}

static void replay_key(struct pk_icache *ic, u64 rip, u64 seq, u64 aux)
{
	if (ic->replay_rip != rip || ic->replay_seq != seq || ic->replay_aux != aux) {
		ic->replay_rip = rip;
		ic->replay_seq = seq;
		ic->replay_aux = aux;
		ic->nreplay = 0;
	}
}

static void replay_add(struct pk_icache *ic, u64 gpa, unsigned len, bool write, u64 data)
{
	if (ic->nreplay < REPLAY_MAX)
		ic->replay[ic->nreplay++] = (struct replay){
			.gpa = gpa, .data = data, .len = (u8)len, .write = write };
}

/*
 * An MMIO read the instruction at (rip, seq, aux) already completed, or the fill the
 * host provided for it. false: the read has to exit.
 */
static bool mmio_read_done(struct xs *s, u64 rip, u64 seq, u64 aux, u64 a, unsigned len,
			   u64 *v)
{
	struct pk_icache *ic = s->ic;
	struct pk_cpu *cpu = s->cpu;

	replay_key(ic, rip, seq, aux);
	for (unsigned i = 0; i < ic->nreplay; i++) {
		const struct replay *r = &ic->replay[i];

		if (!r->write && r->gpa == a && r->len == len) {
			*v = r->data;
			return true;
		}
	}
	if (cpu->mmio_fill_valid && cpu->mmio_fill_gpa == a) {
		*v = cpu->mmio_fill_data & szmask[len];
		cpu->mmio_fill_valid = false;
		replay_add(ic, a, len, false, *v);
		return true;
	}
	return false;
}

static void mmio_exit(struct xs *s, u8 insn_len, u64 a, unsigned len, bool write, u64 data)
{
	s->ev = (struct pk_guest_event){
		.kind = PK_GEXIT_MMIO, .insn_len = insn_len, .gpa = a, .len = (u8)len,
		.write = write, .data = write ? data : 0,
	};
	s->fvec = -1;
}

/*
 * Every access the window does not cover: canonical check, another slot, or MMIO.
 * aux tells apart the iterations of a REP string instruction in the replay log (RCX
 * before the iteration; 0 otherwise). 0 done; -1 with s->fvec set (a fault, or -1 for
 * an exit).
 */
static __attribute__((noinline)) int mem_access(struct xs *s, const struct dins *d, u64 a,
						unsigned len, u64 *v, bool write, bool stack,
						u64 aux)
{
	int i;
	u64 rip, seq;

	if (is_noncanonical_address(a) || is_noncanonical_address(a + len - 1)) {
		s->fvec = stack ? X86_TRAP_SS : X86_TRAP_GP;
		s->ferr = 0;
		return -1;
	}
	i = find_slot(s->slots, a);
	if (i >= 0 && len <= s->slots->slot[i].size - (a - s->slots->slot[i].gpa)) {
		const struct pk_memslot *slot = &s->slots->slot[i];
		u8 *p = slot->hva + (a - slot->gpa);

		if (i != s->m_slot)
			window_set(s, i);
		if (write) {
			stn(p, len, *v);
			if (code_page(s->ic->cmap[i].pages, a - slot->gpa, len) &&
			    smc_store(s, i, a, len))
				s->smc = true;
		} else {
			*v = ldn(p, len);
		}
		return 0;
	}

	/* MMIO (outside every slot, or across two) */
	rip = cur_rip(s, d);
	seq = cur_seq(s, d);
	if (!write) {
		if (mmio_read_done(s, rip, seq, aux, a, len, v))
			return 0;
		mmio_exit(s, d->len, a, len, false, 0);
		return -1;
	}
	replay_key(s->ic, rip, seq, aux);
	for (unsigned k = 0; k < s->ic->nreplay; k++) {
		const struct replay *r = &s->ic->replay[k];

		if (r->write && r->gpa == a && r->len == len && r->data == *v)
			return 0;	/* reported already: the host completed it */
	}
	replay_add(s->ic, a, len, true, *v);
	mmio_exit(s, d->len, a, len, true, *v);
	return -1;
}

static __attribute__((noinline)) int mem_slow(struct xs *s, const struct dins *d, u64 a,
					      unsigned len, u64 *v, bool write, bool stack)
{
	return mem_access(s, d, a, len, v, write, stack, 0);
}

/*
 * Fetch and decode one instruction the cache cannot hold: outside every slot (the
 * bytes come from MMIO reads, one byte per exit), across two slots, at a non-canonical
 * address, or with no cache. 0: *d is ready; -1: s->fvec / s->ev says why not.
 */
static __attribute__((noinline)) int fetch_slow(struct xs *s, u64 rip, struct dins *d)
{
	u64 seq = s->ic->retired + s->start_budget - s->deliveries - s->blk_budget;
	u8 buf[15];
	unsigned avail = 0;

	while (avail < 15) {
		u64 a = rip + avail, v;
		const u8 *p;

		if (is_noncanonical_address(a))
			break;
		p = pk_gpa_to_hva(s->slots, a, 1);
		if (p)
			buf[avail++] = *p;
		else if (mmio_read_done(s, rip, seq, 0, a, 1, &v))
			buf[avail++] = (u8)v;
		else
			break;
	}
	if (pk_exec_decode(buf, avail, rip, d)) {
		pk_exec_specialize(d);
		return 0;
	}
	/* it needs byte rip + avail, which is not there */
	if (is_noncanonical_address(rip + avail)) {
		s->fvec = X86_TRAP_GP;
		s->ferr = 0;
		return -1;
	}
	mmio_exit(s, 0, rip + avail, 1, false, 0);
	return -1;
}

/* ---- building blocks ---- */

static u8 native_use_regs(u16 regs)
{
	return (u8)__builtin_popcount(regs);
}

/* Flags [k, e) of a run leave undefined at its end (exec_native.c: never the host's). */
static u8 run_undefined(const struct native_use *u, unsigned k, unsigned e)
{
	u8 undef = 0;

	for (unsigned j = k; j < e; j++)
		undef = (u8)((undef & ~u[j].fwr) | u[j].fundef);
	return undef;
}

/*
 * The native run starting at raw[k] (nat[k] set): how many instructions, at most the
 * ones that fit NATIVE_MAX_REGS registers, not ending with undefined flags.
 */
static unsigned native_run_len(const bool *nat, const struct native_use *u, unsigned k,
			       unsigned n)
{
	unsigned e = k;
	u16 regs = 0;

	while (e < n && nat[e] && native_use_regs(regs | u[e].rd) <= NATIVE_MAX_REGS)
		regs |= u[e++].rd;
	while (e > k && run_undefined(u, k, e))
		e--;
	return e - k;
}

/*
 * Emit the native run raw[k, k + len) as out's X_NATIVE entry; false if it cannot be.
 * loop_cc >= 0: the run is a loop body closed by the Jcc after it (exec_native.c).
 */
static bool native_run(struct pk_icache *ic, const struct dins *raw,
		       const struct native_use *u, unsigned k, unsigned len, const u8 *hva,
		       int loop_cc, struct dins *out)
{
	u16 rd = 0, wr = 0;
	u8 written = 0;
	bool fin = false;
	pk_native_fn fn;

	for (unsigned j = k; j < k + len; j++) {
		rd |= u[j].rd;
		wr |= u[j].wr;
		if (u[j].frd & ~written)
			fin = true;
		written |= u[j].fwr;
	}
	/*
	 * The Jcc reads the flags as the body leaves them: each one written in this
	 * iteration, or loaded on entry and kept (a body that writes some flags reads
	 * the rest, pk_native_ok(), so fin covers a partial write such as DEC's).
	 */
	if (loop_cc >= 0 && (written & 0x3f) != 0x3f && !fin)
		return false;
	fn = pk_native_emit(ic->native, &raw[k], len, hva, rd, wr, fin, written != 0,
			    loop_cc);
	if (!fn)
		return false;
	memset(out, 0, sizeof(*out));
	out->op = X_NATIVE;
	out->disp = len;		/* the instructions it covers, after it */
	out->idx = raw[k].idx;
	out->off = raw[k].off;
	out->imm = (u64)(uintptr_t)fn;
	out->flags = (fin ? DI_NATIVE_IN : 0) | (written ? DI_NATIVE_OUT : 0) |
		     (loop_cc >= 0 ? DI_NATIVE_LOOP : 0);
	return true;
}

/* The whole block raw[0, n) as a linked run in out's X_NATIVE entry; false if not. */
static bool native_linked(struct pk_icache *ic, const struct dins *raw, unsigned n,
			  const u8 *hva, struct dins *out, void **entry, void ***slot)
{
	pk_native_fn fn = pk_native_emit_linked(ic->native, raw, n, hva, entry, slot);

	if (!fn)
		return false;
	memset(out, 0, sizeof(*out));
	out->op = X_NATIVE;
	out->disp = n;
	out->imm = (u64)(uintptr_t)fn;
	out->flags = DI_NATIVE_IN | DI_NATIVE_OUT | DI_NATIVE_LINK;
	return true;
}

/* Decode the block at rip, if it starts inside a slot; NULL otherwise. */
static struct blk *blk_build(struct xs *s, u64 rip)
{
	struct pk_icache *ic = s->ic;
	struct dins raw[BLK_MAX_INSNS], out[BLK_MAX_INSNS + BLK_MAX_INSNS / NATIVE_MIN + 1];
	struct native_use use[BLK_MAX_INSNS];
	bool nat[BLK_MAX_INSNS];
	const struct pk_memslot *slot;
	struct codemap *cm;
	unsigned n = 0, off = 0, nout = 0, window;
	u64 lim;
	const u8 *hva;
	struct blk *b;
	void *lentry = NULL, **lslot = NULL;
	int i;

	if (!ic->tab || rip >= CANON_LIMIT)
		return NULL;
	i = find_slot(s->slots, rip);
	if (i < 0)
		return NULL;
	slot = &s->slots->slot[i];
	lim = slot->gpa + slot->size;
	if (lim < slot->gpa || lim > CANON_LIMIT)
		lim = CANON_LIMIT;
	window = lim - rip < BLK_MAX_BYTES ? (unsigned)(lim - rip) : BLK_MAX_BYTES;
	hva = slot->hva + (rip - slot->gpa);
	while (n < BLK_MAX_INSNS && off < window) {
		unsigned len = pk_exec_decode(hva + off, window - off, rip + off, &raw[n]);

		if (!len)
			break;		/* runs past the slot (or the window) */
		raw[n].off = (u16)off;
		raw[n].idx = (u16)n;
		off += len;
		if (pk_exec_ends_block(&raw[n++]))
			break;
	}
	if (!n)
		return NULL;

	/* room: at the limit, start over once (everything cached goes) */
	if (ic->bytes + pk_native_bytes(ic->native) > IC_MAX_BYTES - (1u << 16) ||
	    !tab_grow(ic)) {
		icache_flush(ic);
		s->flushed = true;
		window_set(s, s->m_slot);
	}
	cm = codemap_get(ic, i);
	if (!cm)
		return NULL;		/* stores there could not be followed: no caching */
	if (s->m_slot == i)
		s->m_pages = cm->pages;

	for (unsigned k = 0; k < n; k++)
		nat[k] = ic->native && pk_native_ok(&raw[k], hva + raw[k].off, &use[k]);
	for (unsigned k = 0; k < n;) {
		unsigned len = nat[k] ? native_run_len(nat, use, k, n) : 0;
		/* a loop: the whole block but its last instruction, a Jcc back to its start */
		int loop_cc = k == 0 && len == n - 1 && n >= 2 &&
			      (raw[n - 1].op == X_JCC || raw[n - 1].op == X_JNZ) &&
			      raw[n - 1].imm == rip ? raw[n - 1].sub : -1;

		/*
		 * The whole block, falling through to the next: a linked run. A loop pays
		 * its way in and out once for all its iterations: a run of any length.
		 */
		bool whole = k == 0 && len == n && len >= NATIVE_MIN;	/* no branch in it */

		if ((whole && native_linked(ic, raw, n, hva, &out[nout], &lentry, &lslot)) ||
		    ((len >= NATIVE_MIN || loop_cc >= 0) &&
		     native_run(ic, raw, use, k, len, hva, loop_cc, &out[nout]))) {
			nout++;
			for (unsigned j = k; j < k + len; j++) {
				out[nout] = raw[j];
				pk_exec_specialize(&out[nout++]);
			}
			k += len;
			continue;
		}
		out[nout] = raw[k++];
		pk_exec_specialize(&out[nout++]);
	}
	memset(&out[nout], 0, sizeof(out[nout]));
	out[nout].op = X_END;
	out[nout].off = (u16)off;
	out[nout].idx = (u16)n;
	nout++;

	b = blk_alloc(ic, sizeof(*b) + nout * sizeof(struct dins) + off);
	if (!b)
		return NULL;
	b->gpa = rip;
	b->hva = hva;
	b->succ[0] = b->succ[1] = NULL;
	b->epoch = ic->epoch;
	b->nbytes = (u16)off;
	b->ninsn = (u16)n;
	b->nslots = (u16)nout;
	b->lentry = lentry;
	b->lslot = lslot;
	if (lslot)
		lslot[2] = b;		/* the cookie its way out reports */
	memcpy(b->ins, out, nout * sizeof(struct dins));
	b->bytes = (const u8 *)&b->ins[nout];
	memcpy((u8 *)&b->ins[nout], hva, off);
	codemap_mark(ic, cm, rip - slot->gpa, off);
	tab_put(ic, b);
	ic->builds++;
	return b;
}

/* The block at rip, checked against memory in this epoch; NULL if there is none. */
static struct blk *blk_find(struct xs *s, u64 rip)
{
	struct pk_icache *ic = s->ic;
	struct blk *b;

	if (!ic->tab)
		return NULL;
	b = tab_find(ic, rip);
	if (b) {
		if (b->epoch == ic->epoch)
			return b;
		if (blk_valid(b)) {
			b->epoch = ic->epoch;
			return b;
		}
	}
	return blk_build(s, rip);
}

/* ---- string instructions ---- */

/*
 * [a, a + len) was written in slot i, outside the window's fast test: a new epoch if it
 * holds cached code; true if it hit the block being run.
 */
static bool smc_range(struct xs *s, int i, u64 a, u64 len)
{
	const struct codemap *cm = &s->ic->cmap[i];
	u64 off = a - s->slots->slot[i].gpa;
	bool any = false;

	if (!cm->pages || !len)
		return false;
	for (u64 pg = off >> 12; pg <= (off + len - 1) >> 12 && !any; pg++)
		any = cm->pages[pg];
	return any && smc_store(s, i, a, len);
}

/*
 * The slot holding [lo, lo + len) whole, below the canonical limit: its index, and the
 * host pointer in *p; -1 if none.
 */
static int range_slot(const struct xs *s, u64 lo, u64 len, u8 **p)
{
	int i = find_slot(s->slots, lo);
	const struct pk_memslot *slot;

	if (i < 0 || lo + len < lo || lo + len > CANON_LIMIT)
		return -1;
	slot = &s->slots->slot[i];
	if (len > slot->size - (lo - slot->gpa))
		return -1;
	*p = slot->hva + (lo - slot->gpa);
	return i;
}

/*
 * As many iterations of REP MOVS / REP STOS (64-bit addresses) as stay inside slots,
 * done at once with what they would do one by one; the registers updated. The count.
 */
static u64 string_bulk(struct xs *s, const struct dins *d, u64 cnt)
{
	u64 *R = s->R;
	unsigned sz = d->sz;
	bool down = s->flags & X86_EFLAGS_DF;
	u64 rdi = R[VCPU_REGS_RDI], rsi = 0, k = cnt, dlo, slo = 0, len;
	u8 *dp, *sp = NULL;
	int di, si;

	/* how many fit in the destination's slot (and the source's) */
	di = find_slot(s->slots, rdi);
	if (di < 0)
		return 0;
	{
		const struct pk_memslot *slot = &s->slots->slot[di];
		u64 end = slot->gpa + slot->size, room;

		if (end < slot->gpa || end > CANON_LIMIT)
			end = CANON_LIMIT;
		if (rdi >= end || end - rdi < sz)
			return 0;
		room = down ? (rdi - slot->gpa) / sz + 1 : (end - rdi) / sz;
		if (k > room)
			k = room;
	}
	if (d->op == X_MOVS) {
		const struct pk_memslot *slot;
		u64 end, room;

		rsi = R[VCPU_REGS_RSI] + (d->seg ? s->cpu->seg[d->seg].base : 0);
		si = find_slot(s->slots, rsi);
		if (si < 0)
			return 0;
		slot = &s->slots->slot[si];
		end = slot->gpa + slot->size;
		if (end < slot->gpa || end > CANON_LIMIT)
			end = CANON_LIMIT;
		if (rsi >= end || end - rsi < sz)
			return 0;
		room = down ? (rsi - slot->gpa) / sz + 1 : (end - rsi) / sz;
		if (k > room)
			k = room;
	}
	if (!k)
		return 0;
	len = k * sz;
	dlo = down ? rdi - (k - 1) * sz : rdi;
	di = range_slot(s, dlo, len, &dp);
	if (di < 0)
		return 0;
	if (d->op == X_MOVS) {
		slo = down ? rsi - (k - 1) * sz : rsi;
		si = range_slot(s, slo, len, &sp);
		if (si < 0)
			return 0;
	}

	if (d->op == X_STOS) {
		u64 v = R[VCPU_REGS_RAX] & szmask[sz];

		if (sz == 1)
			memset(dp, (int)v, len);
		else
			for (u64 j = 0; j < len; j += sz)
				stn(dp + j, sz, v);
	} else if (down ? dlo >= slo || dlo + len <= slo : dlo <= slo || slo + len <= dlo) {
		/* element by element in that direction does what memmove does */
		memmove(dp, sp, len);
	} else if (!down) {
		for (u64 j = 0; j < len; j += sz)	/* overlapping: replicates, as on hardware */
			stn(dp + j, sz, ldn(sp + j, sz));
	} else {
		for (u64 j = len; j > 0; j -= sz)
			stn(dp + j - sz, sz, ldn(sp + j - sz, sz));
	}
	if (smc_range(s, di, dlo, len))
		s->smc = true;

	R[VCPU_REGS_RCX] -= k;
	R[VCPU_REGS_RDI] = down ? rdi - len : rdi + len;
	if (d->op == X_MOVS)
		R[VCPU_REGS_RSI] = down ? R[VCPU_REGS_RSI] - len : R[VCPU_REGS_RSI] + len;
	return k;
}

/*
 * A string instruction (MOVS STOS LODS CMPS SCAS, with or without REP): all of it, or
 * one iteration when single-stepping. 0: it completed; 1: iterations remain (a
 * single-step); -1: a fault or an exit (s->fvec), the iterations before it done.
 */
static __attribute__((noinline)) int string_op(struct xs *s, const struct dins *d,
					       bool single)
{
	u64 *R = s->R;
	bool a32 = d->flags & DI_ASZ32, rep = d->sub != 0;
	unsigned sz = d->sz;
	u64 amask = a32 ? 0xffffffffull : ~0ull, m = szmask[sz];
	u64 step = (s->flags & X86_EFLAGS_DF) ? -(u64)sz : sz;
	u64 sbase = d->seg ? s->cpu->seg[d->seg].base : 0;
	bool uses_si = d->op == X_MOVS || d->op == X_LODS || d->op == X_CMPS;
	bool uses_di = d->op != X_LODS;
	u64 cnt = R[VCPU_REGS_RCX] & amask;

	if (rep && !cnt)
		return 0;
	if (rep && !single && !a32 && cnt > 1 && (d->op == X_MOVS || d->op == X_STOS)) {
		cnt -= string_bulk(s, d, cnt);
		if (!cnt)
			return 0;
	}
	for (;;) {
		u64 rsi = R[VCPU_REGS_RSI] & amask, rdi = R[VCPU_REGS_RDI] & amask;
		u64 aux = rep ? cnt : 0, v = 0, w = 0;

		switch (d->op) {
		case X_MOVS:
			if (mem_access(s, d, sbase + rsi, sz, &v, false, false, aux) ||
			    mem_access(s, d, rdi, sz, &v, true, false, aux))
				return -1;
			break;
		case X_STOS:
			v = R[VCPU_REGS_RAX] & m;
			if (mem_access(s, d, rdi, sz, &v, true, false, aux))
				return -1;
			break;
		case X_LODS:
			if (mem_access(s, d, sbase + rsi, sz, &v, false, false, aux))
				return -1;
			rset(R, VCPU_REGS_RAX, sz, v);
			break;
		case X_CMPS:
			if (mem_access(s, d, sbase + rsi, sz, &v, false, false, aux) ||
			    mem_access(s, d, rdi, sz, &w, false, false, aux))
				return -1;
			alu(&s->lf, ALU_CMP, sz, v, w);
			break;
		default:	/* SCAS */
			if (mem_access(s, d, rdi, sz, &w, false, false, aux))
				return -1;
			alu(&s->lf, ALU_CMP, sz, R[VCPU_REGS_RAX] & m, w);
			break;
		}
		/* 32-bit address size: ESI, EDI, ECX are written as 32-bit registers */
		if (uses_si)
			R[VCPU_REGS_RSI] = (rsi + step) & amask;
		if (uses_di)
			R[VCPU_REGS_RDI] = (rdi + step) & amask;
		if (!rep)
			return 0;
		R[VCPU_REGS_RCX] = --cnt & amask;
		if (!cnt)
			return 0;
		if (d->op == X_CMPS || d->op == X_SCAS) {
			if (d->sub == 1 && !lf_zf(&s->lf))	/* REPE */
				return 0;
			if (d->sub == 2 && lf_zf(&s->lf))	/* REPNE */
				return 0;
		}
		if (single)
			return 1;
	}
}

void pk_icache_stats(struct pk_cpu *cpu, struct pk_icache_stats *st)
{
	struct pk_icache *ic = cpu->icache;

	memset(st, 0, sizeof(*st));
	if (!ic || ic->owner != cpu)
		return;
	st->blocks = ic->nblk;
	st->bytes = ic->bytes;
	st->native_bytes = pk_native_bytes(ic->native);
	st->builds = ic->builds;
	st->flushes = ic->flushes;
	st->epoch = ic->epoch;
	st->tracked_entries = ic->tracked_entries;
	st->links = ic->nlinked;
}

/* ---- the executor ---- */

static inline bool exc_has_error(int vector)
{
	switch (vector) {
	case X86_TRAP_DF: case X86_TRAP_TS: case X86_TRAP_NP: case X86_TRAP_SS:
	case X86_TRAP_GP: case X86_TRAP_PF: case 17: case 21: case 29: case 30:
		return true;
	default:
		return false;
	}
}

static void state_out(struct xs *s, u64 rip)
{
	s->cpu->rip = rip;
	s->cpu->rflags = get_rflags(s);
}

static void state_in(struct xs *s)
{
	set_rflags(s, s->cpu->rflags);
}

static inline unsigned iopl(const struct xs *s)
{
	return (s->flags >> 12) & 3;
}

static void account(struct xs *s, u64 budget)
{
	struct pk_cpu *cpu = s->cpu;
	struct pk_machine *m = cpu->m;
	u64 retired = s->start_budget - budget - s->deliveries;

	cpu->insn_budget = budget;
	s->ic->retired += retired;
	cpu->costs->ops[PK_PATH_GUEST][PK_OP_GUEST_INSN] += retired;
	cpu->costs->cycles[PK_PATH_GUEST] += retired * m->profile.op[PK_OP_GUEST_INSN];
}

u32 pk_guest_exec(struct pk_cpu *cpu)
{
	struct pk_icache ic_fallback;
	struct xs st;		/* set field by field: the run's first instructions count */
	struct xs *const s = &st;
	u64 *const R = cpu->regs;
	u64 budget = cpu->insn_budget, rip = cpu->rip;
	struct blk *b, *nb, *nolink, **lnk = &nolink;
	struct blk *pend = NULL, *from;	/* a linked run left from: link it to what follows */
	u64 gen;
	const struct dins *d;
	bool stop = false, limited = false, stepping = false;
	unsigned sz;
	u64 a, v, t, res;
#define X(name) [X_##name] = &&op_##name,
	static const void *const dispatch[X_NR_OPS] = { XOPS(X) };
#undef X
	/* a block cut to the budget or to one instruction; an instruction decoded alone */
	_Alignas(16) u8 cut[sizeof(struct blk) + (BLK_MAX_INSNS + 1) * sizeof(struct dins)];
	_Alignas(16) u8 lone[sizeof(struct blk) + 2 * sizeof(struct dins)];
	enum pk_icpt icpt;
	u32 kind;

	s->cpu = cpu;
	s->R = cpu->regs;
	s->slots = cpu->npt;
	s->deliveries = 0;
	s->smc = false;
	s->flushed = false;
	s->ic = icache_get(cpu);
	if (!s->ic) {
		memset(&ic_fallback, 0, sizeof(ic_fallback));
		s->ic = &ic_fallback;
	}
	icache_check_slots(s->ic, cpu->npt);
	icache_enter(s->ic);
	if (s->ic->replay_rip != rip)
		s->ic->nreplay = 0;
	s->start_budget = budget;
	window_set(s, -1);
	state_in(s);
	nolink = s->ic->entry;		/* checked like any successor */
	gen = s->ic->gen;

/* Memory access helpers: the window inline, the rest in mem_slow(). */
#define LOAD_(addr, size, out, stk) do {					\
		u64 a_ = (addr), o_ = a_ - s->m_gpa;				\
		if (likely(o_ < s->m_lim))					\
			(out) = ldn(s->m_hva + o_, (size));			\
		else if (mem_slow(s, d, a_, (size), &(out), false, (stk)))	\
			goto memfail;						\
	} while (0)
#define STORE_(addr, size, val, stk) do {					\
		u64 a_ = (addr), v_ = (val), o_ = a_ - s->m_gpa;		\
		if (likely(o_ < s->m_lim)) {					\
			stn(s->m_hva + o_, (size), v_);				\
			if (unlikely(code_page(s->m_pages, o_, (size))) &&	\
			    smc_store(s, s->m_slot, a_, (size)))		\
				stop = true;					\
		} else if (mem_slow(s, d, a_, (size), &v_, true, (stk))) {	\
			goto memfail;						\
		} else if (s->smc) {						\
			s->smc = false;						\
			stop = true;						\
		}								\
	} while (0)
#define LOAD(addr, size, out)	LOAD_(addr, size, out, d->flags & DI_STACK)
#define STORE(addr, size, val)	STORE_(addr, size, val, d->flags & DI_STACK)
#define SLOAD(addr, size, out)	LOAD_(addr, size, out, true)
#define SSTORE(addr, size, val)	STORE_(addr, size, val, true)
/* The r/m operand. */
#define RM_LOAD(size, out) do {							\
		if (d->flags & DI_MEM)						\
			LOAD(ea(s, d), (size), out);				\
		else								\
			(out) = rget(R, d->rm, (size));				\
	} while (0)
#define FAULT(vec, err) do { s->fvec = (vec); s->ferr = (err); goto fault; } while (0)
/* The next instruction of the block: each handler dispatches on its own (threaded). */
#define DISPATCH()	goto *dispatch[d->op]
#define NEXT		do { d++; DISPATCH(); } while (0)
/* ... after an instruction that may have stored into the block being run */
#define NEXT_W		do { if (unlikely(stop)) goto stopped; d++; DISPATCH(); } while (0)
#define NEXT_RIP	(cur_rip(s, d) + d->len)
/* A control transfer: the next block, found through succ[which] when it is the same. */
#define GOTO_BLOCK(target, which) do {						\
		rip = (target);							\
		lnk = &b->succ[which];						\
		goto chain;							\
	} while (0)
#define BRANCH(target, which) do {						\
		rip = (target);							\
		if (unlikely(is_noncanonical_address(rip)))			\
			FAULT(X86_TRAP_GP, 0);					\
		lnk = &b->succ[which];						\
		goto chain;							\
	} while (0)
#define CPL		pk_cpl(cpu)
/*
 * Read-modify-write of the r/m operand: OP computes `res` from `v` (the operand) and
 * may set flags in `f`; WB says whether res is written back. Flags are committed only
 * once the write has happened, so an MMIO exit leaves the instruction undone.
 */
#define RMW(size, OP, WB) do {							\
		if (!(d->flags & DI_MEM)) {					\
			struct lf *const f = &s->lf;				\
			(void)f;						\
			v = rget(R, d->rm, (size));				\
			OP;							\
			if (WB)							\
				rset(R, d->rm, (size), res);			\
			break;							\
		}								\
		a = ea(s, d);							\
		u64 o_ = a - s->m_gpa;						\
		if (likely(o_ < s->m_lim)) {					\
			struct lf *const f = &s->lf;				\
			u8 *p_ = s->m_hva + o_;					\
			(void)f;						\
			v = ldn(p_, (size));					\
			OP;							\
			if (WB) {						\
				stn(p_, (size), res);				\
				if (unlikely(code_page(s->m_pages, o_, (size))) && \
				    smc_store(s, s->m_slot, a, (size)))		\
					stop = true;				\
			}							\
		} else {							\
			struct lf nf = s->lf, *const f = &nf;			\
			(void)f;						\
			if (mem_slow(s, d, a, (size), &v, false, d->flags & DI_STACK)) \
				goto memfail;					\
			OP;							\
			if ((WB) && mem_slow(s, d, a, (size), &res, true,	\
					     d->flags & DI_STACK))		\
				goto memfail;					\
			s->lf = nf;						\
			if (s->smc) {						\
				s->smc = false;					\
				stop = true;					\
			}							\
		}								\
	} while (0)
/* Specialized ALU forms on 64- or 32-bit registers: rm op= reg, or rm op= imm. */
#define ALU_FORM(NAME, W, SRC, OPER, KIND, WB)					\
	op_##NAME:								\
		a = (W) == 64 ? R[d->rm] : (u32)R[d->rm];			\
		t = (SRC);							\
		res = (W) == 64 ? (a OPER t) : (u32)(a OPER t);			\
		if (WB)								\
			R[d->rm] = res;						\
		s->lf.res = res;						\
		s->lf.src = t;							\
		s->lf.op = LF(KIND, (W) == 64 ? 3 : 2);				\
		NEXT;
#define ALU_FORMS(FORM, W, SRC)							\
	ALU_FORM(ADD_##FORM, W, SRC, +, LF_ADD, 1)				\
	ALU_FORM(SUB_##FORM, W, SRC, -, LF_SUB, 1)				\
	ALU_FORM(CMP_##FORM, W, SRC, -, LF_SUB, 0)				\
	ALU_FORM(AND_##FORM, W, SRC, &, LF_LOGIC, 1)				\
	ALU_FORM(OR_##FORM, W, SRC, |, LF_LOGIC, 1)				\
	ALU_FORM(XOR_##FORM, W, SRC, ^, LF_LOGIC, 1)

next_block:
	/* the block at rip: the one that followed last time, or looked up, or decoded */
	from = pend;
	pend = NULL;
	nb = *lnk;
	if (likely(nb && nb->gpa == rip && nb->epoch == s->ic->epoch)) {
		b = nb;
	} else if (nb && nb->gpa == rip && blk_valid(nb)) {
		nb->epoch = s->ic->epoch;	/* checked again in this epoch */
		b = nb;
	} else {
		b = blk_find(s, rip);
		if (s->flushed)
			s->flushed = false;	/* *lnk may be gone with the rest */
		else if (b)
			*lnk = b;
		if (unlikely(!b))
			goto lone_insn;
	}
	/* RFLAGS.TF: one instruction, then the single-step #DB trap (SDM 17.3.1.4) */
	if (unlikely(budget < b->ninsn || (s->flags & X86_EFLAGS_TF)))
		goto cut_block;
	s->blk_budget = budget;
	budget -= b->ninsn;
	s->b = b;
	d = b->ins;
	/* b is checked in this epoch: the linked run before it goes on into it */
	if (unlikely(from) && b->lentry && from->lslot[0] == from->lslot[1])
		link_runs(s->ic, from, b);
	DISPATCH();

cut_block: {	/* the first instructions of b, as many as the budget (or TF) allows */
		struct blk *cb = (struct blk *)cut;
		unsigned n, k = 0;

		if (!budget)
			goto extint;
		stepping = s->flags & X86_EFLAGS_TF;
		n = stepping ? 1 : (unsigned)budget;
		if (n > b->ninsn)
			n = b->ninsn;
		memcpy(cb, b, sizeof(*cb));
		cb->lentry = NULL;
		cb->lslot = NULL;
		for (unsigned j = 0; k < n; j++)
			if (b->ins[j].op != X_NATIVE)
				cb->ins[k++] = b->ins[j];
		memset(&cb->ins[n], 0, sizeof(cb->ins[n]));
		cb->ins[n].op = X_END;
		cb->ins[n].off = cb->ins[n - 1].off + cb->ins[n - 1].len;
		cb->ins[n].idx = (u16)n;
		cb->ninsn = (u16)n;
		b = cb;
		goto run_cut;
	}

lone_insn: {	/* an instruction the cache does not hold */
		struct blk *ob = (struct blk *)lone;

		if (!budget)
			goto extint;
		memset(ob, 0, sizeof(*ob));
		ob->gpa = rip;
		ob->ninsn = 1;
		s->b = ob;
		s->blk_budget = budget;
		if (fetch_slow(s, rip, &ob->ins[0])) {
			if (s->fvec < 0)
				goto exit_fetch;
			goto fault_fetch;
		}
		ob->ins[0].off = 0;
		ob->ins[0].idx = 0;
		memset(&ob->ins[1], 0, sizeof(ob->ins[1]));
		ob->ins[1].op = X_END;
		ob->ins[1].off = ob->ins[0].len;
		ob->ins[1].idx = 1;
		stepping = s->flags & X86_EFLAGS_TF;
		b = ob;
	}
run_cut:
	limited = true;
	s->blk_budget = budget;
	budget -= b->ninsn;
	s->b = b;
	d = b->ins;
	DISPATCH();

chain:		/* after a block: rip and lnk say where to */
	if (likely(!limited))
		goto next_block;
	limited = false;
	if (!stepping)
		goto next_block;
	stepping = false;
	state_out(s, rip);	/* the trap follows the retired instruction */
	if (!pk_exec_deliver(cpu, X86_TRAP_DB, false, 0, PK_DELIVER_HW))
		goto triple;
	goto delivered;

stopped:	/* the instruction at d stored into the running block: on from the next */
	stop = false;
	budget += b->ninsn - (d->idx + 1u);
	rip = NEXT_RIP;
	lnk = &nolink;
	goto chain;

	/* ---- handlers, the hottest first ---- */
	op_END:
		GOTO_BLOCK(b->gpa + d->off, 0);
	op_NATIVE: {
		struct pk_native_io io;

		if (d->flags & DI_NATIVE_IN)
			io.rflags = (lf_arith(&s->lf) & ARITH_FLAGS) | X86_EFLAGS_FIXED |
				    X86_EFLAGS_IF;
		if (d->flags & DI_NATIVE_LINK) {
			/* on through linked runs while the budget surely covers another */
			io.links = budget / BLK_MAX_INSNS;
			((pk_native_fn)(uintptr_t)d->imm)(R, &io);
			lf_set(&s->lf, io.rflags);
			budget -= io.retired;
			b = io.last;
			pend = b;
			GOTO_BLOCK(b->gpa + b->nbytes, 0);
		}
		if (d->flags & DI_NATIVE_LOOP) {
			/* the whole block, as many times as the loop and the budget say */
			u64 allowed = 1 + budget / b->ninsn, iters;

			io.count = allowed;
			((pk_native_fn)(uintptr_t)d->imm)(R, &io);
			lf_set(&s->lf, io.rflags);
			iters = allowed - io.count + (io.exit == 0);
			budget -= (iters - 1) * b->ninsn;
			if (io.exit == 0)
				GOTO_BLOCK(d[d->disp + 1].disp, 0);
			GOTO_BLOCK(b->gpa, 1);
		}
		((pk_native_fn)(uintptr_t)d->imm)(R, &io);
		if (d->flags & DI_NATIVE_OUT)
			lf_set(&s->lf, io.rflags);
		d += d->disp + 1;
		DISPATCH();
	}
	op_JNZ:
		if (!lf_zf(&s->lf))
			GOTO_BLOCK(d->imm, 1);
		GOTO_BLOCK(d->disp, 0);
	op_JZ:
		if (lf_zf(&s->lf))
			GOTO_BLOCK(d->imm, 1);
		GOTO_BLOCK(d->disp, 0);
	op_JCC:
		if (lf_cond(&s->lf, d->sub))
			BRANCH(d->imm, 1);
		GOTO_BLOCK(d->disp, 0);
	op_JMP:
		BRANCH(d->imm, 0);
	ALU_FORMS(RR64, 64, R[d->reg])
	ALU_FORMS(RI64, 64, d->imm)
	ALU_FORMS(RR32, 32, (u32)R[d->reg])
	ALU_FORMS(RI32, 32, d->imm)
	op_TEST_RR64:
		s->lf.res = R[d->rm] & R[d->reg];
		s->lf.op = LF(LF_LOGIC, 3);
		NEXT;
	op_DEC_R64:
		t = lf_cf(&s->lf);
		s->lf.res = R[d->rm] = R[d->rm] - 1;
		s->lf.src = t;
		s->lf.op = LF(LF_DEC, 3);
		NEXT;
	op_INC_R64:
		t = lf_cf(&s->lf);
		s->lf.res = R[d->rm] = R[d->rm] + 1;
		s->lf.src = t;
		s->lf.op = LF(LF_INC, 3);
		NEXT;
	op_DEC_R32:
		t = lf_cf(&s->lf);
		s->lf.res = R[d->rm] = (u32)(R[d->rm] - 1);
		s->lf.src = t;
		s->lf.op = LF(LF_DEC, 2);
		NEXT;
	op_INC_R32:
		t = lf_cf(&s->lf);
		s->lf.res = R[d->rm] = (u32)(R[d->rm] + 1);
		s->lf.src = t;
		s->lf.op = LF(LF_INC, 2);
		NEXT;
	op_MOV_RR64:
		R[d->rm] = R[d->reg];
		NEXT;
	op_MOV_RR32:
		R[d->rm] = (u32)R[d->reg];
		NEXT;
	op_MOV_RI:
		R[d->reg] = d->imm;
		NEXT;
	op_LD64_B:
		LOAD(R[d->base] + d->disp, 8, v);
		R[d->reg] = v;
		NEXT;
	op_LD64_BI:
		LOAD(R[d->base] + (R[d->index] << d->scale) + d->disp, 8, v);
		R[d->reg] = v;
		NEXT;
	op_LD32_B:
		LOAD(R[d->base] + d->disp, 4, v);
		R[d->reg] = (u32)v;
		NEXT;
	op_ST64_B:
		STORE(R[d->base] + d->disp, 8, R[d->reg]);
		NEXT_W;
	op_ST64_BI:
		STORE(R[d->base] + (R[d->index] << d->scale) + d->disp, 8, R[d->reg]);
		NEXT_W;
	op_ST32_B:
		STORE(R[d->base] + d->disp, 4, R[d->reg]);
		NEXT_W;
	op_LEA64_B:
		R[d->reg] = R[d->base] + d->disp;
		NEXT;
	op_LEA64_BI:
		R[d->reg] = R[d->base] + (R[d->index] << d->scale) + d->disp;
		NEXT;
	op_PUSH64:
		a = R[VCPU_REGS_RSP] - 8;
		SSTORE(a, 8, R[d->reg]);
		R[VCPU_REGS_RSP] = a;
		NEXT_W;
	op_POP64:
		a = R[VCPU_REGS_RSP];
		SLOAD(a, 8, v);
		R[VCPU_REGS_RSP] = a + 8;
		R[d->reg] = v;
		NEXT;
	op_CALL:
		if (unlikely(is_noncanonical_address(d->imm)))
			FAULT(X86_TRAP_GP, 0);
		a = R[VCPU_REGS_RSP] - 8;
		SSTORE(a, 8, d->disp);
		R[VCPU_REGS_RSP] = a;
		stop = false;		/* the block ends here anyway */
		GOTO_BLOCK(d->imm, 0);
	op_RET0:
		a = R[VCPU_REGS_RSP];
		SLOAD(a, 8, t);
		if (unlikely(is_noncanonical_address(t)))
			FAULT(X86_TRAP_GP, 0);
		R[VCPU_REGS_RSP] = a + 8;
		GOTO_BLOCK(t, 0);

	/* ---- the general forms ---- */
	op_ALU_RM_R:
		sz = d->sz;
		t = rget(R, d->reg, sz);
		RMW(sz, res = alu(f, d->sub, sz, v, t), d->sub != ALU_CMP);
		NEXT_W;
	op_ALU_R_RM:
		sz = d->sz;
		RM_LOAD(sz, v);
		res = alu(&s->lf, d->sub, sz, rget(R, d->reg, sz), v);
		if (d->sub != ALU_CMP)
			rset(R, d->reg, sz, res);
		NEXT;
	op_ALU_RM_I:
		sz = d->sz;
		t = d->imm & szmask[sz];
		RMW(sz, res = alu(f, d->sub, sz, v, t), d->sub != ALU_CMP);
		NEXT_W;
	op_TEST_RM_R:
		sz = d->sz;
		RM_LOAD(sz, v);
		alu(&s->lf, ALU_AND, sz, v, rget(R, d->reg, sz));
		NEXT;
	op_TEST_RM_I:
		sz = d->sz;
		RM_LOAD(sz, v);
		alu(&s->lf, ALU_AND, sz, v, d->imm & szmask[sz]);
		NEXT;
	op_INC:
		sz = d->sz;
		RMW(sz, res = lf_incdec(f, true, sz, v), true);
		NEXT_W;
	op_DEC:
		sz = d->sz;
		RMW(sz, res = lf_incdec(f, false, sz, v), true);
		NEXT_W;
	op_NEG:
		sz = d->sz;
		RMW(sz, res = alu(f, ALU_SUB, sz, 0, v), true);
		NEXT_W;
	op_NOT:
		sz = d->sz;
		RMW(sz, res = ~v & szmask[sz], true);
		NEXT_W;
	op_MOV_RM_R:
		sz = d->sz;
		v = rget(R, d->reg, sz);
		if (d->flags & DI_MEM)
			STORE(ea(s, d), sz, v);
		else
			rset(R, d->rm, sz, v);
		NEXT_W;
	op_MOV_R_RM:
		sz = d->sz;
		RM_LOAD(sz, v);
		rset(R, d->reg, sz, v);
		NEXT;
	op_MOV_RM_I:
		sz = d->sz;
		v = d->imm & szmask[sz];
		if (d->flags & DI_MEM)
			STORE(ea(s, d), sz, v);
		else
			rset(R, d->rm, sz, v);
		NEXT_W;
	op_MOV_R_I:
		rset(R, d->reg, d->sz, d->imm);
		NEXT;
	op_MOVZX:
		RM_LOAD(d->sub, v);
		rset(R, d->reg, d->sz, v);
		NEXT;
	op_MOVSX:
		RM_LOAD(d->sub, v);
		rset(R, d->reg, d->sz, sext(v, d->sub));
		NEXT;
	op_LEA:
		rset(R, d->reg, d->sz, ea_off(s, d));
		NEXT;
	op_PUSH_R:
		sz = d->sz;
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, rget(R, d->reg, sz));
		R[VCPU_REGS_RSP] = a;
		NEXT_W;
	op_POP_R:
		sz = d->sz;
		a = R[VCPU_REGS_RSP];
		SLOAD(a, sz, v);
		R[VCPU_REGS_RSP] = a + sz;
		rset(R, d->reg, sz, v);
		NEXT;
	op_PUSH_I:
		sz = d->sz;
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, d->imm & szmask[sz]);
		R[VCPU_REGS_RSP] = a;
		NEXT_W;
	op_PUSH_RM:
		sz = d->sz;
		RM_LOAD(sz, v);
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, v);
		R[VCPU_REGS_RSP] = a;
		NEXT_W;
	op_POP_RM:
		sz = d->sz;
		t = R[VCPU_REGS_RSP];
		SLOAD(t, sz, v);
		if (d->flags & DI_MEM) {
			/* the address is computed with RSP already incremented */
			R[VCPU_REGS_RSP] = t + sz;
			a = ea(s, d);
			R[VCPU_REGS_RSP] = t;
			STORE(a, sz, v);
			R[VCPU_REGS_RSP] = t + sz;
		} else {
			R[VCPU_REGS_RSP] = t + sz;
			rset(R, d->rm, sz, v);
		}
		NEXT_W;
	op_XCHG:
		sz = d->sz;
		t = rget(R, d->reg, sz);
		if (d->flags & DI_MEM) {
			a = ea(s, d);
			LOAD(a, sz, v);
			STORE(a, sz, t);
		} else {
			v = rget(R, d->rm, sz);
			rset(R, d->rm, sz, t);
		}
		rset(R, d->reg, sz, v);
		NEXT_W;
	op_SHIFT:
		sz = d->sz;
		t = (d->flags & DI_CL) ? R[VCPU_REGS_RCX] : d->imm;
		RMW(sz, res = shift(f, d->sub, sz, v, t), true);
		NEXT_W;
	op_IMUL2:
	op_IMUL3: {
		__int128 prod;

		sz = d->sz;
		RM_LOAD(sz, v);
		t = d->op == X_IMUL3 ? d->imm : rget(R, d->reg, sz);
		prod = (__int128)(s64)sext(v, sz) * (s64)sext(t, sz);
		res = (u64)prod & szmask[sz];
		lf_result(&s->lf, res, sz, (__int128)(s64)sext(res, sz) != prod,
			  (__int128)(s64)sext(res, sz) != prod);
		rset(R, d->reg, sz, res);
		NEXT;
	}
	op_MULDIV:
		sz = d->sz;
		RM_LOAD(sz, v);
		if (!v && d->sub >= 6)
			FAULT(X86_TRAP_DE, 0);
		switch (d->sub) {
		case 4: case 5: {	/* MUL, IMUL: rDX:rAX = rAX * r/m */
			unsigned bits = sz * 8;
			unsigned __int128 up;
			u64 lo, hi, ovf;

			if (d->sub == 4) {
				up = (unsigned __int128)(R[0] & szmask[sz]) * v;
				lo = (u64)up & szmask[sz];
				hi = (u64)(up >> bits) & szmask[sz];
				ovf = hi != 0;
			} else {
				__int128 sp = (__int128)(s64)sext(R[0], sz) *
					      (s64)sext(v, sz);
				up = (unsigned __int128)sp;
				lo = (u64)up & szmask[sz];
				hi = (u64)(up >> bits) & szmask[sz];
				ovf = (__int128)(s64)sext(lo, sz) != sp;
			}
			if (sz == 1) {
				rset(R, 0, 2, lo | (hi << 8));
			} else {
				rset(R, VCPU_REGS_RAX, sz, lo);
				rset(R, VCPU_REGS_RDX, sz, hi);
			}
			lf_result(&s->lf, lo, sz, ovf, ovf);
			NEXT;
		}
		default: {		/* DIV, IDIV: rDX:rAX / r/m */
			unsigned bits = sz * 8;
			unsigned __int128 n, q, r, nmag;
			u64 dmag, qmax;
			bool nneg = false, dneg = false;

			if (sz == 1)
				n = R[0] & 0xffff;
			else
				n = ((unsigned __int128)(R[VCPU_REGS_RDX] & szmask[sz])
				     << bits) | (R[0] & szmask[sz]);
			nmag = n;
			dmag = v;
			if (d->sub == 7) {
				/* sign of the 2*bits-bit dividend, of the divisor */
				nneg = (n >> (2 * bits - 1)) & 1;
				if (nneg) {
					nmag = -n;
					if (bits < 64)
						nmag &= ((unsigned __int128)1 <<
							 (2 * bits)) - 1;
				}
				dneg = (v >> (bits - 1)) & 1;
				if (dneg)
					dmag = -v & szmask[sz];
			}
			q = nmag / dmag;
			r = nmag % dmag;
			if (d->sub == 6)
				qmax = szmask[sz];
			else	/* |q| <= 2^(bits-1) - 1, or 2^(bits-1) if negative */
				qmax = (szmask[sz] >> 1) + (nneg != dneg);
			if (q > qmax)
				FAULT(X86_TRAP_DE, 0);
			if (nneg != dneg)
				q = -q;
			if (nneg)
				r = -r;
			if (sz == 1) {
				rset(R, 0, 2, ((u64)q & 0xff) | (((u64)r & 0xff) << 8));
			} else {
				rset(R, VCPU_REGS_RAX, sz, (u64)q & szmask[sz]);
				rset(R, VCPU_REGS_RDX, sz, (u64)r & szmask[sz]);
			}
			NEXT;
		}
		}
	op_CBW:
		sz = d->sz;
		if (sz == 2)
			rset(R, 0, 2, sext(R[0], 1));
		else
			rset(R, 0, sz, sext(R[0], sz / 2));
		NEXT;
	op_CWD:
		sz = d->sz;
		rset(R, VCPU_REGS_RDX, sz,
		     ((R[0] >> (sz * 8 - 1)) & 1) ? ~0ull : 0);
		NEXT;
	op_CALL_RM:
		RM_LOAD(8, t);
		if (unlikely(is_noncanonical_address(t)))
			FAULT(X86_TRAP_GP, 0);
		a = R[VCPU_REGS_RSP] - 8;
		SSTORE(a, 8, NEXT_RIP);
		R[VCPU_REGS_RSP] = a;
		stop = false;
		GOTO_BLOCK(t, 0);
	op_RET:
		a = R[VCPU_REGS_RSP];
		SLOAD(a, 8, t);
		if (unlikely(is_noncanonical_address(t)))
			FAULT(X86_TRAP_GP, 0);
		R[VCPU_REGS_RSP] = a + 8 + d->imm;
		GOTO_BLOCK(t, 0);
	op_JMP_RM:
		RM_LOAD(8, t);
		BRANCH(t, 0);
	op_LOOP: {
		bool a32 = d->flags & DI_ASZ32, take;

		t = a32 ? (u32)R[VCPU_REGS_RCX] : R[VCPU_REGS_RCX];
		if (d->sub != 3)
			t = a32 ? (u32)(t - 1) : t - 1;
		switch (d->sub) {
		case 0: take = t && !lf_zf(&s->lf); break;	/* LOOPNE */
		case 1: take = t && lf_zf(&s->lf); break;	/* LOOPE */
		case 2: take = t; break;			/* LOOP */
		default: take = !t; break;			/* JrCXZ */
		}
		if (take && is_noncanonical_address(d->imm))
			FAULT(X86_TRAP_GP, 0);
		if (d->sub != 3)
			R[VCPU_REGS_RCX] = t;
		if (take)
			GOTO_BLOCK(d->imm, 1);
		GOTO_BLOCK(d->disp, 0);
	}
	op_SETCC:
		v = lf_cond(&s->lf, d->sub);
		if (d->flags & DI_MEM)
			STORE(ea(s, d), 1, v);
		else
			rset(R, d->rm, 1, v);
		NEXT_W;
	op_CMOVCC:
		sz = d->sz;
		RM_LOAD(sz, v);
		if (lf_cond(&s->lf, d->sub))
			rset(R, d->reg, sz, v);
		else if (sz == 4)
			R[d->reg] = (u32)R[d->reg];	/* zero-extends anyway */
		NEXT;
	op_NOP:
		NEXT;
	op_CLC:
		lf_set(&s->lf, lf_arith(&s->lf) & ~(u64)X86_EFLAGS_CF);
		NEXT;
	op_STC:
		lf_set(&s->lf, lf_arith(&s->lf) | X86_EFLAGS_CF);
		NEXT;
	op_CMC:
		lf_set(&s->lf, lf_arith(&s->lf) ^ X86_EFLAGS_CF);
		NEXT;
	op_CLD:
		s->flags &= ~(u64)X86_EFLAGS_DF;
		NEXT;
	op_STD:
		s->flags |= X86_EFLAGS_DF;
		NEXT;
	op_CLI:
	op_STI:
		if (CPL > iopl(s))
			FAULT(X86_TRAP_GP, 0);
		if (d->op == X_CLI)
			s->flags &= ~(u64)X86_EFLAGS_IF;
		else
			s->flags |= X86_EFLAGS_IF;
		NEXT;
	op_PUSHF:
		sz = d->sz;
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, get_rflags(s) &
		       ~(u64)(X86_EFLAGS_RF | X86_EFLAGS_VM) & szmask[sz]);
		R[VCPU_REGS_RSP] = a;
		NEXT_W;
	op_POPF: {
		u64 mask = X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF |
			   X86_EFLAGS_ZF | X86_EFLAGS_SF | X86_EFLAGS_TF |
			   X86_EFLAGS_DF | X86_EFLAGS_OF | X86_EFLAGS_NT |
			   X86_EFLAGS_AC | X86_EFLAGS_ID;

		sz = d->sz;
		a = R[VCPU_REGS_RSP];
		SLOAD(a, sz, v);
		if (CPL == 0)
			mask |= X86_EFLAGS_IOPL | X86_EFLAGS_IF;
		else if (CPL <= iopl(s))
			mask |= X86_EFLAGS_IF;
		mask &= szmask[sz];
		t = get_rflags(s);
		set_rflags(s, ((t & ~mask) | (v & mask)) & ~(u64)X86_EFLAGS_RF);
		R[VCPU_REGS_RSP] = a + sz;
		NEXT;
	}
	op_SAHF:
		t = lf_arith(&s->lf) & ~(u64)(ARITH_FLAGS & ~X86_EFLAGS_OF);
		lf_set(&s->lf, t | (((R[0] >> 8) & 0xff) &
				    (ARITH_FLAGS & ~X86_EFLAGS_OF)));
		NEXT;
	op_LAHF:
		t = (lf_arith(&s->lf) & (ARITH_FLAGS & ~X86_EFLAGS_OF)) |
		    X86_EFLAGS_FIXED;
		R[0] = (R[0] & ~0xff00ull) | (t << 8);
		NEXT;
	op_LEAVE:
		sz = d->sz;
		a = R[VCPU_REGS_RBP];
		SLOAD(a, sz, v);
		R[VCPU_REGS_RSP] = a + sz;
		rset(R, VCPU_REGS_RBP, sz, v);
		NEXT;
	op_MOVS:
	op_STOS:
	op_LODS:
	op_CMPS:
	op_SCAS: {
		int r = string_op(s, d, stepping);

		if (r < 0)
			goto memfail;
		if (s->smc) {
			s->smc = false;
			stop = true;
		}
		if (r > 0) {	/* single-stepped one iteration of several: RIP stays */
			budget += b->ninsn - d->idx;
			rip = cur_rip(s, d);
			stepping = limited = stop = false;
			state_out(s, rip);
			if (!pk_exec_deliver(cpu, X86_TRAP_DB, false, 0, PK_DELIVER_HW))
				goto triple;
			budget--;	/* bounds a guest stepping through a long REP */
			s->deliveries++;
			goto delivered;
		}
		NEXT_W;
	}
	op_IN:
	op_OUT: {
		struct pk_guest_event ev = {
			.kind = PK_GEXIT_IO, .insn_len = d->len, .size = d->sz,
			.in = d->op == X_IN,
			.port = (d->flags & DI_DX) ? (u16)R[VCPU_REGS_RDX] :
						     (u16)d->imm,
			.data = d->op == X_OUT ? R[0] & szmask[d->sz] : 0,
		};

		if (CPL > iopl(s))	/* no I/O bitmap in the model */
			FAULT(X86_TRAP_GP, 0);
		s->ev = ev;
		goto ask_exit;	/* natively too: only the host has devices */
	}
	op_HLT:
		if (CPL)
			FAULT(X86_TRAP_GP, 0);
		s->ev = (struct pk_guest_event){
			.kind = PK_GEXIT_HLT, .insn_len = d->len };
		goto ask_exit;
	op_CPUID:
		s->ev = (struct pk_guest_event){
			.kind = PK_GEXIT_CPUID, .insn_len = d->len };
		goto ask_exit;
	op_VMCALL:
	op_VMMCALL:
		s->ev = (struct pk_guest_event){
			.kind = d->op == X_VMCALL ? PK_GEXIT_VMCALL :
						    PK_GEXIT_VMMCALL,
			.insn_len = d->len };
		goto ask_exit;
	op_RDMSR:
	op_WRMSR: {
		u32 ecx = (u32)R[VCPU_REGS_RCX];
		int ret;

		if (CPL)
			FAULT(X86_TRAP_GP, 0);
		v = ((R[VCPU_REGS_RDX] & 0xffffffff) << 32) | (u32)R[0];
		s->ev = (struct pk_guest_event){
			.kind = d->op == X_RDMSR ? PK_GEXIT_RDMSR : PK_GEXIT_WRMSR,
			.insn_len = d->len, .msr = ecx,
			.data = d->op == X_WRMSR ? v : 0 };
		cpu->rip = cur_rip(s, d);
		icpt = pk_virt_intercept(cpu, &s->ev);
		if (icpt == PK_ICPT_EXIT)
			goto exit_ev;
		if (icpt == PK_ICPT_UD)
			FAULT(X86_TRAP_UD, 0);
		if (d->op == X_RDMSR) {
			ret = pk_msr_read(cpu, ecx, &v);
			if (ret)
				FAULT(X86_TRAP_GP, 0);
			R[0] = (u32)v;
			R[VCPU_REGS_RDX] = v >> 32;
		} else {
			ret = pk_msr_write(cpu, ecx, v);
			if (ret)
				FAULT(X86_TRAP_GP, 0);
			goto serialize;
		}
		NEXT;
	}
	op_RDTSC:
		if ((cpu->cr4 & X86_CR4_TSD) && CPL)
			FAULT(X86_TRAP_GP, 0);
		R[0] = (u32)cpu->tsc;
		R[VCPU_REGS_RDX] = cpu->tsc >> 32;
		NEXT;
	op_RDTSCP:
	op_RDPID:
		s->ev = (struct pk_guest_event){
			.kind = d->op == X_RDTSCP ? PK_GEXIT_RDTSCP : PK_GEXIT_RDPID,
			.insn_len = d->len };
		cpu->rip = cur_rip(s, d);
		icpt = pk_virt_intercept(cpu, &s->ev);
		if (icpt == PK_ICPT_UD)
			FAULT(X86_TRAP_UD, 0);
		if (d->op == X_RDTSCP && (cpu->cr4 & X86_CR4_TSD) && CPL)
			FAULT(X86_TRAP_GP, 0);
		if (icpt == PK_ICPT_EXIT)
			goto exit_ev;
		if (d->op == X_RDTSCP) {
			R[0] = (u32)cpu->tsc;
			R[VCPU_REGS_RDX] = cpu->tsc >> 32;
			R[VCPU_REGS_RCX] = (u32)cpu->msr[PK_MSR_TSC_AUX];
		} else {
			R[d->rm] = cpu->msr[PK_MSR_TSC_AUX];
		}
		NEXT;
	op_SWAPGS:
		if (CPL)
			FAULT(X86_TRAP_GP, 0);
		t = cpu->seg[VCPU_SREG_GS].base;
		cpu->seg[VCPU_SREG_GS].base = cpu->msr[PK_MSR_KERNEL_GS_BASE];
		cpu->msr[PK_MSR_KERNEL_GS_BASE] = t;
		NEXT;
	op_RDWRBASE: {
		struct pk_segment *sg = &cpu->seg[(d->sub & 1) ? VCPU_SREG_GS :
							     VCPU_SREG_FS];

		if (!(cpu->cr4 & X86_CR4_FSGSBASE))
			FAULT(X86_TRAP_UD, 0);
		if (d->sub < 2) {
			rset(R, d->rm, d->sz, sg->base);
		} else {
			t = rget(R, d->rm, d->sz);
			if (is_noncanonical_address(t))
				FAULT(X86_TRAP_GP, 0);
			sg->base = t;
		}
		NEXT;
	}
	op_SYSCALL:
		if (!(cpu->msr[PK_MSR_EFER] & EFER_SCE))
			FAULT(X86_TRAP_UD, 0);
		t = get_rflags(s);
		R[VCPU_REGS_RCX] = NEXT_RIP;
		R[VCPU_REGS_R11] = t & ~(u64)X86_EFLAGS_RF;
		v = (cpu->msr[PK_MSR_STAR] >> 32) & 0xfffc;
		pk_seg_flat_code(&cpu->seg[VCPU_SREG_CS], (u16)v, 0);
		pk_seg_flat_data(&cpu->seg[VCPU_SREG_SS], (u16)(v + 8), 0);
		set_rflags(s, t & ~((cpu->msr[PK_MSR_SYSCALL_MASK] & 0xffffffff) |
				    X86_EFLAGS_RF));
		GOTO_BLOCK(cpu->msr[PK_MSR_LSTAR], 0);
	op_SYSRET:
		if (!(cpu->msr[PK_MSR_EFER] & EFER_SCE))
			FAULT(X86_TRAP_UD, 0);
		if (CPL)
			FAULT(X86_TRAP_GP, 0);
		if (!(d->flags & DI_REXW))
			FAULT(X86_TRAP_UD, 0);	/* to compatibility mode: not modelled */
		t = R[VCPU_REGS_RCX];
		/* Intel checks RCX; AMD returns and faults at CPL 3 on the fetch */
		if (cpu->m->model.vendor == PK_VENDOR_INTEL &&
		    is_noncanonical_address(t))
			FAULT(X86_TRAP_GP, 0);
		v = (cpu->msr[PK_MSR_STAR] >> 48) & 0xffff;
		pk_seg_flat_code(&cpu->seg[VCPU_SREG_CS], (u16)((v + 16) | 3), 3);
		pk_seg_flat_data(&cpu->seg[VCPU_SREG_SS], (u16)((v + 8) | 3), 3);
		set_rflags(s, (R[VCPU_REGS_R11] & 0x3c7fd7) | X86_EFLAGS_FIXED);
		GOTO_BLOCK(t, 0);
	op_DESC: {
		struct pk_dtable *dt = (d->sub & 1) ? &cpu->idtr : &cpu->gdtr;

		a = ea(s, d);
		if (d->sub < 2) {	/* SGDT, SIDT */
			if ((cpu->cr4 & X86_CR4_UMIP) && CPL)
				FAULT(X86_TRAP_GP, 0);
			STORE(a, 2, dt->limit);
			STORE(a + 2, 8, dt->base);
		} else {		/* LGDT, LIDT: serializing */
			if (CPL)
				FAULT(X86_TRAP_GP, 0);
			LOAD(a, 2, t);
			LOAD(a + 2, 8, v);
			dt->limit = (u16)t;
			dt->base = v;
			goto serialize;
		}
		NEXT_W;
	}
	op_INT:
		rip = NEXT_RIP;
		goto trap;
	op_IRET: {
		u64 nrip, ncs, nfl, nrsp, nss, mask, old = get_rflags(s);
		unsigned rpl;

		sz = d->sz;
		a = R[VCPU_REGS_RSP];
		SLOAD(a, sz, nrip);
		SLOAD(a + sz, sz, ncs);
		SLOAD(a + 2 * sz, sz, nfl);
		SLOAD(a + 3 * sz, sz, nrsp);
		SLOAD(a + 4 * sz, sz, nss);
		ncs &= 0xffff;
		nss &= 0xffff;
		rpl = ncs & 3;
		if (old & X86_EFLAGS_NT)	/* no task return in IA-32e mode */
			FAULT(X86_TRAP_GP, 0);
		if (!(ncs & ~3u))
			FAULT(X86_TRAP_GP, 0);
		if (rpl < CPL)
			FAULT(X86_TRAP_GP, ncs & ~3u);
		if (!(nss & ~3u) && rpl == 3)
			FAULT(X86_TRAP_GP, 0);
		if ((nss & 3) != rpl)
			FAULT(X86_TRAP_GP, nss & ~3u);
		if (is_noncanonical_address(nrip))
			FAULT(X86_TRAP_GP, 0);
		mask = X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF |
		       X86_EFLAGS_ZF | X86_EFLAGS_SF | X86_EFLAGS_TF |
		       X86_EFLAGS_DF | X86_EFLAGS_OF | X86_EFLAGS_NT |
		       X86_EFLAGS_RF | X86_EFLAGS_AC | X86_EFLAGS_ID;
		if (CPL == 0)
			mask |= X86_EFLAGS_IOPL | X86_EFLAGS_IF |
				X86_EFLAGS_VIF | X86_EFLAGS_VIP;
		else if (CPL <= iopl(s))
			mask |= X86_EFLAGS_IF;
		mask &= szmask[sz];
		set_rflags(s, (old & ~mask) | (nfl & mask));
		R[VCPU_REGS_RSP] = nrsp;
		pk_seg_flat_code(&cpu->seg[VCPU_SREG_CS], (u16)ncs, rpl);
		if (nss & ~3u)
			pk_seg_flat_data(&cpu->seg[VCPU_SREG_SS], (u16)nss, rpl);
		else
			pk_seg_null_ss(&cpu->seg[VCPU_SREG_SS], (u16)nss);
		icache_new_epoch(s->ic);	/* serializing */
		GOTO_BLOCK(nrip, 0);
	}
	op_GP0:
		FAULT(X86_TRAP_GP, 0);
	op_UD:
		FAULT(X86_TRAP_UD, 0);

serialize:	/* WRMSR, LGDT, LIDT: what follows is fetched anew (a new epoch) */
	icache_new_epoch(s->ic);
	if (blk_valid(b))	/* the rest of this block is still what memory holds */
		b->epoch = s->ic->epoch;
	else
		stop = true;
	NEXT_W;

memfail:
	if (s->fvec < 0)
		goto exit_ev;
fault:
	/* the instruction at d faulted: everything before it retired */
	budget += b->ninsn - d->idx;
	rip = cur_rip(s, d);
fault_fetch:
	stepping = limited = stop = false;
	state_out(s, rip);
	if (!pk_exec_deliver(cpu, (u8)s->fvec, exc_has_error(s->fvec), s->ferr,
			     PK_DELIVER_HW))
		goto triple;
	budget--;		/* the delivery: bounds a guest faulting in a loop */
	s->deliveries++;
	goto delivered;
trap:
	/* INT n, INT3, INT1 retire, then deliver with the next RIP */
	budget += b->ninsn - (d->idx + 1u);
	stepping = limited = stop = false;
	state_out(s, rip);
	if (!pk_exec_deliver(cpu, (u8)d->imm, false, 0,
			     d->sub ? PK_DELIVER_ICEBP : PK_DELIVER_SOFT))
		goto triple;
delivered:
	icache_new_epoch(s->ic);	/* the frame went to guest memory */
	state_in(s);
	rip = cpu->rip;
	lnk = &nolink;
	goto next_block;

ask_exit:
	/* HLT, CPUID, IN/OUT, VMCALL, VMMCALL: exit unless the answer is #UD */
	cpu->rip = cur_rip(s, d);
	icpt = pk_virt_intercept(cpu, &s->ev);
	if (icpt == PK_ICPT_UD) {
		s->fvec = X86_TRAP_UD;
		s->ferr = 0;
		goto fault;
	}
exit_ev:
	budget += b->ninsn - d->idx;
	rip = cur_rip(s, d);
exit_fetch:
	cpu->ev = s->ev;
	kind = cpu->ev.kind;
	state_out(s, rip);
	goto out;
extint:
	memset(&cpu->ev, 0, sizeof(cpu->ev));
	cpu->ev.kind = PK_GEXIT_EXTINT;
	state_out(s, rip);
	kind = PK_GEXIT_EXTINT;
	goto out;
triple:
	kind = cpu->ev.kind;	/* set by pk_exec_deliver; state as at the fault */
out:
	account(s, budget);
	/* nolink holds the run's first block looked up (unless the cache was dropped) */
	if (s->ic->gen == gen)
		s->ic->entry = nolink;
	return kind;
#undef LOAD_
#undef STORE_
#undef LOAD
#undef STORE
#undef SLOAD
#undef SSTORE
#undef RM_LOAD
#undef FAULT
#undef DISPATCH
#undef NEXT
#undef NEXT_W
#undef NEXT_RIP
#undef GOTO_BLOCK
#undef BRANCH
#undef CPL
#undef RMW
#undef ALU_FORM
#undef ALU_FORMS
}
