"""The host CPU running a loop's guest bytes itself: the floor under any emulator of them.

For loops that only compute on registers (no memory operand, no RSP), the guest's bytes
mean the same on the host, so the host can run them as they are. The loop is wrapped in a
function: save the host's callee-saved registers, load the guest's from a register file,
run the guest's bytes (their final HLT replaced by what follows), store the registers
back, return. The wrapper is encoded with iced-x86 like every guest program here; the
bytes go into an executable anonymous mapping and are called through a cffi function
pointer (cffi ABI level: no compiler needed for a benchmark baseline).

    host = HostCpu(loop.code)           # loop.code ends in its HLT
    regs = host.run({"rbp": passes, ...})

What it shows: the time per instruction of the same bytes on the same machine with no
interpreter, dispatcher or validation in the way; how that changes with the amount of hot
code is what the hardware itself does (caches, instruction fetch).
"""
import mmap

from cffi import FFI
from iced_x86 import BlockEncoder, Code, Instruction as I, MemoryOperand as M, Register as R

# The register file's order; RSP stays the host's stack pointer.
ORDER = ("rax", "rcx", "rdx", "rbx", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12",
         "r13", "r14", "r15")
_REG = {name: getattr(R, name.upper()) for name in ORDER}
_CALLEE_SAVED = (R.RBX, R.RBP, R.R12, R.R13, R.R14, R.R15)     # System V AMD64 ABI
_RDI = 8 * ORDER.index("rdi")
_ffi = FFI()


def _slot(name):
    return M(R.RDI, displ=8 * ORDER.index(name), displ_size=1)


def _encode(instructions):
    enc = BlockEncoder(64)
    enc.add_many(instructions)
    return enc.encode(0)


def _enter():
    """Save callee-saved registers and the register file pointer (RDI); load the guest's
    registers, RDI last."""
    out = [I.create_reg(Code.PUSH_R64, r) for r in _CALLEE_SAVED]
    out.append(I.create_reg(Code.PUSH_R64, R.RDI))
    out += [I.create_reg_mem(Code.MOV_R64_RM64, _REG[n], _slot(n)) for n in ORDER if n != "rdi"]
    out.append(I.create_reg_mem(Code.MOV_R64_RM64, R.RDI, _slot("rdi")))
    return out


def _leave():
    """Store the guest's registers into the file (its pointer comes back off the stack),
    restore the host's, return."""
    out = [I.create_reg(Code.PUSH_R64, R.RDI),
           I.create_reg_mem(Code.MOV_R64_RM64, R.RDI, M(R.RSP, displ=8, displ_size=1))]
    out += [I.create_mem_reg(Code.MOV_RM64_R64, _slot(n), _REG[n]) for n in ORDER if n != "rdi"]
    out += [I.create_reg(Code.POP_R64, R.RAX),
            I.create_mem_reg(Code.MOV_RM64_R64, _slot("rdi"), R.RAX),
            I.create_reg(Code.POP_R64, R.RDI)]
    out += [I.create_reg(Code.POP_R64, r) for r in reversed(_CALLEE_SAVED)]
    out.append(I.create(Code.RETNQ))
    return out


class HostCpu:
    """`code` (position-independent guest code ending in HLT) as a host function."""

    def __init__(self, code):
        if not code or code[-1] != 0xF4:
            raise ValueError("the loop must end in its HLT (0xF4)")
        blob = _encode(_enter()) + bytes(code[:-1]) + _encode(_leave())
        self._map = mmap.mmap(-1, (len(blob) + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1),
                              prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._map.write(blob)
        self._buf = _ffi.from_buffer(self._map)
        self._fn = _ffi.cast("void (*)(uint64_t *)", self._buf)
        self._regs = _ffi.new("uint64_t[]", len(ORDER))

    def run(self, regs):
        """Run once from `regs` (missing ones 0); the registers it ends with."""
        for i, name in enumerate(ORDER):
            self._regs[i] = regs.get(name, 0)
        self._fn(self._regs)
        return {name: self._regs[i] for i, name in enumerate(ORDER)}
