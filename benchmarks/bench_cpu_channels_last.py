"""B1: CPU distillation steps of a 3D student, channels-last (the engine's layout since 2026-12-05) vs the default.

Two engines (``Distiller``) per student preset on the same data, teacher and seed, one with ``channels_last`` on
and one off, take DMD steps alternately in one process; a step is the whole of ``Distiller._step`` (sampling,
teacher forward, student forward/backward, losses, optimizer). Prints the median seconds per step of each, their
ratio, and one validation pass each (the sliding-window prediction of the validation cases). The first step's
losses are printed side by side (same batch and initial weights: they agree to float rounding).

The data: hippocampus 3D with its committed teacher when ``../shared/data`` has it (the ablation's patch
40x56x40, batch 2), else the synthetic 3D phantom with a fresh teacher. Example::

    python benchmarks/bench_cpu_channels_last.py --threads 1 --steps 12 \
        --json docs/benchmarks/bench-b1-cpu-channels-last.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from napari_dmd.config import TrainConfig  # noqa: E402
from napari_dmd.distill.engine import Distiller  # noqa: E402


def _data() -> tuple[str, list, list, object, list[int]]:
    """(name, train cases, validation cases, teacher, patch)."""
    from ablation_specs import DATA, TEACHERS, dataset

    from napari_dmd.teachers import load_teacher

    if (DATA / "msd_hippocampus").exists():
        train, val, _ = dataset("hippocampus3d")
        return "hippocampus3d", train, val, load_teacher(TEACHERS / "hippocampus3d" / "teacher.pt"), [40, 56, 40]
    from napari_dmd.demo import phantom_cases
    from napari_dmd.models.presets import build_model
    from napari_dmd.teachers import ModelTeacher

    cases = phantom_cases(6, 3)
    torch.manual_seed(0)
    return "phantom3d", cases[2:], cases[:2], ModelTeacher(build_model("teacher", 3, 6), 6, 3), [16, 48, 48]


def compare(setting: str, presets: list[str], steps: int, threads: int, json_path: Path | None,
            data: tuple | None = None) -> list[dict]:
    """Two engines per preset, ``setting`` (a boolean TrainConfig field) off and on, alternating DMD steps; ``data``
    is what :func:`_data` returns (loaded here when None)."""
    torch.set_num_threads(threads)
    name, train, val, teacher, patch = data if data is not None else _data()
    print(f"B1 CPU {setting}: {name}, patch {patch} x 2, DMD, {threads} thread(s), "
          f"median of {steps} alternating steps")
    rows = []
    with tempfile.TemporaryDirectory(prefix="napari-dmd-b1-") as tmp:
        for preset in presets:
            engines = {}
            for on in (False, True):
                cfg = TrainConfig(method="dmd", model=preset, iterations=10_000, batch_size=2, patch_size=patch,
                                  val_interval=10_000, device="cpu", seed=0, **{setting: on})
                if setting != "channels_last":
                    cfg.channels_last = True  # the engine's default layout on both sides
                engines[on] = Distiller(cfg, train, val_cases=val[:4], teacher=teacher,
                                        output_dir=Path(tmp) / f"{preset}-{on}")
            first = {on: sum(engines[on]._step().values()) for on in (False, True)}  # the sum of its loss parts
            for on in (False, True):
                engines[on]._step()
            times: dict[bool, list[float]] = {False: [], True: []}
            for i in range(steps):
                for on in ((False, True) if i % 2 == 0 else (True, False)):
                    t0 = time.perf_counter()
                    engines[on]._step()
                    times[on].append(time.perf_counter() - t0)
            val_s = {}
            for on in (False, True):
                t0 = time.perf_counter()
                engines[on]._validate()
                val_s[on] = time.perf_counter() - t0
            med = {on: statistics.median(v) for on, v in times.items()}
            row = {"preset": preset, "default_s": med[False], f"{setting}_s": med[True],
                   "speedup": med[False] / med[True], "validation_default_s": val_s[False],
                   f"validation_{setting}_s": val_s[True], "first_loss_default": first[False],
                   f"first_loss_{setting}": first[True], "runs_s": {str(k): v for k, v in times.items()}}
            rows.append(row)
            print(f"  {preset:18s} step {med[False]:.3f} s -> {med[True]:.3f} s  ({row['speedup']:.2f}x)   "
                  f"validation {val_s[False]:.2f} s -> {val_s[True]:.2f} s   first loss {first[False]:.6f} / "
                  f"{first[True]:.6f}")
    if json_path:
        json_path.write_text(json.dumps({"dataset": name, "patch": patch, "threads": threads, "setting": setting,
                                         "torch": torch.__version__, "rows": rows}, indent=1))
    return rows


def parser(doc: str) -> argparse.ArgumentParser:
    """The options these B1 benchmarks share: presets, timed steps, threads, JSON output."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["student", "student-fast-deep", "student-fast", "student-tiny"])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per engine (after 2 warm-up steps)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    return ap


def main() -> None:
    args = parser(__doc__).parse_args()
    compare("channels_last", args.presets, args.steps, args.threads, args.json)


if __name__ == "__main__":
    main()
