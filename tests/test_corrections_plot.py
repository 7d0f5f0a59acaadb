"""benchmarks/corrections_plot.py: the correction loop's curve from committed bench JSON files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = [REPO / "docs" / "benchmarks" / "bench-corrections-chaos-shift-s2400-default2d.json",
         REPO / "docs" / "benchmarks" / "bench-corrections-chaos-shift-hs-default.json"]


def _script():
    spec = importlib.util.spec_from_file_location("corrections_plot", REPO / "benchmarks" / "corrections_plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_titles_name_the_panels_and_must_match_the_files(tmp_path, capsys):
    plot = _script()
    out = tmp_path / "curve.png"
    args = [str(f) for f in FILES]
    assert plot.main([*args, "--titles", "published", "with heads", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.main([*args, "--titles", "only one", "--out", str(tmp_path / "x.png")]) == 2
    assert "1 --titles for 2 files" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_named_classes_are_drawn_beside_the_lost_ones(tmp_path, monkeypatch):
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = _script()
    res = json.loads(FILES[1].read_text(encoding="utf-8"))["results"]
    assert res["targets"]["lost_classes_at_round_0"] == [3]  # the left kidney
    fig, ax = plt.subplots()
    plot._panel(ax, "chaos", res, ["spleen", "left kidney", "no such class"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    gap = 100 * (res["teacher"]["dice"][3] - res["rows"][0]["student_dice"][3])
    assert f"student, spleen ({gap:.1f} below the teacher at round 0)" in labels
    assert sum(x.startswith("student, left kidney") for x in labels) == 1  # drawn once, as lost
    assert "teacher, spleen" in labels and not any("no such class" in x for x in labels)
    plt.close(fig)
