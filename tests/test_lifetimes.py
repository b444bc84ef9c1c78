"""What an object holds, it gives back: on close(), on leaving a with block, and when it is
garbage-collected. On /dev/kvm that is the /dev/kvm fd, each VM fd with its guest memory
mappings, each vCPU fd with its kvm_run mapping; on the simulated machine, the machine,
its VMs' kernel memory and guest memory. 2,000 of each are created and dropped and the
process's fds (/proc/self/fd), mappings (/proc/self/maps) and RSS must be back where they
started. A child keeps its parent alive, never the other way round."""
import gc
import os

import pytest

import pykvm
from pykvm import guest
from pykvm.devkvm import KvmMachine

AVAILABLE, REASON = KvmMachine.available()
needs_kvm = pytest.mark.skipif(not AVAILABLE, reason=f"needs /dev/kvm: {REASON}")

N = 2000                          # machines, each with a VM and a vCPU
N_VMS = 1000                      # VMs dropped on one machine (the case)
GUEST_MEMORY = 0x40000            # touched in full each time: a leak would show in RSS
RSS_SLACK = 48 << 20              # allocator and interpreter noise, far below a leak
MAPS_SLACK = 16


def _counts():
    gc.collect()
    with open("/proc/self/maps") as f:
        maps = sum(1 for _ in f)
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return len(os.listdir("/proc/self/fd")), maps, rss


def _assert_back(before, after, what):
    fds0, maps0, rss0 = before
    fds1, maps1, rss1 = after
    assert fds1 <= fds0, f"{what}: {fds1 - fds0} fds left open"
    assert maps1 <= maps0 + MAPS_SLACK, f"{what}: {maps1 - maps0} mappings left"
    assert rss1 <= rss0 + RSS_SLACK, f"{what}: RSS grew by {(rss1 - rss0) >> 20} MiB"


def _kvm_round(machine=None):
    m = machine or KvmMachine()
    vm = m.create_vm()
    vm.add_memory(0, GUEST_MEMORY)
    vm.memory.write(0, b"\xf4" * GUEST_MEMORY)
    vm.create_vcpu()


def _sim_round(machine=None):
    m = machine or pykvm.Machine(cpus=2, vendor="vmx")
    vm = m.create_vm()
    vm.add_memory(0, GUEST_MEMORY)
    vm.memory.write(0, b"\xf4" * GUEST_MEMORY)
    vm.create_vcpu()


@needs_kvm
def test_kvm_machines_vms_vcpus_dropped_free_everything():
    for _ in range(20):                 # warm caches, imports and the allocator first
        _kvm_round()
    before = _counts()
    for _ in range(N):
        _kvm_round()
    _assert_back(before, _counts(), f"{N} /dev/kvm machines with a VM and a vCPU")


@needs_kvm
def test_kvm_vms_dropped_while_their_machine_lives_free_everything():
    m = KvmMachine()
    for _ in range(20):
        _kvm_round(m)
    before = _counts()
    for _ in range(N_VMS):
        _kvm_round(m)
    _assert_back(before, _counts(), f"{N_VMS} VMs dropped on one /dev/kvm machine")
    assert m.vms == []
    m.close()


def test_simulated_machines_vms_vcpus_dropped_free_everything():
    for _ in range(20):
        _sim_round()
    before = _counts()
    for _ in range(N):
        _sim_round()
    _assert_back(before, _counts(), f"{N} simulated machines with a VM and a vCPU")


def test_simulated_vms_dropped_while_their_machine_lives_free_everything():
    m = pykvm.Machine(cpus=2, vendor="svm")
    for _ in range(20):
        _sim_round(m)
    before, kmem = _counts(), m.memory()["in_use"]
    for _ in range(N_VMS):
        _sim_round(m)
    _assert_back(before, _counts(), f"{N_VMS} VMs dropped on one simulated machine")
    assert m.vms == []
    assert m.memory()["in_use"] == kmem          # every VM's kernel memory came back


@pytest.mark.parametrize("backend", [pytest.param("kvm", marks=needs_kvm), "sim"])
def test_close_and_with_free_at_once(backend):
    fds0, maps0, _ = _counts()
    with (KvmMachine() if backend == "kvm" else pykvm.Machine(cpus=1)) as m:
        vm = m.create_vm()
        vm.add_memory(0, GUEST_MEMORY)
        vcpu = vm.create_vcpu()
        vm.close()
        vm.close()                               # idempotent
        assert vm.closed
        with pytest.raises(pykvm.PykvmError):
            vcpu.get_regs()
        with m.create_vm() as vm2:
            vm2.create_vcpu()
    assert m.closed
    with pytest.raises(pykvm.PykvmError):
        m.create_vm()
    fds1, maps1, _ = _counts()
    assert (fds1, maps1) == (fds0, maps0)


@pytest.mark.parametrize("backend", [pytest.param("kvm", marks=needs_kvm), "sim"])
def test_a_vcpu_keeps_its_vm_and_machine_alive(backend):
    @guest.program
    def image(a):
        a.sync(7)
        a.done()

    def make():
        m = KvmMachine() if backend == "kvm" else pykvm.Machine(cpus=1)
        vcpu = m.create_vm().create_vcpu()
        vcpu.load(image)
        return vcpu                              # machine and VM dropped here

    vcpu = make()
    gc.collect()
    assert guest.run_ucall(vcpu, image).args[0] == 7
    assert vcpu.vm.vcpus == [vcpu]
