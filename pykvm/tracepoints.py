"""Names in kvm tracepoint text, as the kernel prints them.

The kernel's kvm_exit tracepoint prints the hardware exit reason by name: VMX's basic exit
reason (the low 16 bits; bit 31 adds " FAILED_VMENTRY") from VMX_EXIT_REASONS, SVM's exit
code from SVM_EXIT_REASONS (lower case, "io", "msr", "hypercall"). kvm_userspace_exit
prints KVM_EXIT_* names. An unknown value prints as hex, as __print_symbolic does.

    >>> exit_reason_name("vmx", 0x1f)
    'MSR_READ'
    >>> exit_reason_name("svm", 0x7b)
    'io'
    >>> userspace_exit_reason(2)
    'KVM_EXIT_IO (2)'

Tables written from the uapi headers arch/x86/include/uapi/asm/vmx.h and svm.h
(Linux mainline, read in 2026) and
include/trace/events/kvm.h (kvm_trace_exit_reason).
"""

# VMX basic exit reasons (Intel SDM vol. 3C appendix C), named as VMX_EXIT_REASONS names them.
VMX_EXIT_REASONS = {
    0: "EXCEPTION_NMI", 1: "EXTERNAL_INTERRUPT", 2: "TRIPLE_FAULT", 3: "INIT_SIGNAL",
    4: "SIPI_SIGNAL", 7: "INTERRUPT_WINDOW", 8: "NMI_WINDOW", 9: "TASK_SWITCH", 10: "CPUID",
    12: "HLT", 13: "INVD", 14: "INVLPG", 15: "RDPMC", 16: "RDTSC", 18: "VMCALL",
    19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST", 23: "VMREAD",
    24: "VMRESUME", 25: "VMWRITE", 26: "VMOFF", 27: "VMON", 28: "CR_ACCESS",
    29: "DR_ACCESS", 30: "IO_INSTRUCTION", 31: "MSR_READ", 32: "MSR_WRITE",
    33: "INVALID_STATE", 34: "MSR_LOAD_FAIL", 36: "MWAIT_INSTRUCTION",
    37: "MONITOR_TRAP_FLAG", 39: "MONITOR_INSTRUCTION", 40: "PAUSE_INSTRUCTION",
    41: "MCE_DURING_VMENTRY", 43: "TPR_BELOW_THRESHOLD", 44: "APIC_ACCESS",
    45: "EOI_INDUCED", 46: "GDTR_IDTR", 47: "LDTR_TR", 48: "EPT_VIOLATION",
    49: "EPT_MISCONFIG", 50: "INVEPT", 51: "RDTSCP", 52: "PREEMPTION_TIMER", 53: "INVVPID",
    54: "WBINVD", 55: "XSETBV", 56: "APIC_WRITE", 57: "RDRAND", 58: "INVPCID", 59: "VMFUNC",
    60: "ENCLS", 61: "RDSEED", 62: "PML_FULL", 63: "XSAVES", 64: "XRSTORS", 67: "UMWAIT",
    68: "TPAUSE", 74: "BUS_LOCK", 75: "NOTIFY", 77: "TDCALL",
}
VMX_EXIT_REASONS_FAILED_VMENTRY = 0x8000_0000

# SVM exit codes (AMD APM vol. 2 appendix C), named as SVM_EXIT_REASONS names them.
_EXCP = {0: "DE", 1: "DB", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM", 8: "DF", 10: "TS",
         11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF", 17: "AC", 18: "MC", 19: "XF"}
SVM_EXIT_REASONS = {
    **{cr: f"read_cr{cr}" for cr in (0, 2, 3, 4, 8)},
    **{0x10 + cr: f"write_cr{cr}" for cr in (0, 2, 3, 4, 8)},
    **{0x20 + dr: f"read_dr{dr}" for dr in range(8)},
    **{0x30 + dr: f"write_dr{dr}" for dr in range(8)},
    **{0x40 + vec: f"{name} excp" for vec, name in _EXCP.items()},
    0x60: "interrupt", 0x61: "nmi", 0x62: "smi", 0x63: "init", 0x64: "vintr",
    0x65: "cr0_sel_write", 0x66: "read_idtr", 0x67: "read_gdtr", 0x68: "read_ldtr",
    0x69: "read_rt", 0x6a: "write_idtr", 0x6b: "write_gdtr", 0x6c: "write_ldtr",
    0x6d: "write_rt", 0x6e: "rdtsc", 0x6f: "rdpmc", 0x70: "pushf", 0x71: "popf",
    0x72: "cpuid", 0x73: "rsm", 0x74: "iret", 0x75: "swint", 0x76: "invd", 0x77: "pause",
    0x78: "hlt", 0x79: "invlpg", 0x7a: "invlpga", 0x7b: "io", 0x7c: "msr",
    0x7d: "task_switch", 0x7e: "ferr_freeze", 0x7f: "shutdown", 0x80: "vmrun",
    0x81: "hypercall", 0x82: "vmload", 0x83: "vmsave", 0x84: "stgi", 0x85: "clgi",
    0x86: "skinit", 0x87: "rdtscp", 0x88: "icebp", 0x89: "wbinvd", 0x8a: "monitor",
    0x8b: "mwait", 0x8d: "xsetbv", 0x400: "npf", 0x401: "avic_incomplete_ipi",
    0x402: "avic_unaccelerated_access", 0xFFFF_FFFF: "invalid_guest_state",
}

# include/trace/events/kvm.h kvm_trace_exit_reason: KVM_EXIT_* numbers (linux/kvm.h).
KVM_EXIT_REASONS = {
    0: "UNKNOWN", 1: "EXCEPTION", 2: "IO", 3: "HYPERCALL", 4: "DEBUG", 5: "HLT", 6: "MMIO",
    7: "IRQ_WINDOW_OPEN", 8: "SHUTDOWN", 9: "FAIL_ENTRY", 10: "INTR", 11: "SET_TPR",
    12: "TPR_ACCESS", 17: "INTERNAL_ERROR", 24: "SYSTEM_EVENT", 29: "X86_RDMSR",
    30: "X86_WRMSR",
}


def _isa(vendor):
    """"vmx" or "svm" for a vendor name or plugin (a third-party vendor: by its CPU)."""
    name = getattr(vendor, "name", vendor)
    if name in ("vmx", "svm"):
        return name
    cpu = getattr(vendor, "cpu_vendor", None)
    if cpu is None:
        from .vendors import get_vendor
        cpu = get_vendor(name).cpu_vendor
    return "vmx" if cpu == "intel" else "svm"


def exit_reason_name(vendor, reason):
    """The kvm_exit tracepoint's reason text for `reason` under `vendor`."""
    if _isa(vendor) == "vmx":
        basic = reason & 0xFFFF
        text = VMX_EXIT_REASONS.get(basic, f"0x{basic:x}")
        if reason & VMX_EXIT_REASONS_FAILED_VMENTRY:
            text += " FAILED_VMENTRY"
        return text
    return SVM_EXIT_REASONS.get(reason & 0xFFFF_FFFF, f"0x{reason:x}")


def userspace_exit_reason(reason):
    """kvm_userspace_exit's text: 'KVM_EXIT_IO (2)'."""
    name = KVM_EXIT_REASONS.get(reason)
    return f"KVM_EXIT_{name} ({reason})" if name else f"0x{reason:x} ({reason})"
