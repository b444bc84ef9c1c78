"""World-switch round trips on the simulated machine, side by side in one run.

- fast path: a guest loop of WRMSR TSC_DEADLINE, each exit handled in the kernel and the
  guest re-entered without prepare/put (target <= 100 ns per round trip);
- exit to userspace handled in C (an OUT to a sink port in csrc/vmm's loop) and re-entered
  (target <= 200 ns on vmx, <= 150 ns on svm);
- Python-level vcpu.run() per exit (target <= 1 us), against a Python
  fcntl.ioctl(KVM_RUN) round trip on the host's /dev/kvm (bench_kvm.py).
Each test reports ns per round trip in extra_info; compare them as ratios in one run.
Host instructions per round trip, repeatable whatever the load (valgrind's callgrind):
  python benchmarks/bench_switch.py callgrind [fastpath|userspace_c|python_run ...]
"""
import pytest

import pykvm
from pykvm import guest
from pykvm.devkvm.runloop import PortDevices

N = 20_000
SINK = 0xE1


def _fastpath_image(n):
    def body(a):
        a.mov("ecx", 0x6E0)
        a.mov("r8d", n)
        top = a.here()
        a.xor("eax", "eax")
        a.mov("edx", 1)
        a.wrmsr()
        a.dec("r8d")
        a.jnz(top)
        a.sync()
        a.done()
    return guest.program(body)


def _out_loop_image():
    def body(a):
        top = a.here()
        a.out(SINK, "al")
        a.jmp(top)
    return guest.program(body)


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_fastpath_round_trip(benchmark, vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    image = _fastpath_image(N)
    vcpu = m.create_vm().create_vcpu()

    def run():
        vcpu.load(image)
        guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC)
    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["exits_per_round"] = N          # benchmarks/report.py divides by it
    benchmark.extra_info["ns_per_round_trip"] = benchmark.stats.stats.min * 1e9 / N


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_userspace_exit_in_c(benchmark, vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(_out_loop_image())
    devs = PortDevices()
    devs.add_sink(SINK)

    def run():
        r = vcpu.run_loop(devs, max_exits=N)
        assert r.handled == N
    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["exits_per_round"] = N          # benchmarks/report.py divides by it
    benchmark.extra_info["ns_per_round_trip"] = benchmark.stats.stats.min * 1e9 / N


@pytest.mark.parametrize("vendor", ["vmx", "svm"])
def test_python_run_per_exit(benchmark, vendor):
    m = pykvm.Machine(cpus=1, vendor=vendor)
    vcpu = m.create_vm().create_vcpu()
    vcpu.load(_out_loop_image())
    benchmark(vcpu.run)
    benchmark.extra_info["exits_per_round"] = 1


# ---- host instructions per round trip, under callgrind ----

def _scenario(name, vendor, n):
    """Set up a scenario and return a function doing n round trips."""
    m = pykvm.Machine(cpus=1, vendor=vendor)
    vcpu = m.create_vm().create_vcpu()
    if name == "fastpath":
        image = _fastpath_image(n)

        def go():
            vcpu.load(image)
            guest.run_ucall(vcpu, image, guest.UcallCmd.SYNC)
        return go
    vcpu.load(_out_loop_image())
    if name == "userspace_c":
        devs = PortDevices()
        devs.add_sink(SINK)
        return lambda: vcpu.run_loop(devs, max_exits=n)

    def python_run():
        for _ in range(n):
            vcpu.run()
    return python_run


TOGGLE = {"fastpath": "pk_vcpu_run_ex", "userspace_c": "pk_sim_run_loop", "python_run": None}


def _callgrind_ir(name, vendor, n):
    import pathlib
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "cg.out"
        toggle = [f"--toggle-collect={TOGGLE[name]}"] if TOGGLE[name] else []
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        *toggle, sys.executable, __file__, "_run", name, vendor, str(n)],
                       check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no totals")


def callgrind(names):
    """Host instructions per round trip: (Ir(2n) - Ir(n)) / n, so set-up cancels out."""
    n = 2000
    for name in names:
        for vendor in ("vmx", "svm"):
            per = (_callgrind_ir(name, vendor, 2 * n) - _callgrind_ir(name, vendor, n)) / n
            print(f"{name:12} {vendor}: {per:8.0f} host instructions per round trip",
                  flush=True)


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["_run"]:
        _scenario(sys.argv[2], sys.argv[3], int(sys.argv[4]))()
    elif sys.argv[1:2] == ["callgrind"]:
        callgrind(sys.argv[2:] or list(TOGGLE))
    else:
        sys.exit(__doc__)
