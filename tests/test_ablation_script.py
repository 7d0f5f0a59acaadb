"""Smoke test of benchmarks/ablation.py: a seconds-long run on the phantom, then its report (numbers mean nothing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
PARTS = ("ablation_specs", "ablation_jobs", "ablation_report")  # the modules beside it that it imports


@pytest.fixture
def ablation(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation_script"] = module
    spec.loader.exec_module(module)
    yield module
    for name in ("ablation_script", *PARTS):  # a fresh SPECS (apply_scale, patch) for the next test
        sys.modules.pop(name, None)


def test_ablation_runs_and_reports(ablation, tmp_path, monkeypatch):
    out = tmp_path / "abl"
    monkeypatch.setattr(sys.modules["ablation_specs"], "FULL_METHODS", ("none", "dmd"))  # read by plan()
    ablation.apply_scale(0.004)  # 2-4 iterations per job
    ablation.SPECS["phantom2d"].patch = [32, 32]
    for job in [ablation.Job("phantom2d", "teacher", "none"),
                *[j for j in ablation.plan(["phantom2d"], (0,)) if j.setting == "full"]]:
        res = ablation.run_job(job, out)
        assert 0.0 <= res["mean_dice"] <= 1.0 and res["params"] > 0
    rows = sorted(p.name for p in (out / "jobs").glob("*.json"))
    assert rows == ["phantom2d_full_dmd-hs_lambda_feat0.667_s0.json", "phantom2d_full_dmd_lambda_feat0.667_s0.json",
                    "phantom2d_full_none_s0.json", "phantom2d_teacher_none_s0.json"]  # hs: DMD's default, by default
    job = json.loads((out / "jobs" / rows[0]).read_text(encoding="utf-8"))
    assert job["iterations"] == ablation.SPECS["phantom2d"].student_iters
    ablation.report(out, tmp_path / "docs" / "results.md")
    text = (tmp_path / "docs" / "results.md").read_text(encoding="utf-8")
    assert "## Full labels" in text and "| DMD as published |" in text and "teacher minus student alone" in text
    assert "DMD's default (with heads) minus teacher" in text and "DMD as published minus teacher" in text
    assert "jobs lose a class" in text and "## Reading" not in text  # no hand-written notes unless given
    assert (tmp_path / "docs" / "images" / "ablation.png").stat().st_size > 1000


def test_default_plan_has_dmds_default_and_no_tiny_rows(ablation):
    jobs = ablation.plan(["chaos"], (0,))
    methods = {(j.setting, j.method) for j in jobs}
    assert ("full", "dmd-hs") in methods and ("lowlabel", "dmd-hs") in methods and ("full", "dmd") in methods
    assert not any(j.setting == "tiny" for j in jobs)
    assert {j.method for j in ablation.plan(["chaos"], (0,), ("tiny",))} == set(ablation.TINY_METHODS)


def test_pool_setting_plans_extra_full_rows(ablation):
    default = ablation.plan(["hippocampus", "hc18"], (0, 1))
    assert not any(j.method.endswith("-pool") for j in default)
    extra = ablation.plan(["hippocampus", "hc18"], (0, 1), ("pool",))
    assert sorted({(j.dataset, j.setting, j.method) for j in extra}) == [
        ("hippocampus", "full", "dmd-pool"), ("hippocampus", "full", "mfd-pool")]
    job = next(j for j in extra if j.method == "dmd-pool")
    cfg = ablation._config(ablation.SPECS["hippocampus"], job, "student", 2)
    assert (cfg.method, cfg.scale_resample, cfg.lambda_feat) == ("dmd", "pool", ablation.WEIGHTS["dmd"]["lambda_feat"])
    plain = ablation._config(ablation.SPECS["hippocampus"], default[0], "student", 2)
    assert plain.scale_resample == "up"


def test_t1_setting_plans_dmd_with_its_target_term_at_T1(ablation):
    jobs = ablation.plan(["chaos"], (0, 2), ("t1",))
    assert [(j.setting, j.method, j.seed) for j in jobs] == [
        ("full", m, s) for s in (0, 2) for m in ("kd", "dkd", "dmd")]
    assert jobs[2].id == "chaos_full_dmd_lambda_feat0.667_target_balance1_target_temperature1_s0"
    for job in jobs[:3]:
        cfg = ablation._config(ablation.SPECS["chaos"], job, "student", 2)
        assert (cfg.method, cfg.target_balance, cfg.target_temperature) == (job.method, True, 1.0)
