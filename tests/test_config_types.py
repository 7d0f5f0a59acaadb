"""TrainConfig types: a setting of the wrong type is refused in one line; help text lives on the fields."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys

import numpy as np
import pytest

from napari_dmd.config import HELP, ConfigError, TrainConfig

WRONG_TYPES = [  # (setting, value): a string for a bool, int, float and optional setting, a float for an int
    ("augment", "yes"), ("amp", "false"), ("iterations", "100"), ("batch_size", 2.5), ("num_classes", "3"),
    ("lr", "0.001"), ("temperature", "hot"), ("target_temperature", "4"), ("patch_size", ["64", "64"]),
]


@pytest.mark.parametrize("setting,value", WRONG_TYPES)
def test_a_value_of_the_wrong_type_is_refused_in_one_line(setting, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{setting: value}).validate()
    message = str(info.value)
    assert message.startswith(f"{setting} must be ") and f"got {value!r}" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("text,setting,words", [
    ("augment: 'yes'\n", "augment", "true/false"), ("iterations: '100'\n", "iterations", "integer"),
    ("temperature: hot\n", "temperature", "number"), ("flips: [1]\n", "flips", "true/false"),
])
def test_a_yaml_file_with_a_value_of_the_wrong_type_is_refused(tmp_path, text, setting, words):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainConfig.load_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {setting} must be {words}") and len(message.splitlines()) == 1


def test_callers_tuples_numpy_numbers_and_ints_for_floats_still_pass():
    """Strict, but not against what the code base passes: tuples for lists, numpy numbers, an int for a float."""
    cfg = TrainConfig(patch_size=(64, 64), spatial_dims=np.int64(2), num_classes=np.int32(3), lr=np.float32(1e-3),
                      temperature=4, scale_weights=(1, 0.5), feature_scales=np.array([0, 1]))
    assert cfg.validate() is cfg and cfg.patch_size == (64, 64)  # checked, not rewritten
    with pytest.raises(ConfigError, match="^seed must be integer, got '7'$"):
        dataclasses.replace(cfg, seed="7").validate()


def test_every_field_has_help_and_help_is_read_from_the_fields():
    fields = dataclasses.fields(TrainConfig)
    assert all(f.metadata.get("help", "").strip() for f in fields), [f.name for f in fields if not f.metadata]
    assert HELP == {f.name: f.metadata["help"] for f in fields}
    assert HELP["method"].startswith("none | ds | kd | dkd | mfd | dmd (")


def test_cli_help_does_not_import_pydantic():
    """pydantic is imported where a config is checked, not to print ``napari-dmd --help``."""
    code = ("import sys; from napari_dmd.cli.main import build_parser; from napari_dmd.config import HELP; "
            "build_parser().format_help(); print('pydantic' in sys.modules, len(HELP))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", str(len(dataclasses.fields(TrainConfig)))]


def test_a_valid_config_round_trips_through_yaml_unchanged(tmp_path):
    cfg = TrainConfig(method="dkd", num_classes=3, class_names=["background", "a", "b"], patch_size=[32, 48],
                      spatial_dims=2, lr=1e-5, temperature=4, target_balance=False, target_temperature=None,
                      scale_weights=[1.0, 0.5], feature_scales=[0, 1], extra={"note": "x", "n": [1, 2]},
                      num_workers=0, grad_clip=0.0).validate()
    path = tmp_path / "c.yaml"
    cfg.save_yaml(path)
    loaded = TrainConfig.load_yaml(path)
    assert loaded == cfg and loaded.validate().to_dict() == cfg.to_dict()
    assert pickle.loads(pickle.dumps(loaded)) == cfg  # a child process gets it pickled
    path.write_text("lr: 1e-3\nweight_decay: '0'\n", encoding="utf-8")  # YAML reads 1e-3 as text: a number here
    loaded = TrainConfig.load_yaml(path)
    assert (loaded.lr, loaded.weight_decay) == (1e-3, 0.0) and isinstance(loaded.lr, float)
