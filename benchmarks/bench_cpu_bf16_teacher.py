"""B1: CPU distillation steps of a 3D student with the teacher's forward in bfloat16 (``cpu_bf16``) vs float32.

Same design as ``bench_cpu_channels_last.py`` (two engines per preset, alternating DMD steps in one process, one
validation pass each, first-step losses side by side; both channels-last). Then the teacher alone on the
validation cases, float32 and under bfloat16 autocast: the share of voxels whose label differs and each one's
mean Dice. Needs a CPU with native bfloat16. Example::

    python benchmarks/bench_cpu_bf16_teacher.py --threads 1 --steps 12 \\
        --json docs/benchmarks/bench-b1-cpu-bf16-teacher.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_cpu_channels_last import _data, compare, parser  # noqa: E402

from napari_dmd.data.transforms import normalize  # noqa: E402
from napari_dmd.inference import sliding_window_predict  # noqa: E402
from napari_dmd.metrics import dice_per_class  # noqa: E402
from napari_dmd.runtime import cpu_bf16_supported  # noqa: E402


def teacher_agreement(data: tuple, max_cases: int) -> dict:
    """The teacher's labels in float32 and under bfloat16 autocast on the validation cases (``data``: ``_data()``)."""
    _, _, val, teacher, patch = data
    differ, total, dice = 0, 0, {"float32": [], "bfloat16": []}
    for case in val[:max_cases]:
        image = normalize(case.image, teacher.normalization)
        labels = {}
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                probs = sliding_window_predict(teacher, image, patch, num_classes=teacher.num_classes, overlap=0.5)
            labels[name] = probs.argmax(0)
            dice[name].append(float(np.nanmean(dice_per_class(labels[name], case.label, teacher.num_classes))))
        differ += int((labels["float32"] != labels["bfloat16"]).sum())
        total += labels["float32"].size
    out = {"cases": len(val[:max_cases]), "voxels_differ": differ / total,
           "mean_dice_float32": float(np.mean(dice["float32"])), "mean_dice_bfloat16": float(np.mean(dice["bfloat16"]))}
    print(f"  teacher on {out['cases']} validation cases: labels differ on {100 * out['voxels_differ']:.4f} % of "
          f"voxels; mean Dice float32 {out['mean_dice_float32']:.4f}, bfloat16 {out['mean_dice_bfloat16']:.4f}")
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--cases", type=int, default=20, help="validation cases for the teacher's agreement")
    args = ap.parse_args()
    if not cpu_bf16_supported():
        sys.exit("this CPU has no native bfloat16: nothing to measure")
    data = _data()  # loaded once for both parts
    rows = compare("cpu_bf16", args.presets, args.steps, args.threads, None, data)
    agreement = teacher_agreement(data, args.cases)
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows,
                                         "teacher": agreement}, indent=1))


if __name__ == "__main__":
    main()
