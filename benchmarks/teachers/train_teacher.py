"""Train one of the ablation's teachers to convergence, on the ablation's own data and split, resumably.

    python benchmarks/teachers/train_teacher.py chaos --out RUN [--iterations N]
    python benchmarks/teachers/pack_teacher.py RUN/best.pt benchmarks/teachers/chaos/teacher.pt

The data (down-sampling, train/validation split) come from ``ablation_specs.dataset`` so that the committed
teacher and every ablation job see the same cases; ``best.pt`` is chosen on that validation split. Running the
same command again resumes from ``RUN/last.pt``. The recipe per dataset is in ``RECIPES`` (why: docs/results.md).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablation_specs import SPECS, dataset  # noqa: E402

# per dataset: model (preset or channels), patch, batch, iterations, lr, extra TrainConfig settings
RECIPES: dict[str, dict] = {
    # augmentation cost CHAOS 0.2-0.25 Dice at 1200 iterations (ablation_specs); 8 training patients
    "chaos": {"model": "teacher", "patch": [128, 128], "batch": 8, "iterations": 6000, "lr": 1e-2,
              "extra": {"augment": False}},
    # lr 1e-2, 4000 iterations: 0.958 at iteration 1000, 0.951 at the end (overfitting); at 4x down-sampling
    # (patch 128x192 x 4, lr 3e-3) 0.954 at iteration 500, then 0.93-0.95 (stopped at 1250); 2000 iterations without
    # zoom and rotation 0.9655 (committed until 2026-12-05), 0.9636 on a rerun; with them, 6000: 0.9695 (committed
    # until 2026-12-06), 12000: 0.9734 (best.pt at iteration 6250; committed; hc18/README.md)
    "hc18": {"model": "teacher", "patch": [64, 96], "batch": 8, "iterations": 12000, "lr": 3e-3,
             "extra": {"spatial_augment": True}},
    # a 4-level teacher: the phantom volumes are 24x64x64, and the committed teachers must stay under 30 MB
    # whole 24x64x64 volumes as the patch (since 2026-12-06, night): its instance norm then sees at training what it
    # sees at inference, whatever window a student trains on (on 16x48x48 patches it scored 0.929 with those windows,
    # 0.644 with 32x64x64)
    "phantom3d": {"model": "16,32,64,128", "patch": [24, 64, 64], "batch": 2, "iterations": 2500, "lr": 1e-2,
                  "extra": {}},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=sorted(RECIPES))
    p.add_argument("--out", type=Path, required=True, help="run folder (resumed when it holds last.pt)")
    p.add_argument("--iterations", type=int, help="override the recipe's iteration budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spatial-augment", action="store_true", help="random zoom and rotation of each patch")
    p.add_argument("--snapshots", action="store_true",
                   help="keep a copy of every checkpoint as RUN/snapshots/itN.pt (for average_snapshots.py)")
    a = p.parse_args(argv)

    import torch

    from napari_dmd.config import TrainConfig
    from napari_dmd.distill.engine import Distiller

    torch.set_num_threads(a.threads)
    r = RECIPES[a.dataset]
    spec = SPECS[a.dataset]
    train, val, _ = dataset(a.dataset)
    extra = {**r["extra"], "spatial_augment": True} if a.spatial_augment else r["extra"]
    cfg = TrainConfig(method="ds", model=r["model"], iterations=a.iterations or r["iterations"],
                      batch_size=r["batch"], patch_size=list(r["patch"]), spatial_dims=spec.dims, lr=a.lr or r["lr"],
                      seed=a.seed, val_interval=250, checkpoint_interval=250, log_interval=50, num_threads=a.threads,
                      **extra)
    last = a.out / "last.pt"
    d = Distiller(cfg, train, val_cases=val, output_dir=a.out, resume=last if last.exists() else None,
                  role="teacher")
    t0 = time.perf_counter()
    for ev in d.run():
        if ev.kind == "validation":
            dice = [round(x, 4) for x in ev.dice or []]
            print(f"[{time.perf_counter() - t0:6.0f} s] it {ev.iteration}: mean Dice {ev.mean_dice:.4f} {dice}",
                  flush=True)
        elif ev.kind == "checkpoint" and a.snapshots and ev.path and Path(ev.path).name == "last.pt":
            (a.out / "snapshots").mkdir(exist_ok=True)
            shutil.copyfile(ev.path, a.out / "snapshots" / f"it{ev.iteration}.pt")
        elif ev.kind == "step" and ev.iteration % 100 == 0:
            print(f"[{time.perf_counter() - t0:6.0f} s] it {ev.iteration}/{ev.total} "
                  f"{ev.samples_per_s:.1f} samples/s", flush=True)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
