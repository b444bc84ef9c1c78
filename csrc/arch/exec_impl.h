/* SPDX-License-Identifier: MIT */
/*
 * Private to the guest interpreter (exec.c, exec_decode.c, exec_deliver.c): the
 * pre-decoded instruction format, the decode cache and the delivery of events.
 *
 * The decode cache keeps straight-line blocks of pre-decoded instructions keyed by their
 * guest-physical address, each with a copy of the bytes it was decoded from. A block is
 * checked against guest memory every time it is entered (a compare of its bytes), and a
 * guest write into the block being run ends it after the writing instruction, so guest or
 * host changes to code bytes are always seen. See exec.c.
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
	X(VMMCALL)

#define __XOP_ENUM(name) X_##name,
enum xop { XOPS(__XOP_ENUM) X_NR_OPS };
#undef __XOP_ENUM

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
	u16 pad2;
	u64 disp;		/* displacement; absolute address when RIP-relative */
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
