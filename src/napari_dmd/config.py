"""TrainConfig: every hyperparameter of teacher training and distillation, saved with each checkpoint.

Each setting is declared once: its default, its help text (the CLI flags and ``HELP`` read it) and its allowed
values (bounds and choices). ``validate()`` checks types and bounds with pydantic in strict mode (imported there,
so ``napari-dmd --help`` does not pay for it), then the checks that relate two settings.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
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
_BOUNDS = ("ge", "gt", "le", "lt")  # pydantic's names; on a list setting they bound each entry
_BOUND_ERRORS = ("greater_than_equal", "greater_than", "less_than_equal", "less_than")
_TYPE_WORDS = {int: "integer", float: "number", str: "string", bool: "true/false", type(None): "null"}


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


def _setting(default: Any, text: str, *, factory: Any = None, **rules: Any) -> Any:
    """A TrainConfig field with its help ``text`` and allowed values in one place.

    ``rules``: ``ge``/``gt``/``le``/``lt`` (bounds, checked by pydantic), ``choices`` (the allowed words),
    ``says`` (the error's words after the setting's name; default from the bounds) and ``type_words`` (what a value
    of the wrong type is told to be; default from the type hint).
    """
    if factory is not None:
        return field(default_factory=factory, metadata={"help": text, **rules})
    return field(default=default, metadata={"help": text, **rules})


_T_LO, _T_HI = TEMPERATURE_RANGE
_FRACTION = "must be in [0, 1] (a fraction of the iterations)"
_WORKERS = "-1 (auto), 0 (sample in the training process) or a number of worker processes"


FOCUS_2D, FOCUS_3D = 0.9, 0.5  # focus_fraction's defaults (measured: docs/results.md, the correction loop)


def focus_share(focus_fraction: float | None, spatial_dims: int) -> float:
    """The share of a corrections round's patches centred on painted voxels: ``focus_fraction``, or by default
    :data:`FOCUS_2D` for a 2D model (CHAOS, shifted scanner: +0.7 to +1.1 Dice over 0.5 in 3 of 3 seeds) and
    :data:`FOCUS_3D` for 3D (hippocampus: 0.9 trained on the few painted cases and cost 1.3-4.6 points)."""
    if focus_fraction is not None:
        return float(focus_fraction)
    return FOCUS_2D if spatial_dims == 2 else FOCUS_3D


@dataclass
class TrainConfig:
    """Settings for one run. Defaults follow docs/method.md and our validation runs (docs/architecture.md)."""

    # what to train
    method: str = _setting("dmd", f"{' | '.join(METHODS)} (none also trains teachers)", choices=METHODS)
    model: str = _setting("student", "model preset (teacher, student, student-tiny, student-fast, "
                                     "student-fast-tiny; student-classic and student-tiny-classic: student and "
                                     "student-tiny before 2026-12-06) or channels per level, e.g. 8,16,32,64 (full "
                                     "resolution)")
    norm: str = _setting("auto", "normalization layers: auto (the preset's own) | instance | batch | group | none")
    spatial_dims: int | None = _setting(None, "2 or 3; default from the teacher or the data (2 on 3D data = "
                                              "slice-wise model)", ge=2, le=3, says="must be 2 or 3")
    num_classes: int | None = _setting(None, "number of classes including background; default from the labels / "
                                             "teacher", ge=2, says="must be at least 2 (background + one class)")
    class_names: list[str] | None = _setting(None, "name of each class, background first; default from the "
                                                   "teacher, the layers' metadata or dataset.json")
    # data
    patch_size: list[int] | None = _setting(None, "training patch, one value per axis (z y x); default: median "
                                                  "case shape, capped", ge=4, says="entries must be >= 4")
    batch_size: int = _setting(2, "patches per step (per rank under torchrun)", ge=1)
    normalization: str = _setting("zscore", "intensity normalization: zscore | zscore-fg | ct | none")
    fg_fraction: float = _setting(0.33, "fraction of patches centred on a foreground voxel", ge=0, le=1)
    focus_fraction: float | None = _setting(
        None, "corrections rounds: fraction of patches centred on a painted voxel, the rest drawn as usual (default: "
              "0.9 for a 2D model, 0.5 for 3D, where a patch often holds a whole case; docs/results.md)", ge=0, le=1)
    augment: bool = _setting(True, "random intensity changes, plus flips and rot90 unless --no-flips")
    flips: bool = _setting(True, "with augment: flip every axis and rotate in-plane by 90 degrees; turn off "
                                 "(--no-flips) when classes differ by side or position rather than look, e.g. left "
                                 "and right kidney, hippocampus head and tail (4-8 Dice points there)")
    spatial_augment: bool = _setting(False, "with augment: random zoom (0.8-1.25x) and in-plane rotation (up to 30 "
                                            "degrees) of each patch; for small datasets (docs/teachers.md, HC18)")
    val_fraction: float = _setting(0.2, "fraction of labelled cases held back for validation (seeded split)",
                                   ge=0, lt=1)
    max_val_cases: int = _setting(16, "at most this many validation cases")
    # optimisation
    iterations: int = _setting(1000, "training steps", ge=1)
    lr: float = _setting(2e-3, "peak learning rate (AdamW)", gt=0)
    weight_decay: float = _setting(1e-4, "AdamW weight decay", ge=0)
    lr_warmup: float = _setting(0.02, "fraction of iterations with a linear learning-rate ramp (then cosine decay)",
                                ge=0, le=1, says=_FRACTION)
    grad_clip: float = _setting(12.0, "gradient-norm clip (0 = off)", ge=0, says="must be >= 0 (0 = off)")
    # distillation (docs/method.md)
    temperature: float = _setting(4.0, "distillation temperature T", ge=_T_LO, le=_T_HI,
                                  says=f"must be > 0, within [{_T_LO:g}, {_T_HI:g}] (typical 1 to 8)")
    target_balance: bool | None = _setting(
        None, "average KD and the TCKD of DKD/DMD per class (each class present in the batch weighs the same) "
              "instead of per pixel (default: on; docs/method.md); --no-target-balance: the published methods' "
              "pixel mean")  # None: the method's default
    target_temperature: float | None = _setting(
        None, "temperature of the target-class terms, KD and the TCKD of DKD/DMD (default: 1 for DMD, the "
              "temperature for the others; docs/method.md)", ge=_T_LO, le=_T_HI,
        says=f"must be > 0, within [{_T_LO:g}, {_T_HI:g}] (typical 1 to 8; none = temperature)")
    alpha: float = _setting(1.0, "DKD weight of the target part (TCKD)", ge=0)
    beta: float = _setting(2.0, "DKD weight of the non-target part (NCKD)", ge=0)  # 8 (classification): too strong
    kd_weight: float = _setting(1.0, "KD weight", ge=0)
    lambda_logit: float = _setting(1.0, "DMD weight of TCKD on the final logits", ge=0)
    lambda_feat: float | None = _setting(None, "DMD/MFD weight of the per-scale terms (default 2 / number of "
                                               "scales)", ge=0)
    ds_weight: float = _setting(1.0, "deep-supervision weight of the 'ds' control", ge=0)
    head_supervision: float | None = _setting(
        None, "MFD/DMD: also supervise every scale head with the task loss, at this weight (default: 1 for DMD, 0 "
              "for MFD; 0: the method as published; see docs/method.md)", ge=0)  # None: the method's default
    feature_scales: list[int] | None = _setting(None, "decoder stages distilled (0 = deepest); default all but the "
                                                      "last")
    scale_weights: list[float] | None = _setting(None, "weight w_k of each distilled scale (default 1 each)", ge=0)
    scale_resample: str = _setting(
        "up", "how MFD/DMD meet the teacher at a coarse scale: up = student scale logits interpolated up to the "
              "label grid (default); pool = teacher logits and labels pooled down to the scale (block mean, "
              "majority vote): cheaper", choices=("up", "pool"))
    distill_warmup: float = _setting(0.1, "fraction of iterations over which distillation terms ramp from 0 to full "
                                          "weight", ge=0, le=1, says=_FRACTION)
    confidence_weighting: bool = _setting(False, "weight pseudo-labelled pixels by the teacher's confidence")
    correct_teacher: bool = _setting(False, "where a label disagrees with the teacher, swap the teacher's logits of "
                                            "its top class and the label's (an option for corrections rounds)")
    # runtime
    device: str = _setting("auto", "auto | cpu | cuda | cuda:N | mps (auto: CUDA, then MPS, then CPU)")
    amp: bool = _setting(True, "mixed precision on CUDA (bfloat16, else float16 with gradient scaling)")
    cpu_bf16: bool = _setting(False, "bfloat16 autocast on a CPU with native bfloat16 (AVX512-BF16 or AMX): teacher "
                                     "and student of a 2D model (about 1.4x faster jobs measured); with a 3D model "
                                     "the teacher's forward pass only, the student trains in float32 (1.4-1.6x "
                                     "faster steps measured); ignored (noted in the start message) on other CPUs")
    channels_last: bool = _setting(True, "channels-last memory format for the student: on CUDA, and on the CPU for 3D "
                                         "models (3D DMD steps 1.04-1.33x faster measured)")
    compile: bool = _setting(False, "torch.compile the student (CUDA)")  # first steps are slow while compiling
    num_workers: int = _setting(
        -1, "data-loading worker processes; -1 = auto: 0 on CPU/MPS (sample in the training process), "
            "min(4, cores - 1) on CUDA; exact resume of the patch stream only with 0", ge=-1,
        says=f"must be {_WORKERS}", type_words=_WORKERS)
    seed: int = _setting(0, "random seed (split, initialisation, patches)")
    val_interval: int = _setting(200, "validate every N steps", ge=1)
    checkpoint_interval: int = _setting(200, "write last.pt every N steps", ge=1)
    log_interval: int = _setting(10, "log to events.jsonl every N steps", ge=1)
    tensorboard: bool = _setting(False, "also log to TensorBoard (needs the tensorboard extra)")
    num_threads: int | None = _setting(None, "CPU threads for torch")
    extra: dict[str, Any] = _setting(None, "free-form entries kept with the run (a mapping; training does not read "
                                           "them)", factory=dict)

    def validate(self) -> TrainConfig:
        """Raise ConfigError (one line naming the setting and what is allowed) on a value of the wrong type, out of
        its range or at odds with another setting; return self."""
        if self.grad_clip is None:  # None = off, like 0
            self.grad_clip = 0.0
        _check(self, ranges=True)
        if self.class_names is not None and self.num_classes is not None \
                and len(self.class_names) != self.num_classes:
            raise ConfigError(f"class_names lists {len(self.class_names)} names but num_classes is "
                              f"{self.num_classes}; give one name per class, background included")
        if self.patch_size is not None and self.spatial_dims is not None \
                and len(self.patch_size) != self.spatial_dims:
            raise ConfigError(f"patch_size {list(self.patch_size)} has {len(self.patch_size)} entries "
                              f"for {self.spatial_dims}D data")
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
        """Build from a dict, rejecting unknown keys with a clear message (values are checked by validate())."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**data)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> TrainConfig:
        """Settings from a YAML file: plain values only (aliases, python and custom tags refused), each of its
        setting's type (a number setting also takes a number written as text: YAML reads ``1e-3`` as text);
        ranges are checked by validate(), after the command line's flags."""
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
        cfg = cls.from_dict(data)
        for name in _text_number_fields():
            value = getattr(cfg, name)
            if isinstance(value, str):
                try:
                    setattr(cfg, name, float(value))
                except ValueError:
                    pass  # the type check below names it
        try:
            _check(cfg, ranges=False)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cfg


HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
"""Each setting's help text (the CLI's flag help), read from the fields."""


# ------------------------------------------------------------------------- types and ranges (pydantic)
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


@functools.cache
def _text_number_fields() -> tuple[str, ...]:
    """Settings that hold one number (float, or float | None)."""
    return tuple(name for name, hint in _hints().items()
                 if hint is float or (_is_union(hint) and float in typing.get_args(hint)))


def _constrained(hint: Any, rules: dict[str, Any]) -> Any:
    """``hint`` with the field's bounds and choices on its scalar (on each entry of a list)."""
    from pydantic import Field

    if _is_union(hint):
        return typing.Union[tuple(_constrained(h, rules) for h in typing.get_args(hint))]  # noqa: UP007
    if typing.get_origin(hint) is list:
        return list[_constrained(typing.get_args(hint)[0], rules)]
    if typing.get_origin(hint) is dict:
        return dict  # any mapping, as before (``extra`` is free-form: YAML may give it keys like 1 or yes)
    if hint is type(None):
        return hint
    if "choices" in rules:
        return typing.Literal[tuple(rules["choices"])]
    bounds = {k: rules[k] for k in _BOUNDS if k in rules}
    return typing.Annotated[hint, Field(**bounds)] if bounds else hint


@functools.cache
def _validator(ranges: bool) -> Any:
    """A strict pydantic model of every setting: types only, or (``ranges``) with bounds, choices and finite floats."""
    from pydantic import ConfigDict, create_model

    hints = _hints()
    specs = {f.name: (_constrained(hints[f.name], dict(f.metadata) if ranges else {}), ...)
             for f in dataclasses.fields(TrainConfig)}
    return create_model("TrainConfigValues", __config__=ConfigDict(strict=True, allow_inf_nan=not ranges),
                        **specs)


def _plain(value: Any) -> Any:
    """A tuple as a list and numpy numbers as Python ones (callers pass both); other values as they are."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return value


def _check(cfg: TrainConfig, *, ranges: bool) -> None:
    """ConfigError with one line for the first setting pydantic refuses (fields in declaration order)."""
    from pydantic import ValidationError

    try:
        _validator(ranges).model_validate({f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)})
    except ValidationError as e:
        raise ConfigError(_message(cfg, e.errors())) from None


def _type_words(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_type_words(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_words(typing.get_args(hint)[0])}s"
    if typing.get_origin(hint) is dict:
        return "a mapping"
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _bound_words(rules: dict[str, Any]) -> str:
    lo, hi = rules.get("ge", rules.get("gt")), rules.get("le", rules.get("lt"))
    if lo is not None and hi is not None:
        return f"must be in {'[' if 'ge' in rules else '('}{lo:g}, {hi:g}{']' if 'le' in rules else ')'}"
    op, bound = next((op, rules[k]) for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if k in rules)
    return f"must be {op} {bound:g}"


def _message(cfg: TrainConfig, errors: list[dict[str, Any]]) -> str:
    """One line from pydantic's errors: the first setting named, a wrong type before a wrong value."""
    name = errors[0]["loc"][0]
    mine = [e for e in errors if e["loc"][0] == name]
    err = next((e for e in mine if e["type"] not in (*_BOUND_ERRORS, "finite_number")), mine[0])
    value = getattr(cfg, name)
    shown = list(value) if isinstance(value, tuple) else value
    rules = next(f.metadata for f in dataclasses.fields(cfg) if f.name == name)
    if err["type"] == "finite_number":
        return f"{name} must be a finite number, got {shown}"
    if err["type"] == "literal_error":
        choices = list(rules["choices"])
        words = f"{choices[0]} or {choices[1]}" if len(choices) == 2 else f"one of {', '.join(choices)}"
        return f"{name} {value!r} is unknown; choose {words}"
    if err["type"] in _BOUND_ERRORS:
        return f"{name} {rules.get('says') or _bound_words(rules)}, got {shown}"
    return f"{name} must be {rules.get('type_words') or _type_words(_hints()[name])}, got {shown!r}"
