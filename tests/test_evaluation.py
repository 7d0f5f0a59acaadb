"""The one evaluator (napari_dmd.evaluation) and the runtime helpers, against hand-computed cases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from napari_dmd.data.cases import Case
from napari_dmd.evaluation import compression, evaluate_cases, teacher_segmenter
from napari_dmd.runtime import available_devices, machine_info, resolve_device, usable_cores


@dataclass
class FixedSegmenter:
    """Returns a given label map per case name; counts as a Segmenter for evaluate_cases."""

    preds: dict[str, np.ndarray]
    num_classes: int = 3
    class_names: list[str] | None = None
    name: str = "fixed"
    parameters: int = 10

    def __call__(self, image: np.ndarray, source: str = "") -> np.ndarray:
        return self.preds[source]


def _case(name: str, label: np.ndarray) -> Case:
    return Case(image=np.zeros(label.shape, np.float32), label=label, spacing=(1.0, 1.0), affine=np.eye(4),
                name=name)


def test_evaluate_cases_hand_computed():
    # case a: class 1 = 2 truth pixels, predicted 1 of them + 1 false: Dice 2*1/(2+2) = 0.5; class 2 exact: 1.0
    lab_a = np.array([[1, 1, 0], [2, 0, 0]])
    pred_a = np.array([[1, 0, 1], [2, 0, 0]])
    # case b: class 1 exact; class 2 absent in both -> NaN (not counted)
    lab_b = np.array([[1, 0, 0], [0, 0, 0]])
    pred_b = lab_b.copy()
    seg = FixedSegmenter({"a": pred_a, "b": pred_b})
    ev = evaluate_cases(seg, [_case("a", lab_a), _case("b", lab_b)], hd95=False)
    assert ev["n_cases"] == 2
    assert ev["dice_per_class"] == pytest.approx([0.75, 1.0])
    assert ev["per_case"] == pytest.approx([0.75, 1.0])
    assert ev["mean_dice"] == pytest.approx(0.875)
    assert ev["parameters"] == 10 and ev["seconds_per_case"] >= 0
    full = evaluate_cases(seg, [_case("a", lab_a), _case("b", lab_b)], hd95=True)
    assert full["dice_mean"] == pytest.approx([0.75, 1.0])
    assert full["mean_dice"] == pytest.approx(0.875)
    assert len(full["hd95_mean"]) == 2


def test_evaluate_cases_skips_unlabelled_and_needs_one():
    lab = np.array([[1, 0], [0, 0]])
    seg = FixedSegmenter({"a": lab})
    unlabelled = Case(image=np.zeros((2, 2), np.float32), label=None, spacing=(1.0, 1.0), affine=np.eye(4),
                      name="u")
    ev = evaluate_cases(seg, [_case("a", lab), unlabelled], hd95=False)
    assert ev["n_cases"] == 1
    with pytest.raises(ValueError, match="labelled"):
        evaluate_cases(seg, [unlabelled])


def test_compression_ratios():
    t = {"parameters": 1000, "seconds_per_case": 2.0, "mean_dice": 0.8}
    s = {"parameters": 100, "seconds_per_case": 0.5, "mean_dice": 0.76}
    c = compression(t, s)
    assert c["compression"] == 10 and c["speedup"] == 4 and math.isclose(c["retention"], 0.95)


class _Teacher:
    spatial_dims, num_classes, normalization, class_names, source = 3, 2, "zscore", None, "/x/t.onnx"

    def __init__(self, patch):
        self.patch_size = patch
        self.device = None

    def to(self, device):
        self.device = device
        return self


@pytest.mark.parametrize(("own", "fallback", "expected"), [
    ([16, 24, 24], [8, 8, 8], [16, 24, 24]),
    (None, [8, 8, 8], [8, 8, 8]),
    (None, None, [32, 32, 32]),
    ([1, 16, 24, 24], None, [16, 24, 24]),
])
def test_teacher_segmenter_patch(own, fallback, expected):
    seg = teacher_segmenter(_Teacher(own), fallback_patch=fallback, device="cpu")
    assert seg.patch_size == expected and seg.name == "t.onnx" and seg.spatial_dims == 3


def test_runtime_helpers():
    assert str(resolve_device("cpu")) == "cpu"
    assert available_devices()[:2] == ["auto", "cpu"]
    assert usable_cores(1) == 1 and usable_cores() >= 1
    info = machine_info("cpu")
    assert info["device"] == "cpu" and info["torch_threads"] >= 1 and "cpu" in info
    from napari_dmd.config import ConfigError

    with pytest.raises(ConfigError, match="not a device name"):
        resolve_device("gpu0")
