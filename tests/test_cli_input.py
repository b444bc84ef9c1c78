"""The `pykvm` command with bad input and with Ctrl-C: one line on stderr and exit 2 for
bad usage or input (no traceback), 130 for Ctrl-C with what was found so far, and replay
checking its file and saying whether it reproduced the saved violation."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from pykvm.cli import main

CHECK_LEAK = ["check", "--vendor", "vmx", "--param", "forget_lstar=1", "--bound", "1",
              "--walks", "0"]


@pytest.mark.parametrize("args,says", [
    (["check", "--bound", "100"], "--bound: must be an integer 0..64, got '100'"),
    (["check", "--bound", "-1"], "--bound: must be an integer 0..64, got '-1'"),
    (["check", "--seed", "1e23"], "--seed: must be an integer"),
    (["check", "--seed", str(10**23)], "--seed: must be an integer"),
    (["check", "--walks", "-5"], "--walks: must be an integer"),
    (["check", "--seconds", "0"], "--seconds: must be a positive number"),
    (["check", "--seconds", "inf"], "--seconds: must be a positive number"),
    (["check", "--cpus", "0"], "--cpus: must be an integer 1..8"),
    (["check", "--vcpus", "5"], "--vcpus: must be an integer 1..4"),
    (["check", "--bound", "0", "--walks", "0"], "explore nothing"),
    (["check", "--param", "forget_lstar=banana"], "'banana' is not a bool"),
    (["check", "--param", "kvm_amd.forget_spec_ctrl=1"], "kvm_amd"),
    (["run", "nonexistent.bin"], "nonexistent.bin"),
    (["run", "x.bin", "--max-insns", "-1"], "--max-insns: must be an integer"),
    (["run", "x.bin", "--max-exits", "0"], "--max-exits: must be an integer"),
    (["replay", "nonexistent.json"], "nonexistent.json"),
])
def test_bad_input_is_one_line_and_exit_2(args, says, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert says in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_budget_that_allows_no_exploration_is_refused(capsys):
    # Depth 1 with 2 vCPUs is thousands of steps (tens of ms on any machine); 0.2 s, the
    # budget this test used to give, could finish it on a fast one.
    assert main(["check", "--seconds", "0.001", "--bound", "9", "--vcpus", "2"]) == 2
    cap = capsys.readouterr()
    assert "nothing was explored exhaustively" in cap.err and "--seconds" in cap.err
    assert "pass" not in cap.out


def test_run_refuses_code_larger_than_guest_memory_before_reading_it(tmp_path, capsys):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:          # sparse: 100 MB of size, no memory or disk
        f.truncate(100 * 1024 * 1024)
    assert main(["run", str(big)]) == 2
    err = capsys.readouterr().err
    assert "104857600 bytes of code" in err and len(err.strip().splitlines()) == 1


# ---- replay --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("replay") / "leak.json"
    assert main(CHECK_LEAK + ["--save", str(path)]) == 1
    return json.loads(path.read_text())


def _replay(tmp_path, data, capsys):
    path = tmp_path / "altered.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    code = main(["replay", str(path)])
    return code, capsys.readouterr()


def test_replay_reproduces_the_saved_violation(tmp_path, saved, capsys):
    code, cap = _replay(tmp_path, saved, capsys)
    assert code == 1 and "reproduced: LSTAR at host user mode" in cap.out


def test_replay_says_when_it_did_not_reproduce(tmp_path, saved, capsys):
    fixed = dict(saved, config=dict(saved["config"], params={}))    # upstream KVM
    code, cap = _replay(tmp_path, fixed, capsys)
    assert code == 0
    assert "did not reproduce the saved violation (LSTAR at host user mode)" in cap.out


@pytest.mark.parametrize("alter,says", [
    (lambda d: d["steps"][0].update(vcpu=7), "vcpu 7 is not in 0..0"),
    (lambda d: d["steps"][0].update(cpu=2), "cpu 2 is not in 0..1"),
    (lambda d: d["steps"][0].update(kind="reboot"), "kind 'reboot'"),
    (lambda d: d["steps"][0].update(inject="smi"), "inject 'smi'"),
    (lambda d: d.update(format=2), "format version 2"),
    (lambda d: d.pop("format"), "format version None"),
    (lambda d: d.update(steps=[]), "steps must be a list of 1..64"),
    (lambda d: d.update(steps=d["steps"] * 65), "steps must be a list of 1..64"),
    (lambda d: d["config"].update(vcpus=9), "config.vcpus must be an integer 1..4"),
    (lambda d: d["config"].update(params={"forget_lstar": "banana"}), "'banana' is not a bool"),
    (lambda d: d["config"].update(params={"no_such_param": "1"}), "no_such_param"),
    (lambda d: d["config"].update(vendor="pvm"), "pvm"),
    (lambda d: d["config"].update(surprise=1), "config must be an object"),
    (lambda d: d.update(violation={"reg": 5}), "violation must be null"),
])
def test_replay_refuses_an_altered_file(tmp_path, saved, capsys, alter, says):
    data = json.loads(json.dumps(saved))
    alter(data)
    code, cap = _replay(tmp_path, data, capsys)
    assert code == 2 and says in cap.err
    assert len(cap.err.strip().splitlines()) == 1 and "Traceback" not in cap.err


def test_replay_refuses_a_truncated_file(tmp_path, saved, capsys):
    code, cap = _replay(tmp_path, json.dumps(saved)[:120], capsys)
    assert code == 2 and "not JSON" in cap.err


# ---- Ctrl-C --------------------------------------------------------------------------

def _interrupt(args, after=3.0):
    """Start `pykvm ARGS`, send SIGINT once it has run `after` seconds; (rc, out, err)."""
    # From tests/: from the repository root, `-m` would import the source tree (unbuilt
    # under a non-editable install, as .ci/run installs) instead of the installed package.
    p = subprocess.Popen([sys.executable, "-m", "pykvm.cli", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parent)
    # Ctrl-C while Python still imports is Python's, not pykvm's: wait until the C module
    # is loaded (a slow import under load is not what this tests), then `after` seconds.
    maps = pathlib.Path(f"/proc/{p.pid}/maps")
    deadline = time.monotonic() + 120          # a hang guard, not a timing target
    while p.poll() is None and time.monotonic() < deadline:
        try:
            if "_pykvm" in maps.read_text():
                break
        except OSError:
            break                              # no /proc: the fixed wait alone
        time.sleep(0.05)
    time.sleep(after)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)          # a hang guard, not a timing target
    return p.returncode, out, err


def test_ctrl_c_stops_check_and_keeps_what_it_found():
    rc, out, err = _interrupt(["check", "--bound", "9", "--vcpus", "2"])
    assert rc == 130
    assert "interrupted" in out and "steps" in out and "Traceback" not in err


def test_ctrl_c_stops_an_endless_guest(tmp_path):
    spin = tmp_path / "spin.bin"
    spin.write_bytes(b"\xeb\xfe")                     # jmp $
    rc, out, err = _interrupt(["run", str(spin), "--max-insns", "0"])
    assert rc == 130
    assert "INTR" in out and "interrupted" in out and "Traceback" not in err


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc")
def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception):
        main(["--debug", "check", "--param", "forget_lstar=banana"])
