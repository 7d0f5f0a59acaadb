"""nnU-Net v2 teachers: a trained model folder (plans.json, dataset.json, fold_k/checkpoint_final.pth).

Needs the ``nnunetv2`` package (``pip install 'napari-dmd[nnunet]'``). The network is rebuilt from the plans of
the chosen configuration (``2d`` / ``3d_fullres`` / ...), its weights read from each chosen fold's checkpoint;
several folds average their logits, as nnU-Net's own predictor does.

Safety: nnU-Net checkpoints are pickles. They are read with ``torch.load(weights_only=True)``, admitting
NumPy scalars and arrays (nnU-Net's logged metrics) and nothing else; a checkpoint that needs more is
refused unless ``trust=True``. The plans name the network class and its layer types as import paths; they are
resolved by :func:`~napari_dmd.teachers.safety.resolve_class`, never by ``pydoc.locate`` (which walks attributes
through any module and returns functions): only ``torch.nn.Module`` subclasses defined in
``dynamic_network_architectures.architectures`` (the network) and ``torch.nn`` or
``dynamic_network_architectures.building_blocks`` (layers) are accepted, checked for every configuration before
nnunetv2 is imported, and the network is built from the resolved classes, so a plans file cannot make napari-dmd
import or call anything else (``trust`` does not change this).

Normalization (the plans' scheme for channel 0):
* ``ZScoreNormalization`` -> ``"zscore"`` (``"zscore-fg"`` when the plans use a mask for normalization; nnU-Net's
  mask is the nonzero region, ours the voxels above the 10th percentile: an approximation);
* ``CTNormalization`` -> exact: the teacher takes raw intensities (``"none"``) and applies the plans' clip to the
  foreground 0.5/99.5 percentiles and z-score with the foreground mean/std itself;
* ``NoNormalization`` -> ``"none"``; ``RGBTo01Normalization`` -> raw input divided by 255 inside the teacher;
* ``RescaleTo01Normalization`` and unknown schemes -> ``"zscore"``, an approximation noted in ``teacher.info``
  (a per-case affine change, which the instance-normalized first stage of nnU-Net's networks nearly undoes).
Not reproduced: nnU-Net's resampling to the plans' spacing (``teacher.spacing`` states it; resample the data
beforehand) and test-time mirroring.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    IntensityTransform,
    LogitsEnsemble,
    ModelTeacher,
    PadToMultiple,
    TeacherError,
    apply_overrides,
    load_torch_file,
    probe_teacher,
)
from .safety import check_plain, resolve_class

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")
ALLOWED_NETWORK_PREFIX = "dynamic_network_architectures.architectures."
ALLOWED_LAYER_PREFIXES = ("torch.nn.",)
ALLOWED_NETWORK_PACKAGES = ("dynamic_network_architectures.architectures",)
ALLOWED_LAYER_PACKAGES = ("torch.nn", "dynamic_network_architectures.building_blocks")


def _require_nnunetv2() -> None:
    try:
        import nnunetv2  # noqa: F401
    except ImportError as e:
        raise TeacherError("nnU-Net v2 teachers need the nnunetv2 package: pip install 'napari-dmd[nnunet]'") from e


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TeacherError(f"{path}: missing; an nnU-Net v2 model folder holds plans.json, dataset.json and "
                           "fold_k/checkpoint_final.pth")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TeacherError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise TeacherError(f"{path}: expected a JSON object")
    return data


def is_nnunet_folder(path: Path) -> bool:
    """True for an nnU-Net v2 model folder, or a folder holding ``Trainer__Plans__configuration`` folders."""
    if (path / "plans.json").is_file() and (path / "dataset.json").is_file():
        return True
    return any((p / "plans.json").is_file() for p in _trainer_folders(path))


def _trainer_folders(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and p.name.count("__") == 2)
    except OSError:
        return []


def _resolve_folder(path: Path, configuration: str | None) -> tuple[Path, list[str] | None, str | None]:
    """(model folder, folds from the path, checkpoint file name from the path)."""
    if path.is_file():  # fold_k/checkpoint_*.pth
        fold = path.parent.name
        folder = path.parent.parent
        if not fold.startswith("fold_") or not (folder / "plans.json").is_file():
            raise TeacherError(f"{path}: an nnU-Net checkpoint must sit in fold_k/ of a model folder that holds "
                               "plans.json and dataset.json")
        return folder, [fold[len("fold_"):]], path.name
    if (path / "plans.json").is_file():
        return path, None, None
    subs = [p for p in _trainer_folders(path) if (p / "plans.json").is_file()]
    if not subs:
        raise TeacherError(f"{path}: not an nnU-Net v2 model folder (no plans.json, no Trainer__Plans__config "
                           "folders)")
    by_cfg = {p.name.split("__")[-1]: p for p in subs}
    if configuration is not None:
        if configuration not in by_cfg:
            raise TeacherError(f"{path}: no trained model for configuration {configuration!r}; found "
                               f"{', '.join(sorted(by_cfg))}")
        return by_cfg[configuration], None, None
    if len(by_cfg) == 1:
        return next(iter(by_cfg.values())), None, None
    for pref in ("3d_fullres", "2d"):
        if pref in by_cfg:
            return by_cfg[pref], None, None
    raise TeacherError(f"{path}: several trained configurations ({', '.join(sorted(by_cfg))}); choose one")


def _find_checkpoints(folder: Path, folds: Sequence[int | str] | None, checkpoint: str | None) -> list[Path]:
    if folds is None:
        fold_dirs = sorted((p for p in folder.glob("fold_*") if p.is_dir()), key=lambda p: _fold_key(p.name))
    else:
        fold_dirs = [folder / f"fold_{f}" for f in folds]
        for d in fold_dirs:
            if not d.is_dir():
                present = ", ".join(p.name for p in sorted(folder.glob("fold_*"))) or "none"
                raise TeacherError(f"{d}: fold folder not found (present: {present})")
    names = CHECKPOINT_NAMES
    if checkpoint:
        names = (checkpoint if checkpoint.endswith(".pth") else f"checkpoint_{checkpoint}.pth",)
    found = []
    for d in fold_dirs:
        ck = next((d / n for n in names if (d / n).is_file()), None)
        if ck is None:
            if folds is not None:
                raise TeacherError(f"{d}: no {' or '.join(names)} in this fold")
            continue
        found.append(ck)
    if not found:
        raise TeacherError(f"{folder}: no fold_k/{' or '.join(names)} found")
    return found


def _fold_key(name: str) -> tuple[int, str]:
    tail = name[len("fold_"):]
    return (int(tail), "") if tail.isdigit() else (1 << 30, tail)


def _classes(dataset_json: dict[str, Any], where: Path) -> list[str]:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise TeacherError(f"{where}: no 'labels' mapping (class name -> label value)")
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        if isinstance(value, (list, tuple)):
            if len(value) > 1:
                raise TeacherError(f"{where}: region-based labels ({name}: {value}); such models predict "
                                   "overlapping sigmoid regions, while DMD needs one softmax over classes")
            value = value[0]
        by_value[int(value)] = str(name)
    values = sorted(by_value)
    if values != list(range(len(values))):
        raise TeacherError(f"{where}: label values {values} are not 0..{len(values) - 1}")
    return [by_value[v] for v in values]


def _channels(dataset_json: dict[str, Any], where: Path) -> int:
    chans = dataset_json.get("channel_names", dataset_json.get("modality"))
    if not isinstance(chans, dict) or not chans:
        raise TeacherError(f"{where}: no 'channel_names' (input channels)")
    return len(chans)


def _architecture(arch: Any, plans_path: Path, where: str, *, missing_ok: bool = False) -> tuple[Any, dict]:
    """(network class, keyword arguments with the layer classes resolved) of a plans ``architecture`` entry.

    Every name is resolved by :func:`~napari_dmd.teachers.safety.resolve_class` (never ``pydoc.locate``); the
    layers first, so a hostile layer name is refused even where nnunetv2 is not installed. ``missing_ok``: the
    network class is None (nothing imported) when dynamic_network_architectures is not installed.
    """
    if not isinstance(arch, Mapping):
        raise TeacherError(f"{plans_path}: {where}: 'architecture' is not a mapping")
    kwargs, req = arch.get("arch_kwargs") or {}, arch.get("_kw_requires_import") or []
    if not isinstance(kwargs, Mapping) or not isinstance(req, list) or not all(isinstance(k, str) for k in req):
        raise TeacherError(f"{plans_path}: {where}: 'arch_kwargs' must be a mapping and '_kw_requires_import' a "
                           "list of its keys")
    check_plain(kwargs, str(plans_path), "arch_kwargs")
    kwargs = dict(kwargs)
    for key in req:
        if kwargs.get(key) is not None:
            kwargs[key] = resolve_class(kwargs[key], packages=ALLOWED_LAYER_PACKAGES, where=str(plans_path),
                                        key=key, what="layer class")
    cls = resolve_class(arch.get("network_class_name"), packages=ALLOWED_NETWORK_PACKAGES, where=str(plans_path),
                        key="network_class_name", missing_ok=missing_ok)
    return cls, kwargs


def _check_plans_names(plans: dict[str, Any], plans_path: Path) -> None:
    """Refuse a plans file any of whose configurations names a class that is not an allowed network or layer."""
    configs = plans.get("configurations") or {}
    if not isinstance(configs, Mapping):
        raise TeacherError(f"{plans_path}: 'configurations' is not a mapping")
    for name, cfg in configs.items():
        if isinstance(cfg, Mapping) and "architecture" in cfg:
            _architecture(cfg["architecture"], plans_path, f"configuration {name!r}", missing_ok=True)


def _stride_multiples(cm: Any, dims: int) -> list[int]:
    strides = cm.network_arch_init_kwargs.get("strides")
    out = [1] * dims
    for s in strides or []:
        s = [int(s)] * dims if isinstance(s, (int, float)) else [int(v) for v in s]
        out = [a * b for a, b in zip(out, s)]
    return out


def _normalization(plans: dict[str, Any], cm: Any, model: Any, plans_path: Path) -> tuple[str, Any, str | None]:
    """(our scheme, model with any exact in-teacher transform, note on approximations)."""
    schemes = list(cm.normalization_schemes or ["ZScoreNormalization"])
    scheme = schemes[0]
    use_mask = bool((cm.use_mask_for_norm or [False])[0])
    if scheme == "ZScoreNormalization":
        if use_mask:
            return "zscore-fg", model, ("nnU-Net z-scores over the nonzero region; napari-dmd's zscore-fg over "
                                        "voxels above the 10th percentile")
        return "zscore", model, None
    if scheme == "CTNormalization":
        props = (plans.get("foreground_intensity_properties_per_channel") or {}).get("0")
        if not props:
            raise TeacherError(f"{plans_path}: CTNormalization without foreground_intensity_properties_per_channel")
        std = float(props["std"])
        return "none", IntensityTransform(model, low=float(props["percentile_00_5"]),
                                          high=float(props["percentile_99_5"]), shift=float(props["mean"]),
                                          scale=max(std, 1e-8)), None
    if scheme == "NoNormalization":
        return "none", model, None
    if scheme == "RGBTo01Normalization":
        return "none", IntensityTransform(model, scale=255.0), None
    return "zscore", model, (f"nnU-Net scheme {scheme} is approximated by a per-case z-score")


def _build_network(arch: tuple[Any, dict], n_in: int, n_out: int) -> Any:
    """Instantiate the already-resolved network class (what nnU-Net's get_network_from_plans builds)."""
    cls, kwargs = arch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return cls(input_channels=n_in, num_classes=n_out, **{**kwargs, "deep_supervision": False})
        except Exception as e:  # noqa: BLE001 - reported with the plans file by the caller
            raise TeacherError(f"cannot build {cls.__name__} from the plans ({e})") from e


def _installed_trainer_network(trainer_name: str, plans_manager: Any, cm: Any, dataset_json: dict, n_in: int,
                               n_out: int) -> Any | None:
    """The network of a trainer class shipped with nnunetv2 (installed code, never code from the folder).

    Its ``build_network_architecture`` locates the plans' names itself; they were resolved and accepted by
    :func:`_architecture` before this is reached.
    """
    if not re.fullmatch(r"[A-Za-z0-9_]+", trainer_name or ""):
        return None
    try:
        import nnunetv2
        from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

        trainer = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "training" / "nnUNetTrainer"),
                                              trainer_name, "nnunetv2.training.nnUNetTrainer")
        if trainer is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return trainer.build_network_architecture(plans_manager, cm, n_in, n_out, enable_deep_supervision=False)
    except Exception:  # noqa: BLE001 - fall back to the error about the plans' network
        return None


def load_nnunet_teacher(path: str | Path, *, configuration: str | None = None,
                        folds: Sequence[int | str] | None = None, checkpoint: str | None = None,
                        trust: bool = False, class_names: Sequence[str] | None = None,
                        normalization: str | None = None, patch_size: Sequence[int] | None = None,
                        probe: bool = True) -> ModelTeacher:
    """Load an nnU-Net v2 model folder (or one of its fold checkpoints) as a teacher.

    ``configuration``: which trained configuration (default: from the folder name / checkpoint, else
    3d_fullres, else 2d). ``folds``: fold numbers (default: every fold with a checkpoint); several average
    their logits. ``checkpoint``: "final" or "best" (default: final, else best, per fold).
    """
    path = Path(path)
    if not path.exists():
        raise TeacherError(f"{path}: no such nnU-Net model folder")
    folder, path_folds, path_ckpt = _resolve_folder(path, configuration)
    plans_path, ds_path = folder / "plans.json", folder / "dataset.json"
    plans = _read_json(plans_path)
    _check_plans_names(plans, plans_path)  # before anything from nnunetv2 or the plans is imported
    _require_nnunetv2()
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if folds is None:
        folds = path_folds
    ckpt_name = checkpoint or path_ckpt
    dataset_json = _read_json(ds_path)
    names = _classes(dataset_json, ds_path)
    n_in = _channels(dataset_json, ds_path)
    if n_in != 1:
        chans = dataset_json.get("channel_names", dataset_json.get("modality"))
        raise TeacherError(f"{ds_path}: the model takes {n_in} input channels ({', '.join(map(str, chans.values()))}); "
                           "napari-dmd teachers take single-channel images")
    ckpt_paths = _find_checkpoints(folder, folds, ckpt_name)
    ckpts = [load_torch_file(p, trust=trust, allow_numpy=True, what="nnU-Net checkpoint") for p in ckpt_paths]
    for p, ck in zip(ckpt_paths, ckpts):
        if not isinstance(ck, dict) or "network_weights" not in ck:
            raise TeacherError(f"{p}: not an nnU-Net v2 checkpoint (no 'network_weights')")

    configs = plans.get("configurations") or {}
    if configuration is None:
        tail = folder.name.split("__")[-1] if folder.name.count("__") == 2 else None
        ck_cfg = (ckpts[0].get("init_args") or {}).get("configuration")
        configuration = next((c for c in (tail, ck_cfg) if c in configs), None)
        if configuration is None:
            configuration = "3d_fullres" if "3d_fullres" in configs else ("2d" if "2d" in configs else None)
    if configuration not in configs:
        raise TeacherError(f"{plans_path}: no configuration {configuration!r}; the plans hold "
                           f"{', '.join(sorted(configs)) or 'none'}")
    for p, ck in zip(ckpt_paths, ckpts):
        trained = (ck.get("init_args") or {}).get("configuration")
        if trained is not None and trained != configuration:
            raise TeacherError(f"{p}: trained with configuration {trained!r}, but {configuration!r} was chosen")
    if "previous_stage" in configs[configuration]:
        raise TeacherError(f"{plans_path}: configuration {configuration!r} is a cascade stage that also takes the "
                           "previous stage's segmentation as input; choose 3d_fullres or 2d")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            plans_manager = PlansManager(plans)
            cm = plans_manager.get_configuration(configuration)
            arch_entry = cm.configuration["architecture"]
            _ = cm.patch_size
        except TeacherError:
            raise
        except Exception as e:  # noqa: BLE001
            raise TeacherError(f"{plans_path}: cannot read configuration {configuration!r} ({e})") from e
    arch = _architecture(arch_entry, plans_path, f"configuration {configuration!r}")
    dims = len(cm.patch_size)
    if dims not in (2, 3):
        raise TeacherError(f"{plans_path}: configuration {configuration!r} has a {dims}D patch size")

    members = []
    trainer_name = ckpts[0].get("trainer_name", "nnUNetTrainer")
    for p, ck in zip(ckpt_paths, ckpts):
        try:
            net = _build_network(arch, n_in, len(names))
        except TeacherError as e:
            raise TeacherError(f"{plans_path}: {e}") from e
        try:
            net.load_state_dict(ck["network_weights"])
        except RuntimeError as e:
            alt = _installed_trainer_network(ck.get("trainer_name", ""), plans_manager, cm, dataset_json,
                                             n_in, len(names))
            try:
                if alt is None:
                    raise e
                alt.load_state_dict(ck["network_weights"])
                net = alt
            except RuntimeError as e2:
                first = str(e2).strip().splitlines()[0][:200]
                raise TeacherError(f"{p}: weights do not fit the network the plans describe for "
                                   f"{configuration!r} with {len(names)} classes (trainer "
                                   f"{ck.get('trainer_name')}; {first})") from e2
        members.append(net.eval())
    model: Any = members[0] if len(members) == 1 else LogitsEnsemble(members)
    model = PadToMultiple(model, _stride_multiples(cm, dims))
    scheme, model, note = _normalization(plans, cm, model, plans_path)
    info = {"format": "nnU-Net v2", "configuration": configuration, "trainer": trainer_name,
            "checkpoints": [str(p) for p in ckpt_paths],
            "folds": [p.parent.name[len("fold_"):] for p in ckpt_paths], "trusted": bool(trust),
            "nnunet_normalization": list(cm.normalization_schemes or [])}
    if note:
        info["normalization_note"] = note
    spacing = [float(s) for s in cm.spacing] if getattr(cm, "spacing", None) else None
    if spacing and not all(math.isfinite(s) and s > 0 for s in spacing):
        spacing = None
    teacher = ModelTeacher(model, len(names), dims, class_names=names, normalization=scheme,
                           patch_size=[int(p) for p in cm.patch_size], spacing=spacing, source=str(folder),
                           info=info)
    apply_overrides(teacher, class_names=class_names, normalization=normalization, patch_size=patch_size)
    if probe:
        probe_teacher(teacher, [int(m) for m in np.maximum(2 * np.array(_stride_multiples(cm, dims)), 8)])
    return teacher
