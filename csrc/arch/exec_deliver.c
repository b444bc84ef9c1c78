// SPDX-License-Identifier: MIT
/*
 * Delivery of exceptions and software interrupts through the guest IDT, in 64-bit mode
 * (Intel SDM vol. 3A 6.14, "Exception and interrupt handling in 64-bit mode").
 *
 * Simplifications of the flat model: the GDT is not read -- the gate's selector gives
 * the new CS and its RPL the handler's privilege level; IST is ignored; the TSS is
 * read only for RSP0 (offset 4). A fault while reading the IDT or the TSS or writing
 * the frame is the fault the SDM names for that step (#GP/#NP for the gate, #TS for the
 * TSS, #SS for the stack), never a page fault.
 */
#include "arch/exec_impl.h"

enum exc_class { EXC_BENIGN, EXC_CONTRIBUTORY, EXC_PAGE_FAULT, EXC_DOUBLE_FAULT };

/* SDM vol. 3A table 6-4. */
static enum exc_class exc_class(u8 vector)
{
	switch (vector) {
	case X86_TRAP_DE: case X86_TRAP_TS: case X86_TRAP_NP: case X86_TRAP_SS:
	case X86_TRAP_GP:
		return EXC_CONTRIBUTORY;
	case X86_TRAP_PF:
		return EXC_PAGE_FAULT;
	case X86_TRAP_DF:
		return EXC_DOUBLE_FAULT;
	default:
		return EXC_BENIGN;
	}
}

/* Host pointer for guest linear [la, la + len) (flat: linear = guest physical). */
static u8 *guest_ptr(const struct pk_cpu *cpu, u64 la, u64 len)
{
	if (is_noncanonical_address(la) || is_noncanonical_address(la + len - 1))
		return NULL;
	return pk_gpa_to_hva(cpu->npt, la, len);
}

/*
 * One attempt to deliver vector. 0 on success; otherwise the vector of the fault that
 * delivery itself raised, with its error code in *ferr, and no register changed.
 */
static int try_deliver(struct pk_cpu *cpu, u8 vector, bool has_err, u32 err,
		       enum pk_deliver_src src, u32 *ferr)
{
	u32 ext = src == PK_DELIVER_SOFT ? 0 : 1;
	u32 idt_err = (u32)vector * 8 + 2 + ext;	/* IDT bit set (SDM 6.13) */
	unsigned cpl = pk_cpl(cpu), new_cpl, type, dpl, nslots;
	u64 lo, hi, target, rsp, frame_rsp, frame[6];
	u16 sel;
	u8 *p;

	if ((u32)vector * 16 + 15 > cpu->idtr.limit)
		goto gp_idt;
	p = guest_ptr(cpu, cpu->idtr.base + (u64)vector * 16, 16);
	if (!p)
		goto gp_idt;
	memcpy(&lo, p, 8);
	memcpy(&hi, p + 8, 8);
	type = (lo >> 40) & 0x1f;		/* type and S */
	dpl = (lo >> 45) & 3;
	sel = (u16)(lo >> 16);
	target = (lo & 0xffff) | ((lo >> 32) & 0xffff0000) | (hi << 32);
	if (type != 0xe && type != 0xf)		/* 64-bit interrupt or trap gate */
		goto gp_idt;
	if (src == PK_DELIVER_SOFT && dpl < cpl)
		goto gp_idt;
	if (!((lo >> 47) & 1)) {
		*ferr = idt_err;
		return X86_TRAP_NP;
	}
	if ((sel & ~3u) == 0) {
		*ferr = ext;
		return X86_TRAP_GP;
	}
	new_cpl = sel & 3;
	if (new_cpl > cpl) {			/* to a less privileged level */
		*ferr = (sel & ~3u) + ext;
		return X86_TRAP_GP;
	}
	if (is_noncanonical_address(target)) {
		*ferr = ext;
		return X86_TRAP_GP;
	}

	if (new_cpl < cpl) {			/* stack switch to TSS.RSPn */
		p = guest_ptr(cpu, cpu->seg[VCPU_SREG_TR].base + 4 + 8 * new_cpl, 8);
		if (!p) {
			*ferr = (cpu->seg[VCPU_SREG_TR].selector & ~3u) + ext;
			return X86_TRAP_TS;
		}
		memcpy(&rsp, p, 8);
	} else {
		rsp = cpu->regs[VCPU_REGS_RSP];
	}
	rsp &= ~0xfull;				/* 64-bit mode aligns the frame */

	nslots = 0;				/* from the lowest address up */
	if (has_err)
		frame[nslots++] = err;
	frame[nslots++] = cpu->rip;
	frame[nslots++] = cpu->seg[VCPU_SREG_CS].selector;
	frame[nslots++] = cpu->rflags;
	frame[nslots++] = cpu->regs[VCPU_REGS_RSP];
	frame[nslots++] = cpu->seg[VCPU_SREG_SS].selector;
	frame_rsp = rsp - 8ull * nslots;
	p = guest_ptr(cpu, frame_rsp, 8ull * nslots);
	if (!p || frame_rsp > rsp) {
		*ferr = ext;
		return X86_TRAP_SS;
	}
	memcpy(p, frame, 8ull * nslots);

	cpu->regs[VCPU_REGS_RSP] = frame_rsp;
	pk_seg_flat_code(&cpu->seg[VCPU_SREG_CS], (sel & ~3u) | new_cpl, new_cpl);
	if (new_cpl != cpl)
		pk_seg_null_ss(&cpu->seg[VCPU_SREG_SS], new_cpl);
	cpu->rip = target;
	cpu->rflags &= ~(u64)(X86_EFLAGS_TF | BIT(14) /* NT */ | BIT(16) /* RF */ |
			      BIT(17) /* VM */);
	if (type == 0xe)			/* interrupt gate */
		cpu->rflags &= ~(u64)X86_EFLAGS_IF;
	return -1;

gp_idt:
	*ferr = idt_err;
	return X86_TRAP_GP;
}

bool pk_exec_deliver(struct pk_cpu *cpu, u8 vector, bool has_err, u32 err,
		     enum pk_deliver_src src)
{
	for (;;) {
		enum exc_class first;
		u32 ferr = 0;
		int fault = try_deliver(cpu, vector, has_err, err, src, &ferr);

		if (fault < 0)
			return true;
		/* SDM vol. 3A table 6-5: the delivery faults are all contributory */
		first = src == PK_DELIVER_SOFT ? EXC_BENIGN : exc_class(vector);
		if (first == EXC_DOUBLE_FAULT) {
			memset(&cpu->ev, 0, sizeof(cpu->ev));
			cpu->ev.kind = PK_GEXIT_TRIPLE_FAULT;
			return false;
		}
		if (first == EXC_BENIGN) {
			vector = (u8)fault;
			err = ferr;
		} else {
			vector = X86_TRAP_DF;
			err = 0;
		}
		has_err = true;
		src = PK_DELIVER_HW;
	}
}

bool pk_guest_deliver_exception(struct pk_cpu *cpu, u8 vector, bool has_error, u32 error)
{
	return pk_exec_deliver(cpu, vector, has_error, error, PK_DELIVER_HW);
}
