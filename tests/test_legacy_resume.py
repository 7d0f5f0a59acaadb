"""A run written before a setting existed resumes as it was trained (the setting's old value), not refused."""

from __future__ import annotations

import torch

from napari_dmd.checkpoint import load_checkpoint, save_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.models.presets import build_model
from napari_dmd.models.unet import UNet
from napari_dmd.runs import LEGACY_SETTINGS
from napari_dmd.teachers import load_teacher

TINY = dict(method="none", model="4,8,16", batch_size=2, patch_size=[32, 32], val_interval=100,
            checkpoint_interval=100, num_threads=1)


def test_a_checkpoint_from_before_target_balance_resumes_with_the_old_behaviour(tmp_path):
    cases = phantom_cases(4, 2)
    d = Distiller(TrainConfig(iterations=2, **TINY), cases, output_dir=tmp_path)
    d.run_to_end()
    ckpt = load_checkpoint(d.last_path)
    for key in LEGACY_SETTINGS:  # as written by a version without these settings
        ckpt["run"]["settings"].pop(key)
        ckpt["config"].pop(key)
    save_checkpoint(d.last_path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    cfg = TrainConfig(iterations=4, **TINY)
    assert cfg.target_balance is None  # today: the method's default
    resumed = Distiller(cfg, cases, output_dir=tmp_path, resume=d.last_path)
    assert resumed.config.target_balance is False and resumed.config.target_temperature == cfg.temperature
    assert resumed.run_to_end()["iteration"] == 4


def _as_old_student(path) -> None:
    """Rewrite a ``student-classic`` checkpoint as written before 2026-12-06, when that network was ``student``."""
    ckpt = load_checkpoint(path)
    assert ckpt["run"]["settings"]["model"]["norm"] == "instance"  # the record holds the architecture itself
    ckpt["config"]["model"] = "student"
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})


def test_a_run_of_the_old_default_student_resumes_and_starts_a_round_as_trained(tmp_path):
    from napari_dmd.corrections import start_round

    cases = phantom_cases(4, 2)
    old = {**TINY, "model": "student-classic"}
    d = Distiller(TrainConfig(iterations=2, **old), cases, output_dir=tmp_path / "run")
    d.run_to_end()
    _as_old_student(d.last_path)
    assert build_model("student", 2, 6).norm == "batch"  # the name now means another network
    resumed = Distiller(TrainConfig(iterations=3, **{**old, "model": "student"}), cases, output_dir=tmp_path / "run",
                        resume=d.last_path)
    assert (resumed.model.norm, resumed.model.stem) == ("instance", 1)
    assert resumed.run_to_end()["iteration"] == 3
    net = UNet(2, 1, 6, (4, 8))  # a stand-in teacher (the run trained alone; a round distils)
    teacher = save_checkpoint(tmp_path / "t.pt", {"kind": "teacher", "model": net.config(), "normalization": "zscore",
                                                  "state_dict": net.state_dict(), "patch_size": [32, 32]})
    r = start_round(d.last_path, cases, [None] * len(cases), iterations=1, out=tmp_path / "round",
                    teacher=load_teacher(teacher))
    assert (r.model.norm, r.model.stem) == ("instance", 1)
    assert all(torch.equal(a, b) for a, b in zip(r.model.state_dict().values(),
                                                 load_checkpoint(d.last_path)["state_dict"].values()))
    assert r.run_to_end()["iteration"] == 1


def test_a_run_of_the_old_tiny_student_resumes_as_trained(tmp_path):
    cases = phantom_cases(4, 2)
    old = {**TINY, "model": "student-tiny-classic"}
    d = Distiller(TrainConfig(iterations=2, **old), cases, output_dir=tmp_path / "run")
    d.run_to_end()
    ckpt = load_checkpoint(d.last_path)  # as written before 2026-12-06 (evening), when that network was student-tiny
    ckpt["config"]["model"] = "student-tiny"
    save_checkpoint(d.last_path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    assert tuple(build_model("student-tiny", 2, 6).channels) != (4, 8, 16, 24, 32)  # the name means another net
    resumed = Distiller(TrainConfig(iterations=3, **{**old, "model": "student-tiny"}), cases,
                        output_dir=tmp_path / "run", resume=d.last_path)
    assert (tuple(resumed.model.channels), resumed.model.norm, resumed.model.stem) == ((4, 8, 16, 24, 32),
                                                                                      "instance", 1)
    assert resumed.run_to_end()["iteration"] == 3


def test_only_a_former_meaning_of_the_same_name_is_taken_from_a_checkpoint():
    from napari_dmd.models.presets import as_trained

    saved = build_model("student-tiny-classic", 2, 3).config()
    for name in ("student", "student-fast", None):  # other channels under another name: the caller's check
        model = build_model(name or "student-fast", 2, 3)
        assert as_trained(model, saved, name) is model
    model = build_model("student-tiny", 2, 3)
    assert tuple(as_trained(model, saved, "student-tiny").channels) == (4, 8, 16, 24, 32)
    other = {**saved, "channels": [4, 8, 16, 24, 48]}  # not what student-tiny meant
    assert as_trained(model, other, "student-tiny") is model


def test_a_3d_run_of_the_former_default_and_tiny_students_resumes_as_trained(tmp_path):
    """In 3D ``student`` was ``student-fast-deep``'s network and ``student-tiny`` ``student-fast``'s until 2026-12-06
    (17:00 UTC): a run saved then resumes with the network it trained."""
    cases = phantom_cases(3, 3)
    for name, former in (("student", "student-fast-deep"), ("student-tiny", "student-fast")):
        cfg = {**TINY, "model": former, "patch_size": [16, 32, 32]}
        d = Distiller(TrainConfig(iterations=1, **cfg), cases, output_dir=tmp_path / name)
        d.run_to_end()
        ckpt = load_checkpoint(d.last_path)  # as written when that network was `name` in 3D
        ckpt["config"]["model"] = name
        save_checkpoint(d.last_path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
        was = build_model(former, 3, d.num_classes).channels
        assert build_model(name, 3, d.num_classes).channels != was  # the name now means another network
        resumed = Distiller(TrainConfig(iterations=2, **{**cfg, "model": name}), cases, output_dir=tmp_path / name,
                            resume=d.last_path)
        assert resumed.model.channels == was and resumed.model.stem == 2
        assert resumed.run_to_end()["iteration"] == 2


def test_only_a_former_3d_meaning_of_the_same_name_that_built_the_same_network_is_taken():
    from napari_dmd.models.presets import as_trained

    saved = build_model("student-fast-deep", 3, 3).config()  # the five-level 3D network
    model = build_model("student", 3, 3)
    assert tuple(as_trained(model, saved, "student").channels) == (8, 16, 24, 40, 64)
    assert as_trained(model, saved, "student-fast") is model  # not a former meaning of that name
    assert as_trained(model, {**saved, "stem": 1}, "student") is model  # not what any former meaning built
