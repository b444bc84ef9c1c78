"""The host's real /dev/kvm as a pykvm backend, with the same VM/vCPU shape as the
simulated machine. One class per fd level (rust-vmm's kvm-ioctls layout)::

    from pykvm import guest
    from pykvm.devkvm import KvmMachine

    @guest.program
    def image(a):
        a.sync(42)
        a.done()

    with KvmMachine() as m:                 # opens /dev/kvm, checks API version 12
        print(m.vendor)                     # kvm_intel, kvm_amd or kvm_pvm
        vm = m.create_vm()
        vcpu = vm.create_vcpu()             # CPUID = KVM_GET_SUPPORTED_CPUID
        vcpu.load(image)                    # 2 MiB slot at GPA 0, SREGS, REGS, MSRs
        uc = guest.run_ucall(vcpu)          # SYNC(42)
        assert guest.run_ucall(vcpu).cmd == guest.UcallCmd.DONE
        count, values = vcpu.get_msrs([0xC0000102])   # count: as far as KVM got

Every ioctl failure raises pykvm.errors.KvmIoctlError(errno, what was being done);
closing the machine closes its VMs, vCPUs and mappings.
"""
from pykvm.devkvm.runloop import PortDevices
from pykvm.devkvm.system import CpuidEntry, KvmMachine, vendor_modules
from pykvm.devkvm.vcpu import KvmVcpu, RunLoopResult
from pykvm.devkvm.vm import GuestMemory, KvmVm, MemorySlot, MsrFilterRange

__all__ = ["KvmMachine", "KvmVm", "KvmVcpu", "CpuidEntry", "GuestMemory", "MemorySlot",
           "MsrFilterRange", "PortDevices", "RunLoopResult", "vendor_modules"]
