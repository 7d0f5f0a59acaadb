"""MONAI teachers: a MONAI bundle folder, or a state dict plus the network's name and arguments.

Safety: a MONAI bundle config is a program. ``"_target_"`` values import any callable and ``"$..."`` strings are
Python expressions that MONAI's ``ConfigParser`` evaluates. napari-dmd therefore reads the config as plain
JSON/YAML data and builds the network itself: ``network_def`` must name a class of ``monai.networks.nets``
(``"UNet"``, ``"monai.networks.nets.SegResNet"``...) with literal arguments (``"@name"`` references to other
literal entries are followed, at most 20 deep and 20,000 values in all, trusted or not: a reference bomb is
refused). The class is resolved, never located (:mod:`~napari_dmd.teachers.safety`), its arguments must be plain
JSON values, and download arguments (``pretrained``, HoVerNet's ``pretrained_url``...) are turned off: the
weights come from ``models/``. Anything else (expressions, nested ``_target_``, ``%`` macros) needs
``trust=True``, which hands the config to MONAI's ``ConfigParser``. Weights come from ``models/model.pt`` (read
with ``weights_only=True``) or ``models/model.safetensors``; ``models/model.ts`` is TorchScript (trust needed).

Metadata (``configs/metadata.json``, ``network_data_format``): input channels (must be 1), output channels (the
classes) and ``channel_def`` (class names), ``spatial_shape`` (patch size when numeric). Normalization from the
inference preprocessing: ``NormalizeIntensity(d)`` -> ``"zscore"`` (``nonzero`` -> ``"zscore-fg"``),
``ScaleIntensityRange(d)`` -> exact, inside the teacher (raw input, ``"none"``); anything else -> ``"zscore"`` as
an approximation noted in ``teacher.info``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import (
    FirstTensor,
    IntensityTransform,
    ModelTeacher,
    PadToMultiple,
    TeacherError,
    apply_overrides,
    load_torch_file,
    probe_teacher,
)
from .safety import BoundExceeded, Budget, check_plain, downloads_off, resolve_class

CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml", "train.json", "train.yaml", "train.yml")
WEIGHT_NAMES = ("model.pt", "model.pth", "model.safetensors", "model.ts")
MAX_CONFIG_BYTES = 16 * 2**20
_WRAPPER_KEYS = ("state_dict", "model", "network", "net", "model_state_dict", "network_weights")


class _NotLiteral(Exception):
    """A config value that only MONAI's ConfigParser (trusted) can evaluate."""


def network_class(name: str, source: str) -> type[nn.Module]:
    """A network class of ``monai.networks.nets`` by short or dotted name; anything else is refused.

    Resolved, never located: a dotted name imports its module under ``monai.networks.nets`` only and takes the
    class from that module; the class must be a ``torch.nn.Module`` subclass defined in ``monai.networks.nets``.
    """
    import monai.networks.nets as nets

    if not isinstance(name, str):
        raise TeacherError(f"{source}: network {name!r} is not a monai.networks.nets class name")
    if "." in name:
        if not name.startswith("monai.networks.nets."):
            raise TeacherError(f"{source}: network {name!r} is not a monai.networks.nets class; other classes "
                               "are built only from a trusted bundle (trust=True)")
        cls = resolve_class(name, packages=("monai.networks.nets",), where=source, key="_target_")
        assert cls is not None
        return cls
    cls = getattr(nets, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and
            (cls.__module__ or "").startswith("monai.networks.nets.")):
        raise TeacherError(f"{source}: {name!r} is not a network of monai.networks.nets")
    return cls


def _pad_multiple(cls_name: str, args: Mapping[str, Any], dims: int) -> list[int]:
    """Size multiple the network needs (zero-padded to it and cropped back)."""
    def prod(values: Sequence[Any]) -> list[int]:
        out = [1] * dims
        for s in values:
            s = [int(s)] * dims if isinstance(s, (int, float)) else [int(v) for v in s]
            out = [a * b for a, b in zip(out, s)]
        return out

    if cls_name in ("UNet", "Unet", "AttentionUnet") and "strides" in args:
        return prod(args["strides"])
    if cls_name in ("DynUNet",) and "strides" in args:
        return prod(args["strides"])
    if cls_name in ("SegResNet", "SegResNetVAE", "SegResNetDS"):
        return [2 ** (len(args.get("blocks_down", (1, 2, 2, 4))) - 1)] * dims
    return [32 if dims == 2 else 16] * dims


def _state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _state_dict(obj[key], source)
    raise TeacherError(f"{source}: holds no state dict (a mapping of parameter names to tensors)")


def read_weights(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from a torch file (weights-only) or a safetensors file."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise TeacherError(f"{path}: reading safetensors needs the safetensors package") from e
        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001
            raise TeacherError(f"{path}: not a readable safetensors file ({e})") from e
    return _state_dict(load_torch_file(path, trust=trust, allow_numpy=True, what="weights file"), str(path))


def _load_into(net: nn.Module, weights: dict[str, torch.Tensor], source: str, what: str) -> None:
    if weights and all(k.startswith("module.") for k in weights):  # saved from DataParallel / DDP
        weights = {k[len("module."):]: v for k, v in weights.items()}
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = "; ".join(line.strip() for line in first[:3])[:300]
        raise TeacherError(f"{source}: the weights do not fit {what} ({detail})") from e


def build_network(name: str, args: Mapping[str, Any], source: str) -> nn.Module:
    """Instantiate ``monai.networks.nets.<name>(**args)`` with downloads off; bad arguments name the source.

    Arguments that download pretrained weights (``pretrained``, ``pretrained_url``, ...) are turned off: the
    teacher's weights are loaded from its own file right after.
    """
    cls = network_class(name, source)
    in_ch = args.get("in_channels")
    if in_ch is not None and in_ch != 1:
        raise TeacherError(f"{source}: {name} takes {in_ch} input channels; napari-dmd teachers take "
                           "single-channel images")
    kwargs, _changed = downloads_off(cls, args, source)
    try:
        return cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        shown = repr(dict(args))
        shown = shown if len(shown) <= 300 else shown[:300] + "..."
        raise TeacherError(f"{source}: cannot build {name} with {shown} ({_first(e)})") from e


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:200]


def _spatial_dims(args: Mapping[str, Any], fallback: int | None) -> int | None:
    for key in ("spatial_dims", "dimensions"):
        if key in args:
            return int(args[key])
    return fallback


def _make_teacher(net: nn.Module, *, name: str, args: Mapping[str, Any], dims: int | None, source: str,
                  info: dict[str, Any], num_classes: int | None, class_names: Sequence[str] | None,
                  normalization: str | None, patch_size: Sequence[int] | None, spacing: Sequence[float] | None,
                  transform: dict[str, float] | None, probe: bool) -> ModelTeacher:
    if dims not in (2, 3):
        raise TeacherError(f"{source}: cannot tell whether {name} is 2D or 3D; give spatial_dims")
    in_ch = args.get("in_channels")
    if in_ch is not None and int(in_ch) != 1:
        raise TeacherError(f"{source}: {name} takes {in_ch} input channels; napari-dmd teachers take "
                           "single-channel images")
    model: nn.Module = PadToMultiple(FirstTensor(net), _pad_multiple(name.rsplit(".", 1)[-1], args, dims))
    if transform:
        model = IntensityTransform(model, **transform)
    out_ch = args.get("out_channels", num_classes)
    teacher = ModelTeacher(model, int(out_ch or 2), dims, normalization=normalization or "zscore",
                           source=source, info=info)
    if out_ch is None:  # learn the class count from a test call
        with torch.inference_mode():
            teacher.num_classes = int(model(torch.zeros(1, 1, *([32] * dims))).shape[1])
    apply_overrides(teacher, num_classes=num_classes, class_names=class_names, patch_size=patch_size,
                    spacing=spacing)
    if probe:
        probe_teacher(teacher)
    return teacher


def load_monai_state_dict_teacher(path: str | Path, *, network: str, network_args: Mapping[str, Any] | None = None,
                                  trust: bool = False, num_classes: int | None = None,
                                  class_names: Sequence[str] | None = None, normalization: str | None = None,
                                  patch_size: Sequence[int] | None = None, spatial_dims: int | None = None,
                                  probe: bool = True) -> ModelTeacher:
    """A ``monai.networks.nets`` network built from its name and arguments, weights from a state dict file."""
    path = Path(path)
    args = dict(network_args or {})
    if spatial_dims is not None and "spatial_dims" not in args and "dimensions" not in args:
        args["spatial_dims"] = int(spatial_dims)
    weights = read_weights(path, trust)
    net = build_network(network, args, str(path))
    _load_into(net, weights, str(path), f"{network}({', '.join(f'{k}={v!r}' for k, v in args.items())})")
    info = {"format": "MONAI state dict", "network": network, "network_args": args, "trusted": bool(trust)}
    return _make_teacher(net, name=network, args=args, dims=_spatial_dims(args, spatial_dims), source=str(path),
                         info=info, num_classes=num_classes, class_names=class_names, normalization=normalization,
                         patch_size=patch_size, spacing=None, transform=None, probe=probe)


# ------------------------------------------------------------------------------------------------ bundles
def is_monai_bundle(path: Path) -> bool:
    """True for a folder with ``configs/`` holding an inference/train config or metadata.json."""
    cfg = path / "configs"
    return path.is_dir() and cfg.is_dir() and any((cfg / n).is_file() for n in (*CONFIG_NAMES, "metadata.json"))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise TeacherError(f"{path}: {path.stat().st_size / 2**20:.0f} MB; a bundle config over "
                               f"{MAX_CONFIG_BYTES // 2**20} MB is not read")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except TeacherError:
        raise
    except Exception as e:  # noqa: BLE001
        raise TeacherError(f"{path}: not a readable bundle config ({_first(e)})") from e
    if not isinstance(data, dict):
        raise TeacherError(f"{path}: a bundle config must hold a mapping")
    return data


def _lookup(config: Mapping[str, Any], ref: str) -> Any:
    node: Any = config
    for part in ref.replace("::", "#").split("#"):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _NotLiteral(f"reference @{ref} not found")
    return node


def _literal(value: Any, config: Mapping[str, Any], budget: Budget, depth: int = 0) -> Any:
    """Resolve a config value to plain data, following ``@ref``; raise _NotLiteral on code.

    ``budget`` bounds the values produced (a fan-out of ``@`` references expands exponentially).
    """
    budget.take()
    if depth > 20:
        raise _NotLiteral("references nest too deeply")
    if isinstance(value, str):
        if value.startswith("$"):
            raise _NotLiteral(f"expression {value!r}")
        if value.startswith("%"):
            raise _NotLiteral(f"macro {value!r}")
        if value.startswith("@"):
            return _literal(_lookup(config, value[1:]), config, budget, depth + 1)
        return value
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise _NotLiteral(f"nested component {value['_target_']!r}")
        return {k: _literal(v, config, budget, depth + 1) for k, v in value.items() if k != "_desc_"}
    if isinstance(value, list):
        return [_literal(v, config, budget, depth + 1) for v in value]
    return value


def _find_transforms(node: Any, budget: Budget) -> list[Mapping[str, Any]]:
    found = []
    budget.take()
    if isinstance(node, Mapping):
        if isinstance(node.get("_target_"), str):
            found.append(node)
        for v in node.values():
            found += _find_transforms(v, budget)
    elif isinstance(node, list):
        for v in node:
            found += _find_transforms(v, budget)
    return found


def _bundle_normalization(config: Mapping[str, Any], where: str) -> tuple[str, dict[str, float] | None, str | None]:
    """(scheme, in-teacher transform, note) from the preprocessing transforms of a bundle config."""
    pre = config.get("preprocessing", config)
    budget = Budget(where)
    for t in _find_transforms(pre, budget):
        name = str(t["_target_"]).rsplit(".", 1)[-1]
        try:
            args = {k: _literal(v, config, budget) for k, v in t.items() if not k.startswith("_")}
        except _NotLiteral:
            args = {}
        if name in ("NormalizeIntensity", "NormalizeIntensityd"):
            return ("zscore-fg" if args.get("nonzero") else "zscore"), None, None
        if name in ("ScaleIntensityRange", "ScaleIntensityRanged") and \
                all(isinstance(args.get(k), (int, float)) for k in ("a_min", "a_max", "b_min", "b_max")):
            a0, a1, b0, b1 = (float(args[k]) for k in ("a_min", "a_max", "b_min", "b_max"))
            if a1 == a0 or b1 == b0:
                continue
            scale = (a1 - a0) / (b1 - b0)
            clip = bool(args.get("clip", False))
            return "none", {"low": a0 if clip else -math.inf, "high": a1 if clip else math.inf,
                            "shift": a0 - b0 * scale, "scale": scale}, None
        if name.startswith(("ScaleIntensity", "NormalizeIntensity")):
            return "zscore", None, f"bundle preprocessing {name} is approximated by a per-case z-score"
    return "zscore", None, "no intensity normalization found in the bundle config; per-case z-score assumed"


def _metadata(folder: Path) -> dict[str, Any]:
    path = folder / "configs" / "metadata.json"
    if not path.is_file():
        return {}
    return _read_config(path)


def load_monai_bundle_teacher(path: str | Path, *, trust: bool = False, num_classes: int | None = None,
                              class_names: Sequence[str] | None = None, normalization: str | None = None,
                              patch_size: Sequence[int] | None = None, spatial_dims: int | None = None,
                              probe: bool = True) -> ModelTeacher:
    """Load a MONAI bundle folder (``configs/`` + ``models/``) as a teacher."""
    folder = Path(path)
    if not is_monai_bundle(folder):
        raise TeacherError(f"{folder}: not a MONAI bundle (expected configs/inference.json or .yaml and "
                           "configs/metadata.json)")
    cfg_path = next((folder / "configs" / n for n in CONFIG_NAMES if (folder / "configs" / n).is_file()), None)
    if cfg_path is None:
        raise TeacherError(f"{folder / 'configs'}: no inference or train config ({', '.join(CONFIG_NAMES)})")
    config = _read_config(cfg_path)
    meta = _metadata(folder)
    fmt = meta.get("network_data_format") or {}
    inputs = (fmt.get("inputs") or {})
    image = inputs.get("image") or next(iter(inputs.values()), {}) or {}
    outputs = (fmt.get("outputs") or {})
    pred = outputs.get("pred") or next(iter(outputs.values()), {}) or {}
    if image.get("num_channels") not in (None, 1):
        raise TeacherError(f"{folder / 'configs' / 'metadata.json'}: the network takes {image['num_channels']} "
                           "input channels; napari-dmd teachers take single-channel images")
    net_def = config.get("network_def")
    if net_def is None:
        raise TeacherError(f"{cfg_path}: no 'network_def' entry (the network definition)")
    weights_path = next((folder / "models" / n for n in WEIGHT_NAMES if (folder / "models" / n).is_file()), None)
    if weights_path is None:
        raise TeacherError(f"{folder / 'models'}: no weights ({', '.join(WEIGHT_NAMES)})")
    name, args = "", {}
    try:
        if not isinstance(net_def, Mapping) or not isinstance(net_def.get("_target_"), str):
            raise _NotLiteral("network_def is not a component with a _target_")
        extra = [k for k in net_def if k.startswith("_") and k not in ("_target_", "_desc_")]
        if extra:
            raise _NotLiteral(f"keys {', '.join(extra)}")
        name = net_def["_target_"]
        budget = Budget(str(cfg_path))
        args = {k: _literal(v, config, budget) for k, v in net_def.items() if not k.startswith("_")}
        check_plain(args, str(cfg_path), "network_def")
        net = build_network(name, args, str(cfg_path))
    except (_NotLiteral, TeacherError) as e:
        if isinstance(e, BoundExceeded):
            raise
        if not trust:
            if isinstance(e, TeacherError):
                raise
            raise TeacherError(f"{cfg_path}: network_def holds code ({e}) that MONAI would evaluate; napari-dmd "
                               "builds only literal monai.networks.nets definitions. If you trust this bundle, "
                               "load it with trust=True (CLI: --trust-teacher)") from e
        net = _trusted_network(folder, cfg_path)
        name = type(net).__name__
        args = {k: v for k, v in net_def.items() if not k.startswith("_") and
                not (isinstance(v, str) and v[:1] in "$@%")} if isinstance(net_def, Mapping) else {}
    if weights_path.suffix == ".ts":
        if not trust:
            raise TeacherError(f"{weights_path}: TorchScript weights carry a program; load the bundle with "
                               "trust=True (CLI: --trust-teacher), or provide models/model.pt")
        net = torch.jit.load(str(weights_path), map_location="cpu")
    else:
        _load_into(net, read_weights(weights_path, trust), str(weights_path), f"the bundle's {name}")
    dims = _spatial_dims(args, spatial_dims)
    shape = image.get("spatial_shape")
    if dims is None and isinstance(shape, list):
        dims = len(shape)
    scheme, transform, note = _bundle_normalization(config, str(cfg_path))
    channel_def = pred.get("channel_def") or {}
    names = None
    if channel_def:
        try:
            names = [str(channel_def[k]) for k in sorted(channel_def, key=lambda k: int(k))]
        except (ValueError, TypeError):
            names = None
    out_ch = args.get("out_channels", pred.get("num_channels"))
    patch = [int(s) for s in shape] if isinstance(shape, list) and all(isinstance(s, int) for s in shape) else None
    info = {"format": "MONAI bundle", "network": name, "config": str(cfg_path), "weights": str(weights_path),
            "trusted": bool(trust), "bundle_name": meta.get("name"), "bundle_version": meta.get("version")}
    if note:
        info["normalization_note"] = note
    args_for_teacher = dict(args)
    if out_ch is not None:
        args_for_teacher["out_channels"] = out_ch
    teacher = _make_teacher(net, name=name, args=args_for_teacher, dims=dims, source=str(folder), info=info,
                            num_classes=num_classes, class_names=None, normalization=normalization or scheme,
                            patch_size=patch_size or (patch if patch and len(patch) == dims else None),
                            spacing=None, transform=transform, probe=False)
    if names and len(names) == teacher.num_classes:
        teacher.class_names = names
    apply_overrides(teacher, class_names=class_names)
    if probe:
        probe_teacher(teacher)
    return teacher


def _trusted_network(folder: Path, cfg_path: Path) -> nn.Module:
    """Evaluate ``network_def`` with MONAI's ConfigParser (runs the config's code: trusted bundles only)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(cfg_path))
    meta = folder / "configs" / "metadata.json"
    if meta.is_file():
        parser.read_meta(str(meta))
    parser["bundle_root"] = str(folder)
    try:
        net = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as e:  # noqa: BLE001
        raise TeacherError(f"{cfg_path}: MONAI could not build network_def ({e})") from e
    if not isinstance(net, nn.Module):
        raise TeacherError(f"{cfg_path}: network_def did not build a torch module")
    return net
