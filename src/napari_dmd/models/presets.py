"""Named model sizes: a teacher, the default (fast) student, the tiny students and the classic students.

``student`` (the default since 2026-12-06) uses batch norm (folded into the convs at inference) and a strided stem:
the U-Net runs at half resolution with five levels of 8-64 channels and its logits are upsampled bilinearly. It
meets the targets for the default (>= 8x faster than ``teacher`` at >= 98 % of its Dice, DMD + Heads): CHAOS 8.5x /
99 % (4800 iterations, 5 seeds), hippocampus 3D 8.9x / 98.6 % without flips (1600 iterations, 3 seeds;
docs/results.md). It was measured under the name ``student-fast-deep``, still accepted (:data:`PRESET_ALIASES`).
``student-classic`` is the default student before that day (full resolution, instance norm, the same channels),
kept for comparison; checkpoints and run folders made with the old ``student`` hold their architecture and load,
resume and start correction rounds as they were trained. ``student-tiny`` (since 2026-12-06, evening) is
``student-fast``'s network (four levels of 8-40 channels, batch norm) with a stem of stride 2 in 3D and 4 in 2D: the
same 8x fewer positions per level in either (15.1x / 98.8 % on hippocampus 3D; 2D at quarter resolution, for large
slices, docs/results.md); the tiny student before that day, full resolution and instance norm with 4-32 channels,
is ``student-tiny-classic`` (:data:`FORMER_PRESETS`). The other fast students: ``student-fast`` four levels of 8-40
channels at half resolution, ``student-fast-tiny`` five levels of 4-32 (four levels of 4-24 was faster but lost a
whole class in 2 of 3 DMD runs on hippocampus); chosen by per-volume latency against ``teacher``
(``benchmarks/fast_students_latency.py``, docs/benchmarks.md B2).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .unet import UNet

PRESETS: dict[str, tuple[int, ...]] = {
    "teacher": (16, 32, 64, 128, 256),
    "student": (8, 16, 24, 40, 64),
    "student-tiny": (8, 16, 24, 40),
    "student-fast": (8, 16, 24, 40),
    "student-fast-tiny": (4, 8, 16, 24, 32),
    "student-classic": (8, 16, 24, 40, 64),
    "student-tiny-classic": (4, 8, 16, 24, 32),
}

#: Former preset names and the preset each now means (``build_model`` accepts them; choosers do not list them).
PRESET_ALIASES: dict[str, str] = {"student-fast-deep": "student"}
#: What a preset name meant before it was given to another network (2026-12-06): a run saved under the old meaning
#: resumes and starts correction rounds with that network (:func:`as_trained`).
FORMER_PRESETS: dict[str, str] = {"student": "student-classic", "student-tiny": "student-tiny-classic"}

_FAST = {"norm": "batch", "stem": 2, "upsample": "bilinear", "block": "conv"}
#: Architecture options of each preset besides its channels (UNet keyword arguments); none = classic U-Net.
PRESET_OPTIONS: dict[str, dict[str, Any]] = {
    "teacher": {"norm": "instance"},
    "student": dict(_FAST),
    "student-tiny": {**_FAST, "stem": {2: 4, 3: 2}},  # per spatial dims
    "student-fast": dict(_FAST),
    "student-fast-tiny": dict(_FAST),
    "student-classic": {"norm": "instance"},
    "student-tiny-classic": {"norm": "instance"},
}

#: What a chooser can show per preset. ``params``: parameters of the 3D and 2D model for 1 input channel and
#: 3 classes. ``speedup``: per-volume latency of teacher / preset, untrained models, sliding window with Gaussian
#: blending, interleaved in one process, 1 CPU thread, batch norm folded, the Segmenter's own windows per call:
#: "3d" = a 48x64x48 volume with patch 40x56x40, "2d" = 8 slices of 256x256 with patch 128x128 (slice-wise)
#: (`napari-dmd bench inference --presets all`, docs/benchmarks/bench-b2-presets-linear-upsample.json); "hippocampus" /
#: "chaos" = median per validation volume of hippocampus 3D (patch 40x56x40) and CHAOS (2D, patch 128x128)
#: (`benchmarks/bench_linear_upsample.py --threads 1`, its "matmul" arm, docs/benchmarks/
#: bench-b2-linear-upsample-1thread.json). Measured on the shared 2-core development VM (Intel Xeon, Linux, torch
#: 2.13 CPU, otherwise idle) on 2026-12-06, after the logits of the reduced-resolution students were upsampled by
#: matrix products (docs/benchmarks.md B2); the same command before that change, an hour earlier: `student` 12.6x
#: "3d" / 10.7x "2d", `student-tiny` 24.6x / 27.2x.
#: ``speedup_two_threads``: the same per validation volume with 2 threads as napari-dmd runs them (idle threads
#: asleep, window workers), the median of three runs of 2026-12-06 (docs/benchmarks/bench-b2-linear-upsample.json,
#: bench-b2-window-workers-after-upsample.json, bench-b2-labels-per-call.json): a hippocampus volume fits one window,
#: so the teacher uses the second core and the small students barely do.
PRESET_INFO: dict[str, dict[str, Any]] = {
    "teacher": {"description": "teacher U-Net: 5 levels, full resolution, instance norm",
                "params": {"3d": 5_646_419, "2d": 1_942_323},
                "speedup": {"3d": 1.0, "2d": 1.0, "hippocampus": 1.0, "chaos": 1.0},
                "speedup_two_threads": {"hippocampus": 1.0, "chaos": 1.0}},
    "student": {"description": "default student: half-resolution U-Net (strided stem), 5 levels of 8-64 "
                               "channels, batch norm folded at inference, bilinear logits; with DMD + Heads 99 % of "
                               "the teacher's Dice on CHAOS (4800 iterations, 5 seeds), 98.6 % on hippocampus 3D "
                               "without flips (1600 iterations, 3 seeds)",
                "params": {"3d": 522_571, "2d": 180_283},
                "speedup": {"3d": 14.9, "2d": 11.5, "hippocampus": 9.3, "chaos": 10.9},
                "speedup_two_threads": {"hippocampus": 6.4, "chaos": 9.5}},
    "student-tiny": {"description": "tiny student: student-fast's network at half resolution in 3D, quarter "
                                    "resolution in 2D (for large slices; small structures suffer), batch norm "
                                    "folded at inference; with DMD + Heads 98.8 % of the teacher's Dice on "
                                    "hippocampus 3D without flips (1600 iterations, 3 seeds), 97.1 % on CHAOS "
                                    "(4800 iterations, 3 seeds)",
                     "params": {"3d": 192_323, "2d": 66_483},
                     "speedup": {"3d": 29.6, "2d": 35.3, "hippocampus": 16.5, "chaos": 29.2},
                     "speedup_two_threads": {"hippocampus": 11.6, "chaos": 16.2}},
    "student-fast": {"description": "fast student: half-resolution U-Net (strided stem), 4 levels, batch norm "
                                    "folded at inference, bilinear logits; with DMD + Heads 98.8 % of the "
                                    "teacher's Dice on hippocampus 3D without flips (1600 iterations, 3 seeds)",
                     "params": {"3d": 192_323, "2d": 66_483},
                     "speedup": {"3d": 30.9, "2d": 12.5, "hippocampus": 17.5, "chaos": 11.9},
                     "speedup_two_threads": {"hippocampus": 11.7, "chaos": 9.9}},
    "student-fast-tiny": {"description": "fast tiny student: half-resolution U-Net (strided stem), 5 levels of "
                                         "4-32 channels, batch norm folded at inference, bilinear logits",
                          "params": {"3d": 172_783, "2d": 59_751},
                          "speedup": {"3d": 27.3, "2d": 18.9, "hippocampus": 15.2, "chaos": 16.5},
                          "speedup_two_threads": {"hippocampus": 10.4, "chaos": 15.1}},
    "student-classic": {"description": "classic student (the default before 2026-12-06): full resolution, 5 levels "
                                       "of 8-64 channels, instance norm",
                        "params": {"3d": 522_571, "2d": 180_283},
                        "speedup": {"3d": 2.5, "2d": 2.5, "hippocampus": 2.4, "chaos": 2.6},
                        "speedup_two_threads": {"hippocampus": 1.9, "chaos": 2.4}},
    "student-tiny-classic": {"description": "classic tiny student (student-tiny before 2026-12-06): full "
                                            "resolution, 5 levels of 4-32 channels, instance norm",
                             "params": {"3d": 172_783, "2d": 59_751},
                             "speedup": {"3d": 4.2, "2d": 4.9, "hippocampus": 4.5, "chaos": 4.6},
                             "speedup_two_threads": {"hippocampus": 3.1, "chaos": 4.5}},
}


def preset_summary(name: str) -> str:
    """One line a chooser shows for a preset: parameters and measured speed-up against ``teacher`` ("" if unknown)."""
    info = PRESET_INFO.get(name)
    if info is None:
        return ""
    p, x, y = info["params"], info["speedup"], info["speedup_two_threads"]
    if name == "teacher":
        return f"{p['2d']:,} parameters (2D) / {p['3d']:,} (3D); the reference for speed-ups"
    return (f"{p['2d']:,} parameters (2D) / {p['3d']:,} (3D); measured {x['2d']:g}x (2D) / {x['3d']:g}x (3D) "
            f"faster than the teacher per volume, {x['hippocampus']:g}x on hippocampus (3D) and {x['chaos']:g}x on "
            "CHAOS validation volumes (1 CPU thread; with 2 threads "
            f"{y['hippocampus']:g}x / {y['chaos']:g}x)")


def build_model(preset: str | tuple[int, ...] | list[int], spatial_dims: int, num_classes: int,
                in_channels: int = 1, norm: str | None = None, **options: Any) -> UNet:
    """Build a U-Net from a preset name or an explicit channel tuple.

    ``norm`` None or "auto" keeps the preset's own normalization (instance for an explicit channel tuple);
    ``options`` (``stem``, ``upsample``, ``block``, ``dropout``) override the preset's architecture options.
    """
    if isinstance(preset, str):
        preset = PRESET_ALIASES.get(preset, preset)
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
        channels = PRESETS[preset]
        kwargs = {k: v[spatial_dims] if isinstance(v, dict) else v  # an option given per spatial dims
                  for k, v in PRESET_OPTIONS.get(preset, {}).items()}
    else:
        channels = tuple(int(c) for c in preset)
        kwargs = {"norm": "instance"}
    if norm not in (None, "auto"):
        kwargs["norm"] = norm
    kwargs.update(options)
    return UNet(spatial_dims, in_channels, num_classes, channels, **kwargs)


def as_trained(model: UNet, saved: dict[str, Any] | None, preset: str | None = None) -> UNet:
    """``model``, or the architecture ``saved`` (a checkpoint's ``model`` entry) describes when a run made with a
    preset since given to another network must go on as it was trained: the same channels with other options (the
    classic ``student`` before 2026-12-06), or other channels exactly those ``preset`` meant before
    (:data:`FORMER_PRESETS`: the classic ``student-tiny``). Other differences are left to the caller's check."""
    if not saved or not saved.get("channels"):
        return model
    cfg = model.config()
    old = UNet.arch_options(saved)
    channels = [int(c) for c in saved["channels"]]
    if channels != list(model.channels):
        former = FORMER_PRESETS.get(PRESET_ALIASES.get(preset, preset)) if preset else None
        if former is None:
            return model
        was = build_model(former, model.spatial_dims, model.num_classes, model.in_channels).config()
        if channels != list(was["channels"]) or old != UNet.arch_options(was):
            return model
    elif old == UNet.arch_options(cfg):
        return model
    return UNet.from_config({**cfg, "channels": channels, **old})


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
