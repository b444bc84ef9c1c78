"""What `pykvm study` prints: readable at 80 columns, using the width at 160, the verdict
once per variant, and the same data as CSV, JSON and Markdown."""
import csv
import dataclasses
import io
import json
import re

import pytest
from rich.console import Console

from pykvm import study
from pykvm.cli import main
from pykvm.cli import study as cli_study

LEAK = "LEAK SPEC_CTRL (first RET after VM-exit, 1 step)"


def _verdict(row):
    return "pass" if row.preset == "upstream" else LEAK


@pytest.fixture(scope="module")
def rows():
    return study.run_study(vendors=["vmx", "svm"], presets=["upstream", "v5.18", "v5.10"],
                           workloads=["pio", "fastpath", "guest-ctxsw"], iterations=3,
                           verdict_fn=_verdict)


def _render(rows, width, ops=False):
    console = Console(record=True, width=width, color_system=None)
    cli_study.print_table(console, rows, ops=ops)
    return console.export_text()


def _table_lines(text, title_start):
    """The lines of one vendor's matrix and its notes (the text printed for one vendor)."""
    lines = text.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(title_start))
    out = [lines[i]]
    for line in lines[i + 1:]:
        if "cycles per event" in line or line.startswith("operation counts"):
            break
        out.append(line)
    return out


@pytest.mark.parametrize("width", [80, 160])
def test_fits_the_width_and_cuts_nothing(rows, width):
    text = _render(rows, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "\u2026" not in text            # rich's ellipsis: a cut cell
    for head in ("upstream", "v5.18", "v5.10"):
        assert head in text
    for wl in ("pio", "fastpath", "guest-ctxsw"):
        assert wl in text


@pytest.mark.parametrize("width", [80, 160])
def test_verdict_once_per_variant(rows, width):
    text = _render(rows, width)
    for vendor in ("vmx", "svm"):
        mine = _render([r for r in rows if r.vendor == vendor], width)
        table = _table_lines(mine, f"{vendor}: cycles per event")
        verdict_rows = [line for line in table if line.strip().startswith("verdict")]
        assert len(verdict_rows) == 1
        assert "pass" in verdict_rows[0]
        # One LEAK per leaking variant, in the verdict row only.
        body = "\n".join(line for line in table if not line.strip().startswith("verdict"))
        assert not re.search(r"\bpass\b", body)
        assert "LEAK" in "\n".join(table[:table.index(verdict_rows[0]) + 3])
    # The full reason and the command that shows the trace, once per leaking verdict.
    assert text.count("first RET after VM-exit") == 2
    assert "pykvm check --vendor vmx --preset v5.18" in " ".join(text.split())


def test_cycles_answer_first(rows):
    text = _render(rows, 80)
    by = {(r.vendor, r.preset, r.workload): r for r in rows}
    table = _table_lines(text, "vmx: cycles per event")
    pio = next(line for line in table if line.strip().startswith("pio"))
    cells = re.findall(r"[\d,]+", pio)
    want = f"{round(by[('vmx', 'upstream', 'pio')].cycles):,}"
    assert want in cells
    # At 80 columns the estimate share is a mark; at 160 it is spelled out.
    r = by[("vmx", "upstream", "pio")]
    assert (cli_study.EST_MARK in pio) == (r.estimate_share > cli_study.EST_MARK_SHARE)
    wide = _table_lines(_render([r for r in rows if r.vendor == "vmx"], 160),
                        "vmx: cycles per event")
    pio_wide = next(line for line in wide if line.strip().startswith("pio"))
    assert f"({100 * r.estimate_share:.0f}%)" in pio_wide


def test_vendors_side_by_side_when_they_fit(rows):
    narrow, wide = _render(rows, 80), _render(rows, 200)
    both = [line for line in wide.splitlines()
            if "vmx: cycles per event" in line and "svm: cycles per event" in line]
    assert both and not any("svm: cycles" in line and "vmx: cycles" in line
                            for line in narrow.splitlines())
    assert len(wide.splitlines()) < len(narrow.splitlines())


def test_operation_counts_on_request(rows):
    assert "P4 R3 T1 U3" not in _render(rows, 80)
    text = _render(rows, 80, ops=True)
    assert "P4 R3 T1 U3" in text and "PREPARE_SWITCH" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_zero_cost_workload_is_explained(rows):
    text = " ".join(_render(rows, 80).split())
    assert "guest-ctxsw: 0 switch cycles" in text and "without a VM-exit" in text


def test_a_cycle_interval_is_shown_when_the_study_has_one(rows):
    r = rows[0]
    fields = {f.name for f in dataclasses.fields(r)}
    if "cycles_lo" in fields:
        ranged = [dataclasses.replace(x, cycles_lo=x.cycles * 0.8, cycles_hi=x.cycles * 1.3)
                  for x in rows]
    else:  # before the study prices intervals: the renderer reads them when present
        ranged = []
        for x in rows:
            y = dataclasses.replace(x)
            y.cycles_lo, y.cycles_hi = x.cycles * 0.8, x.cycles * 1.3
            ranged.append(y)
    pio = next(x for x in ranged if x.vendor == "vmx" and x.workload == "pio")
    text = _render(ranged, 80)
    assert cli_study._range_text(pio) in text
    assert "interval" in text


def _cli(argv, capsys):
    rc = main(argv)
    return rc, capsys.readouterr().out


def test_formats(tmp_path, capsys, monkeypatch):
    import pykvm.check
    monkeypatch.setattr(pykvm.check, "study_verdict", _verdict)
    base = ["study", "--vendor", "svm", "--preset", "upstream", "--preset", "v5.10",
            "--workload", "pio", "--iterations", "2", "--jobs", "1", "--no-png",
            "--out", str(tmp_path)]
    rc, out = _cli(base + ["--format", "csv"], capsys)
    assert rc == 0
    data = list(csv.DictReader(io.StringIO(out)))
    assert [d["variant"] for d in data] == ["svm:upstream", "svm:v5.10"]
    assert data[1]["verdict"] == LEAK
    rc, out = _cli(base + ["--format", "json"], capsys)
    assert json.loads(out)["rows"][0]["workload"] == "pio"
    rc, out = _cli(base + ["--format", "markdown", "--ops"], capsys)
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("| workload | per"))
    assert "upstream" in head and "v5.10" in head
    verdict = next(line for line in lines if line.startswith("| verdict"))
    assert "pass" in verdict and "LEAK SPEC_CTRL" in verdict
    assert any(line.startswith("| pio |") and "WRMSR" not in line for line in lines)
    assert "svm:v5.10: operations per event by path" in out


def test_compare_at_80_columns(capsys, monkeypatch, tmp_path):
    import pykvm.check
    monkeypatch.setattr(pykvm.check, "study_verdict", _verdict)
    monkeypatch.setenv("COLUMNS", "80")
    rc, out = _cli(["study", "--compare", "svm:upstream", "svm:v5.10", "--workload", "pio",
                    "--iterations", "2", "--jobs", "1", "--no-png", "--out", str(tmp_path)],
                   capsys)
    assert rc == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    verdict = next(line for line in out.splitlines() if line.strip().startswith("verdict"))
    assert "pass" in verdict and "LEAK" in verdict
    pio = next(line for line in out.splitlines() if line.strip().startswith("pio"))
    assert "+" in pio and "%" in pio
    assert "pykvm check --vendor svm --preset v5.10" in " ".join(out.split())


def test_many_variants_split_into_tables_rather_than_cut_figures():
    """Six VMX eras do not fit 80 columns side by side: the matrix continues in a second
    table (workload and event repeated) instead of folding a figure over two lines."""
    presets = ["upstream", "v5.18", "v4.18", "v2.6.31", "v2.6.23", "v2.6.20"]
    rows = study.run_study(vendors=["vmx"], presets=presets, workloads=["pio", "cpuid"],
                           iterations=3, verdict_fn=_verdict)
    text = _render(rows, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "continued" in text
    tokens = set(text.split())
    for r in rows:
        figure = f"{round(r.cycles):,}"
        assert figure in tokens or figure + cli_study.EST_MARK in tokens, (r.variant, figure)
    for p in presets:
        assert p in tokens
    # Each table repeats the rows' names: every workload appears once per table.
    assert text.count("pio ") == text.count("cycles per event")


def test_estimated_prices_are_named_apart_per_operation_and_msr():
    names = [cli_study._price_name(k) for k in
             ("op.WRMSR", "rdmsr.KERNEL_GS_BASE", "wrmsr.KERNEL_GS_BASE")]
    assert names == ["WRMSR", "RDMSR KERNEL_GS_BASE", "WRMSR KERNEL_GS_BASE"]
