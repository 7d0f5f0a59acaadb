"""CI smoke test of ``napari-dmd bench`` (B1-B3, plus B6's reader) with ``--quick`` on tiny phantom inputs.

Checks the output names the machine and the command and holds the expected fields with finite ratios. No
timing thresholds: the figures in docs/benchmarks.md come from full runs on a quiet machine.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import pytest

from napari_dmd.cli import build_parser, main


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 2D teacher (a few steps, so it predicts some foreground) and a DMD student on the phantom."""
    from napari_dmd.config import TrainConfig
    from napari_dmd.demo import phantom_cases
    from napari_dmd.distill.engine import Distiller
    from napari_dmd.teachers import load_teacher

    cases = phantom_cases(2, 2)
    common = dict(patch_size=[64, 64], batch_size=2, num_threads=1, lr=1e-2, val_interval=10_000)
    out = tmp_path_factory.mktemp("bench")
    t = Distiller(TrainConfig(method="none", model="8,16,32", iterations=15, **common), cases, val_cases=[],
                  output_dir=out / "t", role="teacher")
    t.run_to_end()
    s = Distiller(TrainConfig(method="dmd", model="4,8,16", iterations=3, **common), cases, val_cases=[],
                  teacher=load_teacher(t.last_path), output_dir=out / "s")
    s.run_to_end()
    return t.last_path, s.last_path


def _bench(capsys, tmp_path: Path, *args: str) -> tuple[str, dict]:
    path = tmp_path / "result.json"
    assert main(["bench", *args, "--quick", "--device", "cpu", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert out.startswith("machine: ") and "\ncommand: " in out
    assert {"cpu", "cores", "torch", "torch_threads", "gpu"} <= set(doc["machine"])
    assert doc["command"] in out and "napari-dmd bench" in doc["command"]
    # the printed command parses back to the same options
    words = [w for w in shlex.split(doc["command"]) if "=" not in w][1:]
    again = build_parser().parse_args(words)
    assert again.bench_verb == doc["benchmark"] and again.quick and again.json == str(path)
    return out, doc["results"]


def _finite(*values: float) -> bool:
    return all(isinstance(v, float | int) and math.isfinite(v) for v in values)


def test_bench_step_quick(capsys, tmp_path):
    out, res = _bench(capsys, tmp_path, "step", "--dims", "2")
    assert "ratio bound / DMD step" in out and "teacher forward (no grad) |" in out
    parts = [res[k] for k in ("teacher_forward_s", "student_fwd_bwd_s", "dmd_step_s", "sampling_s", "bound_s")]
    assert _finite(res["ratio"], *parts) and min(parts) > 0
    assert res["settings"]["patch"] == [64, 64] and len(res["runs_s"]["dmd_step"]) == res["settings"]["repeats"]


def test_bench_inference_quick(capsys, tmp_path, tiny_pair):
    teacher, student = tiny_pair
    out, res = _bench(capsys, tmp_path, "inference", "--teacher", str(teacher), "--student", str(student))
    assert "speed-up" in out and "Dice retention" in out
    assert len(res["per_case"]) == 2 and res["settings"]["cases"] == 2
    assert _finite(res["speedup"], res["retention"], res["teacher_median_s"], res["student_median_s"])
    assert 0 < res["teacher_dice"] <= 1 and 0 <= res["student_dice"] <= 1
    assert res["teacher_params"] > res["student_params"] > 0


def test_bench_sliding_window_quick(capsys, tmp_path):
    out, res = _bench(capsys, tmp_path, "sliding-window")
    assert "speed vs MONAI" in out
    assert _finite(res["speed_vs_monai"], res["speed_vs_monai_raw"], res["ours_s"], res["monai_probs_s"])
    assert res["max_abs_diff"] < 1e-4 and res["settings"]["windows"] > 1


def test_bench_time_to_dice_reads_events(capsys, tmp_path):
    log = tmp_path / "events.jsonl"
    events = [{"kind": "start", "iteration": 0, "time": 100.0, "message": "dmd on cpu"},
              {"kind": "validation", "iteration": 50, "mean_dice": 0.7, "time": 160.0},
              {"kind": "stopped", "iteration": 60, "time": 170.0},
              {"kind": "start", "iteration": 60, "time": 1000.0},  # resumed much later
              {"kind": "validation", "iteration": 100, "mean_dice": 0.85, "time": 1050.0}]
    log.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    out, res = _bench(capsys, tmp_path, "time-to-dice", "--events", str(log))
    assert res["reached"] and res["iteration"] == 100 and res["resumes"] == 1
    assert res["wall_s"] == pytest.approx(950.0) and res["active_s"] == pytest.approx(120.0)


def test_bench_bad_input_is_one_line(capsys):
    assert main(["bench", "time-to-dice"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-dmd bench: error:") and "\n" not in err
