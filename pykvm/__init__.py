"""pykvm: KVM's x86 world switch, in user space, in Python's hands.

A tour (every step runs on the simulated machine; `Machine.kvm()` gives the host's
/dev/kvm with the same VM/vCPU API):

1. A machine with KVM loaded::

       import pykvm
       m = pykvm.Machine(cpus=2, vendor="vmx", cpu_model="skylake")

2. A VM and a vCPU::

       vm = m.create_vm()
       vcpu = vm.create_vcpu()

3. A guest program, selftest style::

       from pykvm import guest
       image = guest.program(lambda a: (a.rdmsr_safe(0xc0000102), a.sync("rax"), a.done()))
       vcpu.load(image)

4. Set MSRs like KVM_SET_MSRS (the count processed comes back)::

       assert vcpu.set_msrs({0xc0000102: 0x1234}) == 1

5. Run, and match on the typed exit::

       uc = guest.run_ucall(vcpu, image)      # Io exit on the ucall port, decoded
       assert uc.args[0] == 0x1234

6. What it cost, by path::

       m.costs()["VCPU_RUN"]["ops"]            # {'WRMSR': ..., 'VMRESUME': ...}
"""
from . import exits, guest, regs
from .errors import (GuestAssertion, InvalidConfiguration, InvalidMemory, InvalidMsr,
                     KvmIoctlError, KvmUnavailable, PykvmError, UnknownVendor)
from .machine import Machine, Vcpu, Vm

# Subpackages loaded on first use, so that `pykvm.devkvm.KvmMachine` or
# `pykvm.study.run_study` work after a bare `import pykvm` without paying for them at import.
_LAZY = ("check", "conform", "devkvm", "oracle", "params", "profiles", "study", "vendors",
         "workloads")


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

__version__ = "0.1.0"
__all__ = ["Machine", "Vm", "Vcpu", "exits", "guest", "regs", "PykvmError", "InvalidMsr",
           "InvalidConfiguration", "InvalidMemory", "UnknownVendor", "KvmIoctlError",
           "KvmUnavailable", "GuestAssertion"]
