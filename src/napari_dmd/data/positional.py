"""Class pairs told apart by where they lie rather than by how they look: flipping patches swaps them.

Left and right kidney, or the hippocampus's head (anterior) and tail (posterior), look alike; a network tells
them apart by position. Random flips during training show each in the other's place, and short distillation
runs then mix them up (hippocampus 3D students: 4-8 Dice points lost with flips, docs/results.md). This
module finds such pairs in the labelled cases, so a run that flips can say so before it starts.

A pair (a, b) is *positional* when, in at least :data:`AGREEMENT` of the labelled cases holding both (and at
least :data:`MIN_CASES` of them), a's centroid lies on the same side of b's along one axis, by a median of at
least :data:`MIN_SEPARATION` voxels, their sizes differ by at most :data:`MAX_SIZE_RATIO` (a class inside
another, a lesion in its organ, is no mirror image of it) and their mean image intensities differ by less than
:data:`MAX_INTENSITY_GAP` of their standard deviations. On the project's data it flags the hippocampus's head and
tail (gap 0.11-0.17) and CHAOS's kidneys (0.22), and not the spleen beside a kidney (0.42-0.45), the liver (2.3-3.0)
or any pair of the synthetic phantom (the body and
the lesion inside it are alike in intensity, 0.24, but 100 times apart in size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .case import Case

AGREEMENT = 0.9
MIN_CASES = 3
MIN_SEPARATION = 3.0
MAX_INTENSITY_GAP = 0.25
MAX_SIZE_RATIO = 4.0
MAX_CASES = 12  # labelled cases looked at (the first ones)
MAX_VOXELS = 8_000_000  # larger label maps are looked at every other voxel along each axis


@dataclass
class PositionalPair:
    """Two classes in a fixed order along ``axis`` (array axis) in ``agree`` of ``cases`` cases."""

    a: int
    b: int
    axis: int
    agree: int
    cases: int
    separation: float  # median centroid distance along the axis, voxels of the label map
    intensity_gap: float  # |mean a - mean b| / mean of their standard deviations (median over the cases)


def _class_stats(case: Case, num_classes: int) -> dict[int, tuple[np.ndarray, float, float, int]]:
    """Per foreground class present: (centroid in voxels, mean intensity, intensity std, voxel count)."""
    lab, img = np.asarray(case.label), np.asarray(case.image)
    step = 2 if lab.size > MAX_VOXELS else 1
    if step > 1:
        sl = tuple(slice(None, None, step) for _ in range(lab.ndim))
        lab, img = lab[sl], img[sl]
    out = {}
    for k in range(1, num_classes):
        idx = np.nonzero(lab == k)
        if len(idx[0]) < 10:
            continue
        values = img[idx].astype(np.float64)
        out[k] = (np.array([i.mean() * step for i in idx]), float(values.mean()), float(values.std()), len(idx[0]))
    return out


def positional_pairs(cases: Sequence[Case], num_classes: int) -> list[PositionalPair]:
    """The positional class pairs of ``cases`` (their labelled ones; module docstring), the clearest first."""
    stats = [_class_stats(c, num_classes) for c in [c for c in cases if c.has_label][:MAX_CASES]]
    pairs = []
    for a in range(1, num_classes):
        for b in range(a + 1, num_classes):
            both = [s for s in stats if a in s and b in s]
            if len(both) < MIN_CASES:
                continue
            gap = float(np.median([abs(s[a][1] - s[b][1]) / max((s[a][2] + s[b][2]) / 2, 1e-12) for s in both]))
            ratio = float(np.median([max(s[a][3], s[b][3]) / min(s[a][3], s[b][3]) for s in both]))
            if gap >= MAX_INTENSITY_GAP or ratio > MAX_SIZE_RATIO:
                continue
            d = np.array([s[a][0] - s[b][0] for s in both])  # (cases, axes)
            best = None
            for axis in range(d.shape[1]):
                agree = max(int((d[:, axis] > 0).sum()), int((d[:, axis] < 0).sum()))
                sep = float(np.median(np.abs(d[:, axis])))
                if agree >= AGREEMENT * len(both) and sep >= MIN_SEPARATION and (best is None or sep > best.separation):
                    best = PositionalPair(a, b, axis, agree, len(both), sep, gap)
            if best is not None:
                pairs.append(best)
    return sorted(pairs, key=lambda p: -p.separation)


def flip_warning(cases: Sequence[Case], num_classes: int, class_names: Sequence[str] | None = None) -> str | None:
    """A warning for a run that flips its patches when ``cases`` hold positional class pairs, else None."""
    pairs = positional_pairs(cases, num_classes)
    if not pairs:
        return None
    from ..distill.collapse import class_name

    axes = "zyx"[-cases[0].ndim:]  # array order of a 2D or 3D case
    said = [f"{class_name(p.a - 1, class_names)!r} and {class_name(p.b - 1, class_names)!r} (same order along the "
            f"{axes[p.axis]} axis in {p.agree} of {p.cases} labelled cases, {p.separation:.0f} voxels apart, alike "
            "in intensity)" for p in pairs[:3]]
    return ("flips are on, but " + "; ".join(said) + " differ by position rather than look: flipped patches show "
            "each in the other's place. Consider turning flips off (--no-flips; in the Distill dock untick 'flip "
            "and rotate patches'): on hippocampus 3D flips cost the students 4-8 Dice points.")
