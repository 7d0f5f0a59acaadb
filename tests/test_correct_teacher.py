"""correct_teacher: where a label disagrees with the teacher, the teacher's logits of its top class and of the label
are swapped before every distillation term (the label becomes the teacher's top class, the rest is kept)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from napari_dmd.cli.flags import _add_config_flags
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill import engine as engine_mod
from napari_dmd.distill._common import label_corrected_teacher
from napari_dmd.distill.engine import Distiller
from napari_dmd.teachers import ModelTeacher

IGNORE = 255


def _reference(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The swap written voxel by voxel in numpy (independent of the torch gather/scatter)."""
    moved = np.moveaxis(logits, 1, -1)
    classes = moved.reshape(-1, logits.shape[1]).copy()  # (voxels, C)
    for z, lab in zip(classes, labels.reshape(-1)):
        top = int(np.argmax(z))
        if lab != IGNORE and lab != top:
            z[top], z[lab] = z[lab], z[top]
    return np.moveaxis(classes.reshape(moved.shape), -1, 1)


def test_swap_on_a_hand_made_case():
    # 3 classes, 4 voxels: wrong label, label == teacher's top, unlabelled, another wrong label
    z = torch.tensor([[[3.0, 0.5, -1.0, 0.0], [1.0, 2.5, 4.0, 0.2], [-2.0, 0.0, 0.0, 1.0]]])  # (1, 3, 4)
    y = torch.tensor([[2, 1, IGNORE, 0]])
    out, top = label_corrected_teacher(z, y, IGNORE)
    expected = torch.tensor([[[-2.0, 0.5, -1.0, 1.0], [1.0, 2.5, 4.0, 0.2], [3.0, 0.0, 0.0, 0.0]]])
    assert torch.equal(out, expected)
    assert torch.equal(top, torch.tensor([[0, 1, 1, 2]]))  # the teacher's own argmax, before the swap
    assert torch.equal(out.argmax(1)[y != IGNORE], y[y != IGNORE])
    assert torch.equal(z[0, :, 3], torch.tensor([0.0, 0.2, 1.0]))  # the input is not modified


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 4, 3, 5, 6)])
def test_swap_matches_numpy_reference(shape):
    g = torch.Generator().manual_seed(len(shape))
    z = torch.randn(shape, generator=g)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.3] = IGNORE
    out, top = label_corrected_teacher(z, y.to(torch.uint8), IGNORE)
    assert np.array_equal(out.numpy(), _reference(z.numpy(), y.numpy()))
    assert torch.equal(top, z.argmax(1))
    keep = (y == IGNORE) | (y == top)
    assert torch.equal(out.movedim(1, -1)[keep], z.movedim(1, -1)[keep])  # unlabelled / agreeing: unchanged
    assert torch.equal(out.sort(1).values, z.sort(1).values)  # a permutation of each voxel's logits


@pytest.mark.parametrize("on", [False, True])
def test_every_distillation_term_sees_the_corrected_teacher_only_when_on(on, tmp_path, monkeypatch):
    torch.manual_seed(0)
    cases = phantom_cases(3, 2)  # fully labelled
    net = torch.nn.Conv2d(1, 6, 1)  # an untrained teacher: disagrees with the labels almost everywhere
    raw, seen = [], []

    class Recording(ModelTeacher):
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            raw.append(super().__call__(x))
            return raw[-1]

    teacher = Recording(net, 6, 2)
    original = engine_mod.distill_loss
    monkeypatch.setattr(engine_mod, "distill_loss",
                        lambda *a, **k: seen.append((raw[-1], a[3], a[4])) or original(*a, **k))
    cfg = TrainConfig(method="dmd", iterations=2, model="4,8,16", batch_size=2, patch_size=[32, 32],
                      val_interval=50, num_threads=1, correct_teacher=on)
    Distiller(cfg, cases, teacher=teacher, output_dir=tmp_path).run_to_end()
    assert len(seen) == 2
    for plain, passed, y in seen:
        assert (plain.argmax(1) != y).any()  # the case the setting is for
        if on:
            assert torch.equal(passed, label_corrected_teacher(plain, y, IGNORE)[0])
            assert torch.equal(passed.argmax(1), y)
        else:
            assert torch.equal(passed, plain)


def test_off_by_default_and_a_cli_flag():
    assert TrainConfig().correct_teacher is False
    p = argparse.ArgumentParser()
    _add_config_flags(p)
    assert "--correct-teacher" in p.format_help() and p.parse_args(["--correct-teacher"]).correct_teacher is True
