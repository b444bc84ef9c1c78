// SPDX-License-Identifier: MIT
/*
 * Native runs: register-only guest instructions executed by the host CPU itself.
 *
 * The guest is x86-64 and so is the host. An instruction that only computes on
 * general-purpose registers and the arithmetic flags, and cannot fault (ADD, MOV, LEA,
 * IMUL, shifts, CMOVcc, SETcc ... on registers), does on the host exactly what it does
 * in the guest, given the same register values. A run of such instructions in a decode
 * cache block (exec.c) becomes one host function:
 *
 *	push the callee-saved registers, the register file pointer and the flags pointer
 *	[push qword [flags]; popfq]		only if the run reads flags it did not write
 *	mov <reg>, [regs + 8 * reg]		each guest register the run uses, into the
 *						same host register (RDI, the pointer, last)
 *	<the guest's own bytes>			copied as they are
 *	[pushfq; pop qword [flags]]		only if the run writes flags
 *	mov [regs + 8 * reg], <reg>		each guest register the run writes
 *	pop, ret
 *
 * so the guest's bytes can be copied as they are: no register is renamed. What that
 * needs of an instruction (pk_native_ok): no memory access (LEA only computes), no RSP
 * (it stays the host's stack pointer), not RIP-relative, prefixes only 66h and REX,
 * and at most 14 guest registers per run, so that one host register is left to hold
 * the register file pointer while the results are stored. The few bytes around the
 * guest's (the loads, stores, pushes and pops above) are written here by hand: there is
 * no encoder library in C, and the forms are fixed (Intel SDM vol. 2, chapter 2).
 *
 * A run never ends with flags the SDM leaves undefined (after IMUL, MUL, shifts,
 * rotates by more than 1): those would be the host CPU's, and could differ from the
 * interpreter's and between hosts. exec.c ends such a run before the instruction; the
 * interpreter then computes it, so a guest sees the same flags with and without native
 * runs, on any host.
 *
 * Code memory is mapped read, write and execute (as QEMU's TCG does by default); where
 * the host refuses such a mapping, there are no native runs and the interpreter runs
 * everything.
 */
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "arch/exec_impl.h"

#define REGION_SIZE	(2u << 20)
#define RUN_OVERHEAD	256		/* prologue or epilogue bytes, bounded */

/* Arithmetic flags, compressed: bit i of the masks in struct native_use. */
#define F_CF	BIT(0)
#define F_PF	BIT(1)
#define F_AF	BIT(2)
#define F_ZF	BIT(3)
#define F_SF	BIT(4)
#define F_OF	BIT(5)
#define F_ALL	0x3f
#define F_SZAPC	(F_SF | F_ZF | F_AF | F_PF | F_CF)

struct region {
	struct region *next;
	u8 *code;
};

struct pk_native {
	struct region *regions;		/* newest first; code goes into the newest */
	size_t used;			/* bytes used of the newest region, from its start */
	size_t cold;			/* and from its end: code that seldom runs */
	size_t total;			/* bytes used of all regions */
	bool broken;			/* the host refused executable memory */
};

static bool native_on = true;

void pk_native_set_enabled(bool on)
{
	native_on = on;
}

bool pk_native_enabled(void)
{
	return native_on;
}

/* ---- which instructions ---- */

/* A register operand as a GPR number (AH..BH are parts of RAX..RBX), or -1 for RSP. */
static int gpr(u8 r)
{
	if (r >= XR_HIGH8 && r < XR_HIGH8 + 4)
		return r - XR_HIGH8;
	if (r == VCPU_REGS_RSP || r > 15)
		return -1;
	return r;
}

/* Legacy prefixes and REX before the opcode; false if any but 66h. *len: their bytes. */
static bool plain_prefixes(const u8 *code, unsigned n, unsigned *len)
{
	unsigned i = 0;

	for (; i < n; i++) {
		u8 b = code[i];

		if ((b & 0xf0) == 0x40)
			continue;
		switch (b) {
		case 0x66:
			continue;
		case 0x67: case 0x26: case 0x2e: case 0x36: case 0x3e: case 0x64: case 0x65:
		case 0xf0: case 0xf2: case 0xf3:
			return false;
		}
		break;
	}
	*len = i;
	return i < n;
}

#define USE(r) do { int g_ = gpr(r); if (g_ < 0) return false; rd |= BIT(g_); } while (0)
#define DEF(r) do { int g_ = gpr(r); if (g_ < 0) return false; wr |= BIT(g_); } while (0)

bool pk_native_ok(const struct dins *d, const u8 *code, struct native_use *u)
{
	bool mem = d->flags & DI_MEM;
	unsigned plen, count;
	u16 rd = 0, wr = 0;
	u8 frd = 0, fwr = 0, fundef = 0, op0, op1;

	if (!native_on || !plain_prefixes(code, d->len, &plen))
		return false;
	op0 = code[plen];
	op1 = plen + 1 < d->len ? code[plen + 1] : 0;
	switch (d->op) {
	case X_ALU_RM_R:
	case X_ALU_R_RM:
		if (mem)
			return false;
		USE(d->reg);
		USE(d->rm);
		if (d->sub != ALU_CMP) {
			if (d->op == X_ALU_RM_R)
				DEF(d->rm);
			else
				DEF(d->reg);
		}
		if (d->sub == ALU_ADC || d->sub == ALU_SBB)
			frd = F_CF;
		fwr = F_ALL;
		break;
	case X_ALU_RM_I:
		if (mem)
			return false;
		USE(d->rm);
		if (d->sub != ALU_CMP)
			DEF(d->rm);
		if (d->sub == ALU_ADC || d->sub == ALU_SBB)
			frd = F_CF;
		fwr = F_ALL;
		break;
	case X_TEST_RM_R:
		if (mem)
			return false;
		USE(d->reg);
		USE(d->rm);
		fwr = F_ALL;
		break;
	case X_TEST_RM_I:
		if (mem)
			return false;
		USE(d->rm);
		fwr = F_ALL;
		break;
	case X_INC: case X_DEC: case X_DEC_R64:
		if (mem)
			return false;
		USE(d->rm);
		DEF(d->rm);
		frd = F_CF;		/* kept: the run's CF out is the one it came in with */
		fwr = F_ALL & ~F_CF;
		break;
	case X_NEG:
		if (mem)
			return false;
		USE(d->rm);
		DEF(d->rm);
		fwr = F_ALL;
		break;
	case X_NOT:
		if (mem)
			return false;
		USE(d->rm);
		DEF(d->rm);
		break;
	case X_MOV_RM_R:
		if (mem)
			return false;
		USE(d->reg);
		DEF(d->rm);
		break;
	case X_MOV_R_RM: case X_MOVZX: case X_MOVSX:
		if (mem)
			return false;
		USE(d->rm);
		DEF(d->reg);
		break;
	case X_MOV_RM_I:
		if (mem)
			return false;
		DEF(d->rm);
		break;
	case X_MOV_R_I:
		DEF(d->reg);
		break;
	case X_LEA:
		/* computes an address, accesses nothing; RIP-relative is not position-free */
		if (op0 != 0x8d || (op1 & 0xc7) == 0x05)
			return false;
		if (d->base != XR_NONE)
			USE(d->base);
		if (d->index != XR_NONE)
			USE(d->index);
		DEF(d->reg);
		break;
	case X_XCHG:
		if (mem)
			return false;
		USE(d->reg);
		USE(d->rm);
		DEF(d->reg);
		DEF(d->rm);
		break;
	case X_SHIFT:
		if (mem)
			return false;
		USE(d->rm);
		DEF(d->rm);
		if (d->flags & DI_CL) {
			USE(VCPU_REGS_RCX);
			count = ~0u;			/* unknown: may be 0 (no flag changes) */
		} else {
			count = d->imm & (d->sz == 8 ? 0x3f : 0x1f);
			if (!count)
				break;			/* no flag changes */
		}
		switch (d->sub) {
		case SH_ROL: case SH_ROR:
			frd = F_ALL & ~(F_CF | F_OF);	/* kept */
			fwr = F_CF | F_OF;
			fundef = count == 1 ? 0 : F_OF;
			break;
		case SH_RCL: case SH_RCR:
			frd = F_ALL;
			fwr = F_CF | F_OF;
			fundef = count == 1 ? 0 : F_OF;
			break;
		default:
			fwr = F_ALL;
			fundef = F_AF | F_OF | F_CF;	/* AF always; OF, CF in some cases */
			break;
		}
		if (count == ~0u)
			frd = F_ALL;			/* a count of 0 keeps them all */
		break;
	case X_IMUL2: case X_IMUL3:
		if (mem)
			return false;
		USE(d->rm);
		if (d->op == X_IMUL2)
			USE(d->reg);
		DEF(d->reg);
		fwr = F_ALL;
		fundef = F_SF | F_ZF | F_AF | F_PF;
		break;
	case X_MULDIV:
		if (mem || (d->sub != 4 && d->sub != 5))
			return false;			/* DIV, IDIV fault (#DE) */
		USE(d->rm);
		USE(VCPU_REGS_RAX);
		DEF(VCPU_REGS_RAX);
		if (d->sz != 1)
			DEF(VCPU_REGS_RDX);
		fwr = F_ALL;
		fundef = F_SF | F_ZF | F_AF | F_PF;
		break;
	case X_CBW:
		USE(VCPU_REGS_RAX);
		DEF(VCPU_REGS_RAX);
		break;
	case X_CWD:
		USE(VCPU_REGS_RAX);
		DEF(VCPU_REGS_RDX);
		break;
	case X_SETCC:
		if (mem)
			return false;
		DEF(d->rm);
		frd = F_ALL;
		break;
	case X_CMOVCC:
		if (mem)
			return false;
		USE(d->rm);
		USE(d->reg);
		DEF(d->reg);
		frd = F_ALL;
		break;
	case X_NOP:
		/* 90 and 0F 1F only: the hint NOPs and fences would do something on the host */
		if (!(op0 == 0x90 || (op0 == 0x0f && op1 == 0x1f)))
			return false;
		break;
	case X_CLC: case X_STC:
		frd = F_ALL & ~F_CF;
		fwr = F_CF;
		break;
	case X_CMC:
		frd = F_ALL;
		fwr = F_CF;
		break;
	case X_LAHF:
		USE(VCPU_REGS_RAX);
		DEF(VCPU_REGS_RAX);
		frd = F_SZAPC;
		break;
	case X_SAHF:
		USE(VCPU_REGS_RAX);
		frd = F_OF;
		fwr = F_SZAPC;
		break;
	default:
		return false;
	}
	u->rd = rd | wr;	/* a partial write merges with the old value: load it too */
	u->wr = wr;
	u->frd = frd;
	u->fwr = fwr;
	u->fundef = fundef;
	return true;
}

#undef USE
#undef DEF

/* ---- code memory ---- */

struct pk_native *pk_native_create(void)
{
#if defined(__x86_64__)
	return calloc(1, sizeof(struct pk_native));
#else
	return NULL;		/* the guest's bytes only run on an x86-64 host */
#endif
}

static void free_regions(struct region *r)
{
	while (r) {
		struct region *next = r->next;

		munmap(r->code, REGION_SIZE);
		free(r);
		r = next;
	}
}

void pk_native_destroy(struct pk_native *n)
{
	if (!n)
		return;
	free_regions(n->regions);
	free(n);
}

void pk_native_reset(struct pk_native *n)
{
	if (!n || !n->regions)
		return;
	free_regions(n->regions->next);		/* keep one region for what comes next */
	n->regions->next = NULL;
	n->used = 0;
	n->cold = 0;
	n->total = 0;
}

size_t pk_native_bytes(const struct pk_native *n)
{
	return n ? n->total : 0;
}

/*
 * Trim the 2 * REGION_SIZE mapping at r->code to one region aligned to its size, so
 * that the host can back it with one large page. Asked for (MADV_HUGEPAGE, as QEMU's
 * TCG does for its code buffer) from a cache's second region on: code that outgrows a
 * region runs through more pages than the host's instruction TLB holds, and a cache
 * with little code keeps its small pages.
 */
static void region_align(struct region *r, bool large)
{
	uintptr_t a = (uintptr_t)r->code;
	uintptr_t al = (a + REGION_SIZE - 1) & ~(uintptr_t)(REGION_SIZE - 1);

	if (al > a)
		munmap((void *)a, al - a);
	munmap((void *)(al + REGION_SIZE), a + REGION_SIZE - al);
	r->code = (u8 *)al;
	if (large)
		madvise(r->code, REGION_SIZE, MADV_HUGEPAGE);	/* a hint: may be refused */
}

/* Room for size bytes of code, or NULL. */
static u8 *reserve(struct pk_native *n, size_t size)
{
	struct region *r;

	if (size > REGION_SIZE || n->broken)
		return NULL;
	if (n->regions && REGION_SIZE - n->used - n->cold >= size)
		return n->regions->code + n->used;
	r = malloc(sizeof(*r));
	if (!r)
		return NULL;
	r->code = mmap(NULL, 2 * REGION_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r->code == MAP_FAILED) {
		free(r);
		n->broken = true;
		return NULL;
	}
	region_align(r, n->regions != NULL);
	r->next = n->regions;
	n->regions = r;
	n->used = 0;
	n->cold = 0;
	return r->code;
}

/* ---- the few host instructions around a run (SDM vol. 2 chapter 2 encodings) ---- */

static u8 *push_reg(u8 *p, unsigned r)
{
	if (r & 8)
		*p++ = 0x41;			/* REX.B */
	*p++ = 0x50 + (r & 7);
	return p;
}

static u8 *pop_reg(u8 *p, unsigned r)
{
	if (r & 8)
		*p++ = 0x41;
	*p++ = 0x58 + (r & 7);
	return p;
}

/* MOV r64, [base + disp8] (8B /r) or MOV [base + disp8], r64 (89 /r). */
static u8 *mov_mem(u8 *p, u8 opcode, unsigned r, unsigned base, s8 disp)
{
	*p++ = 0x48 | ((r & 8) ? 4 : 0) | ((base & 8) ? 1 : 0);	/* REX.W R B */
	*p++ = opcode;
	*p++ = 0x40 | ((r & 7) << 3) | (base & 7);		/* mod 01: disp8 */
	if ((base & 7) == 4)
		*p++ = 0x24;					/* SIB: base only */
	*p++ = (u8)disp;
	return p;
}

/* POP qword [base] (8F /0). */
static u8 *pop_mem(u8 *p, unsigned base)
{
	if (base & 8)
		*p++ = 0x41;
	*p++ = 0x8f;
	if ((base & 7) == 5) {			/* [rbp]/[r13] only exist with a disp */
		*p++ = 0x45;
		*p++ = 0;
	} else if ((base & 7) == 4) {
		*p++ = 0x04;
		*p++ = 0x24;
	} else {
		*p++ = base & 7;
	}
	return p;
}

static const u8 callee_saved[] = { 3, 5, 12, 13, 14, 15 };	/* RBX RBP R12-R15 */

/* XCHG RCX, r (87 /r), when r is not RCX: LOOP counts in RCX only. */
static u8 *xchg_rcx(u8 *p, unsigned r)
{
	if (r == 1)
		return p;
	*p++ = 0x48 | ((r & 8) ? 1 : 0);
	*p++ = 0x87;
	*p++ = 0xc0 | (1 << 3) | (r & 7);
	return p;
}

static u8 *rel32(u8 *p, const u8 *target)
{
	s32 rel = (s32)(target - (p + 4));

	memcpy(p, &rel, 4);
	return p + 4;
}

/* The way into a run's function: callee-saved registers, then RDI (the register file)
 * and RSI (io) on the host stack. */
static u8 *frame_enter(u8 *p)
{
	*p++ = 0xf3; *p++ = 0x0f; *p++ = 0x1e; *p++ = 0xfa;	/* ENDBR64 (a NOP without CET) */
	for (unsigned i = 0; i < sizeof(callee_saved); i++)
		p = push_reg(p, callee_saved[i]);
	p = push_reg(p, 7);
	return push_reg(p, 6);
}

/* The way out: drop `frame` bytes of stack, the callee-saved registers back, return. */
static u8 *frame_leave(u8 *p, u8 frame)
{
	*p++ = 0x48; *p++ = 0x83; *p++ = 0xc4; *p++ = frame;	/* add rsp, frame */
	for (unsigned i = sizeof(callee_saved); i-- > 0;)
		p = pop_reg(p, callee_saved[i]);
	*p++ = 0xc3;						/* ret */
	return p;
}

/* The arithmetic flags from io->rflags (RSI). */
static u8 *flags_load(u8 *p)
{
	*p++ = 0xff; *p++ = 0x36;				/* push qword [rsi] */
	*p++ = 0x9d;						/* popfq */
	return p;
}

/* The guest registers in rd from the register file (RDI), RDI itself last. */
static u8 *regs_load(u8 *p, u16 rd)
{
	for (unsigned r = 0; r < 16; r++)
		if ((rd & BIT(r)) && r != 7)
			p = mov_mem(p, 0x8b, r, 7, (s8)(8 * r));
	if (rd & BIT(7))
		p = mov_mem(p, 0x8b, 7, 7, 8 * 7);
	return p;
}

/* The guest's own bytes of ins[0, count), as they are. */
static u8 *guest_bytes(u8 *p, const struct dins *ins, unsigned count, const u8 *code)
{
	for (unsigned i = 0; i < count; i++) {
		memcpy(p, code + ins[i].off, ins[i].len);
		p += ins[i].len;
	}
	return p;
}

/*
 * The way out: flags (and the loop count) to io, the registers written to the register
 * file, the host's registers back. On the host stack: [rsp] io, [rsp + 8] the file.
 */
static u8 *epilogue(u8 *p, unsigned tmp, u16 wr, bool flags_out, int loop_exit)
{
	if (loop_exit >= 0) {
		p = push_reg(p, tmp);		/* the count left */
		*p++ = 0x9c;			/* pushfq */
		p = mov_mem(p, 0x8b, tmp, 4, 16);	/* tmp := io */
		p = pop_mem(p, tmp);			/* io->rflags */
		if (tmp & 8)				/* pop qword [tmp + 8]: io->count */
			*p++ = 0x41;
		*p++ = 0x8f;
		*p++ = 0x40 | (tmp & 7);
		if ((tmp & 7) == 4)
			*p++ = 0x24;
		*p++ = 8;
		if (tmp & 8)				/* mov dword [tmp + 16], exit */
			*p++ = 0x41;
		*p++ = 0xc7;
		*p++ = 0x40 | (tmp & 7);
		if ((tmp & 7) == 4)
			*p++ = 0x24;
		*p++ = 16;
		memcpy(p, &(u32){ (u32)loop_exit }, 4);
		p += 4;
	} else if (flags_out) {
		*p++ = 0x9c;			/* pushfq */
		p = mov_mem(p, 0x8b, tmp, 4, 8);	/* tmp := io */
		p = pop_mem(p, tmp);			/* io->rflags */
	}
	p = mov_mem(p, 0x8b, tmp, 4, 8);	/* tmp := the register file */
	for (unsigned r = 0; r < 16; r++)
		if (wr & BIT(r))
			p = mov_mem(p, 0x89, r, tmp, (s8)(8 * r));
	return frame_leave(p, 16);
}

pk_native_fn pk_native_emit(struct pk_native *n, const struct dins *ins, unsigned count,
			    const u8 *code, u16 rd, u16 wr, bool flags_in, bool flags_out,
			    int loop_cc)
{
	size_t body = 0, size;
	unsigned tmp = 16;
	u8 *start, *p, *top, *fall, *budget, *jfall, *jbudget;

	if (!n)
		return NULL;
	for (unsigned i = 0; i < count; i++)
		body += ins[i].len;
	size = body + 2 * RUN_OVERHEAD;
	start = reserve(n, size);
	if (!start)
		return NULL;
	for (unsigned r = 0; r < 16; r++) {	/* a host register the run leaves alone */
		if (r != VCPU_REGS_RSP && !(rd & BIT(r))) {
			tmp = r;
			break;
		}
	}
	if (tmp == 16)
		return NULL;

	p = frame_enter(start);
	if (flags_in)
		p = flags_load(p);
	p = regs_load(p, rd);
	if (loop_cc >= 0) {			/* tmp may be RDI or RSI: io from the stack */
		p = mov_mem(p, 0x8b, tmp, 4, 0);	/* tmp := io */
		p = mov_mem(p, 0x8b, tmp, tmp, 8);	/* tmp := io->count */
	}
	top = p;
	p = guest_bytes(p, ins, count, code);
	if (loop_cc < 0) {
		p = epilogue(p, tmp, wr, flags_out, -1);
	} else {
		/*
		 * j<not cc> fall; one more iteration if the count allows, counted with LOOP
		 * (which leaves the flags alone: they are the guest's) in RCX, swapped in.
		 */
		*p++ = 0x0f;
		*p++ = 0x80 | ((loop_cc & 0xf) ^ 1);
		jfall = p;
		p += 4;
		p = xchg_rcx(p, tmp);
		*p++ = 0xe2;			/* loop +(xchg? 3 : 0) + 5: the count is left */
		*p++ = (u8)((tmp == 1 ? 0 : 3) + 5);
		p = xchg_rcx(p, tmp);
		*p++ = 0xe9;			/* jmp budget */
		jbudget = p;
		p += 4;
		p = xchg_rcx(p, tmp);
		*p++ = 0xe9;			/* jmp top */
		p = rel32(p, top);
		fall = p;
		p = epilogue(p, tmp, wr, true, 0);
		budget = p;
		p = epilogue(p, tmp, wr, true, 1);
		rel32(jfall, fall);
		rel32(jbudget, budget);
	}

	n->used += (size_t)(p - start);
	n->total += (size_t)(p - start);
	__builtin___clear_cache((char *)start, (char *)p);
	return (pk_native_fn)(void *)start;
}

/* ---- linked runs ---- */

_Static_assert(offsetof(struct pk_native_io, links) == NATIVE_IO_LINKS, "io layout");
_Static_assert(offsetof(struct pk_native_io, retired) == NATIVE_IO_RETIRED, "io layout");
_Static_assert(offsetof(struct pk_native_io, last) == NATIVE_IO_LAST, "io layout");

/*
 * While a chain of linked runs executes, the guest has all fifteen general registers
 * (RSP is the host's). The chain's own state is in registers the guest's register-only
 * code never touches, SSE registers the C ABI lets a call clobber:
 *	XMM13	instructions of the runs it went on into (PADDQ: no flags)
 *	XMM14	runs it may still go on into
 *	XMM15	the guest's RCX while RCX counts (JRCXZ tests it without flags)
 * and the host stack holds, below the callee-saved registers and the return address:
 */
#define LK_LAST		0		/* the cookie of the run it is leaving from */
#define LK_IO		8
#define LK_FILE		16
#define LK_FRAME	24

/* MOVQ xmm(8 + x), rcx (66 REX.W+R 0F 6E) or MOVQ rcx, xmm(8 + x) (0F 7E). */
static u8 *movq_rcx(u8 *p, u8 opcode, unsigned x)
{
	*p++ = 0x66; *p++ = 0x4c; *p++ = 0x0f; *p++ = opcode;
	*p++ = 0xc0 | ((x & 7) << 3) | 1;
	return p;
}

/* MOV r64, [rsp + disp8] (8B) or MOV [rsp + disp8], r64 (89). */
static u8 *mov_rsp(u8 *p, u8 opcode, unsigned r, s8 disp)
{
	return mov_mem(p, opcode, r, 4, disp);
}

/*
 * The code that runs on every pass (the way in from the run before, the guest's bytes,
 * the way on) goes at the start of the region, one run after the other, so a chain runs
 * through memory in order as the guest's own code would; the way in from the
 * interpreter, the way out and the slot go at the region's end.
 */
#define LK_COLD		512

pk_native_fn pk_native_emit_linked(struct pk_native *n, const struct dins *ins,
				   unsigned count, const u8 *code, void **entry, void ***slot)
{
	size_t body = 0;
	u8 *hot, *hot_end, *cold, *p, *jout, *jstub, *body_at, *stub, *fn;
	void **s;

	if (!n)
		return NULL;
	for (unsigned i = 0; i < count; i++)
		body += ins[i].len;
	hot = reserve(n, body + RUN_OVERHEAD + LK_COLD);
	if (!hot)
		return NULL;
	cold = n->regions->code + REGION_SIZE - n->cold - LK_COLD;

	/* hot: the way in from another linked run, counting this one's instructions */
	s = (void **)cold;					/* the slot: 6 words */
	p = hot;
	*entry = p;
	*p++ = 0x66; *p++ = 0x44; *p++ = 0x0f; *p++ = 0xd4;	/* paddq xmm13, [rip + s+32] */
	*p++ = 0x2d;						/* (16 bytes, aligned) */
	p = rel32(p, (const u8 *)(s + 4));
	body_at = p;
	p = guest_bytes(p, ins, count, code);
	/* on into the next run if the links allow and it is known (JRCXZ, LEA: no flags) */
	p = movq_rcx(p, 0x6e, 7);				/* xmm15 := rcx */
	p = movq_rcx(p, 0x7e, 6);				/* rcx := xmm14 */
	*p++ = 0xe3;						/* jrcxz out */
	jout = p++;
	*p++ = 0x48; *p++ = 0x8d; *p++ = 0x49; *p++ = 0xff;	/* lea rcx, [rcx - 1] */
	p = movq_rcx(p, 0x6e, 6);				/* xmm14 := rcx */
	p = movq_rcx(p, 0x7e, 7);				/* rcx := xmm15 */
	*p++ = 0xff; *p++ = 0x25;				/* jmp [rip + slot] */
	p = rel32(p, (const u8 *)s);
	*jout = (u8)(p - (jout + 1));
	p = movq_rcx(p, 0x7e, 7);				/* out: rcx := xmm15 */
	*p++ = 0xe9;						/* jmp stub */
	jstub = p;
	p += 4;
	hot_end = p;
	n->used += (size_t)(hot_end - hot);

	/* cold: the slot, the way in from the interpreter, the way out */
	p = cold + 8 * sizeof(void *);
	fn = p;
	p = frame_enter(p);
	*p++ = 0x48; *p++ = 0x83; *p++ = 0xec; *p++ = 8;	/* sub rsp, 8 */
	*p++ = 0xf3; *p++ = 0x44; *p++ = 0x0f; *p++ = 0x7e;	/* movq xmm14, [rsi + links] */
	*p++ = 0x76; *p++ = NATIVE_IO_LINKS;
	*p++ = 0x66; *p++ = 0x45; *p++ = 0x0f; *p++ = 0xef;	/* pxor xmm13, xmm13 */
	*p++ = 0xed;
	p = flags_load(p);
	p = regs_load(p, (u16)~BIT(VCPU_REGS_RSP));		/* all fifteen */
	*p++ = 0xe9;						/* jmp body */
	p = rel32(p, body_at);

	stub = p;						/* this run's cookie: slot[2] */
	rel32(jstub, stub);
	p = push_reg(p, 1);
	*p++ = 0x48; *p++ = 0x8b; *p++ = 0x0d;			/* mov rcx, [rip + slot + 16] */
	p = rel32(p, (const u8 *)(s + 2));
	p = mov_rsp(p, 0x89, 1, LK_LAST + 8);
	p = pop_reg(p, 1);
	*p++ = 0x9c;						/* pushfq */
	p = push_reg(p, 7);
	p = mov_rsp(p, 0x8b, 7, LK_FILE + 16);			/* rdi := the file */
	for (unsigned r = 0; r < 16; r++)
		if (r != VCPU_REGS_RSP && r != 7)
			p = mov_mem(p, 0x89, r, 7, (s8)(8 * r));
	p = pop_reg(p, 0);					/* the guest's RDI */
	p = mov_mem(p, 0x89, 0, 7, 8 * 7);
	p = mov_rsp(p, 0x8b, 0, LK_IO + 8);			/* rax := io */
	p = pop_mem(p, 0);					/* io->rflags */
	*p++ = 0x66; *p++ = 0x44; *p++ = 0x0f; *p++ = 0xd6;	/* movq [rax + retired], xmm13 */
	*p++ = 0x68; *p++ = NATIVE_IO_RETIRED;
	p = mov_rsp(p, 0x8b, 1, LK_LAST);
	p = mov_mem(p, 0x89, 1, 0, NATIVE_IO_LAST);
	p = frame_leave(p, LK_FRAME);
	if (p > cold + LK_COLD)
		abort();		/* never: LK_COLD bounds the fixed code above */
	n->cold += LK_COLD;

	s[0] = stub;		/* the way out until exec.c links the next run */
	s[1] = stub;
	s[2] = NULL;		/* the cookie: exec.c's block */
	s[3] = NULL;
	s[4] = (void *)(uintptr_t)count;	/* what the way in adds to XMM13's low half */
	s[5] = NULL;
	*slot = s;
	n->total += (size_t)(hot_end - hot) + LK_COLD;
	__builtin___clear_cache((char *)hot, (char *)hot_end);
	__builtin___clear_cache((char *)cold, (char *)cold + LK_COLD);
	return (pk_native_fn)(void *)fn;
}
