"""study.png and compare.png: one colour per path in both, verdicts on the bars, the
estimate share and the delta shown, axes that hold the bars, no empty panels."""
import matplotlib
import matplotlib.colors as mcolors
import matplotlib.figure
import pytest

from pykvm import study
from pykvm._lib import PATHS

matplotlib.use("Agg")
LEAK = "LEAK SPEC_CTRL (first RET after VM-exit, 1 step)"


def _verdict(row):
    return "pass" if row.preset == "upstream" else LEAK


@pytest.fixture(scope="module")
def rows():
    return study.run_study(vendors=["svm"], presets=["upstream", "v5.10"],
                           workloads=["pio", "cpuid", "guest-ctxsw"], iterations=3,
                           verdict_fn=_verdict)


@pytest.fixture
def figures(monkeypatch):
    """The figures the chart functions save, kept for inspection."""
    saved = []
    real = matplotlib.figure.Figure.savefig

    def keep(fig, path, **kw):
        saved.append(fig)
        return real(fig, path, **kw)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    import matplotlib.pyplot as plt
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    return saved


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_title()]


def _bar_colors(ax):
    return {mcolors.to_hex(p.get_facecolor()) for p in ax.patches if p.get_fill()}


def test_one_colour_per_path_in_one_place():
    charted = [p for p in PATHS if p != "GUEST"]
    assert set(study.PATH_COLORS) >= set(charted)
    colours = [study.PATH_COLORS[p].lower() for p in charted]
    assert len(set(colours)) == len(colours)
    assert study.VERDICT_COLORS["leak"].lower() not in colours


def test_study_chart(rows, figures, tmp_path):
    study.chart(rows, tmp_path / "study.png")
    fig, = figures
    panels = _panels(fig)
    # guest-ctxsw costs no switch cycles: a note, not an empty panel.
    assert [ax.get_title().split(":")[0] for ax in panels] == ["pio", "cpuid"]
    assert "guest-ctxsw: 0 switch cycles" in " ".join(t.get_text() for t in fig.texts)
    allowed = {c.lower() for c in study.PATH_COLORS.values()}
    for ax in panels:
        assert _bar_colors(ax) <= allowed
        labels = ax.get_xticklabels()
        leak = [lab for lab in labels if "LEAK SPEC_CTRL" in lab.get_text()]
        assert [lab.get_text().split("\n")[0] for lab in leak] == ["svm:v5.10"]
        assert mcolors.to_hex(leak[0].get_color()) == study.VERDICT_COLORS["leak"]
        outlined = [p for p in ax.patches if not p.get_fill()]
        assert len(outlined) == 1          # the leaking variant's bar
        texts = [t.get_text() for t in ax.texts]
        assert all("est " in t for t in texts)
        top = max(p.get_y() + p.get_height() for p in ax.patches)
        assert ax.get_ylim()[1] > top * 1.15      # room for the labels above the bars


def test_compare_chart_shows_a_b_and_the_delta(rows, figures, tmp_path):
    crows = study.compare("svm:upstream", "svm:v5.10", workloads=["pio", "guest-ctxsw"],
                          iterations=3)
    for c in crows:
        c.a.verdict, c.b.verdict = _verdict(c.a), _verdict(c.b)
    study.compare_chart(crows, tmp_path / "compare.png")
    fig, = figures
    ax, = _panels(fig)
    assert [lab.get_text().split("\n")[0] for lab in ax.get_xticklabels()] == \
        ["A", "B", "B - A"]
    pio = crows[0]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"{pio.delta:+,.0f}" in texts and f"({pio.delta_pct:+.0f}%)" in texts
    # The delta bar's segments are each path's difference, some below zero.
    delta_bars = [p for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - 2) < 0.01]
    assert round(sum(p.get_height() for p in delta_bars)) == round(pio.delta)
    assert any(p.get_height() < 0 for p in delta_bars)
    assert ax.get_ylim()[0] < min(p.get_y() + min(0, p.get_height()) for p in delta_bars)
    # Same colour for the same path as in study.png.
    assert _bar_colors(ax) <= {c.lower() for c in study.PATH_COLORS.values()}
