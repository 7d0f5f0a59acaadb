"""Why the default student is weak label-free on hippocampus 3D in ``bench corrections`` (issue 17): the labels or
the pool?

The bench's round 0 distils the student without labels from the committed hippocampus teacher on a pool of 24
volumes the teacher never saw (DMD, 600 steps, batch 2, patch 40x56x40, seed 0, no augmentation): 79.0 mean Dice on
the 16 validation volumes, while ``student-classic`` reaches 87.6 the same way. This script trains the same round 0
with one thing changed and evaluates it the same way::

    python benchmarks/corrections_round0_pool.py labelled --json docs/benchmarks/corrections-round0-labelled.json
    python benchmarks/corrections_round0_pool.py augmented --json docs/benchmarks/corrections-round0-augmented.json

``labelled``: the pool's ground truth as labels (no augmentation); ``augmented``: without labels, with intensity
augmentation (no flips: they swap the hippocampus's head and tail). One training thread each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import napari_dmd.bench.corrections as corrections
from napari_dmd.config import TrainConfig
from napari_dmd.segment import Segmenter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arm", choices=("labelled", "augmented", "label-free"))
    p.add_argument("--student", default="student")
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    train, val, teacher = corrections._real("hippocampus", None, None, 40, 1, True)
    base = corrections._settings(3, False, list(teacher.patch_size))
    base.update(seed=0, device="cpu", num_threads=1, augment=a.arm == "augmented", flips=False)
    cases = train if a.arm == "labelled" else [dataclasses.replace(c, label=None) for c in train]
    t0 = time.perf_counter()
    cfg = TrainConfig(method="dmd", iterations=a.iterations, **{**base, "model": a.student})
    with tempfile.TemporaryDirectory(prefix="napari-dmd-round0-") as tmp:
        last = corrections._train(cfg, cases, Path(tmp) / a.arm, teacher=teacher)
        ev = corrections._evaluate(Segmenter.from_checkpoint(last, device="cpu"), val)
    res = {"arm": a.arm, "student": a.student, "iterations": a.iterations, "train_cases": len(train),
           "val_cases": len(val), "student_dice": ev, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
