"""B2: a strided student's labels from its logits before upsampling (``UNet.labels``) vs the argmax of the upsampled
logits, per validation volume, side by side in one process.

Since 2026-12-06 (evening) a U-Net with a strided stem and bilinear logits labels each window from its
low-resolution logits (:func:`napari_dmd.models.linear_upsample.upsampled_labels`): a voxel whose source voxels
share a class takes it, and only voxels near a class boundary are blended. How many are blended depends on the
prediction, so an untrained network (near-constant or noisy logits) would not say what a user sees: each student is
first trained briefly (``--train-iterations``, the student alone on the dataset's training cases, cross-entropy +
Dice, one thread), then both arms segment the validation volumes interleaved in a new random order each time
(``segmenter_arms.interleaved_seconds``; labels compared) beside the teacher. The "argmax" arm is the same network
whose ``labels`` takes the argmax of the upsampled logits, as every prediction did before (``window_labels``).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_labels_from_low_res.py --threads 1 --json out.json
    python benchmarks/bench_labels_from_low_res.py --ops      # the labelling alone, on logits made of the labels

``--pairs`` times each student with the teacher alone, one after the other (as a user holds one teacher and one
student), rather than every preset in one round. ``--beside-workers`` lets calls split among window workers take
labels from low resolution too (off in the product: ``inference.LOW_RES_LABELS_BESIDE_WORKERS``). In 3D both arms
take the argmax of the upsampled logits (the low-resolution path is 2D only), so there they measure the same
pipeline twice: the noise between arms.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ablation_specs import SPECS, dataset  # noqa: E402
from segmenter_arms import interleaved_seconds  # noqa: E402

from napari_dmd import inference  # noqa: E402
from napari_dmd.inference import window_labels  # noqa: E402
from napari_dmd.models import linear_upsample  # noqa: E402
from napari_dmd.models.presets import PRESETS, build_model  # noqa: E402
from napari_dmd.models.unet import UNet  # noqa: E402
from napari_dmd.segment import Segmenter, torch_threads  # noqa: E402

STUDENTS = tuple(n for n in PRESETS if n != "teacher")


class ArgmaxOfLogits(UNet):
    """The U-Net labelling windows as before 2026-12-06 evening: the argmax of its upsampled logits."""

    def labels(self, x: torch.Tensor, region: Any = None, dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        return window_labels(self(x, region=region)).to(dtype)


def trained(name: str, ds: str, iterations: int, seed: int = 0, cache: Path | None = None) -> UNet:
    """Preset ``name`` trained ``iterations`` steps alone (no teacher) on ``ds``'s training cases; untrained at 0.
    With ``cache``, the weights are kept there and read back by later runs."""
    from napari_dmd.config import TrainConfig
    from napari_dmd.distill.engine import Distiller

    spec = SPECS[ds]
    train, _, classes = dataset(ds)
    torch.manual_seed(seed)
    net = build_model(name, spec.dims, classes)
    if iterations == 0:
        return net.eval()
    kept = cache / f"{ds}-{name}-{iterations}-s{seed}.pt" if cache else None
    if kept is not None and kept.exists():
        net.load_state_dict(torch.load(kept, map_location="cpu", weights_only=True))
        return net.eval()
    cfg = TrainConfig(method="none", model=name, iterations=iterations, batch_size=spec.batch,
                      patch_size=list(spec.patch), spatial_dims=spec.dims, lr=spec.lr, seed=seed,
                      val_interval=10**9, checkpoint_interval=10**9, log_interval=10**9, num_threads=1,
                      num_workers=0, **spec.extra)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        d = Distiller(cfg, train, val_cases=[], output_dir=Path(tmp) / "run")
        d.run_to_end()
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        torch.save(d.model.state_dict(), kept)
    return d.model.eval()


def blended_fraction(seg: Segmenter, images: list[np.ndarray]) -> float:
    """Share of the validation voxels that ``upsampled_labels`` blends (their sources disagree)."""
    counted = blended = 0
    original = linear_upsample._blended

    def counting(*args: Any) -> tuple:
        nonlocal blended
        where, values = original(*args)
        blended += where.size
        return where, values

    linear_upsample._blended = counting
    try:
        with torch.inference_mode():
            for image in images:
                seg(image)
                counted += image.size
    finally:
        linear_upsample._blended = original
    return blended / max(1, counted)


def measure(ds: str, iterations: int, repeats: int, cache: Path | None = None, pairs: bool = False) -> dict[str, Any]:
    """Rows per student preset (module docstring). ``pairs``: each student's two arms are timed with the teacher
    alone, one student after the other (as a user holds one teacher and one student), not all presets at once."""
    spec = SPECS[ds]
    _, val, classes = dataset(ds)
    images = [c.image for c in val]
    torch.manual_seed(0)
    teacher = Segmenter(build_model("teacher", spec.dims, classes).eval(), classes, spec.dims, list(spec.patch),
                        name="teacher")
    rows: dict[str, Any] = {}
    arms: dict[str, dict[str, Segmenter]] = {}
    for name in STUDENTS:
        t0 = time.perf_counter()
        with torch_threads(1):
            net = trained(name, ds, iterations, cache=cache)
        old = copy.deepcopy(net)
        old.__class__ = ArgmaxOfLogits
        arms[name] = {"fused": Segmenter(net, classes, spec.dims, list(spec.patch), name=name),
                      "argmax": Segmenter(old, classes, spec.dims, list(spec.patch), name=name)}
        rows[name] = {"train_s": time.perf_counter() - t0, "blended_fraction": blended_fraction(arms[name]["fused"],
                                                                                                images)}
    groups = [[n] for n in STUDENTS] if pairs else [list(STUDENTS)]
    teacher_ms = []
    for group in groups:
        segs: dict[Any, Segmenter] = {("teacher", "fused"): teacher}
        segs.update({(n, k): arms[n][k] for n in group for k in ("fused", "argmax")})
        agree: dict[str, list[float]] = {n: [] for n in group}

        def check(out: dict, group: list[str] = group, agree: dict = agree) -> None:
            for n in group:
                agree[n].append(float(np.mean(out[n, "fused"] == out[n, "argmax"])))

        times = interleaved_seconds(segs, images, repeats, check=check, shuffle=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        t = med["teacher", "fused"]
        teacher_ms.append(1000 * t)
        for n in group:
            a, f = med[n, "argmax"], med[n, "fused"]
            rows[n].update(ms_argmax=1000 * a, ms_fused=1000 * f, gain=a / f, speedup_argmax=t / a,
                           speedup_fused=t / f, labels_equal=min(agree[n]), teacher_ms=1000 * t)
    return {"teacher_ms": statistics.median(teacher_ms), "train_iterations": iterations, "pairs": pairs,
            "presets": rows}


def _label_logits(label: np.ndarray, classes: int, factor: int, dims: int) -> torch.Tensor:
    """Logits at 1/``factor`` resolution made of a label map (slices (N, y, x) for ``dims`` 2, one volume for 3): the
    class fractions of each block x 4, plus noise of 0.1 (about a trained network's boundaries)."""
    lab = torch.from_numpy(label.astype(np.int64))
    lab = lab if dims == 2 else lab[None]
    pad: list[int] = []
    for n in reversed(lab.shape[1:]):
        pad += [0, (-n) % factor]
    onehot = torch.nn.functional.one_hot(torch.nn.functional.pad(lab, pad), classes).movedim(-1, 1).float()
    pool = torch.nn.functional.avg_pool2d if dims == 2 else torch.nn.functional.avg_pool3d
    low = pool(onehot, factor) * 4
    return low + 0.1 * torch.randn(low.shape, generator=torch.Generator().manual_seed(0))


def ops(rounds: int = 30) -> None:
    """Print the labelling alone, both ways, on logits made of validation labels: CHAOS slices at 1/4 and 1/2
    resolution (the 2D students), a hippocampus volume at 1/2 (3D), one thread."""
    from napari_dmd.models.linear_upsample import linear_upsample as upsample
    from napari_dmd.models.linear_upsample import upsampled_labels

    torch.set_num_threads(1)

    def ms(fn) -> float:
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1000 * statistics.median(times[3:])

    print("| logits | output voxels | argmax of upsampled, ms | from low resolution, ms | gain |")
    print("|---|---:|---:|---:|---:|")
    _, val, classes = dataset("chaos")
    for f in (4, 2):
        x = _label_logits(val[1].label, classes, f, 2)
        for b in (4, 16, 46):
            xb = x[:b]
            old = ms(lambda xb=xb, f=f: window_labels(upsample(xb, f)))
            new = ms(lambda xb=xb, f=f: upsampled_labels(xb, f))
            print(f"| CHAOS, {b} slices at 1/{f} | {b * 128 * 128:,} | {old:.2f} | {new:.2f} | {old / new:.2f}x |")
    _, val, classes = dataset("hippocampus3d")
    for case in val[:2]:
        x = _label_logits(case.label, classes, 2, 3)
        region = [(0, n) for n in case.label.shape]
        old = ms(lambda x=x, region=region: window_labels(upsample(x, 2, region)))
        new = ms(lambda x=x, region=region: upsampled_labels(x, 2, region))
        print(f"| hippocampus 3D, {'x'.join(map(str, case.label.shape))} at 1/2 | {case.label.size:,} | {old:.2f} | "
              f"{new:.2f} | {old / new:.2f}x |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["chaos", "hippocampus3d"], choices=list(SPECS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train-iterations", type=int, default=200)
    p.add_argument("--json", default=None)
    p.add_argument("--cache", type=Path, default=None, help="keep the trained students here for later runs")
    p.add_argument("--pairs", action="store_true", help="time each student with the teacher alone")
    p.add_argument("--beside-workers", action="store_true", help="low-resolution labels in window workers too")
    p.add_argument("--ops", action="store_true", help="time the labelling alone (1 thread) and exit")
    a = p.parse_args()
    if a.ops:
        ops()
        return
    inference.LOW_RES_LABELS_BESIDE_WORKERS = a.beside_workers
    torch.set_num_threads(a.threads)
    res = {"threads": a.threads, "repeats": a.repeats, "torch": torch.__version__, "datasets": {},
           "beside_workers": a.beside_workers}
    for ds in a.datasets:
        res["datasets"][ds] = r = measure(ds, a.train_iterations, a.repeats, a.cache, a.pairs)
        print(f"\n{ds}: {a.threads} thread(s), students trained {a.train_iterations} iterations; median ms per "
              f"validation volume (teacher {r['teacher_ms']:.1f})")
        print("| preset | argmax of upsampled logits | labels from low resolution | gain | speed-up vs teacher "
              "(before -> now) | voxels blended | labels equal |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for n, row in r["presets"].items():
            print(f"| {n} | {row['ms_argmax']:.1f} | {row['ms_fused']:.1f} | {row['gain']:.2f}x | "
                  f"{row['speedup_argmax']:.2f}x -> {row['speedup_fused']:.2f}x | "
                  f"{100 * row['blended_fraction']:.1f} % | {100 * row['labels_equal']:.3f} % |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
