"""A run written before a setting existed resumes as it was trained (the setting's old value), not refused."""

from __future__ import annotations

from napari_dmd.checkpoint import load_checkpoint, save_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller
from napari_dmd.runs import LEGACY_SETTINGS

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
