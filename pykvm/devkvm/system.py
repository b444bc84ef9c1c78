"""The /dev/kvm fd: `KvmMachine` (API version, capabilities, host vendor module, supported
CPUID, MSR lists) and the VMs created from it."""
from __future__ import annotations

import errno
import os
import weakref
from dataclasses import dataclass


from pykvm._weak import WeakList
from pykvm.errors import KvmIoctlError, KvmUnavailable
from pykvm.log import get_logger
from pykvm.devkvm import uapi
from pykvm.devkvm._native import KvmFd, ioctl

log = get_logger("pykvm.devkvm")

KVM_PATH = "/dev/kvm"
# The vendor modules that can back /dev/kvm; with several loaded, the first one wins
# (kvm_pvm is loaded on purpose next to a hardware module, so it is the one in use).
VENDOR_MODULES = ("kvm_pvm", "kvm_intel", "kvm_amd")
_SYS_MODULE = "/sys/module"


@dataclass(frozen=True)
class CpuidEntry:
    """struct kvm_cpuid_entry2."""
    function: int
    index: int = 0
    flags: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0


def pack_cpuid(entries):
    from pykvm.regs import uint
    entries = list(entries)
    buf = bytearray(uapi.kvm_cpuid2.pack(len(entries), 0))
    for i, e in enumerate(entries):
        if not isinstance(e, CpuidEntry):
            raise TypeError(f"expected CpuidEntry, got {e!r}")
        buf += uapi.kvm_cpuid_entry2.pack(*(uint(getattr(e, f), 32, f"CPUID entry {i}: {f}")
                                            for f in ("function", "index", "flags", "eax",
                                                      "ebx", "ecx", "edx")))
    return buf


def unpack_cpuid(buf):
    (nent, _pad) = uapi.kvm_cpuid2.unpack_from(buf, 0)
    size, base = uapi.kvm_cpuid_entry2.size, uapi.kvm_cpuid2.size
    return [CpuidEntry(*uapi.kvm_cpuid_entry2.unpack_from(buf, base + i * size))
            for i in range(nent)]


def vendor_modules(sys_module=_SYS_MODULE):
    """The KVM vendor modules loaded on the host, in VENDOR_MODULES order."""
    return tuple(m for m in VENDOR_MODULES if os.path.isdir(os.path.join(sys_module, m)))


def get_msrs(fd, request, indices, what):
    """KVM_GET_MSRS on a vCPU, or on /dev/kvm for feature MSRs: (count, {index: value})
    for the first `count` indices (KVM stops at the first it cannot read)."""
    buf = bytearray(uapi.kvm_msrs.pack(len(indices), 0))
    for i in indices:
        buf += uapi.kvm_msr_entry.pack(i, 0, 0)
    count = ioctl(fd, request, buf, what)
    values = {}
    for k in range(count):
        index, _res, data = uapi.kvm_msr_entry.unpack_from(
            buf, uapi.kvm_msrs.size + k * uapi.kvm_msr_entry.size)
        values[index] = data
    return count, values


class KvmMachine(KvmFd):
    """The host's real KVM, opened from /dev/kvm.

    >>> from pykvm import guest
    >>> image = guest.program(lambda a: (a.sync(), a.done()))
    >>> with KvmMachine() as m:
    ...     vm = m.create_vm()
    ...     vcpu = vm.create_vcpu()
    ...     vcpu.load(image)
    ...     exit = vcpu.run()
    >>> exit.port == guest.UCALL_PORT
    True

    Closing the machine closes every VM (and vCPU, and mapping) created from it. Every
    object frees its fd and mappings when it is garbage-collected too; a VM keeps its
    machine (and a vCPU its VM) alive, never the other way round, so a dropped VM is freed
    even while its machine lives.
    """

    def __init__(self, path=KVM_PATH):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailable(e.errno, f"cannot open {path}: {os.strerror(e.errno)}") from None
        self._finalizer = weakref.finalize(self, os.close, self.fd)
        self.path = path
        self._vms = WeakList()
        try:
            self.api_version = ioctl(self.fd, uapi.KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
            if self.api_version != uapi.KVM_API_VERSION:
                raise KvmUnavailable(f"{path}: KVM_GET_API_VERSION is {self.api_version}, "
                                     f"wanted {uapi.KVM_API_VERSION}")
            self.vcpu_mmap_size = ioctl(self.fd, uapi.KVM_GET_VCPU_MMAP_SIZE, 0,
                                        "KVM_GET_VCPU_MMAP_SIZE")
        except BaseException:
            self.close()
            raise
        self.vendor_modules = vendor_modules()
        self.vendor = self.vendor_modules[0] if self.vendor_modules else "unknown"
        self._supported_cpuid = None
        log.debug("kvm.open", path=path, api=self.api_version, vendor=self.vendor)

    @staticmethod
    def available(path=KVM_PATH):
        """(True, vendor) if a KvmMachine can be opened and a VM created, else
        (False, reason): what tests use to skip."""
        if not os.path.exists(path):
            return False, f"{path} does not exist (no KVM on this host)"
        try:
            with KvmMachine(path) as m:
                m.create_vm().close()
                return True, m.vendor
        except (KvmUnavailable, KvmIoctlError) as e:
            return False, f"{path} is unusable: {e}"

    # ---- queries -------------------------------------------------------------------------
    def check_extension(self, cap):
        """KVM_CHECK_EXTENSION: 0 if unsupported, else a capability-specific value."""
        if isinstance(cap, str):
            cap = uapi.CAPS[cap if cap.startswith("KVM_CAP_") else "KVM_CAP_" + cap.upper()]
        return ioctl(self.fd, uapi.KVM_CHECK_EXTENSION, cap, f"KVM_CHECK_EXTENSION({cap})")

    def capabilities(self):
        """{KVM_CAP_* name: KVM_CHECK_EXTENSION value} for the capabilities pykvm uses."""
        return {name: self.check_extension(cap) for name, cap in uapi.CAPS.items()}

    def get_supported_cpuid(self):
        """KVM_GET_SUPPORTED_CPUID as a list of CpuidEntry (cached: it does not change)."""
        if self._supported_cpuid is None:
            nent = 128
            while True:
                buf = bytearray(uapi.kvm_cpuid2.pack(nent, 0))
                buf += bytes(nent * uapi.kvm_cpuid_entry2.size)
                try:
                    ioctl(self.fd, uapi.KVM_GET_SUPPORTED_CPUID, buf, "KVM_GET_SUPPORTED_CPUID")
                    break
                except KvmIoctlError as e:
                    if e.errno != errno.E2BIG or nent >= 4096:
                        raise
                    nent *= 2
            self._supported_cpuid = tuple(unpack_cpuid(buf))
        return list(self._supported_cpuid)

    def _msr_list(self, request, what):
        n = 256
        while True:
            buf = bytearray(uapi.kvm_msr_list.pack(n)) + bytes(4 * n)
            try:
                ioctl(self.fd, request, buf, what)
            except KvmIoctlError as e:
                if e.errno != errno.E2BIG or n >= 65536:
                    raise
                n *= 4
                continue
            (count,) = uapi.kvm_msr_list.unpack_from(buf, 0)
            return list(memoryview(buf)[4:4 + 4 * count].cast("I"))

    def get_msr_index_list(self):
        """KVM_GET_MSR_INDEX_LIST: the MSRs KVM_GET/SET_MSRS save and restore (FS/GS base
        are not in it: they travel in SREGS)."""
        return self._msr_list(uapi.KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST")

    def get_msr_feature_index_list(self):
        """KVM_GET_MSR_FEATURE_INDEX_LIST ([] without KVM_CAP_GET_MSR_FEATURES)."""
        if not self.check_extension(uapi.KVM_CAP_GET_MSR_FEATURES):
            return []
        return self._msr_list(uapi.KVM_GET_MSR_FEATURE_INDEX_LIST,
                              "KVM_GET_MSR_FEATURE_INDEX_LIST")

    def get_feature_msrs(self, indices):
        """KVM_GET_MSRS on /dev/kvm: the host's feature MSRs. (count, {index: value}) for
        the first `count` indices; KVM stops at the first it cannot read."""
        return get_msrs(self.fd, uapi.KVM_GET_FEATURE_MSRS, list(indices),
                        "KVM_GET_MSRS (features)")

    def get_mce_cap_supported(self):
        """KVM_X86_GET_MCE_CAP_SUPPORTED: the MCG_CAP bits KVM_X86_SETUP_MCE accepts."""
        buf = bytearray(8)
        ioctl(self.fd, uapi.KVM_X86_GET_MCE_CAP_SUPPORTED, buf, "KVM_X86_GET_MCE_CAP_SUPPORTED")
        return uapi.u64.unpack(buf)[0]

    # ---- VMs -----------------------------------------------------------------------------
    def create_vm(self, vm_type=0):
        """KVM_CREATE_VM; the VM is closed with the machine at the latest."""
        from pykvm.devkvm.vm import KvmVm
        if self.fd is None:
            raise KvmIoctlError(errno.EBADF, "KVM_CREATE_VM: machine is closed")
        fd = ioctl(self.fd, uapi.KVM_CREATE_VM, vm_type, f"KVM_CREATE_VM(type {vm_type})")
        try:
            vm = KvmVm(self, fd)
        except BaseException:
            os.close(fd)
            raise
        self._vms.add(vm)
        return vm

    @property
    def vms(self):
        """The VMs of this machine still referenced somewhere."""
        return self._vms.alive()

    def _forget(self, vm):
        self._vms.discard(vm)

    def close(self):
        """Close every VM created from this machine, then /dev/kvm. Idempotent."""
        for vm in self._vms.alive():
            vm.close()
        if self.fd is not None:
            self.fd = None
            self._finalizer()

    def __repr__(self):
        state = "closed" if self.fd is None else f"fd {self.fd}"
        return f"KvmMachine({self.path}, {self.vendor}, {state})"
