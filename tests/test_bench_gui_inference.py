"""``napari-dmd bench gui --inference``: Segment, Compare and Features in a real viewer vs the same call headless.

The --quick version (tiny untrained 2D nets on an 8x64x64 phantom, one timed round) runs in the test's viewer;
the test checks the table's rows and that the layers the widgets left equal an independent headless computation,
never the timing. Also: a repeated Compare leaves its own layers alone (hiding and showing them again rebuilt the
grid's views six times per click), and window counts reach the main thread at most twice a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_dmd.cli import main


@pytest.mark.gui
def test_bench_gui_inference_quick_rows_and_same_results(make_napari_viewer, capsys):
    from napari_dmd.bench.gui_inference import bench_gui_inference, build_models
    from napari_dmd.compare import compare_models
    from napari_dmd.registry import REGISTRY

    viewer = make_napari_viewer()
    res = bench_gui_inference(repeats=1, quick=True, viewer=viewer)
    out = capsys.readouterr().out
    rows = res["rows"]
    assert [r["widget"] for r in rows] == ["Segment", "Compare", "Features"]
    for r in rows:
        assert r["same_result"] is True
        assert len(r["viewer_s"]) == len(r["headless_s"]) == 1 and r["viewer_median_s"] > 0
        assert r["ratio"] == pytest.approx(r["viewer_median_s"] / r["headless_median_s"])
        line = next(line for line in out.splitlines() if line.startswith(f"| {r['widget']:>8} |"))
        assert f"{r['ratio']:.2f}" in line and line.rstrip().endswith("yes |")
    assert len(rows[1]["first_click_s"]) == 1 and len(rows[0]["first_click_s"]) == 1  # Segment updates in place too
    assert "target <= 1.2" in out and not any(n.startswith("napari-dmd bench") for n in REGISTRY.names())

    # the layers the widgets left in the viewer equal the same computation done here, independently
    teacher, student, _ = build_models("auto", quick=True)
    image = np.asarray(viewer.layers["phantom quick"].data)
    seg = viewer.layers[f"phantom quick segmentation ({student.name})"].data
    np.testing.assert_array_equal(seg, student.segmenter(image))
    ref = compare_models(teacher, student, image)
    np.testing.assert_array_equal(viewer.layers[f"phantom quick teacher ({teacher.name})"].data, ref.teacher)
    np.testing.assert_array_equal(viewer.layers[f"phantom quick student ({student.name})"].data, ref.student)
    assert viewer.layers["phantom quick features s2 PCA"].data.shape == (1, 32, 32, 3)


@pytest.mark.gui
def test_compare_again_leaves_its_own_layers_visible(make_napari_viewer, qtbot):
    from qtpy.QtCore import QEventLoop

    from napari_dmd.bench.gui_inference import build_models, make_widgets, time_click
    from napari_dmd.phantom import make_phantom
    from napari_dmd.registry import REGISTRY

    viewer = make_napari_viewer()
    vol, lab = make_phantom((4, 48, 48), seed=1)
    image = viewer.add_image(vol, name="vol")
    viewer.add_labels(lab, name="vol labels")
    teacher, student, _ = build_models("auto", quick=True)
    REGISTRY.add(teacher)
    REGISTRY.add(student)
    try:
        compare = make_widgets(viewer, image, teacher, student)[1]
        loop = QEventLoop()
        time_click(compare, loop, 120)
        assert not viewer.layers["vol labels"].visible and viewer.layers["vol"].visible
        toggled: list[str] = []
        for layer in viewer.layers:
            layer.events.visible.connect(lambda ev: toggled.append(ev.source.name))
        time_click(compare, loop, 120)  # updates its three layers in place, grid already on
        assert toggled == []
        assert all(viewer.layers[n].visible for n in ("vol", "vol teacher ≠ student"))
    finally:
        REGISTRY.remove(teacher.name)
        REGISTRY.remove(student.name)


def test_window_counts_are_throttled(monkeypatch):
    from napari_dmd._widgets import segment

    now = [0.0]
    monkeypatch.setattr(segment.time, "perf_counter", lambda: now[0])
    seen: list[tuple[int, int]] = []
    progress = segment.Throttled(lambda d, t: seen.append((d, t)), interval_s=0.5)
    for done in range(1, 11):  # ten counts 0.1 s apart
        progress(done, 10)
        now[0] += 0.1
    assert seen == [(1, 10), (6, 10), (10, 10)]  # the first, one per 0.5 s, and always the last


def test_cli_gui_inference_flag_dispatches(monkeypatch, tmp_path, capsys):
    from napari_dmd.bench import cli

    got: list[tuple] = []
    monkeypatch.setattr(cli, "bench_gui_inference", lambda *a: got.append(a) or {"rows": []})
    path = tmp_path / "gi.json"
    assert main(["bench", "gui", "--inference", "--quick", "--inference-models", "2d", "--json", str(path)]) == 0
    assert got == [(1, True, "2d", "cpu")] and path.is_file()
    assert main(["bench", "gui", "--inference", "--inference-repeats", "5"]) == 0
    assert got[-1] == (5, False, "auto", "cpu")
