"""Segmenter folds batch norm once per set of weights, and refolds when the weights change."""

import numpy as np
import torch

from napari_dmd.models.presets import build_model
from napari_dmd.segment import Segmenter


def _segmenter() -> Segmenter:
    torch.manual_seed(0)
    model = build_model("student-fast", 2, 3)
    model.train()
    with torch.no_grad():  # running statistics other than the defaults, so folding matters
        model(torch.randn(2, 1, 32, 32))
    return Segmenter(model.eval(), 3, 2, [32, 32])


def test_folded_copy_is_made_once_for_the_same_weights():
    seg = _segmenter()
    image = np.random.default_rng(0).standard_normal((40, 40)).astype(np.float32)
    first = seg.probabilities(image)
    folded = seg._inference_model()
    assert folded is not seg.model
    assert seg._inference_model() is folded  # cached, not folded (deep-copied) again per call
    np.testing.assert_allclose(seg.probabilities(image), first, atol=1e-6)


def test_changed_weights_are_refolded():
    seg = _segmenter()
    image = np.random.default_rng(1).standard_normal((40, 40)).astype(np.float32)
    before = seg.probabilities(image)
    old = seg._inference_model()
    with torch.no_grad():  # an in-place update, as an optimizer step or load_state_dict makes
        for p in seg.model.parameters():
            p.mul_(1.5)
    after = seg.probabilities(image)
    assert seg._inference_model() is not old
    fresh = Segmenter(seg.model, 3, 2, [32, 32]).probabilities(image)
    np.testing.assert_allclose(after, fresh, atol=1e-6)
    assert not np.allclose(after, before, atol=1e-3)


def test_training_mode_model_is_put_in_eval_mode():
    seg = _segmenter()
    seg.model.train()
    seg.probabilities(np.zeros((40, 40), np.float32))
    assert not seg.model.training


def test_windows_per_call_grows_with_small_models_on_the_cpu_and_within_memory_on_cuda():
    seg = _segmenter()  # student-fast, 2D, 32x32 windows: 16x16 positions x 8 channels at its first level
    assert seg.windows_per_call() == 64  # 2**19 // 2048 = 256, capped at 64
    seg.patch_size = [256, 256]  # 128 x 128 x 8 = 131072 values: 4 windows
    assert seg.windows_per_call() == 4
    teacher = Segmenter(build_model("teacher", 2, 3).eval(), 3, 2, [128, 128])
    assert teacher.windows_per_call() == 4  # its first level alone exceeds the budget: never fewer than 4
    tiny = Segmenter(build_model("student-tiny", 2, 3).eval(), 3, 2, [128, 128])
    assert tiny.windows_per_call() == 64  # 32 x 32 x 8 = 8192 values per window
    seg.patch_size = [32, 32]
    seg.device = "cuda"
    assert seg.windows_per_call() == 16  # 32x32 windows
    seg.patch_size = [128, 128, 128]  # 2 M voxels per window: no more than 4
    assert seg.windows_per_call() == 4
    seg.batch_size = 2
    assert seg.windows_per_call() == 2
