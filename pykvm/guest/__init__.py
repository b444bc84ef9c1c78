"""Guest programs for every pykvm backend: an x86-64 assembler (iced-x86), a long-mode
image with a fixed layout, and a small runtime (ucall, assertions, rdmsr_safe), in the
style of the KVM selftests. Guest code and host loop sit side by side::

    import pykvm
    from pykvm import guest

    vcpu = pykvm.Machine().create_vm().create_vcpu()

    @guest.program
    def image(a):                       # a: guest.GuestAsm at CODE_START
        a.rdmsr_safe(0x474f4f00)         # an MSR no CPU has
        a.assert_fault(13)               # #GP, or the host sees the guest's assertion
        a.sync("rax")
        a.done()

    vcpu.load(image)
    uc = guest.run_ucall(vcpu, image)    # raises GuestAssertion with the guest's message
    assert uc.cmd == guest.UcallCmd.SYNC
    assert guest.run_ucall(vcpu, image).cmd == guest.UcallCmd.DONE

Layout constants live in `pykvm.guest.layout` (re-exported here); the ucall and
rdmsr_safe register conventions are in `pykvm.guest.ucall` and `GuestAsm`.
"""
from pykvm.guest.asm import (Asm, AsmError, Assembled, Label, Mem, byte, dword, mem, qword,
                             word)
from pykvm.guest.layout import (CODE_START, DATA_ADDR, GDT_ADDR, GUEST_CR0, GUEST_CR4,
                                GUEST_EFER, GUEST_STAR, IDT_ADDR, KERNEL_CS, KERNEL_DS,
                                MEMORY_SIZE, PD_ADDR, PDPT_ADDR, PML4_ADDR, RSP0_TOP,
                                RUNTIME_CODE, RUNTIME_ERROR_CODE, RUNTIME_FAULT_RIP,
                                RUNTIME_FIXUP, RUNTIME_VECTOR, STACK_TOP, TSS_ADDR, TSS_SEL,
                                USER32_CS, USER_CS, USER_DATA, USER_DS, USER_RFLAGS,
                                USER_STACK_TOP)
from pykvm.guest.runtime import GuestAsm, GuestImage, Program, program
from pykvm.guest.ucall import (NO_VECTOR, SAFE_ERROR_CODE_REG, SAFE_VECTOR_REG,
                               UCALL_ARG_REGS, UCALL_PORT, AssertSite, Ucall, UcallCmd,
                               assert_exit, describe_exit, expect_ucall, get_ucall,
                               run_ucall, vector_name)

__all__ = [
    "Asm", "AsmError", "Assembled", "Label", "Mem", "byte", "word", "dword", "qword", "mem",
    "GuestAsm", "GuestImage", "Program", "program",
    "Ucall", "UcallCmd", "AssertSite", "get_ucall", "expect_ucall", "run_ucall",
    "assert_exit", "describe_exit", "vector_name",
    "UCALL_PORT", "UCALL_ARG_REGS", "NO_VECTOR", "SAFE_VECTOR_REG", "SAFE_ERROR_CODE_REG",
    "MEMORY_SIZE", "PML4_ADDR", "PDPT_ADDR", "PD_ADDR", "GDT_ADDR", "IDT_ADDR", "TSS_ADDR",
    "DATA_ADDR", "RUNTIME_CODE", "CODE_START", "USER_DATA", "USER_STACK_TOP", "RSP0_TOP",
    "STACK_TOP", "RUNTIME_FIXUP", "RUNTIME_VECTOR", "RUNTIME_ERROR_CODE",
    "RUNTIME_FAULT_RIP", "KERNEL_CS", "KERNEL_DS", "USER32_CS", "USER_DS", "USER_CS",
    "TSS_SEL", "GUEST_STAR", "GUEST_CR0", "GUEST_CR4", "GUEST_EFER", "USER_RFLAGS",
]
