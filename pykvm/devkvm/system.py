"""The /dev/kvm fd: `KvmMachine` (API version, capabilities, host vendor module, supported
CPUID, MSR lists) and the VMs created from it."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass


from pykvm.errors import KvmIoctlError, KvmUnavailable
from pykvm.log import get_logger
from pykvm.devkvm import uapi
from pykvm.devkvm._native import ioctl

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
    entries = list(entries)
    buf = bytearray(uapi.kvm_cpuid2.pack(len(entries), 0))
    for e in entries:
        if not isinstance(e, CpuidEntry):
            raise TypeError(f"expected CpuidEntry, got {e!r}")
        buf += uapi.kvm_cpuid_entry2.pack(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx,
                                          e.edx)
    return buf


def unpack_cpuid(buf):
    (nent, _pad) = uapi.kvm_cpuid2.unpack_from(buf, 0)
    size, base = uapi.kvm_cpuid_entry2.size, uapi.kvm_cpuid2.size
    return [CpuidEntry(*uapi.kvm_cpuid_entry2.unpack_from(buf, base + i * size))
            for i in range(nent)]


def vendor_modules(sys_module=_SYS_MODULE):
    """The KVM vendor modules loaded on the host, in VENDOR_MODULES order."""
    return tuple(m for m in VENDOR_MODULES if os.path.isdir(os.path.join(sys_module, m)))


class KvmMachine:
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

    Closing the machine closes every VM (and vCPU, and mapping) created from it.
    """

    def __init__(self, path=KVM_PATH):
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmUnavailable(e.errno, f"cannot open {path}: {os.strerror(e.errno)}") from None
        self.path = path
        self._vms = []
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

    # ---- VMs -----------------------------------------------------------------------------
    def create_vm(self, vm_type=0):
        """KVM_CREATE_VM; the VM is closed with the machine at the latest."""
        from pykvm.devkvm.vm import KvmVm
        if self.fd is None:
            raise KvmIoctlError(errno.EBADF, "KVM_CREATE_VM: machine is closed")
        fd = ioctl(self.fd, uapi.KVM_CREATE_VM, vm_type, f"KVM_CREATE_VM(type {vm_type})")
        vm = KvmVm(self, fd)
        self._vms.append(vm)
        return vm

    def _forget(self, vm):
        if vm in self._vms:
            self._vms.remove(vm)

    def close(self):
        """Close every VM created from this machine, then /dev/kvm. Idempotent."""
        for vm in list(self._vms):
            vm.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    @property
    def closed(self):
        return self.fd is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.fd is None else f"fd {self.fd}"
        return f"KvmMachine({self.path}, {self.vendor}, {state})"
