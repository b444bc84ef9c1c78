"""KVM_RUN round trips on the host's /dev/kvm for one guest program (an endless OUT loop):
from the C run loop, from Python through vcpu.run(), and from Python through a bare
fcntl.ioctl. Each benchmark round does EXITS exits; extra_info has the
per-exit figure (`us_per_exit_min`, `us_per_exit_mean`). Run: pytest benchmarks/bench_kvm.py

On kvm_pvm the guest's two instructions per exit are emulated (~0.6 us each), so the
difference between rows is the userspace side of the round trip."""
import fcntl

import pytest

from pykvm import exits as X
from pykvm import guest
from pykvm.devkvm import KvmMachine, PortDevices, uapi
from pykvm.devkvm._native import native

AVAILABLE, REASON = KvmMachine.available()
pytestmark = pytest.mark.skipif(not AVAILABLE, reason=REASON)

EXITS = 200
PORT = 0xE1


@guest.program
def OUT_LOOP(a):
    top = a.here("top")
    a.out(PORT, "al")
    a.jmp(top)


@pytest.fixture(scope="module")
def vcpu():
    with KvmMachine() as m:
        vm = m.create_vm()
        vcpu = vm.create_vcpu()
        vcpu.load(OUT_LOOP)
        yield vcpu


def _per_exit(benchmark):
    """Per-exit figures of both statistics, named for the one they come from (benchmarks/
    report.py builds the README's tables from them)."""
    benchmark.extra_info["exits_per_round"] = EXITS
    if benchmark.stats:
        st = benchmark.stats.stats
        benchmark.extra_info["us_per_exit_min"] = round(st.min / EXITS * 1e6, 3)
        benchmark.extra_info["us_per_exit_mean"] = round(st.mean / EXITS * 1e6, 3)


def test_out_round_trip_c_loop(benchmark, vcpu):
    devs = PortDevices()
    devs.add_sink(PORT)

    def rounds():
        r = vcpu.run_loop(devs, max_exits=EXITS)
        assert r.exit is None and r.handled == EXITS
    benchmark(rounds)
    _per_exit(benchmark)


def test_out_round_trip_python_run(benchmark, vcpu):
    def rounds():
        for _ in range(EXITS):
            ex = vcpu.run()
        assert isinstance(ex, X.Io) and ex.port == PORT
    benchmark(rounds)
    _per_exit(benchmark)


def test_out_round_trip_python_bare_ioctl(benchmark, vcpu):
    fd, req = vcpu.fd, uapi.KVM_RUN

    def rounds():
        for _ in range(EXITS):
            fcntl.ioctl(fd, req, 0)
    benchmark(rounds)
    _per_exit(benchmark)


def test_out_round_trip_one_kvm_run_per_cffi_call(benchmark, vcpu):
    _ffi, lib = native()
    fd = vcpu.fd

    def rounds():
        for _ in range(EXITS):
            assert lib.pk_vmm_kvm_run(fd) == 0
    benchmark(rounds)
    _per_exit(benchmark)
