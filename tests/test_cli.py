"""The `pykvm` command: exit statuses and outputs people script against."""
import json

from pykvm.cli import main


def test_conform_json_passes_on_the_model(capsys):
    assert main(["conform", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backends"] == ["vmx", "svm"]
    assert all(r["status"] == "pass" for row in out["results"].values() for r in row.values())


def test_conform_table_at_80_columns_keeps_every_msr_name_whole(capsys, monkeypatch):
    """A narrow terminal folds long case names onto a second line; it never cuts them,
    and a title's "[msr64]" is text, not a style tag to swallow."""
    from pykvm import conform
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["conform", "--suite", "msr"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "\u2026" not in out
    cells = "".join(line.split("\u2502")[2].strip() for line in out.splitlines()
                    if line.count("\u2502") > 2).replace(" ", "")
    for case in conform.suite_cases("msr"):
        assert case.title.replace(" ", "") in cells, case.title


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
