// SPDX-License-Identifier: MIT
/* Which guest events leave guest mode: dispatch to the VMX or SVM hardware; NMIs vs GIF. */
#include "pykvm/cpu.h"

/*
 * Bare mode (no hypervisor): HLT, IN/OUT, CPUID, VMCALL/VMMCALL stop the interpreter so
 * the caller sees them; MSR accesses and RDTSCP/RDPID execute natively when the CPU model
 * has the instruction, else #UD.
 */
static enum pk_icpt bare_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev)
{
	switch (ev->kind) {
	case PK_GEXIT_RDTSCP:
		return cpu->m->model.has_rdtscp ? PK_ICPT_NATIVE : PK_ICPT_UD;
	case PK_GEXIT_RDPID:
		return cpu->m->model.has_rdpid ? PK_ICPT_NATIVE : PK_ICPT_UD;
	case PK_GEXIT_RDMSR:
	case PK_GEXIT_WRMSR:
		return PK_ICPT_NATIVE;
	default:
		return PK_ICPT_EXIT;
	}
}

enum pk_icpt pk_virt_intercept(struct pk_cpu *cpu, const struct pk_guest_event *ev)
{
	switch (cpu->mode) {
	case PK_MODE_VMX_GUEST:
		return vmx_hw_intercept(cpu, ev);
	case PK_MODE_SVM_GUEST:
		return svm_hw_intercept(cpu, ev);
	default:
		return bare_intercept(cpu, ev);
	}
}

/* An NMI arrives at cpu: held while GIF = 0 (APM 15.17), else the host handler runs now. */
void pk_nmi(struct pk_cpu *cpu)
{
	if (!cpu->gif) {
		cpu->nmi_held = 1;	/* one NMI latches; more collapse into it */
		return;
	}
	if (cpu->m->nmi_handler)
		cpu->m->nmi_handler(cpu);
}
