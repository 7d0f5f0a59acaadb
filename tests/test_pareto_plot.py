"""The README's Dice-latency plot is drawn from committed files: every source it names exists and the figures add up."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("b2_pareto_plot", ROOT / "benchmarks" / "b2_pareto_plot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_preset_row_comes_from_its_job_files_and_timings(tmp_path):
    mod = _module()
    res = mod.collect()
    assert set(res) == {"hippocampus3d", "chaos"}
    for ds, rows in res.items():
        assert rows["teacher"]["speedup"] == 1.0 and rows["teacher"]["retention"] == 1.0
        for name, row in rows.items():
            if name == "teacher":
                continue
            files = sorted((ROOT / "docs").glob(mod.RUNS[ds][name][0]))
            dice = [json.loads(f.read_text())["mean_dice"] for f in files]
            assert len(dice) >= 3 and row["dice"] == pytest.approx(sum(dice) / len(dice))
            assert all(json.loads(f.read_text())["method"] == "dmd-hs" for f in files), "DMD + Heads runs only"
            timing = json.loads((ROOT / "docs" / mod.LATENCY[1][ds]).read_text())["datasets"][ds]["presets"][name]
            assert row["ms"] == timing["ms_fused"]
            assert row["speedup"] == pytest.approx(timing["teacher_ms"] / row["ms"])
    mod.plot(res, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_the_choosers_speed_ups_are_the_committed_measurements():
    """PRESET_INFO's per-dataset speed-ups are the pairs benchmark's: 1 thread, and the lowest of the 2-thread runs."""
    from napari_dmd.models.presets import PRESET_INFO

    bench = ROOT / "docs" / "benchmarks"
    for ds, key in (("hippocampus3d", "hippocampus"), ("chaos", "chaos")):
        one = json.loads((bench / f"bench-b2-pairs-{ds}-1thread.json").read_text())["datasets"][ds]["presets"]
        two = [json.loads(path.read_text())["datasets"][ds]["presets"]
               for path in sorted(bench.glob(f"bench-b2-pairs-{ds}-2threads*.json"))]
        assert len(two) >= 2
        assert set(one) == set(PRESET_INFO) - {"teacher"}
        for name, row in one.items():
            assert PRESET_INFO[name]["speedup"][key] == round(row["speedup_fused"], 1), (ds, name)
            lower = min(t[name]["speedup_fused"] for t in two)
            assert PRESET_INFO[name]["speedup_two_threads"][key] == round(lower, 1), (ds, name)
