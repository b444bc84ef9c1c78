"""The README's tour and the package docstring's tour run as written."""
import pathlib
import re
import textwrap

import pykvm

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _readme_blocks():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    return blocks


def test_readme_python_blocks_run():
    for b in _readme_blocks():
        env = {}
        exec(compile(b, "README.md", "exec"), env)
        m = env.get("m")
        if isinstance(m, pykvm.Machine):
            # The tour prints what one path cost: with the vendor's default profile.
            assert m.costs()["PREPARE_SWITCH"]["cycles"] > 0


def test_readme_tour_runs_on_the_other_vendor_as_its_comment_says():
    tour = next(b for b in _readme_blocks() if '# or vendor="svm"' in b)
    svm = tour.replace('vendor="vmx"', 'vendor="svm"', 1)
    env = {}
    exec(compile(svm, "README.md (svm)", "exec"), env)
    assert env["m"].vendor.name == "svm" and env["m"].costs()["PREPARE_SWITCH"]["cycles"] > 0


def test_subpackages_are_attributes_of_pykvm():
    import subprocess
    import sys
    code = ("import pykvm; print(pykvm.devkvm.KvmMachine.__name__, "
            "pykvm.study.run_study.__name__, pykvm.profiles.load_profile.__name__)")
    # From tests/, so that the installed package is the one imported, not the source tree.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=pathlib.Path(__file__).parent).stdout
    assert out.split() == ["KvmMachine", "run_study", "load_profile"]


def test_machine_takes_a_profile_by_name_path_or_object():
    from pykvm import profiles
    p = profiles.load_profile("skylake-sp")
    costs = []
    for prof in ("skylake-sp", p.path, p):
        m = pykvm.Machine(cpus=1, vendor="vmx", profile=prof)
        assert m.profile.name == "skylake-sp" and m.cpu_model_name == p.cpu_model
        vm = m.create_vm()
        vcpu = vm.create_vcpu()
        vcpu.load(bytes([0xE6, 0x80, 0xF4]))           # out 0x80, al; hlt
        vcpu.run()
        costs.append(m.costs())
    assert costs[0] == costs[1] == costs[2]
    assert costs[0]["VCPU_RUN"]["cycles"] > 0
    unpriced = pykvm.Machine(cpus=1, vendor="vmx", profile=False)
    assert unpriced.profile is None
    try:
        pykvm.Machine(vendor="svm", profile="skylake-sp")
    except pykvm.InvalidConfiguration as e:
        assert "intel" in str(e) and "amd" in str(e)
    else:
        raise AssertionError("an Intel profile on an AMD machine was accepted")


def test_cpu_model_defaults_per_vendor():
    for vendor in ("vmx", "svm"):
        m = pykvm.Machine(cpus=1, vendor=vendor)
        assert m.cpu_model_name in m.vendor.cpu_models
        assert m.cpu_model_name == m.profile.cpu_model


def test_package_docstring_tour_runs():
    code = [textwrap.dedent(b) for b in re.findall(r"::\n\n((?:       .*\n|\n)+)",
                                                   pykvm.__doc__)]
    assert len(code) >= 5
    env = {}
    for b in code:
        exec(compile(b, "pykvm.__doc__", "exec"), env)
    assert env["uc"].args[0] == 0x1234
