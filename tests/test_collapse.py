"""The lost-class guard: detection, best.pt selection, the engine's warning event, the CLI line, and the
class-balanced target term checked against a formula written here independently."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.config import TrainConfig
from napari_dmd.data.cases import Case
from napari_dmd.distill import collapse, validation
from napari_dmd.distill.engine import Distiller
from napari_dmd.distill.events import Event
from napari_dmd.teachers import ModelTeacher

NAN = float("nan")
NAMES = ["background", "anterior", "posterior"]


# ------------------------------------------------------------------------------------------- detection
def test_lost_classes_uses_the_issue_thresholds():
    # teacher >= 0.70 and student < 0.50; 0.70 counts as found, 0.50 is not lost; NaN never lost
    assert collapse.lost_classes([0.49, 0.50, 0.10, NAN, 0.2], [0.70, 0.90, 0.69, 0.9, NAN]) == [0]
    assert collapse.lost_classes([0.0, 0.0], [0.8, 0.8], found_at=0.9) == []
    with pytest.raises(ValueError, match="differ in length"):
        collapse.lost_classes([0.1], [0.8, 0.8])


def test_warnings_over_a_run_name_each_collapse_once():
    teacher = [0.81, 0.82]
    run = [(100, [0.10, 0.05]), (300, [0.70, 0.45]), (400, [0.72, 0.30]), (500, [0.75, 0.71]), (600, [0.76, 0.20])]
    before: list[int] = []
    said = []
    for it, student in run:
        lost = collapse.lost_classes(student, teacher)
        new = collapse.newly_lost(lost, before)
        if it >= collapse.WARN_AFTER * 600:
            said += [collapse.lost_message(i, it, student, teacher, NAMES, teacher=True) for i in new]
            before = lost
    assert len(said) == 2  # at 300 (first time after the 25 % mark) and at 600 (lost again after recovering)
    assert said[0].startswith("class 'posterior' lost at iteration 300: validation Dice 0.45 < 0.50 (the teacher's")
    assert "iteration 600" in said[1] and "\n" not in said[1]
    assert collapse.class_name(1, None) == "class 2" and collapse.class_name(0, ["bg", ""]) == "class 1"
    assert collapse.label_reference([True, False])[0] == 1.0 and math.isnan(collapse.label_reference([False])[0])


def test_best_pt_never_prefers_a_student_that_lost_a_class():
    history = [(0, 0.60), (1, 0.80), (0, 0.58), (0, 0.65), (1, 0.90), (0, NAN)]
    best, chosen = None, []
    for i, (n_lost, mean) in enumerate(history):
        key = collapse.selection_key(n_lost, mean)
        if collapse.is_better(key, best):
            best, chosen = key, chosen + [i]
    assert chosen == [0, 3]  # 0.80 and 0.90 lost a class; 0.58 is lower; NaN is never best
    assert collapse.selection_key(2, 0.9) < collapse.selection_key(1, 0.1) < collapse.selection_key(1, 0.2)


# ------------------------------------------------------------------------------------------- the engine
class _Perfect(nn.Module):
    """A teacher that reads the class off the image (image = label value): Dice 1 on every class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-20.0 * (x - c) ** 2 for c in range(3)], dim=1)


def _cases(n: int = 4) -> list[Case]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        lab = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 14, size=2)
        lab[y:y + 10, x:x + 8] = 1
        lab[y + 12:y + 16, x:x + 6] = 2
        out.append(Case(image=lab.astype(np.float32), label=lab, spacing=(1.0, 1.0), affine=np.eye(4), name=f"c{k}"))
    return out


def _run(tmp_path, **kw) -> Distiller:
    settings = dict(method="kd", model="4,8", batch_size=2, patch_size=[16, 16], iterations=4, val_interval=2,
                    checkpoint_interval=100, num_threads=1, class_names=NAMES)
    cfg = TrainConfig(**{**settings, **kw})
    teacher = ModelTeacher(_Perfect(), 3, 2, normalization="none", class_names=NAMES)
    return Distiller(cfg, _cases(), val_cases=_cases(2), teacher=teacher, output_dir=tmp_path)


def test_engine_warns_at_once_naming_the_lost_class(tmp_path, monkeypatch):
    d = _run(tmp_path)

    def predict(image, **_):  # the student segments everything but the posterior class, which it has lost
        probs = torch.softmax(_Perfect()(torch.from_numpy(image)[None, None]), 1)[0].numpy()
        probs[2] = 0.0
        return probs

    monkeypatch.setattr(d, "predict", predict)
    events = list(d.run())
    kinds = [e.kind for e in events]
    warnings = [e for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].iteration == 2 and warnings[0].lost == ["posterior"]
    assert "class 'posterior' lost at iteration 2" in warnings[0].message
    assert kinds.index("warning") == kinds.index("validation") + 1  # right after the validation that found it
    val = [e for e in events if e.kind == "validation"]
    assert val[0].teacher_dice == pytest.approx([1.0, 1.0]) and val[0].dice[1] == 0.0 and val[0].dice[0] > 0.7
    assert val[0].lost == ["posterior"] and "lost: posterior" in val[0].message
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["lost"] for r in logged if r["kind"] == "warning"] == [["posterior"]]
    assert load_checkpoint(d.last_path)["history"][0]["lost"] == ["posterior"]


def test_engine_best_pt_skips_the_validation_that_lost_a_class(tmp_path, monkeypatch):
    d = _run(tmp_path, iterations=6)
    seq = iter([([0.60, 0.60], 0.60), ([0.99, 0.30], 0.645), ([0.62, 0.60], 0.61)])
    monkeypatch.setattr(validation, "mean_dice", lambda _d: next(seq))
    monkeypatch.setattr(validation, "reference_dice", lambda _d: [0.8, 0.8])
    events = list(d.run())
    val = [e for e in events if e.kind == "validation"]
    assert [e.path is not None for e in val] == [True, False, True]
    assert [e.lost for e in events if e.kind == "warning"] == [["posterior"]]
    assert events[-1].mean_dice == pytest.approx(0.61)
    assert load_checkpoint(d.best_path)["iteration"] == 6


def test_cli_prints_the_warning_on_one_line(capsys):
    from napari_dmd.cli.progress import ProgressPrinter

    class Run:
        total = 10

        class dist:  # noqa: N801 - stands in for the engine's DistInfo
            is_main = True

    msg = collapse.lost_message(1, 4, [0.9, 0.1], [0.8, 0.82], NAMES, teacher=True)
    ProgressPrinter(Run())(Event("warning", 4, 10, lost=["posterior"], message=msg))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"warning: {msg}"]
    assert lines[0].startswith("warning: class 'posterior' lost at iteration 4: validation Dice 0.10 < 0.50")


# ------------------------------------------------------------------------------- the loss, independently
def _tckd_balanced_reference(zs: np.ndarray, zt: np.ndarray, y: np.ndarray, T: float) -> float:
    """T² KL([p_t,y, 1-p_t,y] || [p_s,y, 1-p_s,y]) per pixel, averaged per target class, then over classes."""
    per_class: dict[int, list[float]] = {}
    n, c, h, w = zs.shape
    for i in range(n):
        for a in range(h):
            for b in range(w):
                k = int(y[i, a, b])
                if k == 255:
                    continue
                ps = np.exp(zs[i, :, a, b] / T) / np.exp(zs[i, :, a, b] / T).sum()
                pt = np.exp(zt[i, :, a, b] / T) / np.exp(zt[i, :, a, b] / T).sum()
                bs, bt = np.array([ps[k], 1 - ps[k]]), np.array([pt[k], 1 - pt[k]])
                per_class.setdefault(k, []).append(T * T * float((bt * np.log(bt / bs)).sum()))
    return float(np.mean([np.mean(v) for v in per_class.values()]))


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_class_balanced_tckd_matches_an_independent_formula(T):
    from napari_dmd.distill.losses import tckd_loss

    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64) * 3, torch.randn(2, 3, 5, 6, generator=g,
                                                                                         dtype=torch.float64) * 3
    y = torch.zeros(2, 5, 6, dtype=torch.long)
    y[0, 1:3, 1:3] = 1
    y[1, 4, 5] = 2  # one pixel of class 2: it weighs as much as all the background
    y[1, 0, 0] = 255
    got = float(tckd_loss(zs, zt, y, T, balance=True))
    want = _tckd_balanced_reference(zs.numpy(), zt.numpy(), y.numpy(), T)
    assert got == pytest.approx(want, rel=1e-9)
    assert float(tckd_loss(zs, zt, y, T)) != pytest.approx(want, rel=1e-3)  # the pixel mean differs


def _pixel_terms(zs: np.ndarray, zt: np.ndarray, y: np.ndarray, T: float, kind: str) -> list[float]:
    """Per labelled pixel, written out: T² KL(p_t||p_s) ("kd") or T² KL of the binary [p_y, 1-p_y] ("tckd")."""
    out = []
    for i, a, b in np.ndindex(y.shape):
        k = int(y[i, a, b])
        if k == 255:
            continue
        ps = np.exp(zs[i, :, a, b] / T) / np.exp(zs[i, :, a, b] / T).sum()
        pt = np.exp(zt[i, :, a, b] / T) / np.exp(zt[i, :, a, b] / T).sum()
        if kind == "tckd":
            ps, pt = np.array([ps[k], 1 - ps[k]]), np.array([pt[k], 1 - pt[k]])
        out.append(T * T * float((pt * np.log(pt / ps)).sum()))
    return out


@pytest.mark.parametrize(("method", "expected"), [("kd", (True, None)), ("dmd", (True, 1.0))])
def test_the_defaults_balance_the_target_terms_and_the_engine_uses_them(tmp_path, monkeypatch, method, expected):
    from napari_dmd.distill import engine as engine_mod

    cfg = TrainConfig()
    assert cfg.target_balance is None and cfg.target_temperature is None and cfg.temperature == 4.0
    seen = []
    real = engine_mod.distill_loss
    monkeypatch.setattr(engine_mod, "distill_loss", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    d = _run(tmp_path, iterations=1, val_interval=100, method=method)
    d.run_to_end()
    # every method class-balanced; KD (and DKD) at T, DMD's TCKD at T = 1 (docs/method.md)
    assert (seen[0]["target_balance"], seen[0]["target_T"], seen[0]["T"]) == (*expected, 4.0)


@pytest.mark.parametrize(("method", "given", "expected"), [
    ("dmd", (None, None), (True, 1.0)), ("kd", (None, None), (True, None)), ("dkd", (None, None), (True, None)),
    ("dmd", (True, 4.0), (True, 4.0)), ("kd", (False, 1.0), (False, 1.0))])
def test_target_settings_per_method_and_explicit_values_win(method, given, expected):
    from napari_dmd.distill.methods import target_settings

    assert target_settings(method, *given) == expected


def _mean(values: list[float], y: np.ndarray, balance: bool) -> float:
    """The pixel mean, or the mean over the classes present of each class's pixel mean."""
    if not balance:
        return float(np.mean(values))
    labels = [int(k) for k in y.reshape(-1) if k != 255]  # the order of np.ndindex over y
    per = {k: [v for v, lab in zip(values, labels) if lab == k] for k in set(labels)}
    return float(np.mean([np.mean(v) for v in per.values()]))


@pytest.mark.parametrize("method", ["kd", "dkd", "dmd"])
@pytest.mark.parametrize(("target_T", "balance"), [(None, True), (1.0, False), (None, False)])
def test_target_terms_match_the_formula(method, target_T, balance):
    from napari_dmd.distill.losses import task_loss
    from napari_dmd.distill.methods import distill_loss

    g = torch.Generator().manual_seed(5)
    zs, zt = (torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64) * 4 for _ in range(2))
    y = torch.zeros(2, 4, 5, dtype=torch.long)
    y[0, 1:3, 1:4] = 1
    y[1, 2, 2] = 2  # one pixel of class 2
    y[0, 0, 0] = 255
    # DKD with beta 0 and DMD with lambda_feat 0 leave their target term alone; KD is all target term
    total, _ = distill_loss(method, zs, [zs], zt, y, T=4.0, target_T=target_T, target_balance=balance, alpha=1.0,
                            beta=0.0, lambda_logit=1.0, lambda_feat=0.0, kd_weight=1.0)
    kind = "kd" if method == "kd" else "tckd"
    want = _mean(_pixel_terms(zs.numpy(), zt.numpy(), y.numpy(), target_T or 4.0, kind), y.numpy(), balance)
    other = _mean(_pixel_terms(zs.numpy(), zt.numpy(), y.numpy(), 4.0, kind), y.numpy(), not balance)
    assert float(total - task_loss(zs, y)) == pytest.approx(want, rel=1e-9) and abs(want - other) > 1e-3
