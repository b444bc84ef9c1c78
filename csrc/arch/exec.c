// SPDX-License-Identifier: MIT
/*
 * The guest x86-64 interpreter: the simulated CPU executing guest code in long mode
 * (MACHINE.md section 4). 64-bit code only, CPL 0 or 3, flat: a linear address is the
 * guest-physical address (paging structures are not walked), memory is cpu->npt, an
 * access outside every slot (or straddling two) is an MMIO exit.
 *
 * Speed comes from a decode cache (struct pk_icache, cpu->icache): straight-line blocks
 * of pre-decoded instructions (struct dins, exec_decode.c) keyed by guest-physical
 * address in a direct-mapped table, with the next block chained from the previous one.
 * A block keeps a copy of the bytes it was decoded from; every entry into a block
 * compares them with guest memory, and a guest write into the block being run ends the
 * block after that instruction. So whoever changes code bytes, and whenever, the next
 * instruction executed is the one in memory. Blocks never span two slots; the cache is
 * dropped when the slots change or its arena is full. Each handler dispatches to the
 * next instruction's handler itself (labels as values). Arithmetic flags are lazy: CF
 * is kept eagerly, the others are derived from the last operation when something reads
 * them.
 *
 * Instruction budget: cpu->insn_budget is decremented per retired instruction (and per
 * exception delivered, so that a guest faulting in a loop is bounded too); at 0 the
 * interpreter returns PK_GEXIT_EXTINT, between two instructions.
 *
 * MMIO: nothing of the instruction is retired when it exits. Re-executing it completes
 * it: a read at cpu->mmio_fill_gpa takes cpu->mmio_fill_data (when mmio_fill_valid); the
 * values an instruction already obtained, and the writes it already reported, are kept
 * (a small replay log, like KVM's emulator read cache) until it retires, so instructions
 * with more than one MMIO access make progress and a write is reported once.
 *
 * Not modelled (documented simplifications): paging, segment bases and limits other than
 * the FS/GS bases, compatibility and legacy modes (code is always decoded as 64-bit; CS.L
 * and EFER.LMA are not checked), RFLAGS.RF (never set in fault frames), alignment checks,
 * debug registers, interrupt shadows. Instructions outside the subset of MACHINE.md
 * section 4 are #UD (string instructions, MOV to/from CR/DR/Sreg, far transfers, x87 and
 * SIMD, SYSRET to compatibility mode ...); near branches ignore 66h as on Intel.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "arch/exec_impl.h"

#define IC_HASH_BITS	12
#define IC_ARENA_SIZE	(1u << 20)
#define BLK_MAX_INSNS	32
#define BLK_MAX_BYTES	512
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

/* A block of pre-decoded instructions, followed in memory by the bytes they came from. */
struct blk {
	u64 gpa;
	const u8 *hva;			/* where the bytes are in guest memory */
	struct blk *succ[2];		/* chained successors (validated on entry) */
	u16 nbytes;
	u8 ninsn;
	const u8 *bytes;
	struct dins ins[];
};

struct replay {
	u64 gpa;
	u64 data;
	u8 len;
	bool write;
};

struct pk_icache {
	struct pk_cpu *owner;		/* the CPU it belongs to (see icaches) */
	const struct pk_memslots *npt;	/* the slots the blocks were decoded from */
	struct pk_memslots slots;
	u64 retired;			/* instructions retired over the cache's life */
	/* MMIO accesses already done by the instruction at replay_rip, not yet retired */
	u64 replay_rip, replay_seq;
	unsigned nreplay;
	struct replay replay[REPLAY_MAX];
	struct blk **hash;		/* NULL: no cache (allocation failed), decode each time */
	u8 *arena;
	size_t used;
};

/* Lazy arithmetic flags. */
enum { LF_NONE, LF_ADD, LF_SUB, LF_LOGIC };
struct lf {
	u32 op;			/* LF_*: how OF/SF/ZF/AF/PF follow from a, b, res */
	u32 sh;			/* operand bits - 1 */
	u64 a, b, res;		/* res is truncated to the operand size */
	u64 fa;			/* OF/SF/ZF/AF/PF when op == LF_NONE */
	u64 cf;			/* CF, always eager: 0 or 1 */
};

/* The interpreter's working state for one pk_guest_exec(). */
struct xs {
	struct pk_cpu *cpu;
	u64 *R;
	struct pk_icache *ic;
	const struct pk_memslots *slots;
	u64 flags;		/* RFLAGS without the arithmetic flags */
	struct lf lf;
	/* the slot of the last access, limited to the lower canonical half */
	u64 m_gpa, m_size;
	u8 *m_hva;
	/* the block being run, and its bytes: guest writes there end it */
	struct blk *b;
	u64 cb_lo, cb_hi;
	u64 retired;
	bool smc;		/* mem_slow() wrote into the running block */
	bool flushed;		/* the cache was dropped: forget chained pointers */
	/* a failed access or instruction: fvec >= 0 a fault, -1 an exit in ev */
	int fvec;
	u32 ferr;
	struct pk_guest_event ev;
};

static const u64 szmask[9] = {
	0, 0xff, 0xffff, 0, 0xffffffff, 0, 0, 0, ~0ull,
};

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

static const struct pk_memslot *find_slot(const struct pk_memslots *slots, u64 gpa)
{
	u32 nr;

	if (!slots)
		return NULL;
	nr = slots->nr < PK_MAX_MEMSLOTS ? slots->nr : PK_MAX_MEMSLOTS;
	for (u32 i = 0; i < nr; i++) {
		const struct pk_memslot *s = &slots->slot[i];

		if (s->hva && gpa - s->gpa < s->size)
			return s;
	}
	return NULL;
}

/* ---- the decode cache ---- */

static void icache_flush(struct pk_icache *ic)
{
	if (ic->hash)
		memset(ic->hash, 0, sizeof(*ic->hash) << IC_HASH_BITS);
	ic->used = 0;
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
	free(ic->hash);
	free(ic->arena);
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

/* cpu's decode cache; NULL only if there is no memory for one. */
static struct pk_icache *icache_get(struct pk_cpu *cpu)
{
	struct pk_icache *ic = cpu->icache;
	bool added;

	if (likely(ic && ic->owner == cpu))
		return ic;
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
	ic->hash = calloc(1u << IC_HASH_BITS, sizeof(*ic->hash));
	ic->arena = malloc(IC_ARENA_SIZE);
	if (!ic->hash || !ic->arena) {		/* run uncached: decode every instruction */
		free(ic->hash);
		free(ic->arena);
		ic->hash = NULL;
		ic->arena = NULL;
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

static bool slots_equal(const struct pk_memslots *a, const struct pk_memslots *b)
{
	u32 nr = b->nr < PK_MAX_MEMSLOTS ? b->nr : PK_MAX_MEMSLOTS;

	return a->nr == b->nr && !memcmp(a->slot, b->slot, nr * sizeof(a->slot[0]));
}

/* Drop the cache when the memory map changed since the blocks were decoded. */
static void icache_check_slots(struct pk_icache *ic, const struct pk_memslots *npt)
{
	if (ic->npt == npt && (!npt || slots_equal(&ic->slots, npt)))
		return;
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

static inline unsigned blk_hash(u64 gpa)
{
	return (unsigned)((gpa * 0x9e3779b97f4a7c15ull) >> (64 - IC_HASH_BITS));
}

/* Does guest memory still hold the bytes the block was decoded from? */
static inline bool blk_valid(const struct blk *b)
{
	const u8 *p = b->hva, *q = b->bytes;
	unsigned n = b->nbytes;
	u64 x, y;

	if (n >= 8) {
		for (unsigned i = 0; i + 8 <= n; i += 8) {
			memcpy(&x, p + i, 8);
			memcpy(&y, q + i, 8);
			if (x != y)
				return false;
		}
		memcpy(&x, p + n - 8, 8);	/* the tail, overlapping */
		memcpy(&y, q + n - 8, 8);
		return x == y;
	}
	if (n >= 4) {
		u32 a, c;

		memcpy(&a, p, 4);
		memcpy(&c, q, 4);
		if (a != c)
			return false;
		memcpy(&a, p + n - 4, 4);
		memcpy(&c, q + n - 4, 4);
		return a == c;
	}
	for (unsigned i = 0; i < n; i++)
		if (p[i] != q[i])
			return false;
	return true;
}

/* Decode the block at rip, if it starts inside a slot; NULL otherwise. */
static struct blk *blk_build(struct xs *s, u64 rip)
{
	struct pk_icache *ic = s->ic;
	const struct pk_memslot *slot;
	struct dins tmp[BLK_MAX_INSNS];
	unsigned n = 0, off = 0, window;
	u64 lim;
	const u8 *hva;
	struct blk *b;
	size_t size;

	if (!ic->hash || rip >= CANON_LIMIT)
		return NULL;
	slot = find_slot(s->slots, rip);
	if (!slot)
		return NULL;
	lim = slot->gpa + slot->size;
	if (lim < slot->gpa || lim > CANON_LIMIT)
		lim = CANON_LIMIT;
	window = lim - rip < BLK_MAX_BYTES ? (unsigned)(lim - rip) : BLK_MAX_BYTES;
	hva = slot->hva + (rip - slot->gpa);
	while (n < BLK_MAX_INSNS && off < window) {
		unsigned len = pk_exec_decode(hva + off, window - off, rip + off, &tmp[n]);

		if (!len)
			break;		/* runs past the slot (or the window) */
		tmp[n].off = (u16)off;
		off += len;
		if (pk_exec_ends_block(&tmp[n++]))
			break;
	}
	if (!n)
		return NULL;

	size = sizeof(*b) + n * sizeof(struct dins) + off;
	size = (size + 15) & ~(size_t)15;
	if (size > IC_ARENA_SIZE - ic->used) {
		icache_flush(ic);
		s->flushed = true;
	}
	b = (struct blk *)(ic->arena + ic->used);
	ic->used += size;
	b->gpa = rip;
	b->hva = hva;
	b->succ[0] = b->succ[1] = NULL;
	b->nbytes = (u16)off;
	b->ninsn = (u8)n;
	memcpy(b->ins, tmp, n * sizeof(struct dins));
	b->bytes = (const u8 *)&b->ins[n];
	memcpy((u8 *)&b->ins[n], hva, off);
	return b;
}

static struct blk *blk_lookup(struct xs *s, u64 rip)
{
	struct pk_icache *ic = s->ic;
	struct blk *b;
	unsigned h;

	if (!ic->hash)
		return NULL;
	h = blk_hash(rip);
	b = ic->hash[h];
	if (b && b->gpa == rip && blk_valid(b))
		return b;
	b = blk_build(s, rip);
	if (b)
		ic->hash[h] = b;
	return b;
}

/* ---- flags ---- */

static inline u64 parity_flag(u64 res)
{
	return __builtin_parity((unsigned)(res & 0xff)) ? 0 : X86_EFLAGS_PF;
}

static inline u64 lf_arith(const struct lf *f)
{
	u64 r = f->res, a = f->a, b = f->b, of, af;

	switch (f->op) {
	case LF_NONE:
		return f->fa | f->cf;
	case LF_ADD:
		of = ((a ^ r) & (b ^ r)) >> f->sh;
		af = a ^ b ^ r;
		break;
	case LF_SUB:
		of = ((a ^ b) & (a ^ r)) >> f->sh;
		af = a ^ b ^ r;
		break;
	default:
		of = 0;
		af = 0;
		break;
	}
	return f->cf | parity_flag(r) | (af & X86_EFLAGS_AF) | (r ? 0 : X86_EFLAGS_ZF) |
	       (((r >> f->sh) & 1) << 7) | ((of & 1) << 11);
}

static inline void lf_set(struct lf *f, u64 arith)
{
	f->op = LF_NONE;
	f->fa = arith & (ARITH_FLAGS & ~(u64)X86_EFLAGS_CF);
	f->cf = arith & X86_EFLAGS_CF;
}

static inline bool lf_zf(const struct lf *f)
{
	return f->op ? f->res == 0 : (f->fa & X86_EFLAGS_ZF) != 0;
}

/* Condition code cc (the low nibble of Jcc/SETcc/CMOVcc). */
static inline bool lf_cond(const struct lf *f, unsigned cc)
{
	u64 fl;
	bool v;

	switch (cc >> 1) {
	case 1: v = f->cf; break;				/* B */
	case 2: v = lf_zf(f); break;				/* E */
	case 3: v = f->cf || lf_zf(f); break;			/* BE */
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
	u64 sh = sz * 8 - 1;

	f->op = LF_NONE;
	f->cf = cf;
	f->fa = parity_flag(res) | (res ? 0 : X86_EFLAGS_ZF) | (((res >> sh) & 1) << 7) |
		(of << 11);
}

static inline u64 alu(struct lf *f, unsigned op, unsigned sz, u64 a, u64 b)
{
	u64 m = szmask[sz], r;

	switch (op) {
	case ALU_ADD:
		r = (a + b) & m;
		f->cf = r < a;
		f->op = LF_ADD;
		break;
	case ALU_ADC:
		r = (a + b + f->cf) & m;
		f->cf = f->cf ? r <= a : r < a;
		f->op = LF_ADD;
		break;
	case ALU_SBB:
		r = (a - b - f->cf) & m;
		f->cf = f->cf ? a <= b : a < b;
		f->op = LF_SUB;
		break;
	case ALU_SUB:
	case ALU_CMP:
		r = (a - b) & m;
		f->cf = a < b;
		f->op = LF_SUB;
		break;
	case ALU_OR:
		r = a | b;
		f->cf = 0;
		f->op = LF_LOGIC;
		break;
	case ALU_AND:
		r = a & b;
		f->cf = 0;
		f->op = LF_LOGIC;
		break;
	default:
		r = a ^ b;
		f->cf = 0;
		f->op = LF_LOGIC;
		break;
	}
	f->a = a;
	f->b = b;
	f->res = r;
	f->sh = sz * 8 - 1;
	return r;
}

/* INC (b = 1, ADD), DEC (b = 1, SUB), NEG (a = 0, SUB): CF is not theirs (NEG sets it). */
static inline u64 lf_arith_op(struct lf *f, u32 op, unsigned sz, u64 a, u64 b)
{
	u64 r = (op == LF_ADD ? a + b : a - b) & szmask[sz];

	f->op = op;
	f->a = a;
	f->b = b;
	f->res = r;
	f->sh = sz * 8 - 1;
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
		cf = f->cf;
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

static inline u8 *mptr(const struct xs *s, u64 a, unsigned len)
{
	u64 off = a - s->m_gpa;

	if (likely(off < s->m_size && len <= s->m_size - off))
		return s->m_hva + off;
	return NULL;
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

/* A guest write into the running block: it ends after this instruction. */
static inline bool smc_hit(const struct xs *s, u64 a, unsigned len)
{
	return unlikely(a < s->cb_hi && a + len > s->cb_lo);
}

static inline u64 cur_rip(const struct xs *s, const struct dins *d)
{
	return s->b->gpa + d->off;
}

/* Retired instructions before d, over the cache's life: with RIP, names an execution. */
static inline u64 cur_seq(const struct xs *s, const struct dins *d)
{
	return s->ic->retired + s->retired + (u64)(d - s->b->ins);
}

static void replay_key(struct pk_icache *ic, u64 rip, u64 seq)
{
	if (ic->replay_rip != rip || ic->replay_seq != seq) {
		ic->replay_rip = rip;
		ic->replay_seq = seq;
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
 * An MMIO read the instruction at (rip, seq) already completed, or the fill the host
 * provided for it. false: the read has to exit.
 */
static bool mmio_read_done(struct xs *s, u64 rip, u64 seq, u64 a, unsigned len, u64 *v)
{
	struct pk_icache *ic = s->ic;
	struct pk_cpu *cpu = s->cpu;

	replay_key(ic, rip, seq);
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
 * Every access the fast path (the last slot used) does not cover: canonical check,
 * another slot, or MMIO. 0 done; -1 with s->fvec set (a fault, or -1 for an exit).
 */
static __attribute__((noinline)) int mem_slow(struct xs *s, const struct dins *d, u64 a,
					      unsigned len, u64 *v, bool write, bool stack)
{
	const struct pk_memslot *slot;
	u64 rip, seq;

	if (is_noncanonical_address(a) || is_noncanonical_address(a + len - 1)) {
		s->fvec = stack ? X86_TRAP_SS : X86_TRAP_GP;
		s->ferr = 0;
		return -1;
	}
	slot = find_slot(s->slots, a);
	if (slot && len <= slot->size - (a - slot->gpa)) {
		u8 *p = slot->hva + (a - slot->gpa);

		if (slot->gpa < CANON_LIMIT) {
			s->m_gpa = slot->gpa;
			s->m_size = slot->size <= CANON_LIMIT - slot->gpa ?
				    slot->size : CANON_LIMIT - slot->gpa;
			s->m_hva = slot->hva;
		}
		if (write) {
			stn(p, len, *v);
			s->smc |= smc_hit(s, a, len);
		} else {
			*v = ldn(p, len);
		}
		return 0;
	}

	/* MMIO (outside every slot, or across two) */
	rip = cur_rip(s, d);
	seq = cur_seq(s, d);
	if (!write) {
		if (mmio_read_done(s, rip, seq, a, len, v))
			return 0;
		mmio_exit(s, d->len, a, len, false, 0);
		return -1;
	}
	replay_key(s->ic, rip, seq);
	for (unsigned i = 0; i < s->ic->nreplay; i++) {
		const struct replay *r = &s->ic->replay[i];

		if (r->write && r->gpa == a && r->len == len && r->data == *v)
			return 0;	/* reported already: the host completed it */
	}
	replay_add(s->ic, a, len, true, *v);
	mmio_exit(s, d->len, a, len, true, *v);
	return -1;
}

/*
 * Fetch and decode one instruction the cache cannot hold: outside every slot (the
 * bytes come from MMIO reads, one byte per exit), across two slots, or at a
 * non-canonical address. 0: *d is ready; -1: s->fvec / s->ev says why not.
 */
static __attribute__((noinline)) int fetch_slow(struct xs *s, u64 rip, struct dins *d)
{
	u64 seq = s->ic->retired + s->retired;
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
		else if (mmio_read_done(s, rip, seq, a, 1, &v))
			buf[avail++] = (u8)v;
		else
			break;
	}
	if (pk_exec_decode(buf, avail, rip, d))
		return 0;
	/* it needs byte rip + avail, which is not there */
	if (is_noncanonical_address(rip + avail)) {
		s->fvec = X86_TRAP_GP;
		s->ferr = 0;
		return -1;
	}
	mmio_exit(s, 0, rip + avail, 1, false, 0);
	return -1;
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

	cpu->insn_budget = budget;
	s->ic->retired += s->retired;
	cpu->costs->ops[PK_PATH_GUEST][PK_OP_GUEST_INSN] += s->retired;
	cpu->costs->cycles[PK_PATH_GUEST] += s->retired * m->profile.op[PK_OP_GUEST_INSN];
}

u32 pk_guest_exec(struct pk_cpu *cpu)
{
	struct pk_icache ic_fallback;
	struct xs st = { .cpu = cpu, .R = cpu->regs, .slots = cpu->npt };
	struct xs *const s = &st;
	u64 *const R = cpu->regs;
	u64 budget = cpu->insn_budget, rip = cpu->rip, executed;
	struct blk *b, *prev = NULL;
	bool stepping;
	const struct dins *d, *end;
	unsigned sz;
	u64 a, v, t, res;
#define __XOP_LABEL(name) [X_##name] = &&op_##name,
	static const void *const dispatch[X_NR_OPS] = { XOPS(__XOP_LABEL) };
#undef __XOP_LABEL
	struct {
		struct blk b;
		struct dins d;
	} one;				/* an instruction decoded outside the cache */
	enum pk_icpt icpt;
	u32 kind;

	s->ic = icache_get(cpu);
	if (!s->ic) {
		memset(&ic_fallback, 0, sizeof(ic_fallback));
		s->ic = &ic_fallback;
	}
	icache_check_slots(s->ic, cpu->npt);
	if (s->ic->replay_rip != rip)
		s->ic->nreplay = 0;
	state_in(s);

	for (;;) {
		if (!budget) {
			memset(&cpu->ev, 0, sizeof(cpu->ev));
			cpu->ev.kind = PK_GEXIT_EXTINT;
			state_out(s, rip);
			account(s, budget);
			return PK_GEXIT_EXTINT;
		}

		/* the block at rip: chained from the previous one, or looked up, or decoded */
		b = NULL;
		if (prev) {
			if (prev->succ[0] && prev->succ[0]->gpa == rip)
				b = prev->succ[0];
			else if (prev->succ[1] && prev->succ[1]->gpa == rip)
				b = prev->succ[1];
			if (b && !blk_valid(b))
				b = NULL;
		}
		if (!b) {
			b = blk_lookup(s, rip);
			if (s->flushed) {
				prev = NULL;
				s->flushed = false;
	}
			if (b && prev)
				prev->succ[prev->succ[0] ? 1 : 0] = b;
		}
		if (!b) {
			s->b = &one.b;
			one.b.gpa = rip;
			one.b.nbytes = 0;
			one.b.ninsn = 1;
			if (fetch_slow(s, rip, &one.d)) {
				if (s->fvec < 0)
					goto exit_fetch;
				goto fault_fetch;
	}
			one.d.off = 0;
			b = &one.b;
		}

		s->b = b;
		s->cb_lo = b->gpa;
		s->cb_hi = b->gpa + b->nbytes;
		/* RFLAGS.TF: one instruction, then the single-step #DB trap (SDM 17.3.1.4) */
		stepping = s->flags & X86_EFLAGS_TF;
		end = b->ins + (stepping ? 1 : b->ninsn <= budget ? b->ninsn : budget);
		d = b->ins;
		sz = d->sz;

/* Memory access helpers: the fast path inline, the rest in mem_slow(). */
#define LOAD_(addr, size, out, stk) do {					\
		u64 a_ = (addr);						\
		u8 *p_ = mptr(s, a_, (size));					\
		if (likely(p_))							\
			(out) = ldn(p_, (size));				\
		else if (mem_slow(s, d, a_, (size), &(out), false, (stk)))	\
			goto memfail;						\
	} while (0)
#define STORE_(addr, size, val, stk) do {					\
		u64 a_ = (addr), v_ = (val);					\
		u8 *p_ = mptr(s, a_, (size));					\
		if (likely(p_)) {						\
			stn(p_, (size), v_);					\
			if (smc_hit(s, a_, (size)))				\
				end = d + 1;					\
		} else if (mem_slow(s, d, a_, (size), &v_, true, (stk))) {	\
			goto memfail;						\
		} else if (s->smc) {						\
			s->smc = false;						\
			end = d + 1;						\
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
#define NEXT do {								\
		if (likely(++d < end)) {					\
			sz = d->sz;						\
			goto *dispatch[d->op];					\
		}								\
		goto block_done;						\
	} while (0)
#define NEXT_RIP	(cur_rip(s, d) + d->len)
#define BRANCH(target) do {							\
		rip = (target);							\
		if (unlikely(is_noncanonical_address(rip)))			\
			FAULT(X86_TRAP_GP, 0);					\
		goto branched;							\
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
		u8 *p_ = mptr(s, a, (size));					\
		if (likely(p_)) {						\
			struct lf *const f = &s->lf;				\
			(void)f;						\
			v = ldn(p_, (size));					\
			OP;							\
			if (WB) {						\
				stn(p_, (size), res);				\
				if (smc_hit(s, a, (size)))			\
					end = d + 1;				\
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
				end = d + 1;					\
			}							\
		}								\
	} while (0)

		goto *dispatch[d->op];
	op_DEC_R64:
		t = R[d->rm];
		s->lf.op = LF_SUB;
		s->lf.a = t;
		s->lf.b = 1;
		s->lf.res = R[d->rm] = t - 1;
		s->lf.sh = 63;
		NEXT;
	op_JNZ:
		if (!lf_zf(&s->lf))
			BRANCH(d->imm);
		rip = NEXT_RIP;
		goto branched;
	op_JCC:
		if (lf_cond(&s->lf, d->sub))
			BRANCH(d->imm);
		rip = NEXT_RIP;
		goto branched;
	op_JMP:
		BRANCH(d->imm);
	op_ALU_RM_R:
		t = rget(R, d->reg, sz);
		RMW(sz, res = alu(f, d->sub, sz, v, t), d->sub != ALU_CMP);
		NEXT;
	op_ALU_R_RM:
		RM_LOAD(sz, v);
		res = alu(&s->lf, d->sub, sz, rget(R, d->reg, sz), v);
		if (d->sub != ALU_CMP)
			rset(R, d->reg, sz, res);
		NEXT;
	op_ALU_RM_I:
		t = d->imm & szmask[sz];
		RMW(sz, res = alu(f, d->sub, sz, v, t), d->sub != ALU_CMP);
		NEXT;
	op_TEST_RM_R:
		RM_LOAD(sz, v);
		alu(&s->lf, ALU_AND, sz, v, rget(R, d->reg, sz));
		NEXT;
	op_TEST_RM_I:
		RM_LOAD(sz, v);
		alu(&s->lf, ALU_AND, sz, v, d->imm & szmask[sz]);
		NEXT;
	op_INC:
		RMW(sz, res = lf_arith_op(f, LF_ADD, sz, v, 1), true);
		NEXT;
	op_DEC:
		RMW(sz, res = lf_arith_op(f, LF_SUB, sz, v, 1), true);
		NEXT;
	op_NEG:
		RMW(sz, (res = lf_arith_op(f, LF_SUB, sz, 0, v), f->cf = v != 0),
		    true);
		NEXT;
	op_NOT:
		RMW(sz, res = ~v & szmask[sz], true);
		NEXT;
	op_MOV_RM_R:
		v = rget(R, d->reg, sz);
		if (d->flags & DI_MEM)
			STORE(ea(s, d), sz, v);
		else
			rset(R, d->rm, sz, v);
		NEXT;
	op_MOV_R_RM:
		RM_LOAD(sz, v);
		rset(R, d->reg, sz, v);
		NEXT;
	op_MOV_RM_I:
		v = d->imm & szmask[sz];
		if (d->flags & DI_MEM)
			STORE(ea(s, d), sz, v);
		else
			rset(R, d->rm, sz, v);
		NEXT;
	op_MOV_R_I:
		rset(R, d->reg, sz, d->imm);
		NEXT;
	op_MOVZX:
		RM_LOAD(d->sub, v);
		rset(R, d->reg, sz, v);
		NEXT;
	op_MOVSX:
		RM_LOAD(d->sub, v);
		rset(R, d->reg, sz, sext(v, d->sub));
		NEXT;
	op_LEA:
		rset(R, d->reg, sz, ea_off(s, d));
		NEXT;
	op_PUSH_R:
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, rget(R, d->reg, sz));
		R[VCPU_REGS_RSP] = a;
		NEXT;
	op_POP_R:
		a = R[VCPU_REGS_RSP];
		SLOAD(a, sz, v);
		R[VCPU_REGS_RSP] = a + sz;
		rset(R, d->reg, sz, v);
		NEXT;
	op_PUSH_I:
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, d->imm & szmask[sz]);
		R[VCPU_REGS_RSP] = a;
		NEXT;
	op_PUSH_RM:
		RM_LOAD(sz, v);
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, v);
		R[VCPU_REGS_RSP] = a;
		NEXT;
	op_POP_RM:
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
		NEXT;
	op_XCHG:
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
		NEXT;
	op_SHIFT:
		t = (d->flags & DI_CL) ? R[VCPU_REGS_RCX] : d->imm;
		RMW(sz, res = shift(f, d->sub, sz, v, t), true);
		NEXT;
	op_IMUL2:
	op_IMUL3: {
		__int128 prod;

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
		if (sz == 2)
			rset(R, 0, 2, sext(R[0], 1));
		else
			rset(R, 0, sz, sext(R[0], sz / 2));
		NEXT;
	op_CWD:
		rset(R, VCPU_REGS_RDX, sz,
		     ((R[0] >> (sz * 8 - 1)) & 1) ? ~0ull : 0);
		NEXT;
	op_CALL:
		rip = d->imm;
		if (unlikely(is_noncanonical_address(rip)))
			FAULT(X86_TRAP_GP, 0);
		a = R[VCPU_REGS_RSP] - 8;
		SSTORE(a, 8, NEXT_RIP);
		R[VCPU_REGS_RSP] = a;
		goto branched;
	op_CALL_RM:
		RM_LOAD(8, t);
		if (unlikely(is_noncanonical_address(t)))
			FAULT(X86_TRAP_GP, 0);
		a = R[VCPU_REGS_RSP] - 8;
		SSTORE(a, 8, NEXT_RIP);
		R[VCPU_REGS_RSP] = a;
		rip = t;
		goto branched;
	op_RET:
		a = R[VCPU_REGS_RSP];
		SLOAD(a, 8, t);
		if (unlikely(is_noncanonical_address(t)))
			FAULT(X86_TRAP_GP, 0);
		R[VCPU_REGS_RSP] = a + 8 + d->imm;
		rip = t;
		goto branched;
	op_JMP_RM:
		RM_LOAD(8, t);
		BRANCH(t);
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
		rip = take ? d->imm : NEXT_RIP;
		goto branched;
	}
	op_SETCC:
		v = lf_cond(&s->lf, d->sub);
		if (d->flags & DI_MEM)
			STORE(ea(s, d), 1, v);
		else
			rset(R, d->rm, 1, v);
		NEXT;
	op_CMOVCC:
		RM_LOAD(sz, v);
		if (lf_cond(&s->lf, d->sub))
			rset(R, d->reg, sz, v);
		else if (sz == 4)
			R[d->reg] = (u32)R[d->reg];	/* zero-extends anyway */
		NEXT;
	op_NOP:
		NEXT;
	op_CLC:
		s->lf.cf = 0;
		NEXT;
	op_STC:
		s->lf.cf = 1;
		NEXT;
	op_CMC:
		s->lf.cf ^= 1;
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
		a = R[VCPU_REGS_RSP] - sz;
		SSTORE(a, sz, get_rflags(s) &
		       ~(u64)(X86_EFLAGS_RF | X86_EFLAGS_VM) & szmask[sz]);
		R[VCPU_REGS_RSP] = a;
		NEXT;
	op_POPF: {
		u64 mask = X86_EFLAGS_CF | X86_EFLAGS_PF | X86_EFLAGS_AF |
			   X86_EFLAGS_ZF | X86_EFLAGS_SF | X86_EFLAGS_TF |
			   X86_EFLAGS_DF | X86_EFLAGS_OF | X86_EFLAGS_NT |
			   X86_EFLAGS_AC | X86_EFLAGS_ID;

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
		a = R[VCPU_REGS_RBP];
		SLOAD(a, sz, v);
		R[VCPU_REGS_RSP] = a + sz;
		rset(R, VCPU_REGS_RBP, sz, v);
		NEXT;
	op_IN:
	op_OUT: {
		struct pk_guest_event ev = {
			.kind = PK_GEXIT_IO, .insn_len = d->len, .size = sz,
			.in = d->op == X_IN,
			.port = (d->flags & DI_DX) ? (u16)R[VCPU_REGS_RDX] :
						     (u16)d->imm,
			.data = d->op == X_OUT ? R[0] & szmask[sz] : 0,
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
			rset(R, d->rm, sz, sg->base);
		} else {
			t = rget(R, d->rm, sz);
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
		rip = cpu->msr[PK_MSR_LSTAR];
		goto branched;
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
		rip = t;
		goto branched;
	op_DESC: {
		struct pk_dtable *dt = (d->sub & 1) ? &cpu->idtr : &cpu->gdtr;

		a = ea(s, d);
		if (d->sub < 2) {	/* SGDT, SIDT */
			if ((cpu->cr4 & X86_CR4_UMIP) && CPL)
				FAULT(X86_TRAP_GP, 0);
			STORE(a, 2, dt->limit);
			STORE(a + 2, 8, dt->base);
		} else {		/* LGDT, LIDT */
			if (CPL)
				FAULT(X86_TRAP_GP, 0);
			LOAD(a, 2, t);
			LOAD(a + 2, 8, v);
			dt->limit = (u16)t;
			dt->base = v;
		}
		NEXT;
	}
	op_INT:
		rip = NEXT_RIP;
		goto trap;
	op_IRET: {
		u64 nrip, ncs, nfl, nrsp, nss, mask, old = get_rflags(s);
		unsigned rpl;

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
		rip = nrip;
		goto branched;
	}
	op_GP0:
		FAULT(X86_TRAP_GP, 0);
	op_UD:
		FAULT(X86_TRAP_UD, 0);


block_done:	/* the end of the block (or stopped early: budget, code write) */
		executed = d - b->ins;
		rip = cur_rip(s, d - 1) + d[-1].len;
		goto retire;
branched:
		executed = d - b->ins + 1;
retire:
		budget -= executed;
		s->retired += executed;
		prev = b == &one.b ? NULL : b;
		if (likely(!stepping))
			continue;
		state_out(s, rip);	/* the trap follows the retired instruction */
		if (!pk_exec_deliver(cpu, X86_TRAP_DB, false, 0, PK_DELIVER_HW))
			goto triple;
		goto delivered;

memfail:
		if (s->fvec < 0)
			goto exit_ev;
fault:
		/* the instruction at d faulted: everything before it retired */
		executed = d - b->ins;
		budget -= executed;
		s->retired += executed;
		rip = cur_rip(s, d);
fault_fetch:
		state_out(s, rip);
		if (!pk_exec_deliver(cpu, (u8)s->fvec, exc_has_error(s->fvec), s->ferr,
				     PK_DELIVER_HW))
			goto triple;
		budget--;		/* the delivery: bounds a guest faulting in a loop */
		goto delivered;
trap:
		/* INT n, INT3, INT1 retire, then deliver with the next RIP */
		executed = d - b->ins + 1;
		budget -= executed;
		s->retired += executed;
		state_out(s, rip);
		if (!pk_exec_deliver(cpu, (u8)d->imm, false, 0,
				     d->sub ? PK_DELIVER_ICEBP : PK_DELIVER_SOFT))
			goto triple;
delivered:
		state_in(s);
		rip = cpu->rip;
		prev = NULL;
		continue;

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
		executed = d - b->ins;
		budget -= executed;
		s->retired += executed;
		rip = cur_rip(s, d);
exit_fetch:
		cpu->ev = s->ev;
		kind = cpu->ev.kind;
		state_out(s, rip);
		account(s, budget);
		return kind;
triple:
		kind = cpu->ev.kind;	/* set by pk_exec_deliver; state as at the fault */
		account(s, budget);
		return kind;
	}
#undef LOAD_
#undef STORE_
#undef LOAD
#undef STORE
#undef SLOAD
#undef SSTORE
#undef RM_LOAD
#undef FAULT
#undef NEXT_RIP
#undef BRANCH
#undef CPL
#undef RMW
#undef NEXT
}
