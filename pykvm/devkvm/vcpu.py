"""A vCPU fd: registers, MSRs (with KVM's counts), CPUID, the kvm_run page and typed
exits, the Python run and the C run loop."""
from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
import weakref
from dataclasses import dataclass, fields

from pykvm import exits as X
from pykvm.vcpu_base import VcpuBase, answer_bytes
from pykvm.errors import InvalidConfiguration, InvalidMsr, KvmIoctlError
from pykvm.devkvm import uapi
from pykvm.devkvm._native import KvmFd, address_of, ioctl, native
from pykvm.devkvm.system import get_msrs, pack_cpuid, unpack_cpuid
from pykvm.regs import (GPR_NAMES, DTable, Regs, Segment, Sregs, checked_regs, checked_sregs,
                        msr_index, msr_value, u64)

_REGS_FIELDS = GPR_NAMES + ("rip", "rflags")
_SEG_FIELDS = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g",
               "avl", "unusable")
_SREGS_SEGS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")
_U32 = struct.Struct("<I")
assert tuple(f.name for f in fields(Regs)) == _REGS_FIELDS   # same order as kvm_regs


@dataclass
class RunLoopResult:
    """What `KvmVcpu.run_loop` did: `handled` port exits answered in C, and the exit
    that made it return (None when it stopped because max_exits were handled)."""
    handled: int
    exit: X.Exit | None


_u64 = u64


def _close_vcpu(fd, run):
    """Unmap kvm_run, close the vCPU fd (KVM keeps the vCPU itself until its VM goes)."""
    run.close()
    os.close(fd)


_NO_PAYLOAD = {X.KVM_EXIT_IRQ_WINDOW_OPEN: X.IrqWindowOpen, X.KVM_EXIT_SET_TPR: X.SetTpr,
               X.KVM_EXIT_TPR_ACCESS: X.TprAccess, X.KVM_EXIT_NMI: X.Nmi,
               X.KVM_EXIT_DIRTY_RING_FULL: X.DirtyRingFull,
               X.KVM_EXIT_AP_RESET_HOLD: X.ApResetHold, X.KVM_EXIT_X86_BUS_LOCK: X.X86BusLock}
_UNION = 256                # sizeof kvm_run's exit union (its char padding[256])


def _decode_other_exit(reason, run, base):
    """The exits that need no answer from userspace, from struct kvm_run's union."""
    if reason in _NO_PAYLOAD:
        return _NO_PAYLOAD[reason]()
    if reason == X.KVM_EXIT_UNKNOWN:
        return X.UnknownExit(*struct.unpack_from("<Q", run, base))
    if reason == X.KVM_EXIT_EXCEPTION:
        return X.GuestException(*struct.unpack_from("<II", run, base))
    if reason == X.KVM_EXIT_DEBUG:                      # struct kvm_debug_exit_arch
        exception, _pad, pc, dr6, dr7 = struct.unpack_from("<IIQQQ", run, base)
        return X.Debug(exception, pc, dr6, dr7)
    if reason == X.KVM_EXIT_SYSTEM_EVENT:
        type_, ndata = struct.unpack_from("<II", run, base)
        ndata = min(ndata, 16)
        return X.SystemEvent(type_, struct.unpack_from(f"<{ndata}Q", run, base + 8))
    if reason == X.KVM_EXIT_IOAPIC_EOI:
        return X.IoapicEoi(run[base])
    if reason == X.KVM_EXIT_HYPERV:
        return X.Hyperv(_U32.unpack_from(run, base)[0], bytes(run[base + 8:base + _UNION]))
    if reason == X.KVM_EXIT_XEN:
        return X.Xen(_U32.unpack_from(run, base)[0], bytes(run[base + 8:base + _UNION]))
    if reason == X.KVM_EXIT_NOTIFY:
        return X.Notify(_U32.unpack_from(run, base)[0])
    if reason == X.KVM_EXIT_MEMORY_FAULT:
        return X.MemoryFault(*struct.unpack_from("<QQQ", run, base))
    if reason == X.KVM_EXIT_TDX:
        return X.Tdx(bytes(run[base:base + _UNION]))
    return X.Unsupported(reason)


class KvmVcpu(KvmFd, VcpuBase):
    """A vCPU on the host's KVM (from `KvmVm.create_vcpu`). close(), a with block, or
    dropping the last reference unmaps kvm_run and closes the fd."""

    def __init__(self, vm, fd, vcpu_id):
        self.vm = vm
        self.fd = fd
        self.id = vcpu_id
        self.image = None      # the GuestImage last loaded (ucall decoding uses it)
        self._pending = None   # an exit whose answer goes into kvm_run before the next run
        self._run = mmap.mmap(fd, vm.machine.vcpu_mmap_size, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        self._finalizer = weakref.finalize(self, _close_vcpu, fd, self._run)
        # kvm_run as C sees it (the system header's layout), for the exit decoder. A plain
        # address, not an exported buffer, so the mapping can still be closed; it is only
        # read by run(), which checks first that the vCPU is open.
        self._kvm_run = uapi.ffi.cast("struct kvm_run *", address_of(uapi.ffi, self._run))
        self._lock = threading.RLock()
        self._run_addr = None
        self._ffi, self._lib = native()

    # ---- registers -----------------------------------------------------------------------
    def get_regs(self):
        """KVM_GET_REGS -> Regs."""
        buf = bytearray(uapi.kvm_regs.size)
        ioctl(self.fd, uapi.KVM_GET_REGS, buf, "KVM_GET_REGS")
        return Regs(*uapi.kvm_regs.unpack(buf))

    def set_regs(self, regs):
        """KVM_SET_REGS from Regs."""
        checked = checked_regs(regs)
        vals = [checked[n] for n in _REGS_FIELDS]
        ioctl(self.fd, uapi.KVM_SET_REGS, bytearray(uapi.kvm_regs.pack(*vals)), "KVM_SET_REGS")

    def get_sregs(self):
        """KVM_GET_SREGS -> Sregs (the pending-interrupt bitmap is not kept)."""
        buf = bytearray(uapi.KVM_SREGS_SIZE)
        ioctl(self.fd, uapi.KVM_GET_SREGS, buf, "KVM_GET_SREGS")
        at = uapi.KVM_SREGS_OFFSETS
        segs = {name: Segment(**dict(zip(_SEG_FIELDS, uapi.kvm_segment.unpack_from(buf, at[name]))))
                for name in _SREGS_SEGS}
        tables = {}
        for name in ("gdt", "idt"):
            base, limit = uapi.kvm_dtable.unpack_from(buf, at[name])
            tables[name] = DTable(base=base, limit=limit)
        cr0, cr2, cr3, cr4, cr8, efer, apic_base, *_bitmap = \
            uapi.kvm_sregs_tail.unpack_from(buf, at["cr0"])
        return Sregs(**segs, **tables, cr0=cr0, cr2=cr2, cr3=cr3, cr4=cr4, cr8=cr8,
                     efer=efer, apic_base=apic_base)

    def set_sregs(self, sregs):
        """KVM_SET_SREGS from Sregs (no pending interrupt injected)."""
        sregs = checked_sregs(sregs)
        buf, at = bytearray(uapi.KVM_SREGS_SIZE), uapi.KVM_SREGS_OFFSETS
        for name in _SREGS_SEGS:
            seg = getattr(sregs, name)
            uapi.kvm_segment.pack_into(buf, at[name], *(getattr(seg, f) for f in _SEG_FIELDS))
        for name in ("gdt", "idt"):
            t = getattr(sregs, name)
            uapi.kvm_dtable.pack_into(buf, at[name], t.base, t.limit)
        uapi.kvm_sregs_tail.pack_into(buf, at["cr0"], *(_u64(getattr(sregs, n), n) for n in (
            "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")), 0, 0, 0, 0)
        ioctl(self.fd, uapi.KVM_SET_SREGS, buf, "KVM_SET_SREGS")

    # ---- MSRs ----------------------------------------------------------------------------
    def get_msrs(self, indices):
        """KVM_GET_MSRS. Returns (count, {index: value}) for the first `count` indices:
        KVM stops at the first MSR it cannot read, and says how far it got."""
        return get_msrs(self.fd, uapi.KVM_GET_MSRS, [msr_index(i) for i in indices],
                        "KVM_GET_MSRS")

    def get_msr(self, index):
        """One MSR; InvalidMsr if KVM cannot read it."""
        count, values = self.get_msrs([index])
        if count != 1:
            raise InvalidMsr(index, f"KVM_GET_MSRS cannot read MSR {index:#x}")
        return values[index]

    def set_msrs(self, values):
        """KVM_SET_MSRS from {index: value} (in dict order). Returns the count KVM
        processed: it stops at the first MSR it refuses."""
        items = [(msr_index(i), v) for i, v in dict(values).items()]
        items = [(i, msr_value(i, v)) for i, v in items]
        buf = bytearray(uapi.kvm_msrs.pack(len(items), 0))
        for i, v in items:
            buf += uapi.kvm_msr_entry.pack(i, 0, v)
        return ioctl(self.fd, uapi.KVM_SET_MSRS, buf, "KVM_SET_MSRS")

    def set_msr(self, index, value):
        """One MSR; InvalidMsr if KVM refuses it."""
        if self.set_msrs({index: value}) != 1:
            raise InvalidMsr(index, f"KVM_SET_MSRS refused MSR {index:#x} = {value:#x}")

    # ---- CPUID ---------------------------------------------------------------------------
    def set_cpuid(self, entries):
        """KVM_SET_CPUID2 (before the first run)."""
        ioctl(self.fd, uapi.KVM_SET_CPUID2, pack_cpuid(entries), "KVM_SET_CPUID2")

    def get_cpuid(self, max_entries=256):
        """KVM_GET_CPUID2: what was set."""
        buf = bytearray(uapi.kvm_cpuid2.pack(max_entries, 0))
        buf += bytes(max_entries * uapi.kvm_cpuid_entry2.size)
        ioctl(self.fd, uapi.KVM_GET_CPUID2, buf, "KVM_GET_CPUID2")
        return unpack_cpuid(buf)

    # ---- machine checks, ONE_REG, MP state -----------------------------------------------
    def setup_mce(self, mcg_cap):
        """KVM_X86_SETUP_MCE: the guest's IA32_MCG_CAP (bank count in bits 7:0)."""
        ioctl(self.fd, uapi.KVM_X86_SETUP_MCE, bytearray(uapi.u64.pack(_u64(mcg_cap, "mcg_cap"))),
              "KVM_X86_SETUP_MCE")

    def _one_reg(self, request, reg_id, value, what):
        ffi = self._ffi
        val = ffi.new("uint64_t *", value)
        arg = bytearray(uapi.kvm_one_reg.pack(_u64(reg_id, "register id"),
                                              int(ffi.cast("uintptr_t", val))))
        ioctl(self.fd, request, arg, f"{what}({reg_id:#x})")
        return val[0]

    def get_one_reg(self, reg_id):
        """KVM_GET_ONE_REG of a u64 register (uapi.KVM_X86_REG_MSR(index) for an MSR)."""
        return self._one_reg(uapi.KVM_GET_ONE_REG, reg_id, 0, "KVM_GET_ONE_REG")

    def set_one_reg(self, reg_id, value):
        """KVM_SET_ONE_REG of a u64 register."""
        self._one_reg(uapi.KVM_SET_ONE_REG, reg_id, _u64(value, "register value"),
                      "KVM_SET_ONE_REG")

    def get_reg_list(self):
        """KVM_GET_REG_LIST: the ids of the registers ONE_REG has beyond the MSRs."""
        n = 0
        while True:
            buf = bytearray(uapi.kvm_reg_list.pack(n)) + bytes(8 * n)
            try:
                ioctl(self.fd, uapi.KVM_GET_REG_LIST, buf, "KVM_GET_REG_LIST")
            except KvmIoctlError as e:
                wanted = uapi.kvm_reg_list.unpack_from(buf)[0]
                if e.errno != errno.E2BIG or wanted <= n or wanted > 4096:
                    raise
                n = wanted
                continue
            count = uapi.kvm_reg_list.unpack_from(buf)[0]
            return list(struct.unpack_from(f"<{count}Q", buf, 8))

    def get_mp_state(self):
        """KVM_GET_MP_STATE: a KVM_MP_STATE_* number."""
        buf = bytearray(uapi.kvm_mp_state.size)
        ioctl(self.fd, uapi.KVM_GET_MP_STATE, buf, "KVM_GET_MP_STATE")
        return uapi.kvm_mp_state.unpack(buf)[0]

    def set_mp_state(self, state):
        """KVM_SET_MP_STATE (e.g. KVM_MP_STATE_RUNNABLE to start an AP)."""
        ioctl(self.fd, uapi.KVM_SET_MP_STATE, bytearray(uapi.kvm_mp_state.pack(state)),
              f"KVM_SET_MP_STATE({state})")

    # ---- running -------------------------------------------------------------------------
    def _complete_pending(self):
        """Copy what the caller answered for the last exit into kvm_run."""
        pend, self._pending = self._pending, None
        if pend is None:
            return
        ex, off = pend
        run = self._run
        data = answer_bytes(ex)
        if data is not None:
            run[off:off + len(data)] = data
        elif isinstance(ex, X.RdMsr):
            run[uapi.KVM_RUN_MSR_ERROR] = 1 if ex.error else 0
            struct.pack_into("<Q", run, uapi.KVM_RUN_MSR_DATA, _u64(ex.data, "RdMsr.data"))
        elif isinstance(ex, X.WrMsr):
            run[uapi.KVM_RUN_MSR_ERROR] = 1 if ex.error else 0

    def _decode_exit(self):
        """The typed exit in kvm_run (pykvm.exits.decode_kvm_run); remembers the ones that
        need an answer and where the answer goes."""
        ex = X.decode_kvm_run(self._kvm_run, self._io_data, self._decode_other_exit)
        if isinstance(ex, X.Io):
            if ex.is_in:
                self._pending = (ex, self._kvm_run.io.data_offset)
        elif isinstance(ex, X.Mmio):
            if not ex.is_write:
                self._pending = (ex, uapi.KVM_RUN_MMIO_DATA)
        elif isinstance(ex, (X.RdMsr, X.WrMsr)):
            self._pending = (ex, uapi.KVM_RUN_EXIT)
        return ex

    def _io_data(self, run, n):
        """Port I/O data: KVM puts it at io.data_offset of the vCPU mapping."""
        off = run.io.data_offset
        return bytearray(self._run[off:off + n])

    def _decode_other_exit(self, reason):
        return _decode_other_exit(reason, self._run, uapi.KVM_RUN_EXIT)

    def run(self, max_insns=None):
        """KVM_RUN once; returns the typed exit. Answer an Io IN (`exit.data`), MMIO read,
        or RdMsr/WrMsr (`.data`, `.error`) before calling run() again. A signal gives
        Intr. `max_insns`: only None or 0 (no bound): the kernel has no instruction budget
        for a run, so any other value is refused rather than ignored."""
        if max_insns not in (None, 0) or isinstance(max_insns, bool):
            raise InvalidConfiguration(
                f"max_insns={max_insns!r}: /dev/kvm cannot bound a run by guest "
                f"instructions; pass None, or end the run from another thread (a signal "
                f"to the vCPU thread gives Intr)")
        with self._lock:
            self._check_open()
            self._check_runnable()
            self._complete_pending()
            # Through cffi rather than fcntl.ioctl: ~4 us less per exit on kvm_pvm, where
            # any userspace work between two KVM_RUNs costs several times its own time.
            rc = self._lib.pk_vmm_kvm_run(self.fd)
            if rc < 0:
                if -rc == errno.EINTR:
                    return X.Intr()
                raise KvmIoctlError(-rc, "KVM_RUN")
            return self._decode_exit()

    def run_loop(self, devices=None, max_exits=0):
        """KVM_RUN from C, again and again: port I/O to `devices` (a PortDevices) is
        answered there without coming back to Python. Returns RunLoopResult after any
        other exit, or with exit None once `max_exits` (0 = no limit) were handled."""
        from pykvm.devkvm.runloop import PortDevices
        self._check_open()
        if devices is not None and not isinstance(devices, PortDevices):
            raise TypeError(f"devices must be PortDevices, got {devices!r}")
        if not isinstance(max_exits, int) or max_exits < 0:
            raise InvalidConfiguration(f"max_exits must be an int >= 0, got {max_exits!r}")
        ffi, lib = self._ffi, self._lib
        self._check_runnable()
        self._complete_pending()
        if self._run_addr is None:
            self._run_addr = address_of(ffi, self._run)
        res = ffi.new("struct pk_vmm_loop_result *")
        devs = devices._devs if devices is not None else ffi.NULL
        rc = lib.pk_vmm_run_loop(self.fd, ffi.cast("void *", self._run_addr), devs, max_exits,
                                 res)
        if rc < 0:
            if -rc == errno.EINTR:
                return RunLoopResult(res.handled, X.Intr())
            raise KvmIoctlError(-rc, "KVM_RUN (C run loop)")
        if res.stop == lib.PK_VMM_STOP_BUDGET:
            return RunLoopResult(res.handled, None)
        return RunLoopResult(res.handled, self._decode_exit())

    # ---- lifetime ------------------------------------------------------------------------
    def _check_open(self):
        if self.fd is None:
            raise KvmIoctlError(errno.EBADF, f"vCPU {self.id} is closed")

    def close(self):
        """Unmap kvm_run and close the vCPU fd. Idempotent. KVM keeps the vCPU (and its
        id) until the VM goes."""
        if self.fd is not None:
            self.fd = None
            self._run = None
            self._finalizer()
        self.vm._vcpus.discard(self)

    def __repr__(self):
        return f"KvmVcpu({self.id}, fd {self.fd})"
