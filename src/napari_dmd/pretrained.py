"""Demo models for the synthetic phantom: a small 2D teacher + DMD student, trained at first use and cached.

``phantom_models()`` returns the paths of the two checkpoints. The first call trains them with the one
engine (:class:`napari_dmd.distill.engine.Distiller`: method "ds" for the teacher preset, then "dmd" for the
student preset; 35-40 s of CPU on one thread, see :class:`DemoRecipe` and :func:`demo_threads`) on 2D phantoms
and 2D slices of 3D phantoms, so the pair segments the 2D sample and, slice by slice, the 3D sample. Later
calls reuse the cache under ``$NAPARI_DMD_CACHE`` or the user cache directory
(``platformdirs.user_cache_dir("napari-dmd")``). The cache folder is built in a temporary folder and renamed
into place, so a crash or a cancel never leaves half a cache. Qt-free: the Teacher widget runs this in a child
process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .data.cases import Case
from .phantom import PHANTOM_CLASS_NAMES, make_phantom

__all__ = ["DemoCancelled", "DemoRecipe", "RECIPE", "cache_root", "cached_models", "current_recipe",
           "demo_threads", "phantom_cases_2d", "phantom_models", "usable_cores"]

# idle OpenMP threads sleep rather than spin (effective if torch is not loaded yet; see _widgets/__init__.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ProgressFn = Callable[[int, int], object]
StopFn = Callable[[], bool]

TEACHER_FILE = "teacher.pt"
STUDENT_FILE = "student.pt"


class DemoCancelled(RuntimeError):
    """The demo training was stopped before it finished; nothing was cached."""


@dataclass(frozen=True)
class DemoRecipe:
    """How the demo pair is trained. Changing any field trains a new pair in its own cache folder.

    Choices for a CPU budget of about a minute (measured with ``benchmarks/demo_pair.py``; docs/guide_part_a.md):
    batch norm and raw intensities (``normalization="none"``: the phantom's intensities mean the same in every
    image, so a slice of a volume looks like a 2D phantom), no augmentation (flips would hide the organs'
    left/right layout), patches centred on a random organ 90 % of the time (the small kidneys, spleen and
    lesion are learnt late otherwise), lr 1e-2 (3e-3 and 3e-2 were worse). The teacher trains with deep
    supervision (method "ds": class heads on the decoder stages; the small classes then appear in far fewer
    steps) on 48 x 48 patches (cheaper per step for the same quality; its lesion class appeared between 225 and
    300 steps). The student needs 8 patches of 64 x 64 per step and ~225 steps (with 6 per step, with 48 x 48
    patches or with 200 steps its kidney class did not appear) and, in so short a training, a weak target-class
    term (``lambda_logit``: at the default 1 the T²-scaled pull towards the teacher's softened probabilities
    held the student's small classes back; at 3 they never appeared). Since the default ``student`` became the
    half-resolution design (2026-12-06) the student trains 400 steps: at 225 it lost the lesion (seed 1: lesion
    0.02, mean 0.64); at 400, seeds 1-3, mean validation Dice 0.83 / 0.78 / 0.76 with the lesion at 0.86 / 0.67 /
    0.46 (the full-resolution ``student-classic`` at 225 steps, seed 1: 0.85), for about 15 s more CPU time.

    Cheaper variants measured over seeds 1-3 (2026-12, one thread; mean validation Dice teacher / student, this
    recipe 0.71 / 0.51): 200 + 150 steps lost the teacher's lesion; 32 x 32 teacher patches saved ~15 % of the
    CPU time but gave 0.61 / 0.55 (the teacher's Dice on the samples fell from ~0.71 to ~0.57); 48 x 48 student
    patches lost its kidneys; 6 teacher patches per step 0.62 / 0.48; patch sizes that are not a multiple of
    16 are padded and cost as much as the next multiple. What made the first use fast is one thread instead of
    two on a 2-core machine (:func:`demo_threads`).
    """

    teacher_model: str = "teacher"  # preset name or channels, as TrainConfig.model
    student_model: str = "student"
    teacher_iterations: int = 300
    student_iterations: int = 400
    teacher_patch: int = 48
    student_patch: int = 64
    teacher_batch: int = 8
    student_batch: int = 8
    lr: float = 1e-2
    teacher_method: str = "ds"  # "none" (task loss) or "ds" (+ deep supervision; its heads are saved, unused)
    lambda_logit: float = 0.25  # the student's DMD weight of TCKD on the final logits (TrainConfig default 1)
    norm: str = "batch"
    normalization: str = "none"
    fg_fraction: float = 0.9
    n_2d: int = 8  # 2D phantoms per size
    sizes_2d: tuple[int, ...] = (128, 192)
    n_3d: int = 3  # 3D phantoms, sliced along axis 0
    shape_3d: tuple[int, int, int] = (48, 96, 96)
    slice_step: int = 4
    seed: int = 1
    num_threads: int | None = None  # CPU threads while training; None: demo_threads()

    @property
    def total(self) -> int:
        """Number of training steps (teacher + student), the ``total`` of the progress callback."""
        return self.teacher_iterations + self.student_iterations

    def key(self) -> str:
        """Cache folder name: a format tag, the step counts, and a hash of every other setting (but threads)."""
        settings = asdict(self)
        settings.pop("num_threads")
        blob = json.dumps(settings, sort_keys=True).encode()
        return (f"phantom2d-v5-t{self.teacher_iterations}-s{self.student_iterations}-"
                f"{hashlib.sha1(blob).hexdigest()[:10]}")


RECIPE = DemoRecipe()


def usable_cores(cap: int = 8) -> int:
    """CPU cores this process may run on, at most ``cap``; :func:`demo_threads` chooses the demo's threads from it.
    Idle OpenMP threads sleep rather than spin (``OMP_WAIT_POLICY=PASSIVE``), so napari's own thread keeps running.
    """
    from .runtime import usable_cores as cores

    return cores(cap)


def demo_threads(cores: int | None = None) -> int:
    """CPU threads for the demo training on ``cores`` usable cores (default: this process's): 1 up to 2 cores,
    else half of them, at most 4.

    Measured with ``benchmarks/demo_pair.py`` on a 2-core VM: a second thread never made the training faster
    (idle: the training thread's CPU time stayed that of the one-thread run) and, with other programs busy,
    made it twice as slow (155 s against 76 s of wall time: each parallel operation waits for the thread
    the OS parked). The operations are small (2D, 8 patches of 48-64 pixels), so above 2 cores at most half of
    them are used, leaving the rest to napari and the user's other programs (not measured here).
    """
    n = usable_cores(64) if cores is None else max(1, cores)
    return 1 if n <= 2 else min(4, n // 2)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$NAPARI_DMD_CACHE``, else the user cache directory of napari-dmd."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("NAPARI_DMD_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-dmd"))


def phantom_cases_2d(recipe: DemoRecipe = RECIPE) -> tuple[list[Case], list[Case]]:
    """Training and validation cases: 2D phantoms of several sizes and axial slices of 3D phantoms.

    Seeds differ from the sample data's (seed 0), so the samples are never training data.
    """
    rng = np.random.SeedSequence(recipe.seed)
    seeds = iter(int(s) for s in rng.generate_state(recipe.n_2d * len(recipe.sizes_2d) + recipe.n_3d + 2))
    cases: list[Case] = []
    for size in recipe.sizes_2d:
        for _ in range(recipe.n_2d):
            img, lab = make_phantom((size, size), seed=next(seeds))
            cases.append(Case(img, lab, (1.0, 1.0), np.eye(4), f"phantom2d_{size}_{len(cases):03d}"))
    for v in range(recipe.n_3d):
        vol, lab = make_phantom(recipe.shape_3d, seed=next(seeds))
        for z in range(recipe.slice_step // 2, vol.shape[0], recipe.slice_step):
            cases.append(Case(vol[z], lab[z], (1.0, 1.0), np.eye(4), f"phantom3d_{v}_z{z:02d}"))
    val: list[Case] = []
    img, lab = make_phantom((recipe.sizes_2d[-1],) * 2, seed=next(seeds))
    val.append(Case(img, lab, (1.0, 1.0), np.eye(4), "val_phantom2d"))
    vol, lab = make_phantom(recipe.shape_3d, seed=next(seeds))
    z = recipe.shape_3d[0] // 2
    val.append(Case(vol[z], lab[z], (1.0, 1.0), np.eye(4), "val_phantom3d_slice"))
    return cases, val


def _valid_cache(folder: Path) -> bool:
    """True when both checkpoints of ``folder`` load (weights only)."""
    from .checkpoint import CheckpointError, load_checkpoint

    try:
        return all(load_checkpoint(folder / f) is not None for f in (TEACHER_FILE, STUDENT_FILE))
    except CheckpointError:
        return False


def current_recipe() -> DemoRecipe:
    """:data:`RECIPE`, with iteration counts from ``$NAPARI_DMD_DEMO_ITERATIONS`` ("teacher,student") if set.

    The override is for tests and quick looks; it trains a separate cache entry (the folder name has the
    counts), so it never replaces the real demo pair.
    """
    env = os.environ.get("NAPARI_DMD_DEMO_ITERATIONS", "").strip()
    if not env:
        return RECIPE
    try:
        t, s = (int(v) for v in env.split(","))
        if t < 1 or s < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"NAPARI_DMD_DEMO_ITERATIONS={env!r}: give two positive counts, e.g. '20,10'") from None
    return replace(RECIPE, teacher_iterations=t, student_iterations=s)


def cached_models(recipe: DemoRecipe | None = None,
                  cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """The cached (teacher, student) paths, or None when they were not trained yet."""
    recipe = recipe or current_recipe()
    folder = cache_root(cache_dir) / recipe.key()
    if folder.is_dir() and _valid_cache(folder):
        return folder / TEACHER_FILE, folder / STUDENT_FILE
    return None


def phantom_models(progress: ProgressFn | None = None, cache_dir: str | os.PathLike | None = None, *,
                   recipe: DemoRecipe | None = None, should_stop: StopFn | None = None,
                   device: str = "auto") -> tuple[Path, Path]:
    """Paths of the demo teacher and student checkpoints, training and caching them at first use.

    ``progress(done, total)`` is called after every training step (``total = recipe.total``; a cached pair
    reports ``(total, total)`` at once). ``recipe`` defaults to :func:`current_recipe`. ``should_stop()`` is
    polled between steps; when it returns True training stops, nothing is cached and :class:`DemoCancelled`
    is raised.
    """
    recipe = recipe or current_recipe()
    cached = cached_models(recipe, cache_dir)
    if cached is not None:
        if progress is not None:
            progress(recipe.total, recipe.total)
        return cached

    import torch

    from .config import TrainConfig
    from .runner import events, final_checkpoint, prepare_run
    from .teachers import load_teacher

    threads = torch.get_num_threads()  # the engine sets num_threads process-wide: restore it afterwards
    root = cache_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / recipe.key()
    work = Path(tempfile.mkdtemp(prefix=f".{recipe.key()}.", suffix=".tmp", dir=root))
    try:
        cases, val = phantom_cases_2d(recipe)
        common = dict(spatial_dims=2, num_classes=len(PHANTOM_CLASS_NAMES), class_names=list(PHANTOM_CLASS_NAMES),
                      lr=recipe.lr, norm=recipe.norm, normalization=recipe.normalization,
                      fg_fraction=recipe.fg_fraction, augment=False, device=device, seed=recipe.seed, log_interval=50,
                      num_threads=recipe.num_threads or demo_threads())
        done = 0

        def train(cfg: TrainConfig, role: str, teacher: Any = None) -> Path:
            nonlocal done
            run, _ = prepare_run(cfg, cases, val_cases=val, teacher=teacher, output_dir=work / role, role=role)
            for ev in events(run, should_stop):  # should_stop() is asked after each event is handled
                if ev.kind == "step":
                    done += 1
                    if progress is not None:
                        progress(done, recipe.total)
            if run.iteration < run.total:
                raise DemoCancelled("demo model training was stopped; nothing was cached")
            return final_checkpoint(run)

        t_cfg = TrainConfig(method=recipe.teacher_method, model=recipe.teacher_model,
                            iterations=recipe.teacher_iterations, patch_size=[recipe.teacher_patch] * 2,
                            batch_size=recipe.teacher_batch,
                            val_interval=recipe.teacher_iterations, checkpoint_interval=recipe.teacher_iterations,
                            **common)
        teacher_path = train(t_cfg, "teacher")
        s_cfg = TrainConfig(method="dmd", model=recipe.student_model, iterations=recipe.student_iterations,
                            patch_size=[recipe.student_patch] * 2, batch_size=recipe.student_batch,
                            lambda_logit=recipe.lambda_logit,
                            val_interval=recipe.student_iterations, checkpoint_interval=recipe.student_iterations,
                            **common)
        student_path = train(s_cfg, "student", load_teacher(teacher_path))
        out = work / "pair"
        out.mkdir()
        shutil.copy2(teacher_path, out / TEACHER_FILE)
        shutil.copy2(student_path, out / STUDENT_FILE)
        if final.exists() and not _valid_cache(final):  # a damaged cache (files removed by hand)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(out, final)  # atomic: the folder appears complete or not at all
        except OSError:
            if not (final.is_dir() and _valid_cache(final)):  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        torch.set_num_threads(threads)
    return final / TEACHER_FILE, final / STUDENT_FILE
