"""A third-party vendor with C ops of its own (tests/plugins/leaky_vmx) installs through
the `pykvm.vendors` entry point and runs through conform and check: its C module
registers itself with pykvm's module loader, and no line of common code names it."""
import json
import os
import pathlib
import subprocess
import sys

import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLUGIN = pathlib.Path(__file__).resolve().parent / "plugins" / "leaky_vmx"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    src = tmp_path_factory.mktemp("src") / "leaky_vmx"
    shutil.copytree(PLUGIN, src)              # its build leaves nothing in the tree
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(src)], check=True,
                   env=dict(os.environ, PYKVM_SRC=str(ROOT)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(target), os.environ.get("PYTHONPATH", "")]))


# Run from a directory without a pykvm/ in it: from the repository root, `-m` and `-c`
# would import the source tree (unbuilt under a non-editable install) instead of the
# installed package.
CWD = pathlib.Path(__file__).resolve().parent / "plugins"


def _pykvm(env, *argv):
    return subprocess.run([sys.executable, "-m", "pykvm.cli", *argv], env=env, cwd=CWD,
                          capture_output=True, text=True, timeout=600)


def test_plugin_is_found_with_its_parameters(plugin_env):
    r = subprocess.run([sys.executable, "-c", """
import pykvm
from pykvm.vendors import vendors
v = vendors()["leaky"]
print(v.kernel_module, sorted(p.module for p in v.params.values()))
m = pykvm.Machine(vendor="leaky", params={"kvm_leaky.lazy_kernel_gs_base": "n"})
print(m.params)
"""], env=plugin_env, cwd=CWD, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert first.startswith("kvm_leaky") and "'kvm_leaky'" in first and "'kvm'" in first
    assert "'lazy_kernel_gs_base': False" in second


def test_check_finds_the_planted_leak(plugin_env, tmp_path):
    r = _pykvm(plugin_env, "check", "--vendor", "leaky", "--bound", "2", "--walks", "0",
               "--save", str(tmp_path / "leak.json"))
    assert r.returncode == 1, r.stdout + r.stderr
    # After the vCPU thread's SWAPGS to user mode, its GS base is the guest's
    # KERNEL_GS_BASE that vcpu_put never put back: attribution names that SWAPGS.
    assert "violation: GS_BASE" in r.stdout and "found 0xffff900000001000" in r.stdout
    assert "last written by SWAPGS in pk_exit_to_user_mode" in r.stdout
    r = _pykvm(plugin_env, "replay", str(tmp_path / "leak.json"))
    assert r.returncode == 1 and "last written by SWAPGS in pk_exit_to_user_mode" in r.stdout


def test_conform_runs_the_plugin(plugin_env):
    r = _pykvm(plugin_env, "conform", "--vendor", "leaky", "--json")
    # The leak is the host's to see: the guest-visible cases all still pass.
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["backends"] == ["leaky"] and len(out["results"]) >= 19
