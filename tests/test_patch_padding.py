"""A patch the model must pad to a multiple of its stride: the warning (sizes worked out by hand) and where it shows."""

from __future__ import annotations

from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.resolve import padding_warning
from napari_dmd.runner import prepare_run


def test_padding_warning_names_the_padded_size_the_waste_and_the_multiples():
    # 16x48x48 at stride 32 -> 32x64x64: 131072 voxels for 36864 -> 1 - 36864/131072 = 71.9 % zeros
    text = padding_warning([16, 48, 48], 32)
    assert "patch 16x48x48 is padded to 32x64x64" in text and "multiple of 32" in text
    assert "72 % of the model's work" in text and "32x32x32 costs less" in text
    # 40x56x40 at stride 16 -> 48x64x48: 147456 / 89600 = 1.65 -> 39 %
    assert "39 %" in padding_warning([40, 56, 40], 16)
    assert padding_warning([128, 128], 32) is None and padding_warning([64, 96], 32) is None
    assert padding_warning([60, 64], 32) is None  # 64x64 / 60x64 = 1.07 < 1.25: not worth a warning
    assert "costs less" not in padding_warning([16, 16], 32)  # no smaller multiple to offer


def test_prepare_run_warns_for_an_explicit_patch_the_student_pads_only(tmp_path):
    cases = phantom_cases(4, 2)

    def said(patch):
        cfg = TrainConfig(method="none", model="student", patch_size=patch, batch_size=1, iterations=1,
                          device="cpu")
        _, warnings = prepare_run(cfg, cases, output_dir=tmp_path / str(len(list(tmp_path.iterdir()))),
                                  role="teacher")
        return [w for w in warnings if "is padded to" in w]

    assert len(said([48, 48])) == 1  # the default student's stride is 32: 48 -> 64
    assert said([64, 64]) == []
    assert said(None) == []  # chosen by the run: a multiple of the stride


def test_a_checkpoints_window_is_rounded_up_to_the_models_stride(tmp_path):
    from napari_dmd.checkpoint import save_checkpoint
    from napari_dmd.models.presets import build_model
    from napari_dmd.segment import Segmenter, stride_window

    assert stride_window([16, 48, 48], 32) == [32, 64, 64]  # the model pads to these anyway
    assert stride_window([40, 56, 40], 16) == [48, 64, 48] and stride_window([64, 96], 32) == [64, 96]
    for preset, patch, window in (("student-fast-deep", [16, 48, 48], [32, 64, 64]),  # total stride 32
                                  ("student", [16, 48, 48], [16, 48, 48]),  # 3D: 16, the patch already fits
                                  ("student-classic", [16, 48, 48], [16, 48, 48])):
        net = build_model(preset, 3, 3)
        path = save_checkpoint(tmp_path / f"{preset}.pt", {"kind": "student", "model": net.config(),
                                                           "state_dict": net.state_dict(), "patch_size": patch})
        assert Segmenter.from_checkpoint(path, device="cpu").patch_size == window
