"""The command line: help, the train-teacher -> distill -> evaluate -> predict pipeline on real data, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_dmd.cli import main
from napari_dmd.config import TrainConfig

FAST = ["--iterations", "3", "--val-interval", "3", "--checkpoint-interval", "3", "--batch-size", "2",
        "--num-threads", "2"]


@pytest.mark.parametrize("verb", ["train-teacher", "distill", "predict", "evaluate", "demo"])
def test_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert "usage: napari-dmd" in capsys.readouterr().out


def test_hippocampus_pipeline(hippocampus_dir, tmp_path, capsys):
    data = ["--data", str(hippocampus_dir), "--max-cases", "8"]
    assert main(["train-teacher", *data, "--out", str(tmp_path / "t"), "--model", "8,16,32", *FAST,
                 "--quiet"]) == 0
    teacher = tmp_path / "t" / "last.pt"
    assert main(["distill", "--teacher", str(teacher), *data, "--out", str(tmp_path / "s"), "--method", "dmd",
                 "--model", "4,8,16", *FAST, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "teacher: " in out and "student (4,8,16)" in out and "parameters" in out
    student = tmp_path / "s" / "last.pt"
    report = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(student), "--teacher", str(teacher), *data, "--json",
                 str(report)]) == 0
    out = capsys.readouterr().out
    assert "mean foreground Dice" in out and "compression" in out
    rep = json.loads(report.read_text())
    assert len(rep["model"]["dice_mean"]) == 2 and rep["teacher"]["parameters"] > rep["model"]["parameters"]
    # predict keeps the source affine
    src = sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[0]
    dst = tmp_path / "pred.nii.gz"
    assert main(["predict", "--model", str(student), "--input", str(src), "--output", str(dst), "--quiet"]) == 0
    a, b = nib.load(src), nib.load(dst)
    assert np.array_equal(a.affine, b.affine) and a.shape == b.shape
    # an existing output is never overwritten silently
    before = dst.read_bytes()
    assert main(["predict", "--model", str(student), "--input", str(src), "--output", str(dst)]) == 2
    assert "exists" in capsys.readouterr().err and dst.read_bytes() == before
    # the saved config is reusable as is
    cfg = TrainConfig.load_yaml(tmp_path / "s" / "config.yaml")
    assert cfg.method == "dmd" and cfg.iterations == 3
    assert main(["distill", "--teacher", str(teacher), *data, "--config", str(tmp_path / "s" / "config.yaml"),
                 "--out", str(tmp_path / "s2"), "--no-labels", "--quiet"]) == 0


def test_hc18_binary_pipeline_warns_about_nckd(hc18_dir, tmp_path, capsys):
    data = ["--data", str(hc18_dir), "--max-cases", "6", "--patch-size", "64", "64"]
    assert main(["train-teacher", *data, "--out", str(tmp_path / "t"), "--model", "4,8,16", *FAST,
                 "--quiet"]) == 0
    with pytest.warns(UserWarning, match="NCKD"):
        assert main(["distill", "--teacher", str(tmp_path / "t" / "last.pt"), *data, "--out",
                     str(tmp_path / "s"), "--model", "4,8,16", *FAST, "--quiet"]) == 0


@pytest.mark.parametrize("args,msg", [
    (["train-teacher", "--data", "/nonexistent/folder"], "must be a folder"),
    (["train-teacher", "--images", "/nonexistent.nii.gz"], "nonexistent.nii.gz"),
    (["distill", "--teacher", "/nonexistent.pt", "--data", "."], "no such checkpoint"),
    (["train-teacher", "--data", ".", "--iterations", "-1"], "iterations"),
    (["train-teacher", "--data", ".", "--batch-size", "0"], "batch_size"),
    (["train-teacher", "--data", ".", "--temperature", "0"], "temperature"),
])
def test_bad_input_one_line_error(args, msg, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_console_script_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "napari_dmd.cli", "predict", "--model", str(tmp_path / "x.pt"),
                        "--input", str(tmp_path), "--output", str(tmp_path / "o")], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "x.pt" in r.stderr
