"""Limits as upstream's: KVM_MAX_VCPUS (1024) vCPUs per VM, vCPU ids below
KVM_MAX_VCPU_IDS (4096) and unique in their VM (kvm_vm_ioctl_create_vcpu: EINVAL, EEXIST),
as many VMs as memory holds. A refused create says which limit it hit. On /dev/kvm a
closed vCPU keeps its id (KVM frees vCPUs with their VM), so the next create_vcpu() takes
another one."""
import errno

import pytest

import pykvm
from pykvm import guest
from pykvm.devkvm import KvmMachine
from pykvm.errors import KvmIoctlError, PykvmError

AVAILABLE, REASON = KvmMachine.available()


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_kvm_max_vcpus_per_vm(vendor):
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    vcpus = [vm.create_vcpu() for _ in range(1024)]
    assert sorted(v.id for v in vcpus) == list(range(1024))
    with pytest.raises(PykvmError, match="KVM_MAX_VCPUS") as e:
        vm.create_vcpu()
    assert e.value.errno == errno.EINVAL
    # Every one of them is a working vCPU (spot check, spread over both pCPUs).
    @guest.program
    def image(a):
        a.sync(0x55)
        a.done()
    for v in (vcpus[0], vcpus[513], vcpus[1023]):
        v.load(image)
        assert guest.run_ucall(v, image).args[0] == 0x55
    assert m.check() is None and m.host_bugs == 0


def test_vcpu_ids_as_kvm_vm_ioctl_create_vcpu():
    vm = pykvm.Machine(cpus=1).create_vm()
    assert vm.create_vcpu(4095).id == 4095
    with pytest.raises(PykvmError, match="KVM_MAX_VCPU_IDS") as e:
        vm.create_vcpu(4096)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(PykvmError, match="id 4095") as e:
        vm.create_vcpu(4095)
    assert e.value.errno == errno.EEXIST
    assert [vm.create_vcpu().id for _ in range(3)] == [0, 1, 2]      # lowest free ids
    with pytest.raises(pykvm.InvalidConfiguration, match="vcpu_id"):
        vm.create_vcpu(-1)


def test_a_dropped_vcpu_keeps_its_id_until_the_vm_goes():
    vm = pykvm.Machine(cpus=1).create_vm()
    v0 = vm.create_vcpu()
    del v0
    assert vm.create_vcpu().id == 1
    with pytest.raises(PykvmError) as e:
        vm.create_vcpu(0)
    assert e.value.errno == errno.EEXIST


def test_vms_per_machine_bounded_by_memory_alone():
    """Past the old fixed arrays (31 VMs, about 30 vCPUs per machine)."""
    m = pykvm.Machine(cpus=2, vendor="vmx")
    vms = [m.create_vm() for _ in range(300)]
    for vm in vms:
        vm.create_vcpu()
    assert len(m.vms) == 300
    used = m.memory()
    assert used["reserved"] >= 64 << 20 and used["in_use"] < used["reserved"]


@pytest.mark.skipif(not AVAILABLE, reason=f"needs /dev/kvm: {REASON}")
def test_kvm_closed_vcpu_id_is_not_reused():
    with KvmMachine() as m:
        vm = m.create_vm()
        v0 = vm.create_vcpu()
        v0.close()
        assert vm.create_vcpu().id == 1
        with pytest.raises(KvmIoctlError) as e:
            vm.create_vcpu(0)
        assert e.value.errno == errno.EEXIST
