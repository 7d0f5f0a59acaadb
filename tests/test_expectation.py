"""The Distill widget's expectation: read from the committed file, which the ablation's job files reproduce."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from napari_dmd.expectation import expectation_lines, load_expectations, matching_rows

ROOT = Path(__file__).resolve().parents[1]


def test_committed_expectations_come_from_the_job_files(tmp_path, monkeypatch):
    data = load_expectations()
    assert data["rows"], "src/napari_dmd/resources/expectations.json holds no rows"
    folder = ROOT / re.search(r"from (\S+)/jobs/", data["source"]).group(1)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import ablation_report

    divided = "step speed-up" in data["source"]  # job times from before the channels-last step (--step-speedup)
    fresh = ablation_report.expectations(folder, tmp_path / "e.json",
                                         speedups=ablation_report.STEP_SPEEDUP if divided else None)
    sys.modules.pop("ablation_report", None)
    assert json.loads(json.dumps(fresh["rows"])) == data["rows"]


def test_lines_state_retention_speedup_and_time():
    row = matching_rows("dmd", "student")[0]
    lines = expectation_lines("dmd", "student", 500, row["dims"])
    line = next(x for x in lines if x.startswith(row["dataset"]))
    assert f"{100 * row['retention']:.0f} % of the teacher's Dice" in line
    assert f"({row['seeds']} seeds, after {row['iterations']} iterations)" in line  # the Dice is that budget's
    assert f"{row['speedup']:.1f}x faster" in line
    assert f"~{row['seconds_per_iteration'] * 500 / 60:.0f} min for 500 iterations" in line


@pytest.mark.parametrize("method,student", [("kd", "student-fast-tiny"), ("nonsense", "student")])
def test_unmeasured_settings_say_so(method, student):
    (line,) = expectation_lines(method, student, 100, 3)
    assert line.startswith("No measurement")


def test_speedup_threads_and_training_threads_are_stated_apart(monkeypatch):
    import napari_dmd.expectation as ex

    row = {"dataset": "chaos", "dims": 2, "method": "dmd", "student": "student", "seeds": 3, "retention": 0.9,
           "speedup": 2.5, "seconds_per_iteration": 0.1, "threads": 1, "latency_threads": 2}
    monkeypatch.setattr(ex, "load_expectations", lambda: {"source": "", "rows": [row]})
    (line,) = ex.expectation_lines("dmd", "student", 600, 2)
    assert "2.5x faster (2 CPU threads)" in line
    assert line.endswith("~1 min for 600 iterations on 1 CPU thread")
    row["recipe"] = "trained without flips"  # a dataset trained unlike the widget's defaults says so
    (line,) = ex.expectation_lines("dmd", "student", 600, 2)
    assert line.endswith("on 1 CPU thread (trained without flips)")
