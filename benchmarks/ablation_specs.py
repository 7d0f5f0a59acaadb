"""The ablation's plan: datasets and how each is trained, the settings and methods, the job list.

Used by ``benchmarks/ablation.py`` (the command line); :mod:`ablation_jobs` runs the jobs planned here and
:mod:`ablation_report` turns their JSON files into the Markdown tables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(os.environ.get("NAPARI_DMD_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
SEEDS = (0, 1, 2)
FULL_METHODS = ("none", "ds", "kd", "dkd", "mfd", "dmd")
LOW_METHODS = ("alone", "pseudo", "kd", "dkd", "dmd")
TINY_METHODS = ("none", "kd", "dmd")
T1_WEIGHTS = {"target_balance": True, "target_temperature": 1.0}  # the t1 setting: KD, DKD, DMD rows (full table)
# each method's own weight: the value used in the table (chosen on the tuning grid, see docs/results.md)
WEIGHTS: dict[str, dict[str, float]] = {
    "ds": {"ds_weight": 1.0}, "kd": {"kd_weight": 0.25}, "dkd": {"beta": 8.0},
    "mfd": {"lambda_feat": 8 / 3}, "dmd": {"lambda_feat": 2 / 3},
}
# hs: DMD's default since 2026-12-05 (deep supervision at its scale heads as well: the control's loss + DMD's
# terms; the ``dmd`` rows are DMD as published); in the default run since then
SETTINGS = ("tune", "full", "lowlabel", "hs")
EXTRA_SETTINGS = ("tiny", "pool", "t1")  # not in the default run: tiny: the student-tiny rows (issue 12 measures
# them at longer budgets); pool: MFD/DMD with scale_resample=pool (hippocampus, CHAOS); t1: KD, DKD and DMD with
# their class-balanced target terms at T = 1 set explicitly (DMD's default since 2026-12-04)
POOL_METHODS = ("mfd-pool", "dmd-pool")
HS_METHODS = ("dmd-hs",)
TRAIN_THREADS = 1  # every job trains on one CPU thread (the Expect line states it; latency has its own count)
CPU_BF16 = os.environ.get("NAPARI_DMD_ABLATION_FP32") != "1"  # bfloat16 autocast where the CPU has it natively
# (and mixed precision on CUDA); NAPARI_DMD_ABLATION_FP32=1: float32 everywhere, the reference
# the student presets of the full/low-label settings and of the tiny setting (--student, --tiny-student)
STUDENT = os.environ.get("NAPARI_DMD_ABLATION_STUDENT", "student")
TINY_STUDENT = os.environ.get("NAPARI_DMD_ABLATION_TINY_STUDENT", "student-tiny")
KEEP_WEIGHTS = os.environ.get("NAPARI_DMD_ABLATION_KEEP_WEIGHTS") == "1"  # keep each student's last.pt
CACHE = os.environ.get("NAPARI_DMD_ABLATION_CACHE")  # folder of <dataset>.pkl.xz: datasets loaded once, carried
TUNE_DATASET = "hippocampus"  # the weight grid runs here: low-label setting, seed 0, validation split
GRID: dict[str, tuple[str, tuple[float, ...]]] = {
    "kd": ("kd_weight", (0.25, 1.0, 4.0)),
    "dkd": ("beta", (0.5, 2.0, 8.0)), "mfd": ("lambda_feat", (1 / 6, 2 / 3, 8 / 3)),
    "dmd": ("lambda_feat", (1 / 6, 2 / 3, 8 / 3)),
}


@dataclass
class Spec:
    """How one dataset is trained: model dims, patch, batch, budgets, low-label count."""

    name: str
    dims: int
    patch: list[int]
    batch: int
    student_iters: int
    teacher_iters: int
    low_labels: int = 0  # labelled training cases in the low-label setting (0: no low-label rows)
    lr: float = 1e-2  # students (at 3e-3 and 300 iterations every student on hippocampus missed a class)
    teacher_lr: float = 3e-3
    extra: dict[str, Any] = field(default_factory=dict)


SPECS = {
    "hippocampus": Spec("hippocampus", 2, [48, 48], 16, 600, 900, low_labels=6),
    # chaos: with the default augmentation its teacher reached only 0.46-0.48 mean Dice in 1200 iterations
    # (lr 3e-3 or 1e-2), 0.52 with intensity changes only, 0.73 without augmentation (one run each)
    "chaos": Spec("chaos", 2, [128, 128], 4, 600, 1200, low_labels=2, teacher_lr=1e-2,
                  extra={"augment": False}),
    # hc18 at 8x down-sampling (67x100 px); 4x (135x200) gave no better teacher (0.954 vs 0.958, see
    # benchmarks/teachers/hc18/README.md) at 4x the cost
    "hc18": Spec("hc18", 2, [64, 96], 8, 600, 900),
    "phantom2d": Spec("phantom2d", 2, [96, 96], 4, 600, 900),
    # patch = the whole 24x64x64 volume, as the committed teacher was trained since 2026-12-06 (night): its instance
    # norm then sees what it saw in training (the earlier teacher, trained on 16x48x48, scored 0.93 with those windows
    # and 0.64 with 32x64x64), and the default student gets the in-plane context it needs (16x48x48 padded to
    # 32x64x64 lost a class in 3 of 3 seeds; docs/results.md). 1200 student iterations since 2026-12-06 (late
    # afternoon): at 600 the students were still learning every class (DMD's default lost the spleen in 1 of 3 seeds,
    # a class not yet learned; docs/ablation_v4/phantom3d_600it); 300 until 2026-12-05 (docs/ablation_v2/phantom3d_300)
    "phantom3d": Spec("phantom3d", 3, [24, 64, 64], 2, 1200, 900),
    # 3D, with the committed teacher (benchmarks/teachers/hippocampus3d) and its 16 validation cases; no flips
    # since 2026-12-06: the head (anterior) and tail (posterior) are told apart by position, and flips cost the
    # students 4-8 Dice points (docs/ablation_v3 ran with them; its rows without: docs/ablation_v3/hippocampus3d_noflip)
    "hippocampus3d": Spec("hippocampus3d", 3, [40, 56, 40], 2, 400, 0, low_labels=6, extra={"flips": False}),
}
HC18_DOWN = 8  # in-plane down-sampling of the HC18 ultrasound images (800x540 px at 0.05-0.25 mm)
DEFAULT_DATASETS = ("hippocampus3d", "chaos", "hc18", "phantom3d")  # the table of the committed teachers
TEACHERS = Path(__file__).resolve().parent / "teachers"
COMMITTED = {"hippocampus3d": "hippocampus3d", "chaos": "chaos", "hc18": "hc18", "phantom3d": "phantom3d"}


def committed_teacher(name: str) -> Path | None:
    """The dataset's committed teacher (``benchmarks/teachers/<folder>/teacher.pt``), or None (the ablation trains
    its own); ``NAPARI_DMD_ABLATION_OWN_TEACHERS=1`` ignores the committed ones."""
    if os.environ.get("NAPARI_DMD_ABLATION_OWN_TEACHERS") == "1" or name not in COMMITTED:
        return None
    path = TEACHERS / COMMITTED[name] / "teacher.pt"
    return path if path.exists() else None


# ----------------------------------------------------------------------------------------------- data
def _down(image: np.ndarray, label: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane down-sampling by ``f``: block mean for the image, strided pick for the labels (the library's
    :func:`napari_dmd.data.downsample.downsample_arrays`, which the corrections bench uses too)."""
    from napari_dmd.data.downsample import downsample_arrays

    return downsample_arrays(image, label, f)


def load_dataset(name: str) -> tuple[list, list, int]:
    """(train cases, fixed validation cases, number of classes) of a dataset."""
    from napari_dmd.data.cases import Case, load_folder_pairs, load_msd_folder
    from napari_dmd.data.sampling import split_cases
    from napari_dmd.phantom import make_phantom_dataset

    if name.startswith("phantom"):
        shape = (96, 96) if name == "phantom2d" else (24, 64, 64)
        pairs = make_phantom_dataset(24 if name == "phantom2d" else 16, shape, seed=7)
        cases = [Case(image=i, label=lab, spacing=(1.0,) * len(shape), affine=np.eye(4), name=f"phantom_{k:02d}")
                 for k, (i, lab) in enumerate(pairs)]
        n_val = 8 if name == "phantom2d" else 4
        return cases[n_val:], cases[:n_val], 6
    if name == "hippocampus":
        cases, _ = load_msd_folder(DATA / "msd_hippocampus", require_labels=True)
        tr, va = split_cases(len(cases), 0.1, seed=0)
        return [cases[i] for i in tr], [cases[i] for i in va], 3
    if name == "hippocampus3d":  # the committed teacher's validation cases; every other case trains
        import torch

        cases, _ = load_msd_folder(DATA / "msd_hippocampus", require_labels=True)
        ck = torch.load(TEACHERS / "hippocampus3d" / "teacher.pt", map_location="cpu", weights_only=True)
        val_names = set(ck["val_cases"])
        return [c for c in cases if c.name not in val_names], [c for c in cases if c.name in val_names], 3
    if name == "chaos":
        cases, _ = load_msd_folder(DATA / "chaos_mr_t2", require_labels=True)
        for c in cases:
            c.image, c.label = _down(c.image, c.label, 2)
            c.spacing = (c.spacing[0], c.spacing[1] * 2, c.spacing[2] * 2)
        tr, va = split_cases(len(cases), 0.25, seed=0)  # 8 train / 3 val patients
        return [cases[i] for i in tr], [cases[i] for i in va], 5
    if name == "hc18":
        root = DATA / "hc18_fetal_head"
        cases = load_folder_pairs(root / "images", root / "labels", spacing_csv=root / "pixel_size_and_HC.csv")
        for c in cases:
            c.image, c.label = _down(c.image, c.label, HC18_DOWN)
            c.spacing = tuple(s * HC18_DOWN for s in c.spacing)
        exams = sorted({re.match(r"(\d+)", c.name).group(1) for c in cases})
        _, va = split_cases(len(exams), 0.2, seed=0)
        val_exams = {exams[i] for i in va}  # split by examination: images of one exam stay together
        return ([c for c in cases if re.match(r"(\d+)", c.name).group(1) not in val_exams],
                [c for c in cases if re.match(r"(\d+)", c.name).group(1) in val_exams], 2)
    raise ValueError(f"unknown dataset {name!r}")


_CACHE: dict[str, tuple[list, list, int]] = {}


def dataset(name: str) -> tuple[list, list, int]:
    """:func:`load_dataset`, loaded once per process."""
    if name not in _CACHE:
        cached = Path(CACHE) / f"{name}.pkl.xz" if CACHE else None
        if cached is not None and cached.exists():
            import lzma
            import pickle

            with lzma.open(cached, "rb") as f:
                _CACHE[name] = pickle.load(f)  # noqa: S301 - our own file, written by save_cache
        else:
            _CACHE[name] = load_dataset(name)
    return _CACHE[name]


def save_cache(name: str, folder: Path) -> Path:
    """Write the loaded dataset to ``folder/<name>.pkl.xz`` (for a machine without the raw data)."""
    import lzma
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pkl.xz"
    with lzma.open(path, "wb", preset=6) as f:
        pickle.dump(load_dataset(name), f)
    return path

@dataclass
class Job:
    """One training run: a teacher (setting ``teacher``) or a student of one setting, method, seed and weights."""

    dataset: str
    setting: str  # teacher | full | lowlabel | tiny | tune
    method: str
    seed: int = 0
    weights: dict[str, float] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """The job's file name stem, e.g. ``hippocampus_full_dmd_lambda_feat0.667_s0``."""
        w = "".join(f"_{k}{v:.3g}" for k, v in sorted(self.weights.items()))
        return f"{self.dataset}_{self.setting}_{self.method}{w}_s{self.seed}"


def plan(datasets: list[str], seeds: tuple[int, ...], settings: tuple[str, ...] = SETTINGS) -> list[Job]:
    """Every student job of the requested settings (teachers are planned by ``ablation_jobs.run_all``)."""
    jobs: list[Job] = []
    if TUNE_DATASET in datasets and "tune" in settings:
        for m, (key, values) in GRID.items():
            jobs += [Job(TUNE_DATASET, "tune", m, 0, {key: v}) for v in values]
    for ds in datasets:
        spec = SPECS[ds]
        for s in seeds:
            if "full" in settings:
                jobs += [Job(ds, "full", m, s, WEIGHTS.get(m, {})) for m in FULL_METHODS]
            if spec.low_labels and "lowlabel" in settings:
                jobs += [Job(ds, "lowlabel", m, s, WEIGHTS.get(m, {})) for m in LOW_METHODS]
            if ds in ("hippocampus", "hippocampus3d", "chaos") and "tiny" in settings:
                jobs += [Job(ds, "tiny", m, s, WEIGHTS.get(m, {})) for m in TINY_METHODS]
            if ds in ("hippocampus", "chaos") and "pool" in settings:  # rows of the full table
                jobs += [Job(ds, "full", m, s, WEIGHTS[m.removesuffix("-pool")]) for m in POOL_METHODS]
            if "hs" in settings:  # rows of the full (and low-label) table
                jobs += [Job(ds, "full", m, s, WEIGHTS[m.removesuffix("-hs")]) for m in HS_METHODS]
                if spec.low_labels:
                    jobs += [Job(ds, "lowlabel", m, s, WEIGHTS[m.removesuffix("-hs")]) for m in HS_METHODS]
            if "t1" in settings:  # DMD (and KD, DKD: the same change to their target terms) at T = 1
                jobs += [Job(ds, "full", m, s, {**WEIGHTS[m], **T1_WEIGHTS}) for m in ("kd", "dkd", "dmd")]
    return jobs


def apply_scale(scale: float) -> None:
    """Multiply every iteration budget by ``scale`` (smoke runs); idempotent per process."""
    for name, spec in SPECS.items():
        base = _BASE.setdefault(name, (spec.student_iters, spec.teacher_iters))
        spec.student_iters = max(2, round(base[0] * scale))
        spec.teacher_iters = max(2, round(base[1] * scale))


_BASE: dict[str, tuple[int, int]] = {}
