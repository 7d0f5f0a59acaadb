"""Named model sizes: a teacher, the default (fast) student, the tiny students and the classic students.

``student`` (the default since 2026-12-06) uses batch norm (folded into the convs at inference) and a strided stem:
the U-Net runs at half resolution and its logits are upsampled bilinearly. In 2D it has five levels of 8-64
channels (measured as ``student-fast-deep``: CHAOS 8.5x / 99 % of the teacher's Dice, DMD + Heads, 4800 iterations,
5 seeds); in 3D, since 2026-12-06 (17:00 UTC), four levels of 8-40 (``student-fast``'s network: hippocampus 3D 98.8 %
without flips at 1600 iterations, 3 seeds, and 9.2-9.9x faster than the teacher with 2 threads where the five-level
network made 5.8-6.3x: a hippocampus volume is one window, and a small network's many small operations do not share a
second core; docs/results.md). Channels and options may differ per spatial dims (a dict keyed by 2 and 3).
``student-classic`` is the default student before 2026-12-06 (full resolution, instance norm, 8-64 channels), kept
for comparison, as is ``student-fast-deep`` (the five-level network in 3D too). ``student-tiny`` (since 2026-12-06,
evening) is ``student-fast``'s network with a stem of stride 4 in 2D (for large slices; small structures suffer) and,
since 17:00 UTC that day, three levels of 8-24 channels at half resolution in 3D (a quarter-resolution 3D student cannot
reach 95 % on hippocampus: its ceiling is 78 Dice). Checkpoints and run folders made under a name's earlier meaning
(:data:`FORMER_PRESETS`) hold their architecture and load, resume and start correction rounds as they were trained.
The other fast students: ``student-fast`` four levels of 8-40 channels at half resolution, ``student-fast-tiny``
five levels of 4-32; chosen by per-volume latency against ``teacher`` (``benchmarks/fast_students_latency.py``,
``benchmarks/bench_3d_student_candidates.py``, docs/benchmarks.md B2).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .unet import UNet

Channels = tuple[int, ...]
#: Channels per level of each preset, or per spatial dims (``{2: ..., 3: ...}``).
PRESETS: dict[str, Channels | dict[int, Channels]] = {
    "teacher": (16, 32, 64, 128, 256),
    "student": {2: (8, 16, 24, 40, 64), 3: (8, 16, 24, 40)},
    "student-tiny": {2: (8, 16, 24, 40), 3: (8, 16, 24)},
    "student-fast": (8, 16, 24, 40),
    "student-fast-deep": (8, 16, 24, 40, 64),
    "student-fast-tiny": (4, 8, 16, 24, 32),
    "student-classic": (8, 16, 24, 40, 64),
    "student-tiny-classic": (4, 8, 16, 24, 32),
}

#: Former preset names and the preset each now means (``build_model`` accepts them; choosers do not list them).
PRESET_ALIASES: dict[str, str] = {}
#: What a preset name meant before it was given to another network (2026-12-06): a run saved under an old meaning
#: resumes and starts correction rounds with that network (:func:`as_trained`). ``student`` was
#: ``student-classic`` until 2026-12-06 and ``student-fast-deep`` in 3D until 17:00 UTC that day; ``student-tiny``
#: was ``student-tiny-classic`` until that evening and ``student-fast`` in 3D until 17:00 UTC.
FORMER_PRESETS: dict[str, tuple[str, ...]] = {"student": ("student-classic", "student-fast-deep"),
                                              "student-tiny": ("student-tiny-classic", "student-fast")}

_FAST = {"norm": "batch", "stem": 2, "upsample": "bilinear", "block": "conv"}
#: Architecture options of each preset besides its channels (UNet keyword arguments); none = classic U-Net.
PRESET_OPTIONS: dict[str, dict[str, Any]] = {
    "teacher": {"norm": "instance"},
    "student": dict(_FAST),
    "student-tiny": {**_FAST, "stem": {2: 4, 3: 2}},  # per spatial dims
    "student-fast": dict(_FAST),
    "student-fast-deep": dict(_FAST),
    "student-fast-tiny": dict(_FAST),
    "student-classic": {"norm": "instance"},
    "student-tiny-classic": {"norm": "instance"},
}

#: What a chooser can show per preset. ``params``: parameters of the 3D and 2D model for 1 input channel and
#: 3 classes. ``speedup``: per-volume latency of teacher / preset, sliding window with Gaussian blending, interleaved
#: in one process, 1 CPU thread, batch norm folded, the Segmenter's own windows per call: "3d" = a 48x64x48 volume
#: with patch 40x56x40, "2d" = 8 slices of 256x256 with patch 128x128 (slice-wise), untrained models
#: (`napari-dmd bench inference --presets all`, docs/benchmarks/bench-b2-presets-3d-students.json, 2026-12-06 18:10
#: UTC, before 2D students took labels from low resolution); "hippocampus" / "chaos" = median per validation volume
#: of hippocampus 3D (patch 40x56x40) and CHAOS (2D, patch 128x128), each student trained 200 iterations (the
#: labelling's time depends on the prediction) and timed with the teacher alone, in a new random order each time
#: (`benchmarks/bench_labels_from_low_res.py --pairs`, docs/benchmarks/bench-b2-pairs-*-1thread.json).
#: ``speedup_two_threads``: the same with 2 threads as napari-dmd runs them (idle threads asleep, window workers),
#: the lowest of the runs (bench-b2-pairs-*-2threads*.json: two on CHAOS, three on hippocampus): a hippocampus
#: volume fits one window, so the teacher uses the second core and the small students barely do. Measured on the
#: shared 2-core development VM (Intel Xeon, Linux, torch 2.13 CPU, otherwise idle): CHAOS on 2026-12-06 at
#: 20:03-20:16 UTC, hippocampus at 21:59-22:11 UTC and 2026-12-07 00:05 UTC (after the z-score's faster outlier
#: band); the same pipeline measured in other rounds moved 5-15 % (docs/benchmarks.md B2).
PRESET_INFO: dict[str, dict[str, Any]] = {
    "teacher": {"description": "teacher U-Net: 5 levels, full resolution, instance norm",
                "params": {"3d": 5_646_419, "2d": 1_942_323},
                "speedup": {"3d": 1.0, "2d": 1.0, "hippocampus": 1.0, "chaos": 1.0},
                "speedup_two_threads": {"hippocampus": 1.0, "chaos": 1.0}},
    "student": {"description": "default student: half-resolution U-Net (strided stem), 5 levels of 8-64 channels "
                               "in 2D, 4 levels of 8-40 in 3D, batch norm folded at inference, bilinear logits; "
                               "with DMD + Heads 99 % of the teacher's Dice on CHAOS (4800 iterations, 5 seeds), "
                               "98.8 % on hippocampus 3D without flips (1600 iterations, 3 seeds)",
                "params": {"3d": 192_323, "2d": 180_283},
                "speedup": {"3d": 26.1, "2d": 11.2, "hippocampus": 15.3, "chaos": 10.5},
                "speedup_two_threads": {"hippocampus": 10.3, "chaos": 9.3}},
    "student-tiny": {"description": "tiny student: half-resolution U-Net of 3 levels of 8-24 channels in 3D, "
                                    "student-fast's network at quarter resolution in 2D (for large slices; small "
                                    "structures suffer), batch norm folded at inference; with DMD + Heads 97.1 % "
                                    "of the teacher's Dice on CHAOS (4800 iterations, 3 seeds), 99.1 % on "
                                    "hippocampus 3D without flips (1600 iterations, 3 seeds)",
                     "params": {"3d": 68_587, "2d": 66_483},
                     "speedup": {"3d": 47.0, "2d": 33.0, "hippocampus": 23.0, "chaos": 30.9},
                     "speedup_two_threads": {"hippocampus": 15.1, "chaos": 18.0}},
    "student-fast": {"description": "fast student: half-resolution U-Net (strided stem), 4 levels, batch norm "
                                    "folded at inference, bilinear logits; with DMD + Heads 98.8 % of the "
                                    "teacher's Dice on hippocampus 3D without flips (1600 iterations, 3 seeds)",
                     "params": {"3d": 192_323, "2d": 66_483},
                     "speedup": {"3d": 30.4, "2d": 12.3, "hippocampus": 16.2, "chaos": 11.2},
                     "speedup_two_threads": {"hippocampus": 10.1, "chaos": 9.9}},
    "student-fast-deep": {"description": "fast deep student (the default student in 3D until 2026-12-06, 17:00 UTC): "
                                         "half-resolution U-Net (strided stem), 5 levels of 8-64 channels, batch "
                                         "norm folded at inference, bilinear logits; with DMD + Heads 98.6 % of the "
                                         "teacher's Dice on hippocampus 3D without flips (1600 iterations, 3 seeds)",
                          "params": {"3d": 522_571, "2d": 180_283},
                          "speedup": {"3d": 15.3, "2d": 11.0, "hippocampus": 9.9, "chaos": 10.5},
                          "speedup_two_threads": {"hippocampus": 6.2, "chaos": 8.8}},
    "student-fast-tiny": {"description": "fast tiny student: half-resolution U-Net (strided stem), 5 levels of "
                                         "4-32 channels, batch norm folded at inference, bilinear logits",
                          "params": {"3d": 172_783, "2d": 59_751},
                          "speedup": {"3d": 24.5, "2d": 17.7, "hippocampus": 14.1, "chaos": 17.0},
                          "speedup_two_threads": {"hippocampus": 9.2, "chaos": 13.7}},
    "student-classic": {"description": "classic student (the default before 2026-12-06): full resolution, 5 levels "
                                       "of 8-64 channels, instance norm",
                        "params": {"3d": 522_571, "2d": 180_283},
                        "speedup": {"3d": 2.5, "2d": 2.5, "hippocampus": 2.3, "chaos": 2.4},
                        "speedup_two_threads": {"hippocampus": 1.8, "chaos": 2.3}},
    "student-tiny-classic": {"description": "classic tiny student (student-tiny before 2026-12-06): full "
                                            "resolution, 5 levels of 4-32 channels, instance norm",
                             "params": {"3d": 172_783, "2d": 59_751},
                             "speedup": {"3d": 4.1, "2d": 4.8, "hippocampus": 4.3, "chaos": 4.4},
                             "speedup_two_threads": {"hippocampus": 2.8, "chaos": 4.3}},
}


def _per_dims(value: Any, spatial_dims: int) -> Any:
    """A preset's value for ``spatial_dims``: itself, or its entry when given per spatial dims (a dict)."""
    return value[spatial_dims] if isinstance(value, dict) else value


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
        channels = _per_dims(PRESETS[preset], spatial_dims)
        kwargs = {k: _per_dims(v, spatial_dims) for k, v in PRESET_OPTIONS.get(preset, {}).items()}
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
    classic ``student`` before 2026-12-06), or exactly what one of ``preset``'s former meanings builds in these
    spatial dims (:data:`FORMER_PRESETS`). Other differences are left to the caller's check."""
    if not saved or not saved.get("channels"):
        return model
    cfg = model.config()
    old = UNet.arch_options(saved)
    channels = [int(c) for c in saved["channels"]]
    if channels == list(model.channels):
        return model if old == UNet.arch_options(cfg) else UNet.from_config({**cfg, "channels": channels, **old})
    for former in FORMER_PRESETS.get(PRESET_ALIASES.get(preset, preset), ()) if preset else ():
        was = build_model(former, model.spatial_dims, model.num_classes, model.in_channels).config()
        if channels == list(was["channels"]) and old == UNet.arch_options(was):
            return UNet.from_config({**cfg, "channels": channels, **old})
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
