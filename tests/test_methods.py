"""The method table (napari_dmd.distill.methods): one place that says what each distillation method is."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from napari_dmd import config as config_mod
from napari_dmd.cli import build_parser
from napari_dmd.config import ConfigError, TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import HEAD_METHODS, Distiller
from napari_dmd.distill.losses import default_lambda_feat, dmd_loss, mfd_loss
from napari_dmd.distill.methods import NAMES, TABLE, distill_loss, get_method, menu_methods

IGN = 255
HP = dict(T=3.0, alpha=0.5, beta=2.0, lambda_logit=0.7, lambda_feat=0.4, kd_weight=0.25, ds_weight=1.5)


def make(num_scales: int = 3, C: int = 4):
    """float64 logits (2, C, 8, 8), per-scale logits at 2x2, 4x4, 8x8 (the last ``num_scales``), labels."""
    g = torch.Generator().manual_seed(7)
    s = torch.randn(2, C, 8, 8, generator=g, dtype=torch.float64) * 2
    t = torch.randn(2, C, 8, 8, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, C, (2, 8, 8), generator=g)
    y[0, 0, :3] = IGN
    scales = [torch.randn(2, C, n, n, generator=g, dtype=torch.float64) for n in (2, 4, 8)][-num_scales:]
    return s, t, y, scales


def _method_flag_help(verb: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return next(a for a in sub.choices[verb]._actions if a.dest == "method").help


# ------------------------------------------------------------------------------------------ the table
def test_table_is_the_one_list_of_methods():
    assert NAMES == ("none", "ds", "kd", "dkd", "mfd", "dmd")
    assert config_mod.METHODS is NAMES  # config takes its names from the table, it does not keep a copy
    for name in NAMES:
        assert TrainConfig(method=name).validate().method == name
        assert get_method(name).name == name
    with pytest.raises(ConfigError, match="choose one of none, ds, kd, dkd, mfd, dmd"):
        TrainConfig(method="fitnet").validate()
    with pytest.raises(ValueError, match="unknown distillation method 'fitnet'; expected one of none, ds, kd"):
        get_method("fitnet")
    for verb in ("train-teacher", "distill"):  # --method takes any name of the table; its help lists them
        assert _method_flag_help(verb).startswith(" | ".join(NAMES) + " (")


def test_settings_are_config_fields_with_the_config_defaults():
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for m in TABLE:
        for name, default in m.settings.items():
            assert name in defaults, (m.name, name)
            assert defaults[name] == default, (m.name, name)


def test_widget_menu_and_labels():
    assert [m.name for m in menu_methods()] == ["dmd", "kd", "dkd", "mfd", "none"]  # default first, no "ds"
    for m in TABLE:
        assert m.label and m.tip and "\n" not in m.tip


def test_importing_config_and_the_table_does_not_import_torch():
    code = "import sys, napari_dmd.config, napari_dmd.distill.methods; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------- dispatcher
@pytest.mark.parametrize("name", NAMES)
def test_teacher_is_required_exactly_by_the_methods_that_need_one(name):
    s, _, y, scales = make()
    m = get_method(name)
    if m.needs_teacher:
        with pytest.raises(ValueError, match=f"method '{name}' needs teacher logits"):
            distill_loss(name, s, scales, None, y, **HP)
        with pytest.raises(ConfigError, match="needs a teacher"):  # the engine asks the same table
            Distiller(TrainConfig(method=name, model="4,8", patch_size=[16, 16]), phantom_cases(1, 2))
    else:
        total, _ = distill_loss(name, s, scales, None, y, **HP)
        assert torch.isfinite(total)
    assert (name in HEAD_METHODS) == m.needs_heads


@pytest.mark.parametrize("name", NAMES)
def test_reported_parts_are_the_specs_parts(name):
    s, t, y, scales = make()
    m = get_method(name)
    _, parts = distill_loss(name, s, scales, t, y, **HP)
    assert list(parts) == ["task", *m.parts, "total"]
    _, parts = distill_loss(name, s, scales, t, y, **HP, head_supervision=0.5)
    heads_distil = m.needs_heads and m.needs_teacher  # head supervision joins MFD and DMD only
    assert set(parts) == {"task", "total", *m.parts} | ({"ds"} if heads_distil else set())
    assert heads_distil == (name in ("mfd", "dmd"))


@pytest.mark.parametrize("num_scales", [2, 3])
def test_dmd_through_the_dispatcher_is_dmd_loss(num_scales):
    s, t, y, scales = make(num_scales)
    pw = torch.rand(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for lam in (0.4, None):
        hp = dict(HP, lambda_feat=lam)
        total, parts = distill_loss("dmd", s, scales, t, y, **hp, pixel_weight=pw)
        ref, ref_parts = dmd_loss(s, scales, t, y, hp["T"], hp["lambda_logit"], lam, pixel_weight=pw)
        assert torch.allclose(total, ref, rtol=1e-12, atol=1e-12)
        assert ref_parts.keys() == parts.keys()
        assert all(torch.allclose(parts[k], ref_parts[k], rtol=1e-12, atol=1e-12) for k in parts)
    # the default per-scale weight is 2 / number of scales (2/3 for three scales, 1 for two)
    assert default_lambda_feat(num_scales) == 2.0 / num_scales
    explicit, _ = dmd_loss(s, scales, t, y, 3.0, 0.7, 2.0 / num_scales)
    default, parts = dmd_loss(s, scales, t, y, 3.0, 0.7)
    assert torch.allclose(default, explicit, rtol=1e-12, atol=1e-12)
    assert float(parts["nckd"]) > 1e-3  # the weight matters
    if num_scales != 3:
        assert not torch.allclose(default, dmd_loss(s, scales, t, y, 3.0, 0.7, 2 / 3)[0])


@pytest.mark.parametrize("num_scales", [2, 3])
def test_mfd_default_weight_is_two_over_the_number_of_scales(num_scales):
    s, t, y, scales = make(num_scales)
    total, parts = distill_loss("mfd", s, scales, t, y, **dict(HP, lambda_feat=None))
    mfd = mfd_loss(scales, t, y, HP["T"], part="kd")
    assert torch.allclose(parts["mfd"], mfd.detach(), rtol=1e-12)
    assert torch.allclose(total, parts["task"] + 2.0 / num_scales * mfd, rtol=1e-12)


def test_head_weight_defaults_per_method_and_explicit_values_win():
    from napari_dmd.distill.methods import head_weight

    assert head_weight("dmd", None) == 1.0 and head_weight("mfd", None) == 0.0  # the measured defaults
    assert head_weight("dmd", 0.0) == 0.0 and head_weight("mfd", 0.5) == 0.5  # explicit values win
    for name in ("none", "ds", "kd", "dkd"):  # no heads to supervise, or (ds) supervised already
        assert head_weight(name, None) == 0.0 and head_weight(name, 2.0) == 0.0
    with pytest.raises(ValueError, match="unknown distillation method"):
        head_weight("dmdx", None)
