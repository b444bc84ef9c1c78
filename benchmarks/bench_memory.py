"""Memory of an idle vCPU on the simulated machine, beside its guest memory: the process's
RSS and the simulated kernel's memory grown by creating VCPUS vCPUs (no guest memory at
all), divided by VCPUS. Target: <= 64 KiB per vCPU. `extra_info` carries the figures;
the timed part is the creation itself. Run:
pytest benchmarks/bench_memory.py --benchmark-columns=min,mean,rounds

What an idle vCPU costs: its struct vcpu_vmx / vcpu_svm with the VMCS or VMCB and MSR
bitmap/permission map (kernel memory), its CPUID table, its thread's task, its locks, and
the Python Vcpu object with its cffi handles. The pCPUs' decode caches are per pCPU and
not counted here."""
import gc
import os

import pytest

import pykvm

VCPUS = 1000
TARGET_KIB = 64


def _rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(vendor):
    """(RSS, kernel memory) in KiB per vCPU for VCPUS idle vCPUs on a fresh machine."""
    m = pykvm.Machine(cpus=2, vendor=vendor)
    vm = m.create_vm()
    vm.create_vcpu()                         # warm: first task chunk, slabs, code paths
    rss0, kmem0 = _rss(), m.memory()["in_use"]
    vcpus = [vm.create_vcpu() for _ in range(VCPUS)]
    rss1, kmem1 = _rss(), m.memory()["in_use"]
    assert len(vcpus) == VCPUS
    return (rss1 - rss0) / VCPUS / 1024, (kmem1 - kmem0) / VCPUS / 1024


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_memory_per_idle_vcpu(benchmark, vendor):
    rss_kib, kmem_kib = _measure(vendor)

    def setup():
        vm = pykvm.Machine(cpus=2, vendor=vendor).create_vm()
        return (vm,), {}

    def create(vm):
        for _ in range(VCPUS):
            vm.create_vcpu()

    benchmark.pedantic(create, setup=setup, rounds=3, iterations=1)
    benchmark.extra_info.update(vcpus=VCPUS, rss_kib_per_vcpu=round(rss_kib, 1),
                                kernel_kib_per_vcpu=round(kmem_kib, 1),
                                target_kib_per_vcpu=TARGET_KIB,
                                met=rss_kib <= TARGET_KIB)
