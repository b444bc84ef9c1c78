/* SPDX-License-Identifier: MIT */
/*
 * Private to the guest interpreter (exec.c, exec_decode.c, exec_deliver.c,
 * exec_native.c): the pre-decoded instruction format, the decode cache's native runs and
 * the delivery of events.
 *
 * The decode cache keeps straight-line blocks of pre-decoded instructions keyed by their
 * guest-physical address, each with a copy of the bytes it was decoded from, checked
 * against guest memory the first time the block is entered in each epoch (a new epoch
 * starts with every run, after a guest store into a line of memory that holds cached
 * code, and at serializing instructions). See exec.c.
 */
#ifndef _PYKVM_ARCH_EXEC_IMPL_H
#define _PYKVM_ARCH_EXEC_IMPL_H

#include "pykvm/cpu.h"

/* Operations of pre-decoded instructions (struct dins.op). */
#define XOPS(X)								\
	X(UD)		/* invalid or unsupported encoding: #UD */	\
	X(GP0)		/* longer than 15 bytes: #GP(0) */		\
	X(ALU_RM_R)	/* sub: ALU_*; r/m op= reg */			\
	X(ALU_R_RM)	/* reg op= r/m */				\
	X(ALU_RM_I)	/* r/m op= imm (incl. AL/rAX forms) */		\
	X(TEST_RM_R)							\
	X(TEST_RM_I)							\
	X(INC)								\
	X(DEC)								\
	X(DEC_R64)	/* DEC of a 64-bit register (loop counters) */	\
	X(NEG)								\
	X(NOT)								\
	X(MOV_RM_R)							\
	X(MOV_R_RM)							\
	X(MOV_RM_I)							\
	X(MOV_R_I)							\
	X(MOVZX)	/* sub: source size */				\
	X(MOVSX)	/* sub: source size */				\
	X(LEA)								\
	X(PUSH_R)							\
	X(POP_R)							\
	X(PUSH_I)							\
	X(PUSH_RM)							\
	X(POP_RM)							\
	X(XCHG)								\
	X(SHIFT)	/* sub: SH_*; count: CL if DI_CL, else imm */	\
	X(IMUL2)							\
	X(IMUL3)							\
	X(MULDIV)	/* sub: 4 MUL, 5 IMUL, 6 DIV, 7 IDIV */		\
	X(CBW)								\
	X(CWD)								\
	X(JMP)								\
	X(JCC)		/* sub: condition code */			\
	X(JNZ)								\
	X(CALL)								\
	X(RET)		/* imm: bytes to release */			\
	X(JMP_RM)							\
	X(CALL_RM)							\
	X(LOOP)		/* sub: 0 LOOPNE, 1 LOOPE, 2 LOOP, 3 JRCXZ */	\
	X(SETCC)							\
	X(CMOVCC)							\
	X(NOP)								\
	X(CLI)								\
	X(STI)								\
	X(CLC)								\
	X(STC)								\
	X(CMC)								\
	X(CLD)								\
	X(STD)								\
	X(PUSHF)							\
	X(POPF)								\
	X(SAHF)								\
	X(LAHF)								\
	X(LEAVE)							\
	X(IN)		/* DI_DX: port in DX, else imm */		\
	X(OUT)								\
	X(HLT)								\
	X(CPUID)							\
	X(RDMSR)							\
	X(WRMSR)							\
	X(RDTSC)							\
	X(RDTSCP)							\
	X(RDPID)							\
	X(SWAPGS)							\
	X(RDWRBASE)	/* sub: 0 RDFSBASE 1 RDGSBASE 2 WRFSBASE 3 WRGSBASE */ \
	X(SYSCALL)							\
	X(SYSRET)							\
	X(DESC)		/* sub: 0 SGDT 1 SIDT 2 LGDT 3 LIDT */		\
	X(INT)		/* imm: vector; sub: 0 INT n/INT3, 1 INT1 */	\
	X(IRET)								\
	X(VMCALL)							\
	X(VMMCALL)							\
	X(MOVS)		/* string: sub 0 once, 1 REP(E) (F3), 2 REPNE (F2) */	\
	X(STOS)								\
	X(LODS)								\
	X(CMPS)								\
	X(SCAS)								\
	/* pseudo-operations of a block (exec.c) */			\
	X(END)		/* falls off the block's end: off = its length */	\
	X(NATIVE)	/* a run of sub instructions on the host (imm: code) */	\
	/* specialized forms (pk_exec_specialize): same semantics, fewer tests */ \
	XALU(RR64) XALU(RI64) XALU(RR32) XALU(RI32)			\
	X(TEST_RR64)							\
	X(MOV_RR64)							\
	X(MOV_RR32)							\
	X(MOV_RI)	/* imm already zero-extended to the operand size */	\
	X(LD64_B)	/* mov r64, [base + disp] */			\
	X(LD64_BI)	/* mov r64, [base + index * scale + disp] */	\
	X(LD32_B)							\
	X(ST64_B)	/* mov [base + disp], r64 */			\
	X(ST64_BI)							\
	X(ST32_B)							\
	X(LEA64_B)							\
	X(LEA64_BI)							\
	X(PUSH64)							\
	X(POP64)							\
	X(INC_R64)							\
	X(INC_R32)							\
	X(DEC_R32)							\
	X(JZ)								\
	X(RET0)

/* The ALU operations that have specialized register forms (ADC/SBB stay generic). */
#define XALU(form) X(ADD_##form) X(OR_##form) X(AND_##form) X(SUB_##form) \
		   X(XOR_##form) X(CMP_##form)

#define X(name) X_##name,
enum xop { XOPS(X) X_NR_OPS };
#undef X

/* ALU operations: the ModRM.reg / opcode bits 5:3 encoding of 00-3F and 80-83. */
enum { ALU_ADD, ALU_OR, ALU_ADC, ALU_SBB, ALU_AND, ALU_SUB, ALU_XOR, ALU_CMP };
/* Shift group (C0/C1/D0-D3): ModRM.reg. */
enum { SH_ROL, SH_ROR, SH_RCL, SH_RCR, SH_SHL, SH_SHR, SH_SAL, SH_SAR };

#define XR_NONE		0xff	/* no register (struct dins base/index) */
#define XR_HIGH8	16	/* 16..19: AH, CH, DH, BH (8-bit operands without REX) */

/* struct dins.flags */
#define DI_MEM		BIT(0)	/* the r/m operand is memory */
#define DI_ASZ32	BIT(1)	/* 67 prefix: 32-bit effective address */
#define DI_STACK	BIT(2)	/* base is RSP or RBP: non-canonical is #SS, not #GP */
#define DI_CL		BIT(3)	/* shift count in CL */
#define DI_DX		BIT(4)	/* IN/OUT port in DX */
#define DI_REXW		BIT(5)	/* REX.W (SYSRET, RD/WR*BASE) */
#define DI_NATIVE_IN	BIT(6)	/* NATIVE: the run reads flags it has not written */
#define DI_NATIVE_OUT	BIT(7)	/* NATIVE: the run writes flags */
#define DI_NATIVE_LOOP	BIT(0)	/* NATIVE: a loop, the Jcc after the run included */
#define DI_NATIVE_LINK	BIT(1)	/* NATIVE: a linked run, the whole block (exec_native.c) */

/* One pre-decoded instruction: what the executor needs, nothing it must re-derive. */
struct dins {
	u8 op;			/* enum xop */
	u8 len;			/* bytes */
	u8 sz;			/* operand size in bytes: 1, 2, 4, 8 */
	u8 sub;			/* op-specific: ALU op, condition, shift kind, size ... */
	u8 reg;			/* ModRM.reg operand (or opcode register) */
	u8 rm;			/* ModRM.rm register when !DI_MEM */
	u8 base, index;		/* memory operand: registers or XR_NONE */
	u8 scale;		/* shift count 0..3 */
	u8 seg;			/* 0, or VCPU_SREG_FS / VCPU_SREG_GS */
	u8 flags;		/* DI_* */
	u8 pad;
	u16 off;		/* offset of the instruction in its block */
	u16 idx;		/* instructions before it in its block (NATIVE: of its first) */
	u64 disp;		/* displacement; absolute address when RIP-relative; the
				 * next instruction's address for Jcc, LOOP and CALL */
	u64 imm;		/* immediate; absolute target for relative branches */
};

/*
 * Decode one instruction at rip from buf[0, avail). Returns its length, or 0 when it
 * needs bytes beyond avail (avail < 15). Invalid or unsupported encodings decode to X_UD,
 * encodings longer than 15 bytes to X_GP0, both with a non-zero length.
 */
unsigned pk_exec_decode(const u8 *buf, unsigned avail, u64 rip, struct dins *d);
/* The instruction ends its block (control transfer, or never falls through). */
bool pk_exec_ends_block(const struct dins *d);
/* Turn a decoded instruction into its specialized form, if it has one. */
void pk_exec_specialize(struct dins *d);

/* ---- Write tracking (exec_track.c) ---- */
/*
 * Which pages of a range of the VMM's memory anyone wrote, where the host kernel can
 * say (Linux userfaultfd in asynchronous write-protect mode and PAGEMAP_SCAN).
 */
struct pk_wtrack;
/* The tracker of [hva, hva + size), shared by whoever asks; NULL where none can be. */
struct pk_wtrack *pk_wtrack_get(u8 *hva, u64 size);
void pk_wtrack_put(struct pk_wtrack *t);
/*
 * true if no page p in [lo, hi) with code[p] set was written since this caller's last
 * call (*seen: where it was in the range's log). false when unsure: the caller compares.
 */
bool pk_wtrack_unchanged(struct pk_wtrack *t, u64 lo, u64 hi, const u8 *code, u64 *seen);

/* ---- Native runs (exec_native.c) ---- */
/*
 * Instructions that only compute on registers and flags and cannot fault (ALU, MOV, LEA,
 * shifts, multiplies ...) run on the host itself: a run of them in a block becomes one
 * function that loads the guest registers it uses into the same host registers, executes
 * the guest's own bytes, and stores back what it wrote (the host and the guest are both
 * x86-64). A run never ends with an instruction whose flags the SDM leaves undefined
 * (they would be the host's), so a native run and the interpreter agree bit for bit.
 */
struct pk_native;
/* What a native run reads and leaves: offsets fixed (the host code addresses them). */
struct pk_native_io {
	u64 rflags;	/* the arithmetic flags in (when the run reads them) and out */
	u64 count;	/* loops: iterations allowed in (>= 1), left out */
	u32 exit;	/* loops: 0 the branch fell through, 1 the count ran out */
	u32 pad;
	/* linked runs */
	u64 links;	/* in: how many more runs it may go on into */
	u64 retired;	/* out: instructions of the runs it went on into */
	void *last;	/* out: the block of the run it left from (its cookie) */
};
#define NATIVE_IO_LINKS		24
#define NATIVE_IO_RETIRED	32
#define NATIVE_IO_LAST		40
typedef void (*pk_native_fn)(u64 *regs, struct pk_native_io *io);

/* What one instruction needs to run natively: registers and flags it reads and writes. */
struct native_use {
	u16 rd, wr;		/* guest GPRs, bit n = register n */
	u8 frd, fwr, fundef;	/* arithmetic flags (CF PF AF ZF SF OF) read, written, left
				 * undefined */
};
/* Can d (its bytes at code) run natively; fills *u. */
bool pk_native_ok(const struct dins *d, const u8 *code, struct native_use *u);
struct pk_native *pk_native_create(void);
void pk_native_destroy(struct pk_native *n);
void pk_native_reset(struct pk_native *n);	/* forget every function */
size_t pk_native_bytes(const struct pk_native *n);
/*
 * Translate ins[0, count) (their bytes at code + ins[i].off). flags_in: the run needs the
 * arithmetic flags on entry; flags_out: it changes them. loop_cc >= 0: the run is the
 * body of a loop closed by a Jcc with that condition back to its first instruction; the
 * function runs iterations until the condition fails or io->count runs out (the Jcc
 * retires with each). NULL without room or memory.
 */
pk_native_fn pk_native_emit(struct pk_native *n, const struct dins *ins, unsigned count,
			    const u8 *code, u16 rd, u16 wr, bool flags_in, bool flags_out,
			    int loop_cc);
/*
 * A linked run: a whole block of register-only instructions that falls through to the
 * next block. Its function loads every guest register (RSP aside) and the flags, runs
 * the block, and then, while io->links allows, jumps straight into the next block's
 * linked run through *slot (set by exec.c once that block is known and checked; it
 * holds the way out until then), keeping registers and flags in the host's. It leaves
 * with everything stored, io->last = the cookie of the run it leaves from (slot[2], set
 * by the caller), io->retired = the instructions of the runs it went on into. *entry:
 * where another linked run comes in (counting its own instructions); slot[1] keeps the
 * way out, to reset slot[0] to.
 */
pk_native_fn pk_native_emit_linked(struct pk_native *n, const struct dins *ins,
				   unsigned count, const u8 *code, void **entry, void ***slot);
/* Native runs on or off (default on where the host allows executable memory): tests. */
void pk_native_set_enabled(bool on);
bool pk_native_enabled(void);

struct pk_icache_stats;
void pk_icache_stats(struct pk_cpu *cpu, struct pk_icache_stats *st);

/* ---- Event delivery (exec_deliver.c) ---- */
enum pk_deliver_src {
	PK_DELIVER_HW,		/* exception or injected event: EXT = 1, no DPL check */
	PK_DELIVER_SOFT,	/* INT n, INT3: EXT = 0, gate DPL >= CPL */
	PK_DELIVER_ICEBP,	/* INT1: EXT = 1, no DPL check */
};
/*
 * Deliver vector through the guest IDT with cpu's state (RIP = the RIP to push; RFLAGS
 * fully materialized). Faults during delivery escalate as in SDM vol. 3A table 6-5
 * (benign then the new fault; contributory twice -> #DF; a fault delivering #DF -> triple
 * fault). false on triple fault, with cpu->ev set.
 */
bool pk_exec_deliver(struct pk_cpu *cpu, u8 vector, bool has_err, u32 err,
		     enum pk_deliver_src src);

/* Hidden parts of the flat 64-bit segments loaded by SYSCALL/SYSRET/IRET/delivery. */
#define PK_AR_UNUSABLE		BIT(16)
static inline void pk_seg_flat_code(struct pk_segment *s, u16 sel, unsigned dpl)
{
	s->selector = sel;
	s->base = 0;
	s->limit = 0xffffffff;
	s->ar = 0xa09b | (dpl << 5);	/* code exec/read accessed, S, P, L, G */
}
static inline void pk_seg_flat_data(struct pk_segment *s, u16 sel, unsigned dpl)
{
	s->selector = sel;
	s->base = 0;
	s->limit = 0xffffffff;
	s->ar = 0xc093 | (dpl << 5);	/* data r/w accessed, S, P, B, G */
}
static inline void pk_seg_null_ss(struct pk_segment *s, u16 sel)
{
	s->selector = sel;
	s->base = 0;
	s->limit = 0;
	s->ar = PK_AR_UNUSABLE | ((sel & 3u) << 5);	/* SS.DPL = CPL */
}

static inline unsigned pk_cpl(const struct pk_cpu *cpu)
{
	return cpu->seg[VCPU_SREG_CS].selector & 3;
}

#endif
