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
            assert row["speedup"] == pytest.approx(rows["teacher"]["ms"] / row["ms"])
    mod.plot(res, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
