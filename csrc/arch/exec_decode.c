// SPDX-License-Identifier: MIT
/*
 * The guest interpreter's decoder: x86-64 machine code (64-bit mode only) into struct
 * dins, once per instruction, for the decode cache (exec.c). Opcode maps: Intel SDM vol. 2
 * appendix A. What the interpreter does not implement decodes to X_UD, so the executor
 * raises #UD; encodings longer than 15 bytes decode to X_GP0.
 */
#include "arch/exec_impl.h"

/* Without a REX prefix, 8-bit register numbers 4-7 are AH, CH, DH, BH. */
static u8 byte_reg(u8 r, u8 rex)
{
	return (!rex && r >= 4 && r < 8) ? (u8)(XR_HIGH8 + r - 4) : r;
}

static u64 get_le(const u8 *p, unsigned n)
{
	u64 v = 0;

	for (unsigned i = 0; i < n; i++)
		v |= (u64)p[i] << (8 * i);
	return v;
}

static u64 sext(u64 v, unsigned bytes)
{
	unsigned sh = 64 - 8 * bytes;

	return (u64)((s64)(v << sh) >> sh);
}

bool pk_exec_ends_block(const struct dins *d)
{
	switch (d->op) {
	case X_UD: case X_GP0: case X_JMP: case X_JCC: case X_JNZ: case X_CALL: case X_RET:
	case X_JMP_RM: case X_CALL_RM: case X_LOOP: case X_SYSCALL: case X_SYSRET:
	case X_INT: case X_IRET: case X_HLT:
	case X_POPF:		/* may set TF: single-stepping starts with the next block */
		return true;
	default:
		return false;
	}
}

static bool lockable(const struct dins *d)
{
	if (!(d->flags & DI_MEM))
		return false;
	switch (d->op) {
	case X_ALU_RM_R: case X_ALU_RM_I:
		return d->sub != ALU_CMP;
	case X_INC: case X_DEC: case X_NEG: case X_NOT: case X_XCHG:
		return true;
	default:
		return false;
	}
}

unsigned pk_exec_decode(const u8 *buf, unsigned avail, u64 rip, struct dins *d)
{
	unsigned p = 0, n;
	u8 b, rex = 0, rep = 0, seg = 0;
	bool o16 = false, a32 = false, lock = false, riprel = false;
	bool has_modrm = false;
	u8 mod = 0, regf = 0, rmf = 0;	/* raw ModRM fields (regf, rmf without REX) */
	unsigned osz, dsz;		/* operand size; default-64 operand size */

	memset(d, 0, sizeof(*d));
	d->base = d->index = XR_NONE;

/* Bytes [p, p + n) must be there: an instruction is at most 15 bytes (SDM 2.3.11). */
#define NEED(n_) do {							\
		if (p + (n_) > 15)					\
			goto toolong;					\
		if (p + (n_) > avail)					\
			return 0;					\
	} while (0)

	for (;;) {
		NEED(1);
		b = buf[p];
		if ((b & 0xf0) == 0x40) {	/* REX: only the last one, right before the opcode */
			rex = b;
			p++;
			continue;
		}
		switch (b) {
		case 0x66: o16 = true; break;
		case 0x67: a32 = true; break;
		/* ES/CS/SS/DS overrides are null prefixes in 64-bit mode; the last one wins */
		case 0x26: case 0x2e: case 0x36: case 0x3e: seg = 0; break;
		case 0x64: seg = VCPU_SREG_FS; break;
		case 0x65: seg = VCPU_SREG_GS; break;
		case 0xf0: lock = true; break;
		case 0xf2: case 0xf3: rep = b; break;
		default:
			goto opcode;
		}
		rex = 0;		/* a legacy prefix after REX cancels it */
		p++;
	}

opcode:
	p++;
	osz = (rex & 8) ? 8 : o16 ? 2 : 4;
	dsz = o16 ? 2 : 8;
	d->seg = seg;
	if (a32)
		d->flags |= DI_ASZ32;
	if (rex & 8)
		d->flags |= DI_REXW;

/* ModRM (+ SIB + displacement): sets d->reg/rm or the memory operand. */
#define MODRM() do {							\
		u8 m_;							\
		NEED(1);						\
		m_ = buf[p++];						\
		has_modrm = true;					\
		mod = m_ >> 6;						\
		regf = (m_ >> 3) & 7;					\
		rmf = m_ & 7;						\
		d->reg = regf | ((rex & 4) << 1);			\
		if (mod == 3) {						\
			d->rm = rmf | ((rex & 1) << 3);			\
			break;						\
		}							\
		d->flags |= DI_MEM;					\
		if (rmf == 4) {						\
			u8 sib_;					\
			NEED(1);					\
			sib_ = buf[p++];				\
			d->scale = sib_ >> 6;				\
			d->index = ((sib_ >> 3) & 7) | ((rex & 2) << 2); \
			if (d->index == 4)				\
				d->index = XR_NONE;			\
			if ((sib_ & 7) == 5 && mod == 0) {		\
				NEED(4);				\
				d->disp = sext(get_le(buf + p, 4), 4);	\
				p += 4;					\
			} else {					\
				d->base = (sib_ & 7) | ((rex & 1) << 3); \
			}						\
		} else if (rmf == 5 && mod == 0) {			\
			NEED(4);					\
			d->disp = sext(get_le(buf + p, 4), 4);		\
			p += 4;						\
			riprel = true;					\
		} else {						\
			d->base = rmf | ((rex & 1) << 3);		\
		}							\
		if (mod == 1) {						\
			NEED(1);					\
			d->disp = sext(buf[p], 1);			\
			p += 1;						\
		} else if (mod == 2) {					\
			NEED(4);					\
			d->disp = sext(get_le(buf + p, 4), 4);		\
			p += 4;						\
		}							\
		if (d->base == 4 || d->base == 5)			\
			d->flags |= DI_STACK;				\
	} while (0)

/* Immediate of n bytes, sign-extended to 64 bits. */
#define IMM(n_) do {							\
		NEED(n_);						\
		d->imm = sext(get_le(buf + p, (n_)), (n_));		\
		p += (n_);						\
	} while (0)
/* Iz: 16 bits with a 16-bit operand size, else 32 bits sign-extended. */
#define IMMZ(sz_) IMM((sz_) == 2 ? 2 : 4)
/* Relative branch of n bytes: imm := absolute target (fixed up at the end). */
#define REL(n_) IMM(n_)

	if (b != 0x0f) {
		switch (b) {
		case 0x00 ... 0x3f:
			if ((b & 7) >= 6)
				goto ud;	/* 06/07/0E/16/17/1E/1F/27/2F/37/3F (+ prefixes) */
			d->sub = b >> 3;
			switch (b & 7) {
			case 0: case 1:
				d->op = X_ALU_RM_R;
				d->sz = (b & 1) ? osz : 1;
				MODRM();
				break;
			case 2: case 3:
				d->op = X_ALU_R_RM;
				d->sz = (b & 1) ? osz : 1;
				MODRM();
				break;
			case 4:
				d->op = X_ALU_RM_I;
				d->sz = 1;
				d->rm = 0;
				IMM(1);
				break;
			case 5:
				d->op = X_ALU_RM_I;
				d->sz = osz;
				d->rm = 0;
				IMMZ(osz);
				break;
			}
			break;
		case 0x50 ... 0x57:
			d->op = X_PUSH_R;
			d->sz = dsz;
			d->reg = (b & 7) | ((rex & 1) << 3);
			break;
		case 0x58 ... 0x5f:
			d->op = X_POP_R;
			d->sz = dsz;
			d->reg = (b & 7) | ((rex & 1) << 3);
			break;
		case 0x63:		/* MOVSXD Gv, Ed; without REX.W a plain move */
			d->op = (rex & 8) ? X_MOVSX : X_MOV_R_RM;
			d->sz = osz;
			d->sub = 4;
			MODRM();
			break;
		case 0x68:
			d->op = X_PUSH_I;
			d->sz = dsz;
			IMMZ(dsz);
			break;
		case 0x6a:
			d->op = X_PUSH_I;
			d->sz = dsz;
			IMM(1);
			break;
		case 0x69:
			d->op = X_IMUL3;
			d->sz = osz;
			MODRM();
			IMMZ(osz);
			break;
		case 0x6b:
			d->op = X_IMUL3;
			d->sz = osz;
			MODRM();
			IMM(1);
			break;
		case 0x70 ... 0x7f:
			d->sub = b & 0xf;
			d->op = d->sub == 5 ? X_JNZ : X_JCC;
			REL(1);
			break;
		case 0x80: case 0x81: case 0x83:
			d->op = X_ALU_RM_I;
			d->sz = b == 0x80 ? 1 : osz;
			MODRM();
			d->sub = regf;
			if (b == 0x81)
				IMMZ(osz);
			else
				IMM(1);
			break;
		case 0x84: case 0x85:
			d->op = X_TEST_RM_R;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			break;
		case 0x86: case 0x87:
			d->op = X_XCHG;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			break;
		case 0x88: case 0x89:
			d->op = X_MOV_RM_R;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			break;
		case 0x8a: case 0x8b:
			d->op = X_MOV_R_RM;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			break;
		case 0x8d:
			d->op = X_LEA;
			d->sz = osz;
			MODRM();
			if (!(d->flags & DI_MEM))
				goto ud;
			break;
		case 0x8f:
			d->op = X_POP_RM;
			d->sz = dsz;
			MODRM();
			if (regf != 0)
				goto ud;
			break;
		case 0x90:
			if (rex & 1) {		/* XCHG r8, rAX */
				d->op = X_XCHG;
				d->sz = osz;
				d->reg = 0;
				d->rm = 8;
			} else {
				d->op = X_NOP;	/* NOP, and PAUSE with F3 */
			}
			break;
		case 0x91 ... 0x97:
			d->op = X_XCHG;
			d->sz = osz;
			d->reg = 0;
			d->rm = (b & 7) | ((rex & 1) << 3);
			break;
		case 0x98:
			d->op = X_CBW;
			d->sz = osz;
			break;
		case 0x99:
			d->op = X_CWD;
			d->sz = osz;
			break;
		case 0x9c:
			d->op = X_PUSHF;
			d->sz = dsz;
			break;
		case 0x9d:
			d->op = X_POPF;
			d->sz = dsz;
			break;
		case 0x9e:
			d->op = X_SAHF;
			break;
		case 0x9f:
			d->op = X_LAHF;
			break;
		case 0xa0 ... 0xa3:	/* MOV with a 64-bit (32 with 67) absolute offset */
			d->op = (b & 2) ? X_MOV_RM_R : X_MOV_R_RM;
			d->sz = (b & 1) ? osz : 1;
			d->reg = 0;
			d->flags |= DI_MEM;
			n = a32 ? 4 : 8;
			NEED(n);
			d->disp = get_le(buf + p, n);
			p += n;
			break;
		case 0xa4: case 0xa5:	/* MOVS */
		case 0xa6: case 0xa7:	/* CMPS */
		case 0xaa: case 0xab:	/* STOS */
		case 0xac: case 0xad:	/* LODS */
		case 0xae: case 0xaf:	/* SCAS */
			d->op = b < 0xa6 ? X_MOVS : b < 0xa8 ? X_CMPS : b < 0xac ? X_STOS :
				b < 0xae ? X_LODS : X_SCAS;
			d->sz = (b & 1) ? osz : 1;
			d->sub = rep == 0xf3 ? 1 : rep == 0xf2 ? 2 : 0;
			/* REPNE on MOVS/STOS/LODS repeats as REP does */
			if (d->sub == 2 && d->op != X_CMPS && d->op != X_SCAS)
				d->sub = 1;
			break;
		case 0xa8:
			d->op = X_TEST_RM_I;
			d->sz = 1;
			d->rm = 0;
			IMM(1);
			break;
		case 0xa9:
			d->op = X_TEST_RM_I;
			d->sz = osz;
			d->rm = 0;
			IMMZ(osz);
			break;
		case 0xb0 ... 0xb7:
			d->op = X_MOV_R_I;
			d->sz = 1;
			d->reg = byte_reg((b & 7) | ((rex & 1) << 3), rex);
			IMM(1);
			break;
		case 0xb8 ... 0xbf:
			d->op = X_MOV_R_I;
			d->sz = osz;
			d->reg = (b & 7) | ((rex & 1) << 3);
			n = osz;
			NEED(n);
			d->imm = get_le(buf + p, n);
			p += n;
			break;
		case 0xc0: case 0xc1:
			d->op = X_SHIFT;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			d->sub = regf;
			IMM(1);
			break;
		case 0xd0: case 0xd1:
			d->op = X_SHIFT;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			d->sub = regf;
			d->imm = 1;
			break;
		case 0xd2: case 0xd3:
			d->op = X_SHIFT;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			d->sub = regf;
			d->flags |= DI_CL;
			break;
		case 0xc2:
			d->op = X_RET;
			NEED(2);
			d->imm = get_le(buf + p, 2);
			p += 2;
			break;
		case 0xc3:
			d->op = X_RET;
			break;
		case 0xc6: case 0xc7:
			d->op = X_MOV_RM_I;
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			if (regf != 0)
				goto ud;	/* XABORT, XBEGIN */
			if (b == 0xc6)
				IMM(1);
			else
				IMMZ(osz);
			break;
		case 0xc9:
			d->op = X_LEAVE;
			d->sz = dsz;
			break;
		case 0xcc:
			d->op = X_INT;
			d->imm = X86_TRAP_BP;
			break;
		case 0xcd:
			d->op = X_INT;
			NEED(1);
			d->imm = buf[p++];
			break;
		case 0xf1:
			d->op = X_INT;
			d->sub = 1;
			d->imm = X86_TRAP_DB;
			break;
		case 0xcf:
			d->op = X_IRET;
			d->sz = osz;
			break;
		case 0xe0 ... 0xe3:
			d->op = X_LOOP;
			d->sub = b - 0xe0;
			REL(1);
			break;
		case 0xe4: case 0xe5: case 0xec: case 0xed:
		case 0xe6: case 0xe7: case 0xee: case 0xef:
			d->op = (b & 2) ? X_OUT : X_IN;
			d->sz = (b & 1) ? (o16 ? 2 : 4) : 1;
			if (b & 8) {
				d->flags |= DI_DX;
			} else {
				NEED(1);
				d->imm = buf[p++];
			}
			break;
		case 0xe8:
			d->op = X_CALL;
			REL(4);
			break;
		case 0xe9:
			d->op = X_JMP;
			REL(4);
			break;
		case 0xeb:
			d->op = X_JMP;
			REL(1);
			break;
		case 0xf4:
			d->op = X_HLT;
			break;
		case 0xf5:
			d->op = X_CMC;
			break;
		case 0xf6: case 0xf7:
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			switch (regf) {
			case 0: case 1:
				d->op = X_TEST_RM_I;
				if (b == 0xf6)
					IMM(1);
				else
					IMMZ(osz);
				break;
			case 2: d->op = X_NOT; break;
			case 3: d->op = X_NEG; break;
			default:
				d->op = X_MULDIV;
				d->sub = regf;
				break;
			}
			break;
		case 0xf8: d->op = X_CLC; break;
		case 0xf9: d->op = X_STC; break;
		case 0xfa: d->op = X_CLI; break;
		case 0xfb: d->op = X_STI; break;
		case 0xfc: d->op = X_CLD; break;
		case 0xfd: d->op = X_STD; break;
		case 0xfe: case 0xff:
			d->sz = (b & 1) ? osz : 1;
			MODRM();
			switch (regf) {
			case 0:
				d->op = X_INC;
				break;
			case 1:
				d->op = X_DEC;
				if (d->sz == 8 && !(d->flags & DI_MEM))
					d->op = X_DEC_R64;
				break;
			case 2:
				if (b == 0xfe)
					goto ud;
				d->op = X_CALL_RM;
				d->sz = 8;
				break;
			case 4:
				if (b == 0xfe)
					goto ud;
				d->op = X_JMP_RM;
				d->sz = 8;
				break;
			case 6:
				if (b == 0xfe)
					goto ud;
				d->op = X_PUSH_RM;
				d->sz = dsz;
				break;
			default:
				goto ud;	/* far CALL/JMP are not modelled */
			}
			break;
		default:
			goto ud;
		}
	} else {
		NEED(1);
		b = buf[p++];
		switch (b) {
		case 0x01:
			MODRM();
			if (mod != 3) {
				if (regf > 3)
					goto ud;
				d->op = X_DESC;
				d->sub = regf;
				break;
			}
			switch ((regf << 3) | rmf) {
			case 0x01: d->op = X_VMCALL; break;	/* 0F 01 C1 */
			case 0x19: d->op = X_VMMCALL; break;	/* 0F 01 D9 */
			case 0x38: d->op = X_SWAPGS; break;	/* 0F 01 F8 */
			case 0x39: d->op = X_RDTSCP; break;	/* 0F 01 F9 */
			default: goto ud;
			}
			break;
		case 0x05:
			d->op = X_SYSCALL;
			break;
		case 0x07:
			d->op = X_SYSRET;
			break;
		case 0x0d:		/* PREFETCH/PREFETCHW */
			MODRM();
			if (mod == 3)
				goto ud;
			d->op = X_NOP;
			break;
		case 0x18 ... 0x1f:	/* hint NOPs, incl. the multi-byte NOP 0F 1F /0 */
			MODRM();
			d->op = X_NOP;
			break;
		case 0x30:
			d->op = X_WRMSR;
			break;
		case 0x31:
			d->op = X_RDTSC;
			break;
		case 0x32:
			d->op = X_RDMSR;
			break;
		case 0x40 ... 0x4f:
			d->op = X_CMOVCC;
			d->sub = b & 0xf;
			d->sz = osz;
			MODRM();
			break;
		case 0x80 ... 0x8f:
			d->sub = b & 0xf;
			d->op = d->sub == 5 ? X_JNZ : X_JCC;
			REL(4);
			break;
		case 0x90 ... 0x9f:
			d->op = X_SETCC;
			d->sub = b & 0xf;
			d->sz = 1;
			MODRM();
			break;
		case 0xa2:
			d->op = X_CPUID;
			break;
		case 0xae:
			MODRM();
			if (mod != 3)
				goto ud;
			if (rep == 0xf3 && regf <= 3) {
				d->op = X_RDWRBASE;
				d->sub = regf;
				d->sz = (rex & 8) ? 8 : 4;
			} else if (!rep && !o16 && regf >= 5) {
				d->op = X_NOP;	/* LFENCE, MFENCE, SFENCE */
			} else {
				goto ud;
			}
			break;
		case 0xaf:
			d->op = X_IMUL2;
			d->sz = osz;
			MODRM();
			break;
		case 0xb6: case 0xb7: case 0xbe: case 0xbf:
			d->op = (b & 8) ? X_MOVSX : X_MOVZX;
			d->sub = (b & 1) ? 2 : 1;
			d->sz = osz;
			MODRM();
			break;
		case 0xc7:
			MODRM();
			if (mod == 3 && regf == 7 && rep == 0xf3) {
				d->op = X_RDPID;
				break;
			}
			goto ud;
		default:
			goto ud;
		}
	}

	d->len = (u8)p;
	if (has_modrm) {	/* 8-bit register operands: AH..BH without REX */
		bool src8 = (d->op == X_MOVZX || d->op == X_MOVSX) && d->sub == 1;

		if (!(d->flags & DI_MEM) && (d->sz == 1 || src8))
			d->rm = byte_reg(d->rm, rex);
		if (d->sz == 1)
			d->reg = byte_reg(d->reg, rex);
	}
	if (riprel)
		d->disp += rip + p;	/* RIP-relative: absolute from the next instruction */
	switch (d->op) {
	case X_JCC: case X_JNZ: case X_CALL: case X_LOOP:
		d->disp = rip + p;	/* where execution goes on when not branching */
		/* fall through */
	case X_JMP:
		d->imm += rip + p;
		break;
	}
	if (lock && !lockable(d))
		goto ud;
	return p;

ud:
	memset(d, 0, sizeof(*d));
	d->op = X_UD;
	d->len = (u8)(p ? p : 1);
	return d->len;
toolong:
	memset(d, 0, sizeof(*d));
	d->op = X_GP0;
	d->len = 15;
	return 15;
#undef NEED
#undef MODRM
#undef IMM
#undef IMMZ
#undef REL
}

/* ---- Specialized forms ---- */

static bool plain_mem(const struct dins *d)
{
	/* 64-bit addressing, no segment override, not RIP-relative (base or index present) */
	return !(d->flags & DI_ASZ32) && !d->seg && d->base != XR_NONE;
}

void pk_exec_specialize(struct dins *d)
{
	bool mem = d->flags & DI_MEM;
	/* ADD OR ADC SBB AND SUB XOR CMP: the specialized forms of each, by form */
	static const u8 rr64[8] = { X_ADD_RR64, X_OR_RR64, 0, 0, X_AND_RR64, X_SUB_RR64,
				    X_XOR_RR64, X_CMP_RR64 };
	static const u8 ri64[8] = { X_ADD_RI64, X_OR_RI64, 0, 0, X_AND_RI64, X_SUB_RI64,
				    X_XOR_RI64, X_CMP_RI64 };
	static const u8 rr32[8] = { X_ADD_RR32, X_OR_RR32, 0, 0, X_AND_RR32, X_SUB_RR32,
				    X_XOR_RR32, X_CMP_RR32 };
	static const u8 ri32[8] = { X_ADD_RI32, X_OR_RI32, 0, 0, X_AND_RI32, X_SUB_RI32,
				    X_XOR_RI32, X_CMP_RI32 };

	switch (d->op) {
	case X_ALU_RM_R:	/* rm op= reg */
		if (mem || (d->sz != 8 && d->sz != 4) || !rr64[d->sub & 7])
			return;
		d->op = d->sz == 8 ? rr64[d->sub & 7] : rr32[d->sub & 7];
		return;
	case X_ALU_R_RM:	/* reg op= rm: as rm op= reg with the two swapped */
		if (mem || (d->sz != 8 && d->sz != 4) || !rr64[d->sub & 7])
			return;
		d->op = d->sz == 8 ? rr64[d->sub & 7] : rr32[d->sub & 7];
		{
			u8 t = d->rm;

			d->rm = d->reg;
			d->reg = t;
		}
		return;
	case X_ALU_RM_I:
		if (mem || (d->sz != 8 && d->sz != 4) || !ri64[d->sub & 7])
			return;
		d->op = d->sz == 8 ? ri64[d->sub & 7] : ri32[d->sub & 7];
		d->imm &= d->sz == 8 ? ~0ull : 0xffffffffull;
		return;
	case X_TEST_RM_R:
		if (!mem && d->sz == 8)
			d->op = X_TEST_RR64;
		return;
	case X_MOV_RM_R:
		if (!mem && d->sz == 8)
			d->op = X_MOV_RR64;
		else if (!mem && d->sz == 4)
			d->op = X_MOV_RR32;
		else if (mem && plain_mem(d) && d->sz == 8)
			d->op = d->index == XR_NONE ? X_ST64_B : X_ST64_BI;
		else if (mem && plain_mem(d) && d->sz == 4 && d->index == XR_NONE)
			d->op = X_ST32_B;
		return;
	case X_MOV_R_RM:
		if (!mem && d->sz == 8) {
			d->op = X_MOV_RR64;	/* reg := rm, as rm := reg swapped */
			u8 t = d->rm;

			d->rm = d->reg;
			d->reg = t;
		} else if (!mem && d->sz == 4) {
			d->op = X_MOV_RR32;
			u8 t = d->rm;

			d->rm = d->reg;
			d->reg = t;
		} else if (mem && plain_mem(d) && d->sz == 8) {
			d->op = d->index == XR_NONE ? X_LD64_B : X_LD64_BI;
		} else if (mem && plain_mem(d) && d->sz == 4 && d->index == XR_NONE) {
			d->op = X_LD32_B;
		}
		return;
	case X_MOV_R_I:
		if (d->sz == 8 || d->sz == 4) {
			d->op = X_MOV_RI;
			d->imm &= d->sz == 8 ? ~0ull : 0xffffffffull;
		}
		return;
	case X_LEA:
		if (d->sz == 8 && !(d->flags & DI_ASZ32) && d->base != XR_NONE)
			d->op = d->index == XR_NONE ? X_LEA64_B : X_LEA64_BI;
		return;
	case X_PUSH_R:
		if (d->sz == 8)
			d->op = X_PUSH64;
		return;
	case X_POP_R:
		if (d->sz == 8)
			d->op = X_POP64;
		return;
	case X_INC:
		if (!mem && d->sz == 8)
			d->op = X_INC_R64;
		else if (!mem && d->sz == 4)
			d->op = X_INC_R32;
		return;
	case X_DEC:
		if (!mem && d->sz == 4)
			d->op = X_DEC_R32;
		return;
	case X_JCC:
		if (d->sub == 4 && !is_noncanonical_address(d->imm))
			d->op = X_JZ;
		return;
	case X_JNZ:
		if (is_noncanonical_address(d->imm))
			d->op = X_JCC;	/* the general form checks the target */
		return;
	case X_RET:
		if (!d->imm)
			d->op = X_RET0;
		return;
	}
}
