"""A VM fd: memory slots (anonymous mmaps), vCPUs, VM capabilities and MSR filters."""
from __future__ import annotations

import errno
import mmap
import os
import weakref
from dataclasses import dataclass

from pykvm._weak import WeakList
from pykvm.errors import InvalidConfiguration, InvalidMemory, KvmIoctlError
from pykvm.devkvm import uapi
from pykvm.devkvm._native import KvmFd, address_of, ioctl, native

PAGE_SIZE = mmap.PAGESIZE


@dataclass
class MemorySlot:
    """One KVM_SET_USER_MEMORY_REGION slot backed by an anonymous mapping."""
    slot: int
    gpa: int
    size: int
    flags: int
    mapping: mmap.mmap
    hva: int

    def contains(self, gpa, size=1):
        return self.gpa <= gpa and gpa + size <= self.gpa + self.size


@dataclass(frozen=True)
class MsrFilterRange:
    """struct kvm_msr_filter_range: for the accesses in `flags` (KVM_MSR_FILTER_READ,
    _WRITE) to MSRs base .. base+nmsrs-1, `bitmap` bit i = 1 allows MSR base+i, 0 denies."""
    flags: int
    base: int
    nmsrs: int
    bitmap: bytes

    def kernel_bitmap(self):
        """The bytes the kernel reads for this range: whole longs (BITS_TO_LONGS(nmsrs) *
        8), the bitmap zero-padded to that. A range too large for any bitmap gets 8
        bytes: the kernel refuses it before reading (EINVAL)."""
        need = -(-self.nmsrs // 64) * 8
        if need > uapi.KVM_MSR_FILTER_MAX_BITMAP_SIZE:
            return bytes(8)
        bitmap = bytes(self.bitmap)
        if len(bitmap) * 8 < self.nmsrs:
            raise ValueError(f"MSR filter range at {self.base:#x}: a bitmap of "
                             f"{len(bitmap)} bytes cannot cover {self.nmsrs} MSRs")
        return bitmap[:need].ljust(max(need, 8), b"\0")


def msr_filter_flags(default_allow, flags):
    """struct kvm_msr_filter.flags: `flags` as given, else from `default_allow`."""
    if flags is not None:
        return flags
    return uapi.KVM_MSR_FILTER_DEFAULT_ALLOW if default_allow else uapi.KVM_MSR_FILTER_DEFAULT_DENY


class GuestMemory:
    """Guest-physical memory of a VM, by GPA: ``vm.memory[gpa:gpa+n]`` reads bytes,
    ``vm.memory[gpa:gpa+n] = data`` writes them. An access must fall in one slot. It
    holds the VM's list of slots, not the VM (no reference cycle keeps a dropped VM)."""

    def __init__(self, slots):
        self._slots = slots

    def _slot(self, gpa, size):
        for s in self._slots:
            if s.contains(gpa, size):
                return s
        raise InvalidMemory(f"GPA range [{gpa:#x}, {gpa + size:#x}) is not inside one "
                            f"memory slot")

    def read(self, gpa, size):
        if size < 0 or gpa < 0:
            raise InvalidMemory(f"bad range gpa={gpa:#x} size={size}")
        s = self._slot(gpa, size)
        off = gpa - s.gpa
        return s.mapping[off:off + size]

    def write(self, gpa, data):
        data = bytes(data)
        if gpa < 0:
            raise InvalidMemory(f"bad gpa {gpa:#x}")
        s = self._slot(gpa, len(data))
        off = gpa - s.gpa
        s.mapping[off:off + len(data)] = data

    def read_u64(self, gpa):
        return int.from_bytes(self.read(gpa, 8), "little")

    def write_u64(self, gpa, value):
        self.write(gpa, (value & (2**64 - 1)).to_bytes(8, "little"))

    def _range(self, key):
        if not isinstance(key, slice) or key.step not in (None, 1) or key.start is None \
                or key.stop is None:
            raise InvalidMemory("index guest memory with a [start:stop] GPA slice")
        return key.start, key.stop - key.start

    def __getitem__(self, key):
        gpa, size = self._range(key)
        return self.read(gpa, size)

    def __setitem__(self, key, data):
        gpa, size = self._range(key)
        if len(data) != size:
            raise InvalidMemory(f"writing {len(data)} bytes into a {size}-byte range")
        self.write(gpa, data)


def _close_vm(fd, slots):
    """The VM fd, then its guest memory (KVM keeps the VM while a vCPU fd is open, but a
    vCPU object keeps its VM object alive, so none is left by the time this runs)."""
    os.close(fd)
    for s in slots:
        s.mapping.close()
    slots.clear()


class KvmVm(KvmFd):
    """A VM on the host's KVM (from `KvmMachine.create_vm`). close(), a with block, or
    dropping the last reference closes it and unmaps its guest memory."""

    # KVM_MAX_VCPU_IDS on x86 (KVM_MAX_VCPUS * KVM_VCPU_ID_RATIO): ids are APIC IDs.
    MAX_VCPU_ID = 4096

    def __init__(self, machine, fd):
        self.machine = machine
        self.fd = fd
        self.slots = []
        self._vcpus = WeakList()
        self._vcpu_ids = set()      # created: KVM keeps a vCPU until the VM goes
        self.memory = GuestMemory(self.slots)
        self._finalizer = weakref.finalize(self, _close_vm, fd, self.slots)

    @property
    def vcpus(self):
        """The vCPU objects of this VM still open and referenced somewhere."""
        return self._vcpus.alive()

    # ---- memory --------------------------------------------------------------------------
    def add_memory(self, gpa, size, *, slot=None, flags=0):
        """Map `size` bytes of anonymous memory at guest-physical `gpa`
        (KVM_SET_USER_MEMORY_REGION). Page-aligned, no overlap; returns the MemorySlot."""
        for name, v in (("gpa", gpa), ("size", size)):
            if not isinstance(v, int) or v < 0 or v % PAGE_SIZE:
                raise InvalidMemory(f"{name} must be a page-aligned non-negative int, got {v!r}")
        if size == 0:
            raise InvalidMemory("size must be > 0")
        for s in self.slots:
            if gpa < s.gpa + s.size and s.gpa < gpa + size:
                raise InvalidMemory(f"[{gpa:#x}, {gpa + size:#x}) overlaps slot {s.slot} "
                                    f"[{s.gpa:#x}, {s.gpa + s.size:#x})")
        used = {s.slot for s in self.slots}
        if slot is None:
            slot = next(i for i in range(len(used) + 1) if i not in used)
        elif slot in used:
            raise InvalidMemory(f"slot {slot} is in use")
        if self.fd is None:
            raise KvmIoctlError(errno.EBADF, "KVM_SET_USER_MEMORY_REGION: VM is closed")
        ffi, _lib = native()
        try:
            mapping = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                                mmap.PROT_READ | mmap.PROT_WRITE)
        except (OverflowError, OSError) as e:
            raise InvalidMemory(f"no host memory for {size:#x} bytes of guest memory: "
                                f"{e}") from None
        hva = address_of(ffi, mapping)
        region = bytearray(uapi.kvm_userspace_memory_region.pack(slot, flags, gpa, size, hva))
        try:
            ioctl(self.fd, uapi.KVM_SET_USER_MEMORY_REGION, region,
                  f"KVM_SET_USER_MEMORY_REGION(slot {slot}, gpa {gpa:#x}, size {size:#x})")
        except BaseException:
            mapping.close()
            raise
        ms = MemorySlot(slot, gpa, size, flags, mapping, hva)
        self.slots.append(ms)
        return ms

    def read(self, gpa, size):
        """Guest memory bytes at `gpa` (one slot)."""
        return self.memory.read(gpa, size)

    def write(self, gpa, data):
        """Write bytes to guest memory at `gpa` (one slot)."""
        self.memory.write(gpa, data)

    def _ensure_memory(self, size):
        """Memory for an image of `size` bytes at GPA 0: a slot is added if the VM has
        none; otherwise the existing slots must cover it."""
        if not self.slots:
            self.add_memory(0, -(-size // PAGE_SIZE) * PAGE_SIZE)
        self.memory._slot(0, size)

    # ---- capabilities and MSR policy -----------------------------------------------------
    def enable_cap(self, cap, *args, flags=0):
        """KVM_ENABLE_CAP on the VM with up to four arguments."""
        if len(args) > 4:
            raise ValueError("KVM_ENABLE_CAP takes at most 4 arguments")
        a = list(args) + [0] * (4 - len(args))
        buf = bytearray(uapi.kvm_enable_cap.pack(cap, flags, *a))
        ioctl(self.fd, uapi.KVM_ENABLE_CAP, buf, f"KVM_ENABLE_CAP({cap})")

    def check_extension(self, cap):
        """KVM_CHECK_EXTENSION on the VM: 0 if unsupported, else a capability value."""
        if isinstance(cap, str):
            cap = uapi.CAPS[cap if cap.startswith("KVM_CAP_") else "KVM_CAP_" + cap.upper()]
        return ioctl(self.fd, uapi.KVM_CHECK_EXTENSION, cap, f"KVM_CHECK_EXTENSION({cap})")

    def enable_user_msr_exits(self, reasons=None):
        """KVM_CAP_X86_USER_SPACE_MSR: failed guest RDMSR/WRMSR of these kinds (default:
        all three) exit to userspace as RdMsr/WrMsr (set `.data` or `.error` before the
        next run)."""
        if reasons is None:         # here, not as a default: importing needs no header
            reasons = (uapi.KVM_MSR_EXIT_REASON_INVAL | uapi.KVM_MSR_EXIT_REASON_UNKNOWN |
                       uapi.KVM_MSR_EXIT_REASON_FILTER)
        if not self.machine.check_extension(uapi.KVM_CAP_X86_USER_SPACE_MSR):
            raise KvmIoctlError(errno.EOPNOTSUPP, "KVM_CAP_X86_USER_SPACE_MSR not supported")
        self.enable_cap(uapi.KVM_CAP_X86_USER_SPACE_MSR, reasons)

    def set_msr_filter(self, ranges, *, default_allow=True, flags=None):
        """KVM_X86_SET_MSR_FILTER with up to 16 MsrFilterRange; [] with default_allow
        clears the filter. `flags` sets struct kvm_msr_filter.flags as given (default:
        KVM_MSR_FILTER_DEFAULT_ALLOW or _DENY from `default_allow`)."""
        ranges = list(ranges)
        if len(ranges) > uapi.KVM_MSR_FILTER_MAX_RANGES:
            raise ValueError(f"at most {uapi.KVM_MSR_FILTER_MAX_RANGES} filter ranges")
        if not self.machine.check_extension(uapi.KVM_CAP_X86_MSR_FILTER):
            raise KvmIoctlError(errno.EOPNOTSUPP, "KVM_CAP_X86_MSR_FILTER not supported")
        ffi, _lib = native()
        keep = []       # the bitmaps must stay alive until the ioctl returns
        fields = []
        for r in ranges:
            bm = ffi.new("char[]", r.kernel_bitmap())
            keep.append(bm)
            fields += [r.flags, r.nmsrs, r.base, int(ffi.cast("uintptr_t", bm))]
        fields += [0, 0, 0, 0] * (uapi.KVM_MSR_FILTER_MAX_RANGES - len(ranges))
        buf = bytearray(uapi.kvm_msr_filter.pack(msr_filter_flags(default_allow, flags),
                                                 *fields))
        ioctl(self.fd, uapi.KVM_X86_SET_MSR_FILTER, buf, "KVM_X86_SET_MSR_FILTER")
        del keep

    def create_irqchip(self):
        """KVM_CREATE_IRQCHIP: an in-kernel PIC, IOAPIC and a LAPIC per vCPU (before any
        vCPU exists). APs then wait for INIT/SIPI: set_mp_state(RUNNABLE) starts them."""
        ioctl(self.fd, uapi.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def enable_split_irqchip(self, ioapic_pins=24):
        """KVM_CAP_SPLIT_IRQCHIP: the LAPICs in KVM, PIC and IOAPIC left to userspace."""
        self.enable_cap(uapi.KVM_CAP_SPLIT_IRQCHIP, ioapic_pins)

    def deny_msrs(self, indices, *, read=True, write=True):
        """An MSR filter that denies `indices` (one range each) and allows the rest."""
        flags = (uapi.KVM_MSR_FILTER_READ if read else 0) | \
                (uapi.KVM_MSR_FILTER_WRITE if write else 0)
        self.set_msr_filter([MsrFilterRange(flags, i, 1, b"\0") for i in indices])

    # ---- vCPUs ---------------------------------------------------------------------------
    def create_vcpu(self, vcpu_id=None, *, cpuid=True):
        """KVM_CREATE_VCPU and map its kvm_run. `vcpu_id` (its APIC ID) defaults to the
        lowest id not created yet: closing a vCPU fd does not free its id, since KVM keeps
        the vCPU until the VM goes. With `cpuid` (default) the vCPU gets
        KVM_GET_SUPPORTED_CPUID via KVM_SET_CPUID2 before anything runs; pass a list of
        CpuidEntry to choose, or False to leave KVM's default."""
        from pykvm.devkvm.vcpu import KvmVcpu
        if self.fd is None:
            raise KvmIoctlError(errno.EBADF, "KVM_CREATE_VCPU: VM is closed")
        if vcpu_id is None:
            vcpu_id = next(i for i in range(len(self._vcpu_ids) + 1) if i not in self._vcpu_ids)
        elif not isinstance(vcpu_id, int) or isinstance(vcpu_id, bool) or \
                not 0 <= vcpu_id < 2**32:
            raise InvalidConfiguration(f"vcpu_id must be an int 0..2**32-1, got {vcpu_id!r}")
        fd = ioctl(self.fd, uapi.KVM_CREATE_VCPU, vcpu_id, f"KVM_CREATE_VCPU({vcpu_id})")
        self._vcpu_ids.add(vcpu_id)
        try:
            vcpu = KvmVcpu(self, fd, vcpu_id)
        except BaseException:
            os.close(fd)
            raise
        self._vcpus.add(vcpu)
        if cpuid is True:
            vcpu.set_cpuid(self.machine.get_supported_cpuid())
        elif cpuid:
            vcpu.set_cpuid(cpuid)
        return vcpu

    def close(self):
        """Close the vCPUs, the VM fd, then unmap guest memory. Idempotent."""
        for vcpu in self._vcpus.alive():
            vcpu.close()
        if self.fd is not None:
            self.fd = None
            self._finalizer()
        self.machine._forget(self)

    def __repr__(self):
        return f"KvmVm(fd {self.fd}, {len(self.slots)} slots, {len(self.vcpus)} vcpus)"
