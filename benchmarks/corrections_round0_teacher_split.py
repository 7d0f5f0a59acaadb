"""A round-0 student for the hippocampus correction loop distilled *with* labels (issue 17).

``bench corrections`` distils its round-0 student without labels. A user with a labelled set would distil with it
first; this script does that on the committed hippocampus teacher's own 159 training cases (never its 16 validation
cases nor the 24 cases its split left out, which ``bench corrections --unseen`` paints): DMD with head supervision,
1600 iterations, lr 1e-2, batch 2, patch 40x56x40, no flips (docs/ablation_cpu4x's recipe), bfloat16 teacher pass.
The loop then starts from it::

    python benchmarks/corrections_round0_teacher_split.py runs/r0 --seed 0
    napari-dmd bench corrections --dataset hippocampus --round0 runs/r0/last.pt --unseen --control --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from napari_dmd.bench.corrections import DATA_DIRS, HIPPOCAMPUS_TEACHER, unseen_cases
from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.data.cases import load_msd_folder
from napari_dmd.distill.engine import Distiller
from napari_dmd.teachers import load_teacher

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / DATA_DIRS["hippocampus"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="run folder (its last.pt is the round-0 student)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iterations", type=int, default=1600)
    p.add_argument("--student", default="student-tiny")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    cases, _ = load_msd_folder(DATA, require_labels=True)
    ck = load_checkpoint(str(HIPPOCAMPUS_TEACHER))
    left_out, val = unseen_cases(cases, ck, str(HIPPOCAMPUS_TEACHER)), set(ck["val_cases"])
    train = [c for c in cases if c.name not in val and c.name not in left_out]
    print(f"{len(train)} training cases ({len(left_out)} left out, {len(val)} validation)", flush=True)
    teacher = load_teacher(HIPPOCAMPUS_TEACHER)  # as `bench corrections` loads it
    torch.set_num_threads(a.threads)
    cfg = TrainConfig(method="dmd", model=a.student, iterations=a.iterations, batch_size=2, patch_size=[40, 56, 40],
                      spatial_dims=3, lr=1e-2, seed=a.seed, val_interval=10**9, checkpoint_interval=200,
                      log_interval=100, num_threads=a.threads, num_workers=0, cpu_bf16=True, amp=True, flips=False,
                      head_supervision=1.0, lambda_feat=2 / 3)
    t0 = time.perf_counter()
    d = Distiller(cfg, train, val_cases=[], teacher=teacher, output_dir=Path(a.out))
    d.run_to_end()
    print(f"trained in {time.perf_counter() - t0:.0f} s: {d.last_path}", flush=True)


if __name__ == "__main__":
    main()
