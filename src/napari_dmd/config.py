"""TrainConfig: every hyperparameter of teacher training and distillation, saved with each checkpoint."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .distill.methods import NAMES as METHODS  # the method table (torch-free): none, ds, kd, dkd, mfd, dmd


class ConfigError(ValueError):
    """A setting is invalid; the message names it and says what is allowed."""


MAX_CONFIG_BYTES = 1_000_000  # a config holds a few dozen settings (a few kB)
TEMPERATURE_RANGE = (0.1, 100.0)
_PYTHON_TAG = "tag:yaml.org,2002:python/"


class _ConfigLoader(yaml.SafeLoader):
    """Safe YAML for config files: plain values only, no anchors/aliases (no 'billion laughs'), no tags."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 - yaml's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            mark = event.start_mark
            raise ConfigError(f"line {mark.line + 1}, column {mark.column + 1}: YAML alias *{event.anchor} refused: "
                              "anchors and aliases (&name, *name) are not allowed in config files; write each "
                              "setting out")
        return super().compose_node(parent, index)


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """Constructor for every tag SafeLoader does not know: python tags and custom tags are refused."""
    mark = node.start_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    if node.tag.startswith(_PYTHON_TAG):
        raise ConfigError(f"{where}: python tag !!python/{node.tag[len(_PYTHON_TAG):]} refused for safety "
                          "(it could run code); a config file holds plain settings only")
    raise ConfigError(f"{where}: YAML tag {node.tag} refused; a config file holds plain settings only")


_ConfigLoader.add_constructor(None, _refuse_tag)


def _float_fields() -> list[str]:
    """TrainConfig fields that hold a float (alone, optional or in a list)."""
    hints = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    return [name for name, hint in hints.items() if "float" in hint]


@dataclass
class TrainConfig:
    """Settings for one run. Defaults follow docs/method.md and our validation runs (docs/architecture.md)."""

    # what to train
    method: str = "dmd"  # none | ds | kd | dkd | mfd | dmd ("none" also trains teachers)
    model: str = "student"  # preset name (teacher | student | student-tiny) or comma-separated channels
    norm: str = "auto"  # auto: the preset's own (batch for the fast students, else instance)
    spatial_dims: int | None = None  # None: from the data
    num_classes: int | None = None  # None: from the labels / teacher
    class_names: list[str] | None = None
    # data
    patch_size: list[int] | None = None  # None: chosen from the median case shape
    batch_size: int = 2
    normalization: str = "zscore"
    fg_fraction: float = 0.33
    augment: bool = True
    flips: bool = True  # part of augment: random flips on every axis and in-plane rot90
    val_fraction: float = 0.2
    max_val_cases: int = 16
    # optimisation
    iterations: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lr_warmup: float = 0.02  # fraction of iterations with a linear LR ramp
    grad_clip: float = 12.0
    # distillation (docs/method.md)
    temperature: float = 4.0
    target_balance: bool | None = None  # KD, TCKD of DKD/DMD per class, not per pixel; None: the method's default
    target_temperature: float | None = None  # KD, TCKD of DKD/DMD at this T; None: the method's default
    alpha: float = 1.0  # DKD target weight
    beta: float = 2.0  # DKD non-target weight (8 is the classification default, too strong here)
    kd_weight: float = 1.0
    lambda_logit: float = 1.0  # DMD: TCKD on the final logits
    lambda_feat: float | None = None  # DMD/MFD: per-scale weight; None -> 2 / number of scales
    ds_weight: float = 1.0  # control: heads + deep supervision
    head_supervision: float = 0.0  # MFD/DMD extension: + this weight x deep supervision at the scale heads
    feature_scales: list[int] | None = None  # decoder stages (0 = deepest); None -> all but the last
    scale_weights: list[float] | None = None
    scale_resample: str = "up"  # up: student scale logits interpolated up | pool: teacher + labels pooled down
    distill_warmup: float = 0.1  # fraction of iterations over which distillation weight ramps 0 -> 1
    confidence_weighting: bool = False  # weight pseudo-labelled pixels by the teacher's confidence
    # runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # mixed precision on CUDA (bfloat16 where supported, else float16 + gradient scaling)
    cpu_bf16: bool = False  # 2D: bfloat16 autocast on a CPU with native bfloat16 (AVX512-BF16/AMX); else ignored
    channels_last: bool = True  # channels-last memory format on CUDA
    compile: bool = False  # torch.compile the student (CUDA; first steps are slow while compiling)
    num_workers: int = -1  # data-loading worker processes; -1 = auto (0 on CPU/MPS, up to 4 on CUDA)
    seed: int = 0
    val_interval: int = 200
    checkpoint_interval: int = 200
    log_interval: int = 10
    tensorboard: bool = False
    num_threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TrainConfig:
        """Raise ConfigError on absurd settings; return self."""
        if self.method not in METHODS:
            raise ConfigError(f"method {self.method!r} is unknown; choose one of {', '.join(METHODS)}")
        if self.scale_resample not in ("up", "pool"):
            raise ConfigError(f"scale_resample {self.scale_resample!r} is unknown; choose up or pool")
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        for name in _float_fields():  # nan passes every comparison below; inf turns weights and ramps off
            value = getattr(self, name)
            values = value if isinstance(value, list | tuple) else [value]
            if any(isinstance(v, numbers.Real) and not math.isfinite(v) for v in values):
                raise ConfigError(f"{name} must be a finite number, got {value}")
        lo_t, hi_t = TEMPERATURE_RANGE
        if not lo_t <= self.temperature <= hi_t:
            raise ConfigError(f"temperature must be > 0, within [{lo_t:g}, {hi_t:g}] (typical 1 to 8), got "
                              f"{self.temperature}")
        if self.target_temperature is not None and not lo_t <= self.target_temperature <= hi_t:
            raise ConfigError(f"target_temperature must be > 0, within [{lo_t:g}, {hi_t:g}] (typical 1 to 8; "
                              f"none = temperature), got {self.target_temperature}")
        for name in ("lr_warmup", "distill_warmup"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1] (a fraction of the iterations), got "
                                  f"{getattr(self, name)}")
        if self.grad_clip is None:  # None = off, like 0
            self.grad_clip = 0.0
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2 (background + one class), got {self.num_classes}")
        if self.class_names is not None and self.num_classes is not None \
                and len(self.class_names) != self.num_classes:
            raise ConfigError(f"class_names lists {len(self.class_names)} names but num_classes is "
                              f"{self.num_classes}; give one name per class, background included")
        if self.scale_weights is not None and any(w < 0 for w in self.scale_weights):
            raise ConfigError(f"scale_weights must be >= 0, got {list(self.scale_weights)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.fg_fraction <= 1:
            raise ConfigError(f"fg_fraction must be in [0, 1], got {self.fg_fraction}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.spatial_dims not in (None, 2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.patch_size is not None:
            if any(int(p) < 4 for p in self.patch_size):
                raise ConfigError(f"patch_size entries must be >= 4, got {list(self.patch_size)}")
            if self.spatial_dims is not None and len(self.patch_size) != self.spatial_dims:
                raise ConfigError(f"patch_size {list(self.patch_size)} has {len(self.patch_size)} entries "
                                  f"for {self.spatial_dims}D data")
        for name in ("val_interval", "checkpoint_interval", "log_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha", "beta", "kd_weight", "lambda_logit", "ds_weight", "head_supervision", "distill_warmup",
                     "lr_warmup", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lambda_feat is not None and self.lambda_feat < 0:
            raise ConfigError(f"lambda_feat must be >= 0, got {self.lambda_feat}")
        nw = self.num_workers
        if isinstance(nw, bool) or not isinstance(nw, numbers.Integral) or nw < -1:
            raise ConfigError(f"num_workers must be -1 (auto), 0 (sample in the training process) or a number "
                              f"of worker processes, got {self.num_workers!r}")
        return self

    def model_channels(self) -> str | tuple[int, ...]:
        """The preset name, or the explicit channel tuple if `model` lists numbers."""
        if any(ch.isdigit() for ch in self.model):
            try:
                return tuple(int(c) for c in self.model.replace(" ", "").split(","))
            except ValueError as e:
                raise ConfigError(f"model {self.model!r}: give a preset name or channels like 8,16,32") from e
        return self.model

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting unknown keys with a clear message."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> TrainConfig:
        """Settings from a YAML file: plain values only (aliases, python and custom tags refused)."""
        try:
            size = Path(path).stat().st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{path}: config file of {size:,} bytes is implausibly large for a few settings "
                                  f"(limit {MAX_CONFIG_BYTES:,})")
            data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_ConfigLoader) or {}  # noqa: S506 - safe loader
        except ConfigError as e:
            raise ConfigError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
        except RecursionError:
            raise ConfigError(f"{path}: config nested too deeply; a config file holds plain settings") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read config ({e.__class__.__name__}: {e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping of settings")
        return cls.from_dict(data)


HELP: dict[str, str] = {
    "method": f"{' | '.join(METHODS)} (none also trains teachers)",
    "model": "model preset (teacher, student, student-tiny) or channels per level, e.g. 8,16,32,64",
    "norm": "normalization layers: auto (the preset's own) | instance | batch | group | none",
    "spatial_dims": "2 or 3; default from the teacher or the data (2 on 3D data = slice-wise model)",
    "num_classes": "number of classes including background; default from the labels / teacher",
    "patch_size": "training patch, one value per axis (z y x); default: median case shape, capped",
    "batch_size": "patches per step (per rank under torchrun)",
    "normalization": "intensity normalization: zscore | zscore-fg | ct | none",
    "fg_fraction": "fraction of patches centred on a foreground voxel",
    "augment": "random intensity changes, plus flips and rot90 unless --no-flips",
    "flips": "with augment: flip every axis and rotate in-plane by 90 degrees; turn off (--no-flips) when classes "
             "are left/right, e.g. kidneys",
    "val_fraction": "fraction of labelled cases held back for validation (seeded split)",
    "max_val_cases": "at most this many validation cases",
    "iterations": "training steps",
    "lr": "peak learning rate (AdamW)",
    "weight_decay": "AdamW weight decay",
    "lr_warmup": "fraction of iterations with a linear learning-rate ramp (then cosine decay)",
    "grad_clip": "gradient-norm clip (0 = off)",
    "temperature": "distillation temperature T",
    "target_balance": "average KD and the TCKD of DKD/DMD per class (each class present in the batch weighs the "
                      "same) instead of per pixel (default: on; docs/method.md); --no-target-balance: the "
                      "published methods' pixel mean",
    "target_temperature": "temperature of the target-class terms, KD and the TCKD of DKD/DMD (default: the "
                          "temperature; docs/method.md)",
    "alpha": "DKD weight of the target part (TCKD)",
    "beta": "DKD weight of the non-target part (NCKD)",
    "kd_weight": "KD weight",
    "lambda_logit": "DMD weight of TCKD on the final logits",
    "lambda_feat": "DMD/MFD weight of the per-scale terms (default 2 / number of scales)",
    "ds_weight": "deep-supervision weight of the 'ds' control",
    "head_supervision": "MFD/DMD: also supervise every scale head with the task loss, at this weight "
                        "(0: the method as specified; see docs/method.md)",
    "feature_scales": "decoder stages distilled (0 = deepest); default all but the last",
    "scale_weights": "weight w_k of each distilled scale (default 1 each)",
    "scale_resample": "how MFD/DMD meet the teacher at a coarse scale: up = student scale logits interpolated "
                      "up to the label grid (default); pool = teacher logits and labels pooled down to the "
                      "scale (block mean, majority vote): cheaper",
    "distill_warmup": "fraction of iterations over which distillation terms ramp from 0 to full weight",
    "confidence_weighting": "weight pseudo-labelled pixels by the teacher's confidence",
    "device": "auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU)",
    "amp": "mixed precision on CUDA (bfloat16, else float16 with gradient scaling)",
    "cpu_bf16": "bfloat16 autocast for teacher and student of a 2D model on a CPU with native bfloat16 "
                "(AVX512-BF16 or AMX): about 1.4x faster distillation jobs measured; ignored (noted in the "
                "start message) for 3D models and on other CPUs",
    "channels_last": "channels-last memory format on CUDA",
    "compile": "torch.compile the student (CUDA)",
    "num_workers": "data-loading worker processes; -1 = auto: 0 on CPU/MPS (sample in the training process), "
                   "min(4, cores - 1) on CUDA; exact resume of the patch stream only with 0",
    "seed": "random seed (split, initialisation, patches)",
    "val_interval": "validate every N steps",
    "checkpoint_interval": "write last.pt every N steps",
    "log_interval": "log to events.jsonl every N steps",
    "tensorboard": "also log to TensorBoard (needs the tensorboard extra)",
    "num_threads": "CPU threads for torch",
}
