"""Own NumPy data pipeline vs the equivalent MONAI transforms, measured in one process.

    OMP_NUM_THREADS=1 python benchmarks/bench_data_pipeline.py            # full run (a few minutes)
    OMP_NUM_THREADS=1 python benchmarks/bench_data_pipeline.py --quick    # seconds-long smoke version

Four parts, each timed interleaved (own, MONAI, own, ...) and reported as the median of the repeats, with the
ratio MONAI/own (> 1: MONAI is slower):

(a) ``augment`` vs a MONAI chain (RandFlipd per axis, RandRotate90d, RandScaleIntensityd, RandShiftIntensityd,
    RandGaussianNoised) drawing the same distributions, its random state seeded per patch from the sampler's
    Generator (so a resumed run stays exact); with MONAI's metadata tracking on (its default) and off;
(b) the sampler's crop/pad (:func:`napari_dmd.data.sampling.crop_pad`) vs ``SpatialCrop`` + ``SpatialPad``
    at the same, randomly chosen regions;
(c) ``normalize`` vs ``NormalizeIntensity`` (z-score; our outlier clip kept in front of it) and
    ``ClipIntensityPercentiles`` + ``NormalizeIntensity`` (CT);
(d) end to end: steps/s of a ``Distiller`` (student preset, method none, 1 thread, phantom cases) with the own
    pipeline and with MONAI's (augment + crop/pad swapped in), alternated in blocks of steps.

Patches: 2D 128x128 and 3D 40x56x40, float32. The MONAI functions here are the candidates; the package keeps
whichever part measures faster (see docs/architecture.md, "Own code vs the field's libraries (measured)").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

PATCHES = {2: (128, 128), 3: (40, 56, 40)}
SOURCES = {2: (160, 112), 3: (32, 72, 64)}  # crop along some axes, pad along others


# ------------------------------------------------------------------ MONAI candidates
_CHAINS: dict[tuple, Any] = {}


def _monai_chain(ndim: int, flip: bool, rot90: bool, intensity: bool, labelled: bool) -> tuple[Any, Any]:
    """(Compose, shared RandomState) for one kind of patch; cached, since building a chain costs more than using it."""
    key = (ndim, flip, rot90, intensity, labelled)
    if key in _CHAINS:
        return _CHAINS[key]
    from monai.transforms import (
        Compose,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ("image", "label") if labelled else ("image",)
    ts: list[Any] = []
    if flip:
        ts += [RandFlipd(keys, prob=0.5, spatial_axis=ax) for ax in range(ndim)]
    if rot90:  # k uniform in 0..3 as ours: k = 0 with p 0.25, else 1..3 uniform
        ts.append(RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(ndim - 2, ndim - 1)))
    if intensity:
        ts += [RandScaleIntensityd("image", factors=0.1, prob=1.0), RandShiftIntensityd("image", offsets=0.1, prob=1.0),
               RandGaussianNoised("image", prob=0.15, mean=0.0, std=0.05, sample_std=True)]
    chain = Compose(ts)
    state = np.random.RandomState(0)
    for t in ts:  # one shared stream, reseeded per patch from the sampler's Generator
        t.set_random_state(state=state)
    _CHAINS[key] = (chain, state)
    return chain, state


def monai_augment(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator, *, flip: bool = True,
                  rot90: bool = True, intensity: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """MONAI version of :func:`napari_dmd.data.transforms.augment` (same signature, same distributions)."""
    rot90 = rot90 and image.ndim >= 2 and image.shape[-1] == image.shape[-2]
    chain, state = _monai_chain(image.ndim, flip, rot90, intensity, label is not None)
    state.seed(int(rng.integers(2**31)))  # one draw from our Generator: exact resume is kept
    data = {"image": image[None]}
    if label is not None:
        data["label"] = label[None]
    out = chain(data)
    img = np.ascontiguousarray(np.asarray(out["image"])[0], dtype=np.float32)
    lab = np.ascontiguousarray(np.asarray(out["label"])[0]) if label is not None else None
    return img, lab


def monai_crop_pad(image: np.ndarray, label: np.ndarray | None, src: tuple[slice, ...], dst: tuple[slice, ...],
                   patch_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """MONAI version of :func:`napari_dmd.data.sampling.crop_pad`: SpatialCrop at ``src``, symmetric SpatialPad."""
    from monai.transforms import SpatialCrop, SpatialPad

    crop, pad = SpatialCrop(roi_slices=src), SpatialPad(patch_size, method="symmetric")
    img = np.asarray(pad(crop(image[None])))[0].astype(np.float32, copy=False)
    lab = np.asarray(pad(crop(label[None])))[0].astype(np.int64, copy=False) if label is not None else None
    return img, lab


def monai_normalize(image: np.ndarray, scheme: str = "zscore", *, clip: tuple[float, float] = (0.5, 99.5)
                    ) -> np.ndarray:
    """MONAI version of ``normalize`` for ``zscore`` (after our outlier clip) and ``ct``."""
    from monai.transforms import ClipIntensityPercentiles, NormalizeIntensity

    from napari_dmd.data.transforms import _robust_values

    img = np.array(image, dtype=np.float32, copy=True)
    if scheme == "zscore":
        _robust_values(img)  # clips outliers in place (the statistics then include the clipped voxels)
        return np.asarray(NormalizeIntensity()(img))
    if scheme == "ct":
        img = np.asarray(ClipIntensityPercentiles(clip[0], clip[1])(img[None]))[0]
        return np.asarray(NormalizeIntensity()(img))
    raise ValueError(f"no MONAI version of scheme {scheme!r}")


# ------------------------------------------------------------------ timing
def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function: one warm-up each, then ``repeats`` interleaved rounds."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _no_meta(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with MONAI's metadata tracking off (a global switch, restored afterwards)."""
    from monai.data import get_track_meta, set_track_meta

    def run() -> Any:
        before = get_track_meta()
        set_track_meta(False)
        try:
            return fn()
        finally:
            set_track_meta(before)
    return run


def _per_patch(fn: Callable[[], Any], n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            fn()
    return run


def _row(name: str, med: dict[str, float], n: int, unit: str = "us") -> list[str]:
    scale = 1e6 / n if unit == "us" else 1e3 / n
    own = med["own"]
    cells = [name, f"{own * scale:.1f}"]
    for k in med:
        if k != "own":
            cells += [f"{med[k] * scale:.1f}", f"{med[k] / own:.2f}"]
    return cells


def bench_augment(repeats: int, n: int) -> list[list[str]]:
    from napari_dmd.data.transforms import augment

    rows = []
    for ndim, shape in PATCHES.items():
        gen = np.random.default_rng(0)
        image = gen.standard_normal(shape).astype(np.float32)
        label = gen.integers(0, 4, shape).astype(np.int64)
        for labelled in (True, False):
            lab = label if labelled else None
            rng_a, rng_b, rng_c = (np.random.default_rng(1) for _ in range(3))
            med = _interleaved({
                "own": _per_patch(lambda lab=lab, r=rng_a, im=image: augment(im, lab, r), n),
                "monai": _per_patch(lambda lab=lab, r=rng_b, im=image: monai_augment(im, lab, r), n),
                "monai_nometa": _no_meta(_per_patch(lambda lab=lab, r=rng_c, im=image: monai_augment(im, lab, r),
                                                            n)),
            }, repeats)
            rows.append(_row(f"augment {ndim}D {'x'.join(map(str, shape))}{'' if labelled else ' (no label)'}",
                             med, n))
    return rows


def _regions(shape: tuple[int, ...], patch: tuple[int, ...], gen: np.random.Generator
             ) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    src, dst = [], []
    for size, p in zip(shape, patch):
        if size >= p:
            s = int(gen.integers(size - p + 1))
            src.append(slice(s, s + p))
            dst.append(slice(0, p))
        else:
            before = (p - size) // 2
            src.append(slice(0, size))
            dst.append(slice(before, before + size))
    return tuple(src), tuple(dst)


def bench_crop(repeats: int, n: int) -> list[list[str]]:
    from napari_dmd.data.sampling import crop_pad

    rows = []
    for ndim, patch in PATCHES.items():
        gen = np.random.default_rng(0)
        shape = SOURCES[ndim]
        image = gen.standard_normal(shape).astype(np.float32)
        label = gen.integers(0, 4, shape).astype(np.uint8)
        regions = [_regions(shape, patch, gen) for _ in range(n)]
        for a, b in regions[:5]:  # the candidates agree before they are timed
            mine, theirs = crop_pad(image, label, a, b, patch), monai_crop_pad(image, label, a, b, patch)
            assert np.array_equal(mine[0], theirs[0]) and np.array_equal(mine[1], theirs[1])

        def run(fn: Callable, regions: list = regions, image: np.ndarray = image, label: np.ndarray = label,
                patch: tuple = patch) -> Callable[[], None]:
            return lambda: [fn(image, label, a, b, patch) for a, b in regions]
        med = _interleaved({"own": run(crop_pad), "monai": run(monai_crop_pad),
                            "monai_nometa": _no_meta(run(monai_crop_pad))}, repeats)
        rows.append(_row(f"crop/pad {ndim}D {'x'.join(map(str, shape))} -> {'x'.join(map(str, patch))}", med, n))
    return rows


def bench_normalize(repeats: int) -> list[list[str]]:
    from napari_dmd.data.transforms import normalize

    rows = []
    shapes = [PATCHES[2], PATCHES[3], (64, 192, 192)]
    for shape in shapes:
        gen = np.random.default_rng(0)
        image = (gen.standard_normal(shape) * 100 + 300).astype(np.float32)
        for scheme in ("zscore", "ct"):
            n = 20 if np.prod(shape) < 1e6 else 1
            diff = float(np.abs(normalize(image, scheme) - monai_normalize(image, scheme)).max())
            med = _interleaved({"own": _per_patch(lambda s=scheme, im=image: normalize(im, s), n),
                                "monai": _per_patch(lambda s=scheme, im=image: monai_normalize(im, s), n),
                                "monai_nometa": _no_meta(_per_patch(lambda s=scheme, im=image: monai_normalize(im, s),
                                                                    n))}, repeats)
            rows.append(_row(f"normalize {scheme} {'x'.join(map(str, shape))} (max |diff| {diff:.1e})", med, n,
                             unit="ms"))
    return rows


def bench_normalize_cases(folders: list[str], repeats: int, limit: int = 5) -> list[list[str]]:
    """``normalize`` (zscore) vs MONAI on the first ``limit`` images of each folder, summed over the cases."""
    from pathlib import Path

    from napari_dmd.data.cases import load_case
    from napari_dmd.data.transforms import normalize

    rows = []
    for folder in folders:
        root = Path(folder)
        sub = next((root / d for d in ("imagesTr", "images") if (root / d).is_dir()), root)
        files = sorted(f for f in sub.iterdir() if f.suffix in (".gz", ".nii", ".png", ".tif", ".npy"))[:limit]
        images = [load_case(f).image for f in files]
        voxels = sum(im.size for im in images) / max(len(images), 1)
        med = _interleaved({"own": lambda ims=images: [normalize(im, "zscore") for im in ims],
                            "monai": lambda ims=images: [monai_normalize(im, "zscore") for im in ims]}, repeats)
        rows.append(_row(f"normalize zscore {root.name} ({len(images)} cases, {voxels / 1e6:.2f} Mvox each)",
                         med, len(images), unit="ms"))
    return rows


def bench_end_to_end(dims: int, steps: int, blocks: int) -> dict[str, float]:
    """Steps/s of the engine with each pipeline: ``blocks`` alternating blocks of ``steps // blocks`` steps."""
    import torch

    import napari_dmd.data.sampling as sampling
    from napari_dmd.config import TrainConfig
    from napari_dmd.demo import phantom_cases
    from napari_dmd.distill.engine import Distiller

    torch.set_num_threads(1)
    cfg = TrainConfig(method="none", model="student", iterations=100_000, batch_size=2,
                      patch_size=list(PATCHES[dims]), val_interval=100_000, device="cpu", num_threads=1)
    pipelines = {"own": (sampling.augment_patch, sampling.crop_pad), "monai": (monai_augment, monai_crop_pad)}
    per_block = max(1, steps // blocks)
    rates: dict[str, list[float]] = {k: [] for k in pipelines}
    sample_s: dict[str, list[float]] = {k: [] for k in pipelines}
    with tempfile.TemporaryDirectory(prefix="napari-dmd-bench-") as tmp:
        d = Distiller(cfg, phantom_cases(4, dims), val_cases=[], teacher=None, output_dir=tmp)
        try:
            for i in range(blocks * 2 + 2):  # first two blocks: warm-up (one per pipeline)
                name = ("own", "monai")[i % 2]
                sampling.augment_patch, sampling.crop_pad = pipelines[name]
                t0 = time.perf_counter()
                for _ in range(per_block):
                    d._step()
                dt = time.perf_counter() - t0
                t1 = time.perf_counter()
                d.sampler.sample()
                ts = time.perf_counter() - t1
                if i >= 2:
                    rates[name].append(per_block / dt)
                    sample_s[name].append(ts)
        finally:
            sampling.augment_patch, sampling.crop_pad = pipelines["own"]
    out = {f"{k}_steps_per_s": statistics.median(v) for k, v in rates.items()}
    out.update({f"{k}_sample_ms": 1e3 * statistics.median(v) for k, v in sample_s.items()})
    return out


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    for r in [headers, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="seconds-long smoke version")
    p.add_argument("--repeats", type=int, default=None, help="interleaved rounds per micro-benchmark (default 15)")
    p.add_argument("--steps", type=int, default=None, help="training steps per pipeline (default 60)")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], help="end-to-end dims (default 2 3)")
    p.add_argument("--data", nargs="*", default=[], help="dataset folders to time normalize on (first 5 images)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    repeats = args.repeats or (3 if args.quick else 15)
    n = 5 if args.quick else 50
    steps = args.steps or (4 if args.quick else 60)
    blocks = 2 if args.quick else 6
    import monai

    print(f"MONAI {monai.__version__}, torch {torch.__version__}, numpy {np.__version__}; 1 thread; "
          f"median of {repeats} interleaved rounds")
    heads = ["part", "own", "monai", "ratio", "monai no-meta", "ratio"]
    _print_table([heads[0], "own us/patch", *heads[2:]], bench_augment(repeats, n) + bench_crop(repeats, n))
    print()
    _print_table([heads[0], "own ms/call", *heads[2:]], bench_normalize(max(3, repeats // 3)))
    print()
    if args.data:
        _print_table(heads[:4], bench_normalize_cases(args.data, max(3, repeats // 3)))
        print()
    for dims in args.dims:
        r = bench_end_to_end(dims, steps, blocks)
        print(f"end to end {dims}D patch {'x'.join(map(str, PATCHES[dims]))}, batch 2, student, {steps} steps each: "
              f"own {r['own_steps_per_s']:.2f} steps/s, MONAI {r['monai_steps_per_s']:.2f} steps/s, "
              f"ratio MONAI/own {r['monai_steps_per_s'] / r['own_steps_per_s']:.3f}; one batch sampled: own "
              f"{r['own_sample_ms']:.2f} ms, MONAI {r['monai_sample_ms']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
