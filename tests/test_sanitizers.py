"""The C code under AddressSanitizer and UBSan: the module is rebuilt with both, and the
tests that drive the most C (world switch, hardware, conformance, the interpreter's fuzz
and differential tests, several threads on one machine creating and destroying VMs,
bad input refused, the limits) run against it in a subprocess. Any report fails the run."""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUBSET = ["test_world_switch.py", "test_hw_msr.py", "test_hw_vmx.py", "test_hw_svm.py",
          "test_conform.py", "test_exec_diff.py", "test_exec.py", "test_check.py",
          "test_threads.py", "test_ioctl_validation.py", "test_limits.py",
          "test_workloads.py"]


def _libasan():
    cc = os.environ.get("CC", "gcc")
    try:
        path = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.skipif(not (ROOT / "csrc").is_dir(), reason="needs the source tree (csrc/)")
def test_suite_under_asan_ubsan(tmp_path):
    asan = _libasan()
    if asan is None:
        pytest.skip("the C compiler has no AddressSanitizer runtime (libasan.so)")
    out = tmp_path / "build"
    # The Python package next to the instrumented module, so `import pykvm` finds both.
    shutil.copytree(ROOT / "pykvm", out / "pykvm",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    # The /dev/kvm ABI module holds no code to instrument: the installed one goes along.
    uapi = importlib.util.find_spec("pykvm._kvm_uapi")
    if uapi is not None:
        shutil.copy(uapi.origin, out / "pykvm")
    env = dict(os.environ, PYKVM_SANITIZE="1", PYKVM_BUILD_OUT=str(out))
    build = subprocess.run([sys.executable, "pykvm/_build.py"], cwd=ROOT, env=env,
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    tests = [str(ROOT / "tests" / t) for t in SUBSET if (ROOT / "tests" / t).exists()]
    # Reports go to files: pytest's capture of fd 2 would swallow them when the run dies.
    logs = tmp_path / "san"
    # PYKVM_SANITIZE also instruments the test-only module tests/hwtest.py builds.
    env = dict(os.environ, PYTHONPATH=str(out), LD_PRELOAD=asan, PYKVM_SANITIZE="1",
               ASAN_OPTIONS=f"detect_leaks=0:log_path={logs}",
               UBSAN_OPTIONS=f"print_stacktrace=1:halt_on_error=1:log_path={logs}")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "--rootdir", str(tmp_path), *tests],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    san = "".join(p.read_text() for p in tmp_path.glob("san*"))
    report = san[:6000] + run.stdout[-3000:] + run.stderr[-3000:]
    assert not san, report
    assert run.returncode == 0, report
    assert " passed" in run.stdout and " failed" not in run.stdout, report
    assert "runtime error" not in run.stderr and "AddressSanitizer" not in run.stderr, report
    # The instrumented module is the one that ran.
    assert str(out) in subprocess.run(
        [sys.executable, "-c", "import pykvm._pykvm as m; print(m.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True).stdout
