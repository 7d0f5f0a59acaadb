"""Shared flags and config files: the training settings as flags, a YAML config checked setting by setting."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Any

from ..choices import TEACHER_KINDS


def _config_fields() -> list[dataclasses.Field]:
    from ..config import TrainConfig

    return [f for f in dataclasses.fields(TrainConfig) if f.name not in ("extra", "class_names")]


def _field_kind(f: dataclasses.Field) -> tuple[type, bool]:
    """(scalar type, is_list) of a TrainConfig field."""
    from ..config import TrainConfig

    t = typing.get_type_hints(TrainConfig)[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)] if isinstance(t, types.UnionType) else [t]
    t = args[0]
    if typing.get_origin(t) is list:
        return typing.get_args(t)[0], True
    return t, False


def _add_config_flags(p: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per training setting (``--batch-size`` ...), all defaulting to None (= the config's value)."""
    from ..config import HELP

    g = p.add_argument_group("training settings (override --config)")
    for f in _config_fields():
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        scalar, is_list = _field_kind(f)
        default = f.default if f.default is not dataclasses.MISSING else None
        text = f"{HELP.get(f.name, '')} (default {default})"
        if scalar is bool:
            g.add_argument(flag, dest=f.name, default=None, action=argparse.BooleanOptionalAction,
                           help=text)
        elif is_list:
            g.add_argument(flag, dest=f.name, default=None, nargs="+", type=scalar, help=text)
        else:
            g.add_argument(flag, dest=f.name, default=None, type=scalar, help=text)


def _load_config_file(path: str) -> Any:
    """TrainConfig from a YAML file; every error names the file."""
    from ..config import ConfigError, TrainConfig

    try:
        cfg = TrainConfig.load_yaml(path)
    except ConfigError as e:
        msg = str(e)
        mark = getattr(e.__cause__, "problem_mark", None)
        if mark is not None:  # a YAML syntax error: say where
            problem = getattr(e.__cause__, "problem", None) or "syntax error"
            msg = f"{path}: line {mark.line + 1}, column {mark.column + 1}: {problem} (not valid YAML)"
        if "unknown setting" in msg:
            msg += " (a config file holds training settings only; give output folders and checkpoints " \
                   "on the command line: --out, --resume, --teacher)"
        raise ConfigError(msg if str(path) in msg else f"{path}: {msg}") from e
    return cfg  # load_yaml checked every setting's type (TrainConfig's rules)


def _build_config(args: argparse.Namespace, **forced: Any) -> Any:
    """The TrainConfig of a verb: ``--config`` (or the defaults), then the flags given, then ``forced``; validated."""
    from ..config import ConfigError, TrainConfig

    cfg = _load_config_file(args.config) if getattr(args, "config", None) else TrainConfig()
    for f in _config_fields():
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, v)
    for k, v in forced.items():
        if v is not None:
            setattr(cfg, k, v)
    try:
        return cfg.validate()
    except ConfigError as e:  # a bad value from the config file: name the file
        src, name = getattr(args, "config", None), str(e).split(" ", 1)[0]
        from_file = src and name in {f.name for f in dataclasses.fields(cfg)} and getattr(args, name, None) is None
        raise ConfigError(f"{src}: {e}" if from_file and str(src) not in str(e) else str(e)) from e


def add_teacher_flags(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """Add ``--teacher`` and the flags that choose and check a teacher of any format."""
    g = parser.add_argument_group("teacher (napari-dmd checkpoint, TorchScript, nnU-Net v2, MONAI, ONNX)")
    g.add_argument("--teacher", required=required,
                   help="teacher: a napari-dmd checkpoint, a TorchScript or ONNX file, an nnU-Net v2 model folder "
                        "(or fold_k/checkpoint_*.pth), a MONAI bundle folder, or a MONAI state dict")
    g.add_argument("--teacher-kind", choices=TEACHER_KINDS, default="auto", help="teacher format (default: detected)")
    g.add_argument("--trust-teacher", action="store_true",
                   help="I trust this file: allow formats that carry code (TorchScript, pickles beyond weights, "
                        "MONAI bundle expressions, ONNX loops without a fixed trip count). Never needed for napari-dmd "
                        "checkpoints; never lets a file name other classes or download weights")
    g.add_argument("--nnunet-configuration", help="nnU-Net configuration (2d, 3d_fullres, ...; default: detected)")
    g.add_argument("--nnunet-folds", nargs="+", help="nnU-Net folds to use (default: all; logits averaged)")
    g.add_argument("--nnunet-checkpoint", choices=["final", "best"],
                   help="nnU-Net checkpoint (default: final, else best)")
    g.add_argument("--monai-network", help="MONAI state dict: the monai.networks.nets class, e.g. UNet")
    g.add_argument("--monai-args", help="MONAI state dict: the network's arguments as JSON (or a .json file)")
    g.add_argument("--teacher-normalization", choices=["zscore", "zscore-fg", "ct", "none"],
                   help="override the intensity normalization the teacher expects")
