"""What every backend's vCPU does the same way (simulated machine and /dev/kvm)."""
from dataclasses import replace
from typing import Protocol, runtime_checkable

from . import exits as X
from .errors import InvalidConfiguration, InvalidMsr
from .guest import layout as _layout

# Raw code loaded as a standard image goes at CODE_START and must end below USER_DATA,
# with room for the UD2 program() puts after it (pykvm.guest.runtime.Program.build).
MAX_RAW_CODE = _layout.USER_DATA - _layout.CODE_START - 2


@runtime_checkable
class VcpuProtocol(Protocol):
    """A vCPU, whichever backend runs it: pykvm.machine.Vcpu (the simulated KVM) and
    pykvm.devkvm.KvmVcpu (/dev/kvm) both are one (tests/test_vcpu_protocol.py checks the
    signatures), so code written against this runs on either. A backend may add
    parameters after these, with defaults (the simulated run() also takes
    return_to_user and inject), and chooses its own defaults for these."""
    vm: object
    id: int
    image: object   # the GuestImage last loaded, None before

    def run(self, max_insns=None) -> X.Exit:
        """KVM_RUN until an exit to userspace, decoded by pykvm.exits.decode_kvm_run.
        `max_insns` bounds guest instructions where the backend can (0/None: no bound)."""

    def run_loop(self, devices=None, max_exits=0):
        """KVM_RUN again and again, port I/O to `devices` answered without Python."""

    def load(self, image):
        """Memory, SREGS, REGS and MSRs of a pykvm.guest image."""

    def get_regs(self): ...
    def set_regs(self, regs): ...
    def get_sregs(self): ...
    def set_sregs(self, sregs): ...
    def get_msrs(self, indices): ...
    def set_msrs(self, values): ...
    def get_msr(self, index): ...
    def set_msr(self, index, value): ...
    def get_one_reg(self, reg_id): ...
    def set_one_reg(self, reg_id, value): ...
    def get_reg_list(self): ...
    def get_cpuid(self): ...
    def set_cpuid(self, entries): ...
    def get_mp_state(self): ...
    def set_mp_state(self, state): ...
    def setup_mce(self, mcg_cap): ...


class VcpuBase:
    """Needs: self.vm (with slots, _ensure_memory() and memory.write()), self.id,
    get_sregs, set_sregs, set_regs, set_msrs, get_cpuid."""

    def _check_runnable(self):
        """A vCPU whose VM has no memory has nothing to run: KVM would fetch from the
        reset vector into nothing (an MMIO exit on one backend, ENOSPC or an internal
        error on another). Refused the same way on every backend."""
        if not self.vm.slots:
            raise InvalidConfiguration(
                f"vCPU {self.id}: its VM has no guest memory; load() a program (or "
                f"add_memory() and set the registers) before running it")

    def load(self, image):
        """Load a pykvm.guest GuestImage (or raw x86-64 code, placed at CODE_START of a
        standard image): memory at GPA 0 (a slot is added if the VM has none), SREGS,
        REGS, then the image's MSRs. An image apic_base of 0 keeps the vCPU's."""
        from .guest import GuestImage, program
        if isinstance(image, (bytes, bytearray, memoryview)):
            code = bytes(image)
            if len(code) > MAX_RAW_CODE:
                raise InvalidConfiguration(
                    f"{len(code)} bytes of code do not fit in a standard image: at most "
                    f"{MAX_RAW_CODE} (CODE_START to USER_DATA)")
            image = program(lambda a: a.db(code))
        if not isinstance(image, GuestImage):
            raise TypeError(f"expected a GuestImage or bytes, got {type(image).__name__}")
        self.vm._ensure_memory(len(image.memory))
        self.vm.memory.write(0, image.memory)
        sregs = image.sregs
        if sregs.apic_base == 0:
            sregs = replace(sregs, apic_base=self.get_sregs().apic_base)
        if sregs.cr4 & _layout.CR4_FSGSBASE and not self._has_fsgsbase():
            # As a guest kernel would: KVM refuses CR4.FSGSBASE when the vCPU's CPUID
            # lacks the feature (__cr4_reserved_bits), e.g. under a qemu64 model.
            sregs = replace(sregs, cr4=sregs.cr4 & ~_layout.CR4_FSGSBASE)
        self.set_sregs(sregs)
        self.set_regs(image.regs)
        if image.msrs:
            n = self.set_msrs(image.msrs)
            if n != len(image.msrs):
                bad = list(image.msrs)[n]
                raise InvalidMsr(bad, f"KVM_SET_MSRS stopped at MSR {bad:#x} "
                                      f"({n} of {len(image.msrs)} set)")
        self._pending = None
        self.image = image


    def _has_fsgsbase(self):
        """CPUID.(EAX=7,ECX=0):EBX bit 0, as the vCPU's CPUID stands (KVM_GET_CPUID2)."""
        return any(e.function == 7 and e.index == 0 and e.ebx & 1 for e in self.get_cpuid())


def answer_bytes(ex):
    """The bytes the caller put in an IN or MMIO-read exit, checked for size; None for an
    exit that takes no answer."""
    if isinstance(ex, X.Io) and ex.is_in:
        n = ex.size * ex.count
        if len(ex.data) != n:
            raise InvalidConfiguration(f"IN port {ex.port:#x}: data must be {n} bytes, "
                                       f"got {len(ex.data)}")
        return bytes(ex.data)
    if isinstance(ex, X.Mmio) and not ex.is_write:
        if len(ex.data) != ex.len:
            raise InvalidConfiguration(f"MMIO read at {ex.phys_addr:#x}: data must be "
                                       f"{ex.len} bytes, got {len(ex.data)}")
        return bytes(ex.data)
    return None
