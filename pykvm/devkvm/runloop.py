"""Port devices that the C run loop (csrc/vmm/kvm_run_loop.c) answers without returning
to Python: a sink that counts OUTs and a constant that answers INs."""
from __future__ import annotations

from pykvm.errors import InvalidConfiguration
from pykvm.devkvm._native import native


class PortDevices:
    """A table of up to PK_VMM_MAX_PORT_DEVS port devices for `KvmVcpu.run_loop`.

    >>> import pykvm
    >>> from pykvm import guest
    >>> @guest.program
    ... def image(a):
    ...     top = a.here("top")
    ...     a.out(0xE1, "al")
    ...     a.jmp(top)
    >>> vcpu = pykvm.Machine(cpus=1).create_vm().create_vcpu()   # or on KvmMachine()
    >>> vcpu.load(image)
    >>> devs = PortDevices()
    >>> devs.add_sink(0xE1)          # OUT 0xE1 is counted in C
    >>> devs.add_const(0x40, 0x1234) # IN 0x40 returns 0x1234 (its low `size` bytes)
    >>> r = vcpu.run_loop(devs, max_exits=1000)
    >>> devs.count(0xE1)
    1000
    """

    def __init__(self):
        ffi, lib = native()
        self._lib = lib
        self._devs = ffi.new("struct pk_vmm_devs *")
        self._index = {}

    def _add(self, port, kind, value):
        if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise InvalidConfiguration(f"port must be 0..0xffff, got {port!r}")
        if port in self._index:
            raise InvalidConfiguration(f"port {port:#x} already has a device")
        if len(self._index) >= self._lib.PK_VMM_MAX_PORT_DEVS:
            raise InvalidConfiguration(f"at most {self._lib.PK_VMM_MAX_PORT_DEVS} port "
                                       f"devices")
        if not isinstance(value, int) or not 0 <= value < 2**64:
            raise InvalidConfiguration(f"value must be a 64-bit unsigned int, got {value!r}")
        i = self._devs.nr
        dev = self._devs.dev[i]
        dev.port, dev.kind, dev.value, dev.count = port, kind, value, 0
        self._devs.nr = i + 1
        self._index[port] = i

    def add_sink(self, port):
        """OUT to `port` is counted (and its last value kept); IN returns to Python."""
        self._add(port, self._lib.PK_VMM_DEV_SINK, 0)

    def add_const(self, port, value):
        """IN from `port` returns `value`; OUT returns to Python."""
        self._add(port, self._lib.PK_VMM_DEV_CONST, value)

    def _dev(self, port):
        if port not in self._index:
            raise InvalidConfiguration(f"no device on port {port:#x}")
        return self._devs.dev[self._index[port]]

    def count(self, port):
        """Accesses handled by the device on `port` since it was added or reset."""
        return int(self._dev(port).count)

    def value(self, port):
        """A sink's last value written, or a constant's value."""
        return int(self._dev(port).value)

    def reset_counts(self):
        for i in self._index.values():
            self._devs.dev[i].count = 0

    def ports(self):
        return sorted(self._index)
