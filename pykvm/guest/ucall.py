"""ucall: how a guest program talks to its host, like the KVM selftests' ucall.

Guest side (emitted by `GuestAsm.ucall` and friends)::

    RDI, RSI, RDX = arg0, arg1, arg2
    OUT UCALL_PORT, EAX      ; EAX = the UcallCmd

All registers are preserved around a SYNC (the ucall saves and restores them); ASSERT and
UNHANDLED_EXCEPTION never return (the guest halts).

Host side: after a vcpu.run() that returned an Io exit, `get_ucall(vcpu, exit)` reads the
command from the exit data and the arguments with vcpu.get_regs(). Arguments by command:

    SYNC                 (arg0, arg1, arg2)        as the guest passed them
    DONE                 ()
    ASSERT               (assert id, expected, actual)   the id names a site in the image
    UNHANDLED_EXCEPTION  (vector, rip, error code)
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from pykvm.errors import GuestAssertion
from pykvm.exits import (KVM_EXIT_IO, Exit, InternalError, Io, exit_name)

UCALL_PORT = 0xE0
UCALL_ARG_REGS = ("rdi", "rsi", "rdx")

# rdmsr_safe & co. leave the vector in R9 and the error code in R10 (as the selftests'
# KVM_ASM_SAFE does); NO_VECTOR when nothing faulted.
SAFE_VECTOR_REG = "r9"
SAFE_ERROR_CODE_REG = "r10"
NO_VECTOR = 0x100

VECTOR_NAMES = {0: "#DE", 1: "#DB", 2: "NMI", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD",
                7: "#NM", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF",
                16: "#MF", 17: "#AC", 18: "#MC", 19: "#XM", 20: "#VE", 21: "#CP"}


def vector_name(vector):
    """'#GP (13)' style name of an exception vector."""
    return f"{VECTOR_NAMES.get(vector, 'vector')} ({vector})"


class UcallCmd(enum.IntEnum):
    SYNC = 1
    DONE = 2
    ASSERT = 3
    UNHANDLED_EXCEPTION = 4


@dataclass(frozen=True)
class AssertSite:
    """Where a guest assertion was written (host-side Python source) and what it says."""
    id: int
    message: str
    filename: str
    lineno: int

    def __str__(self):
        return f"{self.filename}:{self.lineno} ({self.message})"


@dataclass(frozen=True)
class Ucall:
    """A decoded ucall. `args` always has three values (unused ones are whatever the
    registers held)."""
    cmd: UcallCmd
    args: tuple
    site: AssertSite | None = None
    fell_off: bool = False

    @property
    def failed(self):
        return self.cmd in (UcallCmd.ASSERT, UcallCmd.UNHANDLED_EXCEPTION)

    def message(self):
        if self.cmd == UcallCmd.ASSERT:
            aid, expected, actual = self.args
            where = str(self.site) if self.site else f"assert #{aid}"
            return (f"guest assertion failed at {where}: expected {expected:#x}, "
                    f"got {actual:#x}")
        if self.cmd == UcallCmd.UNHANDLED_EXCEPTION:
            vector, rip, err = self.args
            hint = " (the program fell off its end: finish with a.done())" \
                if self.fell_off else ""
            return (f"guest took unhandled {vector_name(vector)} at rip {rip:#x}, "
                    f"error code {err:#x}{hint}")
        return f"ucall {self.cmd.name}{tuple(hex(a) for a in self.args)}"

    def check(self):
        """Raise GuestAssertion if the guest reported a failure; return self."""
        if self.failed:
            raise GuestAssertion(self.message())
        return self


def describe_exit(exit):
    """A one-line description naming the exit reason as 'IO (2)' and its details."""
    if isinstance(exit, Io):
        way = "in" if exit.is_in else "out"
        return f"{exit_name(KVM_EXIT_IO)} {way} port {exit.port:#x} size {exit.size}"
    if isinstance(exit, InternalError):
        return f"{exit_name(exit.reason)} suberror {exit.suberror}"
    if isinstance(exit, Exit):
        return exit_name(exit.reason)
    return repr(exit)


def assert_exit(exit, reason):
    """Check the exit reason; raise GuestAssertion naming both sides otherwise."""
    if not isinstance(exit, Exit) or exit.reason != reason:
        raise GuestAssertion(f"wanted exit {exit_name(reason)}, got {describe_exit(exit)}")
    return exit


def get_ucall(vcpu, exit, image=None):
    """Decode the ucall behind `exit` (an Io OUT to UCALL_PORT), reading the arguments
    with vcpu.get_regs(). `image` (default: the image last loaded into vcpu, if the
    backend records it) names assertion sites. Raises GuestAssertion for any other exit
    or an unknown command; does not raise for ASSERT: see `Ucall.check`."""
    if (not isinstance(exit, Io) or exit.port != UCALL_PORT or exit.is_in
            or exit.size != 4):
        raise GuestAssertion(f"wanted exit {exit_name(KVM_EXIT_IO)} out port "
                             f"{UCALL_PORT:#x} size 4 (a ucall), got {describe_exit(exit)}")
    try:
        cmd = UcallCmd(exit.value)
    except ValueError:
        raise GuestAssertion(f"unknown ucall command {exit.value:#x}") from None
    regs = vcpu.get_regs()
    args = tuple(getattr(regs, r) for r in UCALL_ARG_REGS)
    image = image if image is not None else getattr(vcpu, "image", None)
    site, fell_off = None, False
    if image is not None:
        if cmd == UcallCmd.ASSERT:
            site = image.asserts.get(args[0])
        elif cmd == UcallCmd.UNHANDLED_EXCEPTION:
            fell_off = args[1] == image.symbols.get("end_of_code")
    if cmd == UcallCmd.DONE:
        args = (0, 0, 0)
    return Ucall(cmd, args, site, fell_off)


def expect_ucall(vcpu, exit, cmd, image=None):
    """get_ucall, then require `cmd`: a guest failure raises with the guest's message,
    another command raises naming both ("wanted ucall SYNC, got DONE")."""
    uc = get_ucall(vcpu, exit, image)
    cmd = UcallCmd(cmd)
    if uc.cmd != cmd:
        uc.check()
        raise GuestAssertion(f"wanted ucall {cmd.name}, got {uc.message()}")
    return uc


def run_ucall(vcpu, image=None, cmd=None):
    """Run the vCPU once and return its ucall; guest failures (and, when given, a
    command other than `cmd`) raise GuestAssertion."""
    ex = vcpu.run()
    if cmd is not None:
        return expect_ucall(vcpu, ex, cmd, image)
    return get_ucall(vcpu, ex, image).check()
