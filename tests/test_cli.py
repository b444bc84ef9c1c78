"""The `pykvm` command: exit statuses and outputs people script against."""
import json

from pykvm.cli import main


def test_conform_json_passes_on_the_model(capsys):
    assert main(["conform", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backends"] == ["vmx", "svm"]
    assert all(r["status"] == "pass" for row in out["results"].values() for r in row.values())


def test_check_fails_on_a_leak_and_replay_reproduces_it(tmp_path, capsys):
    saved = tmp_path / "leak.json"
    perf = tmp_path / "timeline.json"
    assert main(["check", "--vendor", "vmx", "--param", "forget_lstar=1", "--bound", "1",
                 "--walks", "0", "--save", str(saved), "--perfetto", str(perf)]) == 1
    out = capsys.readouterr().out
    assert "LSTAR" in out and "kvm_entry" in out
    assert json.loads(perf.read_text())["traceEvents"]
    assert main(["replay", str(saved)]) == 1
    assert "LSTAR" in capsys.readouterr().out


def test_check_passes_upstream(capsys):
    assert main(["check", "--vendor", "svm", "--bound", "2", "--walks", "50"]) == 0
    assert "pass" in capsys.readouterr().out


def test_run_prints_exits(tmp_path, capsys):
    code = tmp_path / "guest.bin"
    code.write_bytes(bytes([0xE6, 0x80, 0xF4]))      # out 0x80, al; hlt
    assert main(["run", str(code), "--vendor", "svm"]) == 0
    out = capsys.readouterr().out
    assert "IO out port 0x80" in out and "HLT" in out


def test_study_compare_writes_outputs(tmp_path, capsys):
    assert main(["study", "--compare", "svm:upstream", "svm:v5.10", "--workload", "pio",
                 "--out", str(tmp_path), "--no-png", "--jobs", "1"]) == 0
    assert any(p.suffix == ".csv" for p in tmp_path.iterdir())
