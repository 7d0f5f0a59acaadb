"""Run folders belong to one run; resumes keep the run; failed writes name the file; temp files are safe.

Tiny 2D phantom runs of a few steps (seconds). Each test writes its own payloads.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_dmd.cli import main
from napari_dmd.config import ConfigError, TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller, TrainingError
from napari_dmd.models.unet import UNet
from napari_dmd.registry import entry_from_checkpoint
from napari_dmd.teachers import load_teacher

TINY = dict(model="4,8,16", batch_size=2, patch_size=[32, 32], val_interval=100, checkpoint_interval=100,
            num_threads=1)


@pytest.fixture(scope="module")
def cases():
    return phantom_cases(4, 2)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"method": "none", "iterations": 2, **TINY, **kw})


def _run(cfg: TrainConfig, cases, out: Path, **kw) -> Distiller:
    d = Distiller(cfg, cases, output_dir=out, **kw)
    d.run_to_end()
    return d


def _teacher_file(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = UNet(2, 1, 6, (4, 8))  # the phantom has 6 classes
    save_checkpoint(path, {"kind": "teacher", "model": model.config(), "state_dict": model.state_dict(),
                           "normalization": "zscore", "patch_size": [32, 32]})
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------ folder ownership
def test_resume_into_another_folder_is_refused_and_leaves_it_untouched(cases, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _run(_cfg(), cases, a)
    _run(_cfg(), cases, b)
    before = _files(b)
    with pytest.raises(ConfigError, match=r"not the folder of the run being resumed .*belongs to .*a"):
        Distiller(_cfg(iterations=4), cases, output_dir=b, resume=a / "last.pt")
    assert _files(b) == before


def test_cli_resume_continues_in_its_own_folder(cases, tmp_path, capsys):
    img, lab = tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(cases[0].image.T, np.eye(4)), str(img))
    nib.save(nib.Nifti1Image(cases[0].label.T.astype(np.uint8), np.eye(4)), str(lab))
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["train-teacher", "--images", str(img), "--labels", str(lab), "--model", "4,8", "--patch-size", "32",
            "32", "--num-threads", "1", "--quiet"]
    assert main([*args, "--iterations", "1", "--out", str(a)]) == 0
    assert main([*args, "--iterations", "1", "--out", str(b)]) == 0
    before = _files(b)
    assert main([*args, "--iterations", "2", "--resume", str(a / "last.pt"), "--out", str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not the folder of the run being resumed" in err and len(err.splitlines()) == 1
    assert _files(b) == before
    assert main([*args, "--iterations", "2", "--resume", str(a / "last.pt")]) == 0  # no --out: its own folder
    assert load_checkpoint(a / "last.pt")["iteration"] == 2 and _files(b) == before


@pytest.mark.parametrize("name", ["config.yaml", "best.pt", "events.jsonl", "tensorboard"])
def test_new_run_refuses_a_folder_with_run_files(cases, tmp_path, name):
    out = tmp_path / "run"
    out.mkdir()
    target = out / name
    if name == "tensorboard":
        target.mkdir()
    else:
        target.write_text("my own file: keep it\n")
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(ConfigError, match=f"already holds {name}"):
        Distiller(_cfg(), cases, output_dir=out)
    assert sorted(p.name for p in out.rglob("*")) == before
    if name != "tensorboard":
        assert target.read_text(encoding="utf-8") == "my own file: keep it\n"


def test_cli_refuses_an_out_folder_holding_the_users_config(cases, tmp_path, capsys):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.yaml").write_text("lr: 0.001\n")
    img = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(cases[0].image.T, np.eye(4)), str(img))
    nib.save(nib.Nifti1Image(cases[0].label.T.astype(np.uint8), np.eye(4)), str(tmp_path / "lab.nii.gz"))
    code = main(["train-teacher", "--config", str(out / "config.yaml"), "--images", str(img), "--labels",
                 str(tmp_path / "lab.nii.gz"), "--out", str(out), "--model", "4,8", "--iterations", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "already holds config.yaml" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]
    assert (out / "config.yaml").read_text(encoding="utf-8") == "lr: 0.001\n"


# ------------------------------------------------------------------------------------ resume compatibility
@pytest.mark.parametrize(("change", "named"), [({"lr": 1e-3}, "lr (was 0.002, now 0.001)"),
                                               ({"batch_size": 3}, "batch_size (was 2, now 3)"),
                                               ({"patch_size": [48, 48]}, "patch_size (was [32, 32], now [48, 48])"),
                                               ({"seed": 5}, "seed (was 0, now 5)")])
def test_resume_with_changed_settings_is_refused_naming_them(cases, tmp_path, change, named):
    d = _run(_cfg(), cases, tmp_path)
    before = _files(tmp_path)
    with pytest.raises(ConfigError, match="cannot resume with changes: ") as info:
        Distiller(_cfg(iterations=4, **change), cases, output_dir=tmp_path, resume=d.last_path)
    assert named in str(info.value) and len(str(info.value).splitlines()) == 1
    assert _files(tmp_path) == before


def test_resume_with_other_data_is_refused(cases, tmp_path):
    d = _run(_cfg(), cases, tmp_path)
    with pytest.raises(ConfigError, match=r"cannot resume with changes: data \(.*phantom_00"):
        Distiller(_cfg(iterations=4), phantom_cases(4, 2, seed=1), output_dir=tmp_path, resume=d.last_path)
    with pytest.raises(ConfigError, match=r"cannot resume with changes: data \("):
        Distiller(_cfg(iterations=4), cases[:3], output_dir=tmp_path, resume=d.last_path)


def test_resume_with_another_teacher_is_refused(cases, tmp_path):
    t1, t2 = _teacher_file(tmp_path / "t1.pt", 1), _teacher_file(tmp_path / "t2.pt", 2)
    cfg = _cfg(method="kd")
    d = _run(cfg, cases, tmp_path / "run", teacher=load_teacher(t1))
    with pytest.raises(ConfigError, match=r"with changes: teacher \(was .*t1.pt, now .*t2.pt: other weights\)"):
        Distiller(_cfg(method="kd", iterations=4), cases, output_dir=tmp_path / "run", resume=d.last_path,
                  teacher=load_teacher(t2))
    moved = tmp_path / "moved.pt"  # the same teacher from another place is the same teacher
    moved.write_bytes(t1.read_bytes())
    r = _run(_cfg(method="kd", iterations=3), cases, tmp_path / "run", resume=d.last_path,
             teacher=load_teacher(moved))
    assert r.iteration == 3


def test_resume_may_change_iterations_intervals_device_and_threads(cases, tmp_path):
    d = _run(_cfg(), cases, tmp_path)
    r = _run(_cfg(iterations=5, val_interval=2, checkpoint_interval=1, log_interval=1, num_threads=2,
                  device="cpu", num_workers=0), cases, tmp_path, resume=d.last_path)
    assert r.iteration == 5 and load_checkpoint(tmp_path / "last.pt")["iteration"] == 5


def test_kill_and_resume_log_each_step_once(cases, tmp_path):
    cfg = _cfg(iterations=8, checkpoint_interval=3, log_interval=1)
    d = Distiller(cfg, cases, output_dir=tmp_path)
    gen = d.run()
    for ev in gen:
        if ev.kind == "step" and ev.iteration == 5:
            break
    # what a SIGKILL after step 5 leaves: last.pt of step 3, events up to step 5 and a line cut in half
    last, events = (tmp_path / "last.pt").read_bytes(), (tmp_path / "events.jsonl").read_text(encoding="utf-8")
    gen.close()
    (tmp_path / "last.pt").write_bytes(last)
    (tmp_path / "events.jsonl").write_text(events + '{"kind": "step", "itera')
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == 3
    _run(cfg, cases, tmp_path, resume=tmp_path / "last.pt")
    lines = [json.loads(ln) for ln in (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [e["iteration"] for e in lines if e["kind"] == "step"]
    assert steps == list(range(1, 9)), steps
    assert [e["iteration"] for e in lines if e["kind"] == "start"] == [0, 3]


def test_resume_keeps_the_score_of_a_best_pt_written_after_last_pt(cases, tmp_path):
    cfg = _cfg(iterations=4, val_interval=2, checkpoint_interval=2)
    d = Distiller(cfg, cases, output_dir=tmp_path)
    gen = d.run()
    for ev in gen:
        if ev.kind == "checkpoint" and ev.iteration == 2:
            break
    last = (tmp_path / "last.pt").read_bytes()
    gen.close()
    # what a kill after a later, better validation leaves: last.pt of step 2 and a best.pt scoring higher
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["best_dice"] < 0.99
    save_checkpoint(tmp_path / "best.pt", {**best, "best_dice": 0.99, "iteration": 3})
    (tmp_path / "last.pt").write_bytes(last)
    resumed = Distiller(cfg, cases, output_dir=tmp_path, resume=tmp_path / "last.pt")
    assert resumed.best_dice == 0.99
    resumed.run_to_end()
    kept = load_checkpoint(tmp_path / "best.pt")
    assert kept["best_dice"] == 0.99 and kept["iteration"] == 3  # not replaced by a worse model


# ------------------------------------------------------------------------------------ failed writes
def test_full_disk_during_checkpoint_names_file_and_resume_point(cases, tmp_path, monkeypatch):
    d = Distiller(_cfg(iterations=6, checkpoint_interval=2), cases, output_dir=tmp_path)
    gen = d.run()
    for ev in gen:
        if ev.kind == "checkpoint":
            break
    before = (tmp_path / "last.pt").read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:  # the disk fills after 1000 bytes: torch itself reports "unexpected pos ... inline_container"
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(TrainingError) as info:
        for _ in gen:
            pass
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'last.pt'}: No space left on device while writing the checkpoint")
    assert "previous last.pt is intact" in message and f"resume from {tmp_path / 'last.pt'}" in message
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(("limit", "name"), [(40_000, "last.pt"), (600, "config.yaml")])
def test_file_size_limit_on_a_resumed_run_names_the_file(cases, tmp_path, limit, name):
    if signal.getsignal(signal.SIGXFSZ) != signal.SIG_IGN:
        pytest.skip("SIGXFSZ is not ignored in this process")
    d = _run(_cfg(), cases, tmp_path, val_cases=[])  # no validation: last.pt is the only checkpoint written
    before = (tmp_path / "last.pt").read_bytes()
    assert len(before) > 60_000 and (tmp_path / "config.yaml").stat().st_size > 600
    r = Distiller(_cfg(iterations=3), cases, val_cases=[], output_dir=tmp_path, resume=d.last_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # ulimit -f
    try:
        with pytest.raises(TrainingError) as info:
            r.run_to_end()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / name}: file size limit reached"), message
    assert "ulimit -f" in message and f"resume from {tmp_path / 'last.pt'}" in message
    assert (tmp_path / "last.pt").read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda c: c.update(patch_size=[16, 16]), "has 2 entries but the model is 3D"),
    (lambda c: c.update(patch_size=[4096] * 3), "absurdly large"),
    (lambda c: c.update(heads={"in_channels": "eight", "state_dict": {}}), "heads in_channels"),
    (lambda c: c.update(heads={"feature_scales": [0]}), "'heads' must be a mapping"),
    (lambda c: c["model"].update(spatial_dims=4), "spatial_dims 4"),
])
def test_hostile_checkpoint_values_are_one_line_errors(tmp_path, capsys, edit, problem):
    model = UNet(3, 1, 3, (4, 8))
    payload = {"kind": "student", "model": model.config(), "state_dict": model.state_dict(),
               "normalization": "zscore", "patch_size": [16, 16, 16], "heads": None}
    edit(payload)
    path = save_checkpoint(tmp_path / "hostile.pt", payload)
    with pytest.raises(CheckpointError, match=f"{path}: invalid checkpoint: .*{problem}"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="invalid checkpoint"):
        entry_from_checkpoint(path, device="cpu")
    vol = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.eye(4)), str(vol))
    code = main(["predict", "--model", str(path), "--input", str(vol), "--output", str(tmp_path / "o.nii.gz"),
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "invalid checkpoint" in err and str(path) in err and len(err.splitlines()) == 1
    assert "unexpected" not in err and not (tmp_path / "o.nii.gz").exists()


def test_heads_that_do_not_fit_the_model_are_a_checkpoint_error(tmp_path):
    model = UNet(2, 1, 3, (4, 8))
    payload = {"kind": "student", "model": model.config(), "state_dict": model.state_dict(),
               "normalization": "zscore", "heads": {"in_channels": [8], "feature_scales": [0],
                                                    "state_dict": {"nonsense": torch.zeros(2)}}}
    path = save_checkpoint(tmp_path / "heads.pt", payload)
    with pytest.raises(CheckpointError, match=f"{path}: invalid checkpoint: its heads do not fit"):
        entry_from_checkpoint(path, device="cpu")


# ------------------------------------------------------------------------------------ temp files, modes
def _eval_args(tmp_path: Path, report: Path) -> list[str]:
    torch.manual_seed(0)
    model = UNet(2, 1, 3, (4, 8))
    ckpt = save_checkpoint(tmp_path / "m.pt", {"kind": "student", "model": model.config(),
                                               "state_dict": model.state_dict(), "normalization": "zscore",
                                               "patch_size": [16, 16]})
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    lab = np.zeros((32, 32), np.uint8)
    lab[4:12, 4:12] = 1
    nib.save(nib.Nifti1Image(img.T, np.eye(4)), str(tmp_path / "i.nii.gz"))
    nib.save(nib.Nifti1Image(lab.T, np.eye(4)), str(tmp_path / "l.nii.gz"))
    return ["evaluate", "--model", str(ckpt), "--images", str(tmp_path / "i.nii.gz"), "--labels",
            str(tmp_path / "l.nii.gz"), "--split", "all", "--device", "cpu", "--json", str(report)]


def test_evaluate_json_never_follows_a_planted_temp_link(tmp_path, capsys):
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    report = tmp_path / "reports" / "r.json"
    report.parent.mkdir()
    args = _eval_args(tmp_path, report)
    for name in (f".r.json.{os.getpid()}.tmp", ".r.json.tmp", "r.json.tmp", ".r.json.1.tmp"):  # guessable names
        (report.parent / name).symlink_to(victim)
    old = os.umask(0o022)
    try:
        assert main(args) == 0
    finally:
        os.umask(old)
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert json.loads(report.read_text(encoding="utf-8"))["cases"] and not report.is_symlink()
    assert stat.S_IMODE(report.stat().st_mode) == 0o644
    left = sorted(p.name for p in report.parent.iterdir() if not p.is_symlink())
    assert left == ["r.json"], left


def test_atomic_temp_names_are_random_and_exclusive(tmp_path):
    from napari_dmd.safe_paths import temp_file

    names = set()
    for _ in range(3):
        fd, tmp = temp_file(tmp_path / "x.json")
        os.close(fd)
        names.add(tmp.name)
        assert str(os.getpid()) not in tmp.name and stat.S_IMODE(tmp.stat().st_mode) == 0o600
    assert len(names) == 3


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_checkpoints_exports_and_run_files_follow_the_umask(cases, tmp_path, mask):
    from napari_dmd.export import export_torchscript

    old = os.umask(mask)
    try:
        d = _run(_cfg(iterations=1), cases, tmp_path / "run")
        export_torchscript(d.model, tmp_path / "s.torchscript.pt", patch_size=[32, 32])
    finally:
        os.umask(old)
    want = 0o666 & ~mask
    for p in (d.last_path, tmp_path / "run" / "config.yaml", tmp_path / "run" / "events.jsonl",
              tmp_path / "s.torchscript.pt"):
        assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))


def test_write_image_never_writes_through_a_planted_temp_link(tmp_path, monkeypatch):
    import secrets
    import tempfile

    from napari_dmd.data.io import read_image, write_image

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.planted.tmp.npy").symlink_to(victim)  # the temp name, guessed (or predicted) in advance
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    monkeypatch.setattr(secrets, "token_hex", lambda n=None: "planted")
    old = os.umask(0o022)
    try:
        out = write_image(tmp_path / "out.npy", np.arange(16, dtype=np.uint8).reshape(4, 4))
    finally:
        os.umask(old)
    assert victim.read_text(encoding="utf-8") == "precious"
    assert np.array_equal(read_image(out).array, np.arange(16).reshape(4, 4))
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.planted.tmp.npy", "out.npy", "victim.txt"]


def test_event_log_is_strict_json(tmp_path):
    """events.jsonl holds no bare NaN/Infinity: other tools' JSON readers accept every line."""
    import json
    import math

    from napari_dmd.runs import EventLog

    log = EventLog(tmp_path / "events.jsonl", tmp_path / "last.pt")
    log.write({"kind": "start", "eta_s": math.nan, "dice": [0.5, math.inf]})
    log.close()
    line = (tmp_path / "events.jsonl").read_text(encoding="utf-8").strip()
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}")) == {
        "kind": "start", "eta_s": None, "dice": [0.5, None]}
