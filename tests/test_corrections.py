"""Painted corrections: the labels file, a round from a student checkpoint, the CLI, the sampler's focus."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.cli import main
from napari_dmd.config import FOCUS_2D, FOCUS_3D, focus_share
from napari_dmd.corrections import (
    IGNORE,
    corrections_labels,
    load_corrections,
    match_files,
    round_info,
    save_corrections,
    start_round,
)
from napari_dmd.data.cases import load_folder_pairs
from napari_dmd.data.io import DataError, write_image
from napari_dmd.data.sampling import PatchSampler
from napari_dmd.phantom import make_phantom_dataset

TINY = ["--model", "4,8,16", "--patch-size", "32", "32", "--batch-size", "2", "--num-threads", "1",
        "--val-interval", "2", "--checkpoint-interval", "50", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four 2D phantom cases on disk, a tiny teacher and a tiny label-free student (a few steps each)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("corr")
    for i, (img, lab) in enumerate(make_phantom_dataset(4, (64, 64), num_classes=4, seed=3)):
        write_image(root / "data" / "images" / f"case_{i}.nii.gz", img)
        write_image(root / "data" / "labels" / f"case_{i}.nii.gz", lab)
    data = ["--data", str(root / "data")]
    assert main(["train-teacher", *data, "--out", str(root / "t"), "--iterations", "4", *TINY]) == 0
    assert main(["distill", "--teacher", str(root / "t" / "last.pt"), *data, "--out", str(root / "s"),
                 "--method", "kd", "--iterations", "4", "--labelled-cases", "0", *TINY]) == 0
    cases = {c.name: c for c in load_folder_pairs(root / "data" / "images", root / "data" / "labels")}
    return root, data, cases


def test_corrections_labels_save_load_round_trip(tmp_path):
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 3
    painted = np.zeros(labels.shape, bool)
    painted[1, :2] = True
    corr = corrections_labels(labels, painted)
    assert corr.dtype == np.uint8 and (corr[~painted] == IGNORE).all() and (corr[painted] == labels[painted]).all()
    affine = np.diag([0.5, 2.0, 3.0, 1.0])
    affine[:3, 3] = [10, -4, 7]
    nii = save_corrections(tmp_path / "c.nii.gz", corr, affine=affine)
    assert np.array_equal(load_corrections(nii), corr)
    assert np.allclose(nib.load(nii).affine, affine)
    npz = save_corrections(tmp_path / "c.npz", corr)
    assert np.array_equal(load_corrections(npz), corr)
    with pytest.raises(DataError, match="exists"):  # nothing is overwritten
        save_corrections(nii, corr)


def test_match_files_by_name_or_order():
    names = ["case_1", "case_10", "case_2"]
    hit = match_files(["x/corr-case_10.nii.gz"], names)  # case_10, not case_1
    assert hit[0] is None and hit[1].name == "corr-case_10.nii.gz" and hit[2] is None
    assert [p.name for p in match_files(["a.nii", "b.nii", "c.nii"], names)] == ["a.nii", "b.nii", "c.nii"]
    with pytest.raises(DataError, match="names none of the parent run's 3 training cases"):
        match_files(["a.nii"], names)
    with pytest.raises(DataError, match="validation case"):
        match_files(["corr-case_7.nii.gz"], names, ["case_7"])


def test_sampler_focus_centres_patches_on_painted_voxels_and_resumes_exactly():
    img = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    focus = np.zeros((64, 64), bool)
    focus[60:, 60:] = True
    s = PatchSampler([img, img], [None, None], (16, 16), batch_size=64, augment=False, focus=[focus, None], seed=4)
    _, _, _ = s.sample()
    state = s.state_dict()
    a = s.sample()[0]
    s.load_state_dict(state)
    assert np.array_equal(a, s.sample()[0])  # exact resume
    hits = sum(bool(np.isin(p[0], img[48:, 48:]).all()) for p in a)
    assert hits >= 16  # about half the patches sit in the painted corner (by chance: 64 * 1/49)
    plain = PatchSampler([img], [None], (16, 16), batch_size=4, augment=False, seed=4).sample()[0]
    same = PatchSampler([img], [None], (16, 16), batch_size=4, augment=False, seed=4, focus=[None]).sample()[0]
    assert np.array_equal(plain, same)  # without focus voxels the stream is the one it always was


def test_start_round_folder_weights_and_override(runs, tmp_path):
    root, _, cases = runs
    parent = root / "s" / "last.pt"
    ck = load_checkpoint(parent)
    train = [cases[r[0]] for r in ck["run"]["data"]["train"]]
    # the teacher never predicts class 3 at the top rows; paint class 3 there and train hard on it
    painted = np.zeros(train[0].image.shape, bool)
    painted[:16] = True
    corr = corrections_labels(np.full(painted.shape, 3, np.uint8), painted)
    d = start_round(parent, train, [corr] + [None] * (len(train) - 1), iterations=12, out=tmp_path / "r1",
                    lr=0.05, fg_fraction=0.0)
    assert all(torch.equal(ck["state_dict"][k], v) for k, v in d.model.state_dict().items())  # parent's weights
    info = round_info(tmp_path / "r1")
    assert info["parent"] == str(parent) and info["round"] == 1 and info["painted_voxels"] == int(painted.sum())
    assert not d.config.correct_teacher and info["correct_teacher"] is False  # off by default (measured worse)
    assert ck["config"].get("correct_teacher", False) is False  # the parent distilled without it
    assert info["corrections"] == [f"corrections-{train[0].name}.nii.gz"] and info["cases"] == [train[0].name]
    assert np.array_equal(load_corrections(tmp_path / "r1" / info["corrections"][0]), corr)
    assert d.train_cases[0].label is not None and (d.train_cases[0].label[16:] == IGNORE).all()  # parent: no labels
    before = d.predict(d.sampler._images[0]).argmax(0)
    d.run_to_end()
    after = d.predict(d.sampler._images[0]).argmax(0)
    assert (after[:16] == 3).mean() > max(0.9, (before[:16] == 3).mean() + 0.3)  # painted labels override
    r2 = start_round(d.last_path, train, [None] * len(train), iterations=1, out=tmp_path / "r2",
                     correct_teacher=True)
    assert round_info(tmp_path / "r2")["round"] == 2 and r2.config.lr == pytest.approx(ck["config"]["lr"] * 0.2)
    assert r2.config.correct_teacher is True and round_info(tmp_path / "r2")["correct_teacher"] is True
    assert np.array_equal(r2.train_cases[0].label, d.train_cases[0].label)  # corrections carry over


def test_background_only_paint_starts_a_round(runs, tmp_path):
    """Removing a false positive paints background only; the engine needs some foreground label, so the unpainted
    voxels of that case take the teacher's prediction (what they would be taught anyway)."""
    root, _, cases = runs
    parent = root / "s" / "last.pt"
    case = cases[load_checkpoint(parent)["run"]["data"]["train"][0][0]]
    painted = np.zeros(case.image.shape, bool)
    painted[:8, :8] = True
    corr = corrections_labels(np.zeros(painted.shape, np.uint8), painted)
    d = start_round(parent, [case], [corr], iterations=1, out=tmp_path / "bg")
    label = d.train_cases[0].label
    assert (label[painted] == 0).all() and not (label == IGNORE).any() and (label > 0).any()


def test_cli_round_and_mismatched_corrections(runs, tmp_path, capsys):
    root, data, cases = runs
    parent = root / "s" / "last.pt"
    name = load_checkpoint(parent)["run"]["data"]["train"][0][0]
    painted = np.zeros(cases[name].image.shape, bool)
    painted[30:34] = True
    corr = save_corrections(tmp_path / f"fix-{name}.nii.gz", corrections_labels(cases[name].label, painted))
    out = tmp_path / "round"
    assert main(["distill", "--resume", str(parent), "--corrections", str(corr), *data, "--iterations", "2",
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "round 1 from" in text and f"{int(painted.sum()):,} voxels painted" in text
    info = json.loads((out / "round.json").read_text(encoding="utf-8"))
    assert info["cases"] == [name] and (out / "last.pt").is_file()
    # resume the round in place (its own corrections), one more step
    assert main(["distill", "--resume", str(out / "last.pt"), *data, "--iterations", "3", "--quiet"]) == 0
    assert load_checkpoint(out / "last.pt")["iteration"] == 3
    # a file naming no training case: one line, exit 2, no folder made
    bad = save_corrections(tmp_path / "other.nii.gz", corrections_labels(cases[name].label, painted))
    assert main(["distill", "--resume", str(parent), "--corrections", str(bad), str(corr), *data,
                 "--out", str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "other.nii.gz: names none of the parent run's" in err
    assert not (tmp_path / "no").exists()
    assert main(["distill", *data]) == 2  # no --teacher and nothing to resume: as before, one line
    assert "required: --teacher" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(root / "t" / "last.pt"), "--corrections", str(corr), *data]) == 2
    assert "--corrections needs --resume" in capsys.readouterr().err
    small = save_corrections(tmp_path / f"s-{name}.npz", np.full((8, 8), IGNORE, np.uint8))
    assert main(["distill", "--resume", str(parent), "--corrections", str(small), *data]) == 2
    assert "do not match the image" in capsys.readouterr().err


@pytest.mark.timeout(60)  # about 10 s on one idle core; the budget leaves room for a loaded machine
def test_bench_corrections_quick(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "1", "--out", str(out),
                 "--json", str(tmp_path / "b.json")]) == 0
    assert "round 1: 15 slices" in capsys.readouterr().out
    rows = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]["rows"]
    assert [r["round"] for r in rows] == [0, 1] and rows[0]["voxels_painted"] == 0
    assert rows[1]["slices_corrected"] == 15 and rows[1]["voxels_painted"] > 0
    assert len(rows[1]["student_dice"]) == 3 and 0 <= rows[1]["teacher_mean_dice"] <= 1
    info = round_info(out / "round-1")
    assert info["round"] == 1 and len(info["cases"]) == 3 and info["parent"] == str(out / "student" / "last.pt")


def test_focus_fraction_sets_the_share_of_patches_on_painted_voxels(runs, tmp_path):
    img = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    focus = np.zeros((64, 64), bool)
    focus[60:, 60:] = True

    def corner_share(fraction: float) -> float:
        s = PatchSampler([img], [None], (16, 16), batch_size=400, augment=False, focus=[focus], seed=2,
                         focus_fraction=fraction)
        return float(np.mean([np.isin(p[0], img[48:, 48:]).all() for p in s.sample()[0]]))

    assert corner_share(0.0) < 0.1 and 0.4 < corner_share(0.5) < 0.6 and corner_share(1.0) == 1.0
    root, _, cases = runs  # the round's config carries it to the engine's sampler
    ck = load_checkpoint(root / "s" / "last.pt")
    train = [cases[r[0]] for r in ck["run"]["data"]["train"]]
    painted = np.zeros(train[0].image.shape, bool)
    painted[:8] = True
    corr = [corrections_labels(train[0].label, painted)] + [None] * (len(train) - 1)
    d = start_round(root / "s" / "last.pt", train, corr, iterations=1, out=tmp_path / "r", focus_fraction=0.7)
    assert d.config.focus_fraction == 0.7 and d.sampler.focus_fraction == 0.7
    assert ck["config"]["focus_fraction"] is None  # the parent: the default, by the model's dims
    d = start_round(root / "s" / "last.pt", train, corr, iterations=1, out=tmp_path / "r2")
    assert d.sampler.focus_fraction == FOCUS_2D == 0.9  # a 2D model's round, unless told otherwise
    assert focus_share(None, 3) == FOCUS_3D == 0.5 and focus_share(0.2, 2) == focus_share(0.2, 3) == 0.2


def test_bench_corrections_reuses_a_round0_student(tmp_path, capsys):
    first = tmp_path / "a"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "0", "--out", str(first)]) == 0
    start = first / "student" / "last.pt"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "1", "--out", str(tmp_path / "b"),
                 "--round0", str(start), "--focus-fraction", "1", "--json", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    assert f"round-0 student: {start} (given)" in printed and not (tmp_path / "b" / "student").exists()
    res = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]
    assert res["settings"]["round0_checkpoint"] == str(start) and res["settings"]["focus_fraction"] == 1.0
    assert load_checkpoint(tmp_path / "b" / "round-1" / "last.pt")["config"]["focus_fraction"] == 1.0
    assert main(["bench", "corrections", "--quick", "--round0", str(tmp_path / "none.pt")]) != 0
    assert "no such checkpoint file" in capsys.readouterr().err
    assert main(["bench", "corrections", "--quick", "--focus-fraction", "1.5"]) != 0  # refused before any data
    assert "focus_fraction must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_rounds_train_without_head_supervision_unless_asked(runs, tmp_path):
    root, data, cases = runs
    assert main(["distill", "--teacher", str(root / "t" / "last.pt"), *data, "--out", str(tmp_path / "dmd"),
                 "--method", "dmd", "--iterations", "2", "--labelled-cases", "0", *TINY]) == 0
    parent = tmp_path / "dmd" / "last.pt"
    ck = load_checkpoint(parent)
    assert ck["config"]["head_supervision"] == 1.0  # DMD's default, recorded as used
    train = [cases[r[0]] for r in ck["run"]["data"]["train"]]
    plain = start_round(parent, train, [None] * len(train), iterations=1, out=tmp_path / "r1")
    assert plain.config.head_supervision == 0.0  # measured better for rounds (docs/results.md)
    asked = start_round(parent, train, [None] * len(train), iterations=1, out=tmp_path / "r2", head_supervision=1.0)
    assert asked.config.head_supervision == 1.0
    for d in (plain, asked):
        d.run_to_end()
    assert load_checkpoint(tmp_path / "r1" / "last.pt")["config"]["head_supervision"] == 0.0


@pytest.mark.parametrize(("dims", "parent", "overrides", "expected"), [
    (2, dict(augment=False, flips=True), {}, (False, True, False)),  # off by default: the parent's as it was
    (2, dict(augment=False, flips=True), dict(round_augment=True), (True, False, True)),  # flips stay off
    (2, dict(augment=True, flips=True), dict(round_augment=True), (True, True, True)),  # the parent flipped
    (2, dict(augment=True, flips=False), dict(round_augment=True), (True, False, True)),  # left/right stay apart
    (2, dict(augment=True, flips=True), dict(round_augment=True, augment=False), (False, True, True)),
    (3, dict(augment=False, flips=True), dict(round_augment=True), (False, True, False)),  # 3D: the parent's
])
def test_round_augment_adds_augmentation_to_2d_rounds_only(dims, parent, overrides, expected):
    from napari_dmd.config import TrainConfig
    from napari_dmd.corrections import _round_config

    cfg = TrainConfig(spatial_dims=dims, patch_size=[32] * dims, **parent)
    ckpt = {"config": cfg.to_dict(), "patch_size": [32] * dims, "model": {"spatial_dims": dims, "num_classes": 3}}
    got = _round_config(ckpt, 10, dict(overrides), None)
    assert (got.augment, got.flips, got.spatial_augment) == expected
