"""``napari-dmd bench corrections``: the correction loop measured with a scripted painter.

A teacher (trained briefly, or a committed one) and a student distilled without labels; then per round: the
student predicts the training pool, :func:`napari_dmd.review.rank_slices` ranks each case's slices (2D: tiles) by
teacher-student disagreement and student entropy, the painter copies the ground truth into the ``slices`` top
regions (not painted before) of the ``cases`` cases that disagree most, :func:`napari_dmd.corrections.start_round`
fine-tunes from the previous round's ``last.pt``, and student and teacher are evaluated on the validation cases
(:func:`napari_dmd.evaluation.evaluate_cases`, Dice only). Rows: round, slices corrected (cumulative), voxels
painted, student per-class and mean Dice, teacher mean Dice (also appended to ``<out>/rows.jsonl`` as they come).

With ``control`` a control arm follows: the same rounds from the same round-0 student (trained once, shared), with
the same steps, learning rate and seed but nothing painted (the teacher's prediction everywhere), in
``<out>/control/round-<n>``; its rows (``"control"`` in the result, ``<out>/control/rows.jsonl``) say how much of
the painted arm's gain the extra training alone gives.

Real datasets use their committed teachers by default (hippocampus: the 3D one, CHAOS: the 2D one) and those
teachers' validation cases; CHAOS is down-sampled in-plane by 2 (``downsample``), as its teacher was trained, and its
students train as the teacher did: no augmentation, no flips (left and right kidney are classes).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DATASETS = ("phantom2d", "phantom3d", "hippocampus", "chaos")
_TEACHERS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "teachers"
HIPPOCAMPUS_TEACHER = _TEACHERS_DIR / "hippocampus3d" / "teacher.pt"
TEACHERS = {"hippocampus": HIPPOCAMPUS_TEACHER, "chaos": _TEACHERS_DIR / "chaos" / "teacher.pt"}
DOWNSAMPLE = {"chaos": 2}  # in-plane factor of the data the committed teacher was trained on (default 1)
# per dataset: the committed teacher's augmentation (CHAOS: none, no flips for left/right kidneys) and the ablation's
# student recipe (CHAOS: lr 1e-2, batch 4; at lr 2e-3 / batch 2 the label-free student lost both kidneys: 30.4 mean)
AUGMENTS = (None, "off", "intensity", "spatial")  # --augment: the recipe's; none; intensity only; also zoom, rotation
RECIPES: dict[str, dict[str, Any]] = {"chaos": {"augment": False, "flips": False, "lr": 1e-2, "batch_size": 4}}
DATA_DIRS = {"hippocampus": "msd_hippocampus", "chaos": "chaos_mr_t2"}
LOST_GAP = 0.10  # a class is "lost" at round 0 when the student is this far below the teacher
RECOVERED_GAP = 0.05  # ... and "recovered" when it is back within this of the teacher


def _phantom(dims: int, quick: bool) -> tuple[list[Any], list[Any], int]:
    from ..data.case import Case
    from ..phantom import make_phantom_dataset

    shape = ((64, 64) if quick else (128, 128)) if dims == 2 else ((16, 48, 48) if quick else (32, 64, 64))
    n_train, n_val = (6, 2) if quick else (12, 4)
    data = make_phantom_dataset(n_train + n_val, shape, num_classes=4 if quick else 6, seed=11)
    cases = [Case(image=i, label=lab, spacing=(1.0,) * dims, affine=np.eye(4), name=f"phantom_{k:03d}")
             for k, (i, lab) in enumerate(data)]
    return cases[:n_train], cases[n_train:], 4 if quick else 6


def unseen_cases(cases: list, ckpt: dict[str, Any], path: str) -> set[str]:
    """Names of the labelled ``cases`` (in their load order) that the teacher ``ckpt`` neither trained nor validated
    on: the engine's split (:func:`~napari_dmd.distill.validation.split_train_val` with its config's
    ``val_fraction``, ``max_val_cases`` and ``seed``) set them aside beyond ``max_val_cases``.
    Raises :class:`DataError` when the split does not reproduce its recorded ``val_cases`` or leaves none out."""
    from ..config import TrainConfig
    from ..data.io import DataError
    from ..distill.validation import split_train_val

    cfg, default = ckpt.get("config") or {}, TrainConfig()
    labelled = [c for c in cases if c.label is not None]
    train, val = split_train_val(labelled, None, has_teacher=False,
                                 val_fraction=float(cfg.get("val_fraction", default.val_fraction)),
                                 max_val_cases=int(cfg.get("max_val_cases", default.max_val_cases)),
                                 seed=int(cfg.get("seed", default.seed)))
    recorded = list(ckpt.get("val_cases") or [])
    if not recorded or cfg.get("max_cases") or sorted(c.name for c in val) != sorted(recorded):
        raise DataError(f"{path}: its recorded validation cases are not a split of this data, so the cases it "
                        "never trained on are unknown; --unseen needs the teacher's own data folder")
    unseen = {c.name for c in labelled} - {c.name for c in train} - set(recorded)
    if not unseen:
        raise DataError(f"{path} trained on every case outside its {len(recorded)} validation cases: none is "
                        "left unseen to paint (the hippocampus teacher's split left 24 out)")
    return unseen


def _real(dataset: str, data: str | None, teacher_path: str | None, max_train: int,
          downsample: int = 1, unseen: bool = False) -> tuple[list, list, Any]:
    """(train pool, validation cases, teacher) of a real dataset, down-sampled in-plane by ``downsample``; the
    committed teacher (and its validation cases) unless ``teacher_path`` is given. ``unseen``: the pool is the
    cases the teacher never saw (:func:`unseen_cases`), where its prediction is not its own training label."""
    from ..checkpoint import load_checkpoint
    from ..data.cases import load_msd_folder
    from ..data.downsample import downsample_case
    from ..data.io import DataError
    from ..teachers import load_teacher

    root = Path(data) if data else Path(__file__).resolve().parents[3].parent / "shared" / "data" / \
        DATA_DIRS[dataset]
    if not root.is_dir():
        raise DataError(f"{root}: {dataset} data not found; give --data FOLDER (MSD layout)")
    loaded, _ = load_msd_folder(root)
    cases = sorted((downsample_case(c, downsample) for c in loaded if c.label is not None), key=lambda c: c.name)
    default = TEACHERS.get(dataset)
    path = teacher_path or (str(default) if default is not None and default.exists() else None)
    if path is None:
        return cases, [], None
    ckpt = load_checkpoint(path) if path.endswith(".pt") else {}
    val_names = set(ckpt.get("val_cases") or [])
    seen = ckpt.get("spacing")
    if seen and cases and len(seen) <= cases[0].ndim and \
            not np.allclose(cases[0].spacing[-len(seen):], seen, rtol=0.05):
        print(f"note: {path} was trained at spacing {list(seen)}, the data is at "
              f"{list(cases[0].spacing[-len(seen):])} (--downsample {downsample})", flush=True)
    val = [c for c in cases if c.name in val_names] or cases[-max(1, len(cases) // 5):]
    names = {c.name for c in val}
    pool = unseen_cases(loaded, ckpt, path) if unseen else None
    train = [c for c in cases if c.name not in names and (pool is None or c.name in pool)][:max_train]
    return train, val, load_teacher(path)


def _settings(dims: int, quick: bool, patch: list[int] | None) -> dict[str, Any]:
    if quick:
        return dict(model="4,8,16", patch_size=patch or ([32, 32] if dims == 2 else [16, 32, 32]), batch_size=2,
                    num_threads=1, val_interval=10**6, checkpoint_interval=10**6, log_interval=50)
    return dict(patch_size=patch, batch_size=2, val_interval=10**6, checkpoint_interval=10**6, log_interval=50)


def _train(cfg: Any, cases: list, out: Path, teacher: Any = None, role: str = "student") -> Path:
    from ..distill.engine import Distiller
    from ..runner import drive

    d = Distiller(cfg, cases, val_cases=[], teacher=teacher, output_dir=out, role=role)
    drive(d)
    return d.last_path


def _evaluate(seg: Any, val: list) -> dict[str, Any]:
    from ..evaluation import evaluate_cases

    ev = evaluate_cases(seg, val, hd95=False)
    return {"dice": [round(float(v), 4) for v in ev["dice_per_class"]], "mean": round(float(ev["mean_dice"]), 4)}


def _paint(student: Any, teacher_labels: dict[str, np.ndarray], pool: list, painted: dict[str, np.ndarray],
           slices: int, n_cases: int, weight: float, tile: int,
           balance_classes: bool = False) -> tuple[dict[str, np.ndarray], int]:
    """The scripted painter: new painted masks (ground truth copied there) of the ``n_cases`` cases whose top
    ``slices`` regions not yet painted score highest; returns (masks by case name, regions painted)."""
    from ..review import rank_slices, region_slices

    picks = []
    for case in pool:
        probs = student.probabilities(case.image)
        regions = rank_slices(teacher_labels[case.name], probs.argmax(0), probs, uncertainty_weight=weight,
                              tile=tile, balance_classes=balance_classes)
        done = painted[case.name]
        fresh = [r for r in regions if not done[region_slices(r, done.shape)].all()][:slices]
        picks.append((sum(r.score for r in fresh), case, fresh))
    picks.sort(key=lambda p: -p[0])
    new, count = {}, 0
    for _, case, fresh in picks[:n_cases]:
        mask = np.zeros(case.image.shape, bool)
        for r in fresh:
            mask[region_slices(r, mask.shape)] = True
        new[case.name] = mask & ~painted[case.name]
        painted[case.name] |= mask
        count += len(fresh)
    return new, count


def _round_row(folder: Path, rnd: int, slices: int, voxels: int, ev: dict[str, Any], teacher_mean: float,
               t_start: float, **extra: Any) -> dict[str, Any]:
    """One round's row (plus ``extra`` fields), also appended to ``folder/rows.jsonl`` as it goes (a long run's
    finished rounds survive a stop)."""
    row = {"round": rnd, "slices_corrected": slices, "voxels_painted": voxels, "student_dice": ev["dice"],
           "student_mean_dice": ev["mean"], "teacher_mean_dice": teacher_mean,
           "seconds": round(time.perf_counter() - t_start, 1), **extra}
    with open(folder / "rows.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")
    return row


def _fine_tune(parent: Path, pool: list, corrections: list, tmodel: Any, iterations: int, out: Path,
               num_threads: int | None, seed: int | None = None, **settings: Any) -> Path:
    """One round: fine-tune ``parent`` on ``pool`` with ``corrections`` (None: the teacher's prediction) to the
    end (``seed``: the round's, else the parent's; ``settings``: other round settings); the round's ``last.pt``."""
    from ..corrections import start_round
    from ..runner import drive

    run = start_round(parent, pool, corrections, teacher=tmodel, iterations=iterations, out=out,
                      num_threads=num_threads, **({} if seed is None else {"seed": seed}), **settings)
    drive(run)
    return run.last_path


def _control_arm(start: Path, pool: list, val: list, tmodel: Any, rounds: int, iterations: int, root: Path,
                 first: dict[str, Any], num_threads: int | None, device: str, t_start: float,
                 seed: int | None = None, settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The control arm: ``rounds`` rounds from ``start`` (the round-0 student) with no corrections (an empty set:
    the teacher's prediction everywhere), evaluated on ``val`` after each; row 0 is the painted arm's ``first``.
    ``settings``: other round settings, as the painted arm's."""
    from ..segment import Segmenter

    rows = [{**first, "seconds": round(time.perf_counter() - t_start, 1)}]
    folder = root / "control"
    folder.mkdir(parents=True, exist_ok=True)
    parent = start
    for rnd in range(1, rounds + 1):
        parent = _fine_tune(parent, pool, [None] * len(pool), tmodel, iterations, folder / f"round-{rnd}",
                            num_threads, seed, **(settings or {}))
        ev = _evaluate(Segmenter.from_checkpoint(parent, device=device), val)
        rows.append(_round_row(folder, rnd, 0, 0, ev, first["teacher_mean_dice"], t_start))
        print(f"control round {rnd}: nothing painted; student Dice {ev['mean']:.4f} {ev['dice']}", flush=True)
    return rows


def _table(rows: list[dict[str, Any]], control: list[dict[str, Any]] | None) -> str:
    """The per-round table: slices, voxels painted, painted-arm mean, control mean (with a control arm), teacher."""
    head = f"{'round':>5} {'slices':>6} {'voxels':>10} {'student mean':>12}" + \
        (f" {'control mean':>12}" if control else "") + f" {'teacher mean':>12}  student per class"
    lines = [head]
    for k, r in enumerate(rows):
        c = f" {control[k]['student_mean_dice']:>12.4f}" if control and k < len(control) else \
            (f" {'':>12}" if control else "")
        lines.append(f"{r['round']:>5} {r['slices_corrected']:>6} {r['voxels_painted']:>10,} "
                     f"{r['student_mean_dice']:>12.4f}{c} {r['teacher_mean_dice']:>12.4f}  {r['student_dice']}")
    return "\n".join(lines)


def bench_corrections(dataset: str = "phantom2d", rounds: int = 3, slices: int = 5, cases: int = 3,
                      iterations: int | None = None, quick: bool = False, out: str | None = None,
                      data: str | None = None, teacher: str | None = None, student_iterations: int | None = None,
                      teacher_iterations: int | None = None, max_train: int = 40, student_model: str = "student",
                      method: str | None = None, uncertainty_weight: float = 0.5, device: str = "cpu",
                      patch: list[int] | None = None, downsample: int | None = None,
                      control: bool = False, unseen: bool = False, round_seed: int | None = None,
                      shift: str | None = None, balance_classes: bool = False, focus_fraction: float | None = None,
                      round0: str | None = None, head_supervision: float | None = None,
                      augment: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """Run the correction loop (module docstring) and return ``{"settings", "teacher", "rows", "targets"}``
    (with ``control``: also ``"control"``, the control arm's rows). ``downsample``: in-plane factor of the cases
    (default :data:`DOWNSAMPLE`'s, else 1). ``unseen``: paint cases the committed teacher never saw
    (:func:`unseen_cases`); each row also counts the painted voxels where the teacher was wrong. ``round_seed``:
    the rounds' seed in both arms (patch order; default the round-0 student's), for a second seed of the same loop.
    ``shift``: every image (pool and validation) as another scanner shows it (:mod:`.domain_shift`), labels kept.
    ``balance_classes``: the painter ranks regions with every class weighed alike (``rank_slices``).
    ``focus_fraction``: the rounds' share of patches centred on painted voxels (default: the config's,
    :func:`~napari_dmd.config.focus_share`).
    ``round0``: a round-0 student checkpoint to start from (one this bench distilled before with the same data and
    settings) instead of distilling a new one. ``head_supervision``: the rounds' (both arms) deep supervision at
    the student's scale heads (MFD/DMD; default 0, :data:`~napari_dmd.corrections.ROUND_HEAD_SUPERVISION`).
    ``augment``: the round-0 student (unless ``round0``) and every round of both arms train with augmentation on,
    flips off (left and right are classes): ``"intensity"`` (intensity changes and noise) or ``"spatial"`` (also
    zoom and rotation); ``"off"``: no augmentation at all (also where the parent ``round0`` had it); None: the
    dataset's recipe. ``seed``: the round-0 student's (default the config's, 0)."""
    if dataset not in DATASETS:
        raise ValueError(f"--dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    factor = DOWNSAMPLE.get(dataset, 1) if downsample is None else downsample
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"--downsample {factor!r}: give a whole number >= 1 (1: full resolution)")
    from ..config import TrainConfig
    from ..corrections import corrections_labels
    from ..evaluation import teacher_segmenter
    from ..segment import Segmenter
    from ..teachers import load_teacher
    from .domain_shift import check_shift, shift_cases

    check_shift(shift)  # before any data is read
    if round0 is not None and not Path(round0).is_file():
        raise ValueError(f"--round0 {round0}: no such checkpoint file (a round-0 student's last.pt)")
    TrainConfig(focus_fraction=focus_fraction, head_supervision=head_supervision).validate()  # before any data
    rounds_settings = {k: v for k, v in (("focus_fraction", focus_fraction), ("head_supervision", head_supervision))
                       if v is not None}
    if augment not in AUGMENTS:
        raise ValueError(f"--augment {augment!r}: choose one of {', '.join(a for a in AUGMENTS if a)}")
    augmentation = {} if augment is None else {"augment": augment != "off", "flips": False,
                                               "spatial_augment": augment == "spatial"}
    rounds_settings.update(augmentation)

    t_start = time.perf_counter()
    root = Path(out) if out else Path(tempfile.mkdtemp(prefix="bench-corrections-"))
    root.mkdir(parents=True, exist_ok=True)  # rows.jsonl goes there even when no run is trained (--round0)
    iterations = iterations or (10 if quick else 300)
    if dataset.startswith("phantom"):
        from ..data.downsample import downsample_case

        train, val, _ = _phantom(2 if dataset == "phantom2d" else 3, quick)
        train, val = [downsample_case(c, factor) for c in train], [downsample_case(c, factor) for c in val]
        tmodel = None
    else:
        train, val, tmodel = _real(dataset, data, teacher, max_train, factor, unseen)
        if not val:
            val, train = train[-max(1, len(train) // 5):], train[:-max(1, len(train) // 5)][:max_train]
    train, val = shift_cases(train, shift), shift_cases(val, shift)
    dims = train[0].ndim
    base = _settings(dims, quick, patch or (list(tmodel.patch_size) if tmodel is not None and tmodel.patch_size
                                            else None))
    base.update({**RECIPES.get(dataset, {}), **augmentation, **({} if seed is None else {"seed": seed})},
                device=device)
    print(f"corrections bench: {dataset}, {len(train)} training / {len(val)} validation cases, folder {root}",
          flush=True)
    if tmodel is None:  # a teacher trained here, with the labels
        t_iters = teacher_iterations or (40 if quick else 1500)
        cfg = TrainConfig(method="none", iterations=t_iters, **{**base, "model": base.get("model", "teacher")})
        tmodel = load_teacher(_train(cfg, train, root / "teacher", role="teacher"))
        print(f"teacher trained: {t_iters} iterations ({time.perf_counter() - t_start:.0f} s)", flush=True)
    unlabelled = [dataclasses.replace(c, label=None) for c in train]
    s_iters = student_iterations or (20 if quick else 600)
    cfg = TrainConfig(method=method or ("kd" if quick else "dmd"), iterations=s_iters,
                      **{**base, "model": base.get("model", student_model)})
    if round0:
        parent = start = Path(round0)
        print(f"round-0 student: {start} (given)", flush=True)
    else:
        parent = start = _train(cfg, unlabelled, root / "student", teacher=tmodel)
        print(f"student distilled without labels: {s_iters} iterations ({time.perf_counter() - t_start:.0f} s)",
              flush=True)
    tseg = teacher_segmenter(tmodel, fallback_patch=cfg.patch_size, device=device)
    teacher_ev = _evaluate(tseg, val)
    teacher_labels = {c.name: tseg(c.image) for c in train}
    gt = {c.name: c.label for c in train}
    painted = {c.name: np.zeros(c.image.shape, bool) for c in train}
    tile = 16 if quick else 32
    rows: list[dict[str, Any]] = []
    total_slices = total_voxels = teacher_wrong = 0
    for rnd in range(rounds + 1):
        seg = Segmenter.from_checkpoint(parent, device=device)
        ev = _evaluate(seg, val)
        rows.append(_round_row(root, rnd, total_slices, total_voxels, ev, teacher_ev["mean"], t_start,
                               voxels_painted_teacher_wrong=teacher_wrong))  # what painting adds over the teacher
        print(f"round {rnd}: {total_slices} slices ({total_voxels:,} voxels, {teacher_wrong:,} where the teacher was "
              f"wrong) corrected; student Dice "
              f"{ev['mean']:.4f} {ev['dice']}; teacher {teacher_ev['mean']:.4f} {teacher_ev['dice']}", flush=True)
        if rnd == rounds:
            break
        new, count = _paint(seg, teacher_labels, train, painted, slices, cases, uncertainty_weight, tile,
                            balance_classes)
        corr = [corrections_labels(gt[c.name], new[c.name]) if c.name in new else None for c in unlabelled]
        parent = _fine_tune(parent, unlabelled, corr, tmodel, iterations, root / f"round-{rnd + 1}",
                            base.get("num_threads"), round_seed, **rounds_settings)
        total_slices += count
        total_voxels += int(sum(int(m.sum()) for m in new.values()))
        teacher_wrong += int(sum(int((teacher_labels[n][m] != gt[n][m]).sum()) for n, m in new.items()))
    first, last = rows[0], rows[-1]
    unpainted = {k: v for k, v in rounds_settings.items() if k != "focus_fraction"}  # nothing to focus on
    control_rows = _control_arm(start, unlabelled, val, tmodel, rounds, iterations, root, first,
                                base.get("num_threads"), device, t_start, round_seed, unpainted) if control else None
    lost = [i for i, (s, t) in enumerate(zip(first["student_dice"], teacher_ev["dice"])) if t - s > LOST_GAP]
    targets = {"student_beats_teacher_mean": last["student_mean_dice"] > teacher_ev["mean"],
               "lost_classes_at_round_0": [i + 1 for i in lost],
               "lost_classes_recovered": [i + 1 for i in lost
                                          if teacher_ev["dice"][i] - last["student_dice"][i] <= RECOVERED_GAP]}
    if control_rows is not None:
        targets["student_beats_control_mean"] = last["student_mean_dice"] > control_rows[-1]["student_mean_dice"]
        targets["painted_minus_control_mean"] = round(last["student_mean_dice"] -
                                                      control_rows[-1]["student_mean_dice"], 4)
    settings = {"dataset": dataset, "rounds": rounds, "slices": slices, "cases": cases, "iterations": iterations,
                "student_iterations": s_iters, "train_cases": len(train), "val_cases": len(val),
                "uncertainty_weight": uncertainty_weight, "tile": tile if dims == 2 else None, "quick": quick,
                "folder": str(root), "student": cfg.model, "method": cfg.method, "downsample": factor,
                "augment": cfg.augment, "flips": cfg.flips, "patch": list(cfg.patch_size or []),
                "teacher_checkpoint": str(getattr(tmodel, "source", "") or "") or None,
                "class_names": (getattr(tmodel, "class_names", None) or [])[1:] or None,
                "control": control, "round0_checkpoint": str(start), "unseen": unseen, "round_seed": round_seed,
                "shift": shift, "balance_classes": balance_classes, "focus_fraction": focus_fraction,
                "head_supervision": head_supervision, "augment_setting": augment, "seed": seed,
                "train_case_names": [c.name for c in train]}
    print(_table(rows, control_rows), flush=True)
    print(f"targets: {targets}", flush=True)
    result = {"settings": settings, "teacher": teacher_ev, "rows": rows, "targets": targets}
    if control_rows is not None:
        result["control"] = control_rows
    return {**result, "wall_s": round(time.perf_counter() - t_start, 1)}
