"""Options a new user can discover: `pykvm list ...`, help and an example for every command
and option, and a shell completion script generated from the same parser."""
import argparse
import json

import pytest

from pykvm.cli import COMMANDS, build_parser, main


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_command_and_option_has_help_and_the_commands_examples():
    parser = build_parser()
    subs = _subparsers(parser)
    assert set(subs) == set(COMMANDS)
    top = parser.format_help()
    for name in COMMANDS:
        assert name in top
    assert "examples:" in top
    for name, sub in subs.items():
        assert sub.description, name
        assert "examples:" in (sub.epilog or ""), name
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            assert a.help and len(a.help) > 8, (name, a.dest)


def _list(capsys, *argv):
    assert main(["list", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_list_params_with_upstream_values_and_meanings(capsys):
    rows = {r["parameter"]: r for r in _list(capsys, "params", "--vendor", "vmx")}
    assert rows["kvm.forget_lstar"]["upstream"] == "N"
    assert rows["kvm_intel.spec_ctrl_in_vmenter"]["upstream"] == "Y"
    assert "SPEC_CTRL" in rows["kvm_intel.spec_ctrl_in_vmenter"]["meaning"]
    assert not any(p.startswith("kvm_amd.") for p in rows)
    both = {r["parameter"] for r in _list(capsys, "params")}
    assert any(p.startswith("kvm_amd.") for p in both) and "kvm.forget_lstar" in both


def test_list_presets_cpus_workloads_profiles(capsys):
    presets = {(r["vendor"], r["preset"]): r for r in _list(capsys, "presets")}
    assert presets[("vmx", "upstream")]["default"] == "yes"
    assert "kvm_intel.spec_ctrl_in_vmenter=N" in presets[("vmx", "v5.18")]["sets"]
    cpus = {r["cpu model"]: r for r in _list(capsys, "cpus", "--vendor", "svm")}
    assert set(cpus) == {"zen3", "zen4"} and "v_spec_ctrl" in cpus["zen4"]["features"]
    wls = {r["workload"]: r for r in _list(capsys, "workloads")}
    assert wls["fastpath"]["cycles per"] == "fast-path exit"
    profs = {r["profile"]: r for r in _list(capsys, "profiles")}
    assert profs["skylake-sp"]["default for"] == "vmx"
    assert profs["epyc-zen"]["cpu model"] == "zen3"
    only_intel = {r["profile"] for r in _list(capsys, "profiles", "--vendor", "vmx")}
    assert only_intel == {"skylake-sp"}


def test_list_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list", "presets", "--vendor", "svm"]) == 0
    out = capsys.readouterr().out
    assert "v5.10" in out and "kvm_amd.vmsave_host_state=N" in " ".join(out.split())
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_knows_commands_and_values(capsys, shell):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in (*COMMANDS, "--workload", "guest-ctxsw", "--vendor", "params", "markdown"):
        assert word in script, word
