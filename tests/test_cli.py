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
    rep = json.loads(report.read_text(encoding="utf-8"))
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


def _phantom_folder(root):
    """images/ + labels/ of four small 2D phantoms (NIfTI)."""
    from napari_dmd.demo import phantom_cases

    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for c in phantom_cases(4, 2):
        nib.save(nib.Nifti1Image(c.image.T, np.eye(4)), str(root / "images" / f"{c.name}.nii.gz"))
        nib.save(nib.Nifti1Image(c.label.T.astype(np.uint8), np.eye(4)), str(root / "labels" / f"{c.name}.nii.gz"))
    return ["--data", str(root), "--model", "4,8,16", "--patch-size", "32", "32", "--batch-size", "2",
            "--num-threads", "1", "--val-interval", "100"]


def test_default_out_is_a_fresh_folder_under_the_runs_root(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_DMD_RUNS", str(tmp_path / "runs"))
    data = _phantom_folder(tmp_path / "data")
    folders = []
    for _ in range(2):  # the second run never reuses the first one's folder
        assert main(["train-teacher", *data, "--iterations", "1", "--quiet"]) == 0
        out = capsys.readouterr().out
        line = next(ln for ln in out.splitlines() if ln.startswith("run folder: "))
        folders.append(tmp_path / "runs" / line.split("/")[-1])
        assert folders[-1].name.startswith("teacher-") and (folders[-1] / "last.pt").is_file()
        assert f"teacher checkpoint: {folders[-1]}/" in out
    assert folders[0] != folders[1]
    assert not (tmp_path / "runs" / "teacher").exists()  # no longer runs/teacher


def test_ctrl_c_stops_the_run_and_keeps_a_checkpoint(tmp_path, monkeypatch, capsys):
    import os
    import signal

    from napari_dmd.checkpoint import load_checkpoint
    from napari_dmd.cli import progress

    real = progress.ProgressPrinter.__call__

    def ctrl_c_at_step_2(self, ev):
        real(self, ev)
        if ev.kind == "step" and ev.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(progress.ProgressPrinter, "__call__", ctrl_c_at_step_2)
    data = _phantom_folder(tmp_path / "data")
    assert main(["train-teacher", *data, "--iterations", "200", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    assert "interrupted: stopping and writing a checkpoint..." in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "t" / "last.pt")["iteration"] <= 3


def test_no_library_module_imports_the_cli():
    """The CLI calls the libraries (export, demo, bench ...), never the reverse (bench/__main__ is the CLI's)."""
    import ast
    from pathlib import Path

    import napari_dmd

    root = Path(napari_dmd.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        if rel.parts[1:2] == ("cli",) or rel.parts[1:] == ("bench", "__main__"):
            continue
        package = list(rel.parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                names = [mod] + [f"{mod}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "napari_dmd.cli" or n.startswith("napari_dmd.cli.") for n in names):
                offenders.append(str(rel))
    assert offenders == []


def test_help_builds_without_torch():
    """``napari-dmd --help`` answers at once: building the parser imports neither torch nor napari."""
    import subprocess
    import sys

    code = ("import sys; from napari_dmd.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'napari', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
