"""Tests for napari_dmd.distill.losses against independent float64 per-pixel Python references."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from napari_dmd.distill import losses
from napari_dmd.distill.losses import (
    deep_supervision_loss,
    dkd_loss,
    dmd_loss,
    kd_loss,
    mfd_loss,
    nckd_loss,
    soft_dice_loss,
    task_loss,
    tckd_loss,
    upsample_like,
)
from napari_dmd.distill.methods import distill_loss

IGN = 255


# ------------------------------------------------------------------ independent reference (plain math)
def ref_log_softmax(v: list[float], T: float = 1.0) -> list[float]:
    xs = [x / T for x in v]
    m = max(xs)
    s = sum(math.exp(x - m) for x in xs)
    return [x - m - math.log(s) for x in xs]


def ref_softmax(v: list[float], T: float = 1.0) -> list[float]:
    return [math.exp(x) for x in ref_log_softmax(v, T)]


def ref_kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def ref_kd_px(zs, zt, T):
    return T * T * ref_kl(ref_softmax(zt, T), ref_softmax(zs, T))


def ref_tckd_px(zs, zt, y, T):
    ps, pt = ref_softmax(zs, T), ref_softmax(zt, T)
    # 1 - p_y as the sum of the other probabilities: exact in float64 even when p_y rounds to 1
    rest_s = sum(p for c, p in enumerate(ps) if c != y)
    rest_t = sum(p for c, p in enumerate(pt) if c != y)
    return T * T * ref_kl([pt[y], rest_t], [ps[y], rest_s])


def ref_nckd_px(zs, zt, y, T):
    rs = [v for c, v in enumerate(zs) if c != y]
    rt = [v for c, v in enumerate(zt) if c != y]
    return T * T * ref_kl(ref_softmax(rt, T), ref_softmax(rs, T))


def pixels(logits: torch.Tensor) -> list[list[float]]:
    """(N, C, *spatial) -> list of per-pixel logit vectors (row-major over N, *spatial)."""
    c = logits.shape[1]
    return logits.detach().double().movedim(1, -1).reshape(-1, c).tolist()


def flat(t: torch.Tensor) -> list:
    return t.reshape(-1).tolist()


def ref_mean(values, keep):
    vals = [v for v, k in zip(values, keep) if k]
    return sum(vals) / max(len(vals), 1)


def ref_pixel_loss(fn, student, teacher, target, T):
    zs, zt, ys = pixels(student), pixels(teacher), flat(target)
    vals = [fn(a, b, y, T) if y != IGN else 0.0 for a, b, y in zip(zs, zt, ys)]
    return ref_mean(vals, [y != IGN for y in ys])


def ref_kd(student, teacher, target, T):
    zs, zt = pixels(student), pixels(teacher)
    keep = [True] * len(zs) if target is None else [y != IGN for y in flat(target)]
    return ref_mean([ref_kd_px(a, b, T) for a, b in zip(zs, zt)], keep)


def ref_task(logits, target, pixel_weight=None, ce_w=1.0, dice_w=1.0, eps=1e-5):
    zs, ys = pixels(logits), flat(target)
    ws = flat(pixel_weight) if pixel_weight is not None else [1.0] * len(ys)
    C = logits.shape[1]
    ce, inter, psum, gsum = [], [0.0] * C, [0.0] * C, [0.0] * C
    for z, y, w in zip(zs, ys, ws):
        if y == IGN:
            continue
        lp = ref_log_softmax(z)
        ce.append(-lp[y] * w)
        p = [math.exp(v) for v in lp]
        for c in range(1, C):
            g = 1.0 if y == c else 0.0
            inter[c] += p[c] * g
            psum[c] += p[c]
            gsum[c] += g
    ce_mean = sum(ce) / max(len(ce), 1)
    dice = [(2 * inter[c] + eps) / (psum[c] + gsum[c] + eps) for c in range(1, C)]
    return ce_w * ce_mean + dice_w * (1.0 - sum(dice) / len(dice))


def ref_axis(n_in: int, n_out: int):
    """Linear interpolation taps along one axis, align_corners=False (half-pixel centres, edge clamp)."""
    taps = []
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        taps.append(((i0, 1.0 - frac), (i1, frac)))
    return taps


def ref_upsample(x: torch.Tensor, size) -> torch.Tensor:
    data = x.detach().double().tolist()
    n, c = x.shape[:2]
    axes = [ref_axis(a, b) for a, b in zip(x.shape[2:], size)]
    out = torch.zeros((n, c, *size), dtype=torch.float64)
    for b in range(n):
        for ch in range(c):
            for idx in itertools.product(*[range(s) for s in size]):
                val = 0.0
                for corner in itertools.product(*[axes[a][i] for a, i in enumerate(idx)]):
                    weight = math.prod(w for _, w in corner)
                    v = data[b][ch]
                    for j, _ in corner:
                        v = v[j]
                    val += weight * v
                out[(b, ch, *idx)] = val
    return out


# ------------------------------------------------------------------------------------------ fixtures
SPATIAL = {"2d": (6, 5), "3d": (4, 4, 3)}
SCALES = {"2d": [(2, 2), (3, 3), (6, 5)], "3d": [(2, 2, 2), (4, 4, 3)]}


def make(dim: str, C: int = 4, N: int = 2, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    sp = SPATIAL[dim]
    student = torch.randn(N, C, *sp, generator=g, dtype=torch.float64) * 2.0
    teacher = torch.randn(N, C, *sp, generator=g, dtype=torch.float64) * 2.0
    target = torch.randint(0, C, (N, *sp), generator=g)
    ignore = torch.rand((N, *sp), generator=g) < 0.2
    ignore.view(-1)[0] = True
    target[ignore] = IGN
    scales = [torch.randn(N, C, *s, generator=g, dtype=torch.float64) * 2.0 for s in SCALES[dim]]
    return student.to(dtype), teacher.to(dtype), target, [s.to(dtype) for s in scales]


def close(a, b, tol=1e-9):
    a = float(a)
    assert math.isfinite(a)
    assert a == pytest.approx(b, rel=tol, abs=tol), (a, b)


# -------------------------------------------------------------------------------- values vs reference
@pytest.mark.parametrize(("small", "size"), [((2, 3), (4, 6)), ((2, 3), (8, 3)), ((3, 2), (9, 8)),
                                             ((2, 2, 3), (4, 8, 6)), ((1, 2, 2), (2, 2, 8))])
def test_upsample_like_by_whole_multiples_matches_reference(small, size):
    # sizes that are whole multiples per axis take the matrix-product path (models.linear_upsample)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, *small, generator=g, dtype=torch.float64)
    out = upsample_like(x, size)
    assert out.shape == (2, 3, *size)
    assert torch.allclose(out, ref_upsample(x, size), atol=1e-12)
    xg = x.clone().requires_grad_()
    (upsample_like(xg, size) * torch.arange(out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
    xr = x.clone().requires_grad_()
    mode = "trilinear" if len(size) == 3 else "bilinear"
    (torch.nn.functional.interpolate(xr, size=size, mode=mode, align_corners=False)
     * torch.arange(out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
    assert torch.allclose(xg.grad, xr.grad, atol=1e-9)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_upsample_like_matches_reference(dim):
    _, teacher, _, scales = make(dim)
    size = teacher.shape[2:]
    for s in scales:
        out = upsample_like(s, size)
        assert out.shape == teacher.shape
        assert torch.allclose(out, ref_upsample(s, size), atol=1e-12)
    same = scales[-1]
    assert upsample_like(same, same.shape[2:]) is same


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_matches_reference(dim, T):
    s, t, y, _ = make(dim)
    close(kd_loss(s, t, T, valid=y != IGN), ref_kd(s, t, y, T))
    close(kd_loss(s, t, T), ref_kd(s, t, None, T))


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_tckd_nckd_dkd_match_reference(dim, T):
    s, t, y, _ = make(dim, C=5)
    tc = ref_pixel_loss(ref_tckd_px, s, t, y, T)
    nc = ref_pixel_loss(ref_nckd_px, s, t, y, T)
    close(tckd_loss(s, t, y, T), tc)
    close(nckd_loss(s, t, y, T), nc)
    close(dkd_loss(s, t, y, 0.5, 3.0, T), 0.5 * tc + 3.0 * nc)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_task_loss_matches_reference(dim):
    s, _, y, _ = make(dim)
    w = torch.rand(y.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    close(task_loss(s, y), ref_task(s, y))
    close(task_loss(s, y, pixel_weight=w), ref_task(s, y, pixel_weight=w))
    close(task_loss(s, y, ce_weight=0.3, dice_weight=2.0), ref_task(s, y, ce_w=0.3, dice_w=2.0))
    close(soft_dice_loss(s, y), ref_task(s, y, ce_w=0.0))
    close(task_loss(s, y, pixel_weight=torch.ones_like(w)), float(task_loss(s, y)))


def ref_scale_triples(scales, t, y, dim, resample):
    """(student, teacher, target) of every scale on one grid: the student upsampled to the teacher's grid
    ("up"), or the teacher and labels pooled down to the student's ("pool")."""
    if resample == "up":
        return [(ref_upsample(z, t.shape[2:]), t, y) for z in scales]
    return [(z, *ref_pool(t, y, z.shape[2:], st)) for z, st in zip(scales, POOL_STRIDES[dim])]


@pytest.mark.parametrize("dim", ["2d", "3d"])
@pytest.mark.parametrize("part", ["kd", "tckd", "nckd"])
@pytest.mark.parametrize("resample", ["up", "pool"])
def test_mfd_matches_reference(dim, part, resample):
    _, t, y, scales = make(dim)
    T = 2.0
    ws = [0.5 + k for k in range(len(scales))]
    triples = ref_scale_triples(scales, t, y, dim, resample)
    px = {"tckd": ref_tckd_px, "nckd": ref_nckd_px}
    if part == "kd":
        per = [ref_kd(zs, tk, yk, T) for zs, tk, yk in triples]
        close(mfd_loss(scales, t, None, T, part="kd", resample=resample),
              sum(ref_kd(zs, tk, None, T) for zs, tk, _ in triples))
    else:
        per = [ref_pixel_loss(px[part], zs, tk, yk, T) for zs, tk, yk in triples]
    close(mfd_loss(scales, t, y, T, part=part, weights=ws, resample=resample), sum(w * p for w, p in zip(ws, per)))
    close(mfd_loss(scales, t, y, T, part=part, resample=resample), sum(per))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_deep_supervision_matches_reference(dim):
    _, _, y, scales = make(dim)
    ws = [2.0, 0.5, 1.0][: len(scales)]
    per = [ref_task(ref_upsample(z, y.shape[1:]), y) for z in scales]
    close(deep_supervision_loss(scales, y, weights=ws), sum(w * p for w, p in zip(ws, per)))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_dmd_matches_reference(dim):
    s, t, y, scales = make(dim)
    T, ll, lf = 3.0, 0.7, 0.4
    ws = [1.0 + 0.5 * k for k in range(len(scales))]
    pw = torch.rand(y.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    task = ref_task(s, y, pixel_weight=pw)
    tc = ref_pixel_loss(ref_tckd_px, s, t, y, T)
    ups = [ref_upsample(z, t.shape[2:]) for z in scales]
    nc = sum(w * ref_pixel_loss(ref_nckd_px, u, t, y, T) for w, u in zip(ws, ups))
    total, parts = dmd_loss(s, scales, t, y, T, ll, lf, weights=ws, pixel_weight=pw)
    assert set(parts) == {"task", "tckd", "nckd", "total"}
    close(parts["task"], task)
    close(parts["tckd"], tc)
    close(parts["nckd"], nc)
    close(total, task + ll * tc + lf * nc)
    close(parts["total"], task + ll * tc + lf * nc)
    assert all(not v.requires_grad for v in parts.values())


# ------------------------------------------------------------------------------------- identities
@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("C", [3, 5])
def test_per_pixel_kl_decomposition(T, C):
    g = torch.Generator().manual_seed(11)
    s = torch.randn(3, C, 2, 2, generator=g, dtype=torch.float64) * 3
    t = torch.randn(3, C, 2, 2, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, C, (3, 2, 2), generator=g)
    checked = 0
    for n, h, w in itertools.product(range(3), range(2), range(2)):
        sp = s[n : n + 1, :, h : h + 1, w : w + 1]
        tp = t[n : n + 1, :, h : h + 1, w : w + 1]
        yp = y[n : n + 1, h : h + 1, w : w + 1]
        pt_y = float(torch.softmax(tp[0, :, 0, 0] / T, dim=0)[yp.item()])
        kd = float(kd_loss(sp, tp, T))
        decomposed = float(tckd_loss(sp, tp, yp, T)) + (1 - pt_y) * float(nckd_loss(sp, tp, yp, T))
        assert kd == pytest.approx(decomposed, rel=1e-10, abs=1e-12)
        assert kd > 1e-6  # non-trivial pixel
        checked += 1
    assert checked == 12


# -------------------------------------------------------------------------------------- gradients
def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (1, 3, 3), generator=g)
    y[0, 0, 0] = IGN
    z1 = torch.randn(1, 4, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: kd_loss(x, t, 2.0, valid=y != IGN), (s,))
    assert torch.autograd.gradcheck(lambda x: tckd_loss(x, t, y, 2.0), (s,))
    assert torch.autograd.gradcheck(lambda x: nckd_loss(x, t, y, 2.0), (s,))
    assert torch.autograd.gradcheck(lambda x, a, b: dmd_loss(x, [a, b], t, y, 2.0)[0], (s, z1, z2))


def _all_losses(s, t, y, scales, T):
    return {
        "task": task_loss(s, y),
        "kd": kd_loss(s, t, T, valid=y != IGN),
        "tckd": tckd_loss(s, t, y, T),
        "nckd": nckd_loss(s, t, y, T),
        "dkd": dkd_loss(s, t, y, T=T),
        "mfd": mfd_loss(scales, t, y, T, part="nckd") + mfd_loss(scales, t, y, T, part="tckd"),
        "dmd": dmd_loss(s, scales, t, y, T)[0],
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1.0, 4.0])
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_confident_logits_finite_and_correct(dtype, T, dim):
    g = torch.Generator().manual_seed(7)
    C, sp = 4, SPATIAL[dim]

    def confident(shape):
        return (150.0 * torch.randn(shape, generator=g).sign() + torch.randn(shape, generator=g)).to(dtype)

    s = confident((2, C, *sp)).requires_grad_(True)
    t = confident((2, C, *sp))
    y = torch.randint(0, C, (2, *sp), generator=g)
    # Worst cases for the masking: the target is the teacher's confident class, or the student's.
    y[0] = t[0].float().argmax(0)
    y[1] = s[1].detach().float().argmax(0)
    y.view(-1)[1] = IGN
    scales = [confident((2, C, *s_)).requires_grad_(True) for s_ in SCALES[dim][:2]]
    values = _all_losses(s, t, y, scales, T)
    for name, v in values.items():
        assert v.dtype == torch.float32, name
        assert torch.isfinite(v), name
        s.grad = None
        for z in scales:
            z.grad = None
        v.backward()
        grads = [s.grad] + [z.grad for z in scales]
        for gr in grads:
            if gr is not None:
                assert torch.isfinite(gr.float()).all(), name
    # values agree with the float64 reference computed on the same (quantized) inputs
    s64, t64 = s.detach().double(), t.double()
    close(tckd_loss(s, t, y, T), ref_pixel_loss(ref_tckd_px, s64, t64, y, T), tol=1e-4)
    close(nckd_loss(s, t, y, T), ref_pixel_loss(ref_nckd_px, s64, t64, y, T), tol=1e-4)
    close(kd_loss(s, t, T, valid=y != IGN), ref_kd(s64, t64, y, T), tol=1e-4)
    close(task_loss(s, y), ref_task(s64, y), tol=1e-4)


def test_confident_student_equals_teacher_gives_zero():
    t = torch.tensor([[150.0, -150.0, -150.0, -150.0]]).view(1, 4, 1, 1).repeat(1, 1, 2, 2)
    s = t.clone().requires_grad_(True)
    y = torch.zeros(1, 2, 2, dtype=torch.long)
    for fn in (tckd_loss, nckd_loss):
        v = fn(s, t, y, 1.0)
        v.backward()
        assert float(v) == pytest.approx(0.0, abs=1e-6)
        assert torch.isfinite(s.grad).all()
        s.grad = None


# ------------------------------------------------------------------------------------------ binary
def test_binary_nckd_is_zero_and_warns_once(monkeypatch):
    monkeypatch.setattr(losses, "_NCKD_BINARY_WARNED", False)
    s, t, y, scales = make("2d", C=2)
    s.requires_grad_(True)
    with pytest.warns(UserWarning, match=r"NCKD.*2 classes"):
        v = nckd_loss(s, t, y, 4.0)
    assert float(v) == 0.0
    v.backward()
    assert s.grad is not None and torch.equal(s.grad, torch.zeros_like(s))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v2 = nckd_loss(s, t, y, 4.0)
        total, parts = dmd_loss(s, scales, t, y, 4.0, 1.0, 2.0)
    assert float(v2) == 0.0
    assert torch.isfinite(total) and float(parts["nckd"]) == 0.0
    close(total, float(task_loss(s, y)) + float(tckd_loss(s, t, y, 4.0)))
    close(dkd_loss(s, t, y, 1.5, 8.0), 1.5 * float(tckd_loss(s, t, y)))
    # binary TCKD is the full KD
    close(tckd_loss(s, t, y, 2.0), float(kd_loss(s, t, 2.0, valid=y != IGN)))


# ------------------------------------------------------------------------------------ ignore_index
def test_ignored_pixels_do_not_change_losses():
    s, t, y, scales = make("2d")
    ign = (y == IGN).unsqueeze(1).expand_as(s)
    g = torch.Generator().manual_seed(9)
    s2 = torch.where(ign, s + 80 * torch.randn(s.shape, generator=g, dtype=s.dtype), s)
    t2 = torch.where(ign, t - 80 * torch.randn(t.shape, generator=g, dtype=t.dtype), t)
    base, changed = _all_losses(s, t, y, scales, 2.0), _all_losses(s2, t2, y, scales, 2.0)
    for name in base:
        assert float(base[name]) == pytest.approx(float(changed[name]), rel=1e-12), name
    # and the gradient at ignored pixels is exactly zero
    for name in ("task", "kd", "tckd", "nckd", "dkd", "dmd"):
        x = s.clone().requires_grad_(True)
        _all_losses(x, t, y, scales, 2.0)[name].backward()
        assert torch.count_nonzero(x.grad[ign]) == 0, name
        assert torch.count_nonzero(x.grad[~ign]) > 0, name


def test_all_ignored_gives_zero():
    s, t, y, scales = make("2d")
    y = torch.full_like(y, IGN)
    for name, v in _all_losses(s.requires_grad_(True), t, y, scales, 4.0).items():
        assert float(v) == 0.0, name


def test_teacher_is_detached():
    s, t, y, scales = make("3d")
    s.requires_grad_(True)
    t.requires_grad_(True)
    total = sum(_all_losses(s, t, y, scales, 4.0).values()) + mfd_loss(scales, t, y, part="kd")
    total.backward()
    assert t.grad is None
    assert s.grad is not None


def test_bad_shapes_raise():
    s, t, y, scales = make("2d")
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(s, t[:, :, :-1])
    with pytest.raises(ValueError, match="target"):
        tckd_loss(s, t, y[:, :-1])
    with pytest.raises(ValueError, match="part"):
        mfd_loss(scales, t, y, part="dice")
    with pytest.raises(ValueError, match="target"):
        mfd_loss(scales, t, None, part="nckd")
    with pytest.raises(ValueError, match="weights"):
        mfd_loss(scales, t, y, weights=[1.0])


# -------------------------------------------------------------------------------------- dispatcher
HP = dict(T=3.0, alpha=0.5, beta=2.0, lambda_logit=0.7, lambda_feat=0.4)
PARTS = {
    "none": set(),
    "ds": {"ds"},
    "kd": {"kd"},
    "dkd": {"tckd", "nckd"},
    "mfd": {"mfd"},
    "dmd": {"tckd", "nckd"},
}


def _expected_extra(method, s, scales, t, y):
    T = HP["T"]
    if method == "none":
        return 0.0
    if method == "ds":
        return 1.5 * float(deep_supervision_loss(scales, y))
    if method == "kd":
        return 0.25 * float(kd_loss(s, t, T, valid=y != IGN))
    if method == "dkd":
        return float(dkd_loss(s, t, y, HP["alpha"], HP["beta"], T))
    if method == "mfd":
        return HP["lambda_feat"] * float(mfd_loss(scales, t, y, T, part="kd"))
    _, parts = dmd_loss(s, scales, t, y, T, HP["lambda_logit"], HP["lambda_feat"])
    return float(parts["total"] - parts["task"])


@pytest.mark.parametrize("method", list(PARTS))
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_distill_loss_dispatcher(method, dim):
    s, t, y, scales = make(dim)
    pw = torch.rand(y.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    kw = dict(HP, kd_weight=0.25, ds_weight=1.5, pixel_weight=pw)
    task = float(task_loss(s, y, pixel_weight=pw))
    extra = _expected_extra(method, s, scales, t, y)
    if method != "none":
        assert extra > 1e-6
    x = s.clone().requires_grad_(True)
    total, parts = distill_loss(method, x, scales, t, y, **kw)
    assert set(parts) == {"task", "total"} | PARTS[method]
    assert all(not v.requires_grad and v.is_floating_point() for v in parts.values())
    close(parts["task"], task)
    close(total, task + extra)
    close(parts["total"], task + extra)
    close(distill_loss(method, s, scales, t, y, **kw, distill_scale=0.5)[0], task + 0.5 * extra)
    # warm-up scale 0: the task loss only (value and gradient)
    x0 = s.clone().requires_grad_(True)
    total0, parts0 = distill_loss(method, x0, scales, t, y, **kw, distill_scale=0.0)
    close(total0, task)
    assert set(parts0) == set(parts)
    total0.backward()
    xt = s.clone().requires_grad_(True)
    task_loss(xt, y, pixel_weight=pw).backward()
    assert torch.allclose(x0.grad, xt.grad, atol=1e-15)


def test_distill_loss_rejects_bad_input():
    s, t, y, scales = make("2d")
    with pytest.raises(ValueError, match="unknown distillation method 'fitnet'"):
        distill_loss("fitnet", s, scales, t, y, **HP)
    with pytest.raises(ValueError, match="teacher"):
        distill_loss("dmd", s, scales, None, y, **HP)
    with pytest.raises(ValueError, match="student_scales"):
        distill_loss("mfd", s, [], t, y, **HP)
    with pytest.raises(ValueError, match="distill_scale"):
        distill_loss("kd", s, scales, t, y, **HP, distill_scale=1.5)
    total, parts = distill_loss("none", s, None, None, y, **HP)
    close(total, float(task_loss(s, y)))


@pytest.mark.parametrize("method", ["mfd", "dmd", "dkd", "ds"])
def test_head_supervision_adds_deep_supervision_to_mfd_and_dmd_only(method):
    s, t, y, scales = make("2d")
    kw = dict(HP, kd_weight=0.25, ds_weight=1.5)
    base, parts0 = distill_loss(method, s, scales, t, y, **kw)
    total, parts = distill_loss(method, s, scales, t, y, **kw, head_supervision=0.8, distill_scale=0.5)
    if method in ("mfd", "dmd"):
        ds = sum(ref_task(ref_upsample(z, y.shape[1:]), y) for z in scales)  # independent reference
        close(parts["ds"], ds)
        close(total, float(parts0["task"]) + 0.5 * (float(base - parts0["task"]) + 0.8 * ds))
    else:  # the option belongs to the multi-scale methods; elsewhere nothing changes
        assert set(parts) == set(parts0)
        close(total, float(parts0["task"]) + 0.5 * float(base - parts0["task"]))


# ------------------------------------------------------------------------------ resample="pool"
def ref_pool(teacher: torch.Tensor, target: torch.Tensor | None, size, strides):
    """Block mean of the logits and majority vote of the labels (ignored pixels vote; ties -> lower id),
    written with explicit loops over cells; the last block of an axis may be partial."""
    n, c = teacher.shape[:2]
    full = teacher.shape[2:]
    pooled = torch.zeros((n, c, *size), dtype=torch.float64)
    labels = torch.zeros((n, *size), dtype=torch.long)
    for cell in itertools.product(*[range(m) for m in size]):
        block = tuple(slice(i * s, min((i + 1) * s, f)) for i, s, f in zip(cell, strides, full))
        for b in range(n):
            pooled[(b, slice(None), *cell)] = teacher[(b, slice(None), *block)].double().reshape(c, -1).mean(1)
            if target is not None:
                ids = target[(b, *block)].reshape(-1).tolist()
                votes = [sum(1 for v in ids if v == k) for k in [*range(c), IGN]]
                winner = max(range(c + 1), key=lambda k: (votes[k], -k))
                labels[(b, *cell)] = IGN if winner == c else winner
    return pooled, (labels if target is not None else None)


POOL_STRIDES = {"2d": [(4, 4), (2, 2), (1, 1)], "3d": [(2, 2, 2), (1, 1, 1)]}


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_pool_to_scale_matches_reference(dim):
    _, t, y, scales = make(dim)
    for z, st in zip(scales, POOL_STRIDES[dim]):
        got_t, got_y = losses.pool_to_scale(t, y, z.shape[2:], ignore_index=IGN)
        ref_t, ref_y = ref_pool(t, y, z.shape[2:], st)
        assert torch.allclose(got_t, ref_t, atol=1e-12)
        assert torch.equal(got_y, ref_y)


def test_pool_to_scale_hand_computed_case():
    t = torch.tensor([[[[0.0, 2.0, 4.0], [6.0, 8.0, 10.0], [1.0, 1.0, 7.0]]]]).repeat(1, 3, 1, 1)
    y = torch.tensor([[[1, 1, 2], [0, 1, 255], [2, 2, 255]]])
    pooled, labels = losses.pool_to_scale(t, y, (2, 2))
    # blocks: rows 0-1 x cols 0-1, rows 0-1 x col 2, row 2 x cols 0-1, row 2 x col 2
    assert pooled[0, 0].tolist() == [[4.0, 7.0], [1.0, 7.0]]
    assert labels[0].tolist() == [[1, 2], [2, IGN]]  # {1,1,0,1} -> 1; {2,255} tie -> 2; {2,2} -> 2; {255}


def test_dmd_pool_differs_from_up_only_in_the_multiscale_term():
    s, t, y, scales = make("2d", C=5)
    up, pu = dmd_loss(s, scales, t, y, 4.0, 1.0, 0.5)
    pool, pp = dmd_loss(s, scales, t, y, 4.0, 1.0, 0.5, resample="pool")
    close(pp["task"], float(pu["task"]))
    close(pp["tckd"], float(pu["tckd"]))
    nc = sum(ref_pixel_loss(ref_nckd_px, z, *ref_pool(t, y, z.shape[2:], st), 4.0)
             for z, st in zip(scales, POOL_STRIDES["2d"]))
    close(pp["nckd"], nc)
    assert abs(float(pp["nckd"]) - float(pu["nckd"])) > 1e-6
    with pytest.raises(ValueError, match="resample"):
        mfd_loss(scales, t, y, part="nckd", resample="nearest")


def test_nckd_gives_the_target_logit_no_gradient_tckd_does():
    """Why DMD's scale heads never learn the right class from distillation (docs/method.md): NCKD is computed over
    the non-target classes only, so its gradient on the student's target-class logit is exactly zero; TCKD's is not."""
    torch.manual_seed(0)
    s = torch.randn(2, 4, 6, 6, requires_grad=True)
    t = torch.randn(2, 4, 6, 6)
    y = torch.randint(0, 4, (2, 6, 6))
    (g_n,) = torch.autograd.grad(nckd_loss(s, t, y, T=1.0), s)
    (g_t,) = torch.autograd.grad(tckd_loss(s, t, y, T=1.0), s)
    at_target = torch.nn.functional.one_hot(y, 4).permute(0, 3, 1, 2).bool()
    assert g_n[at_target].abs().max() == 0
    assert g_n[~at_target].abs().max() > 1e-4  # the other logits do get a gradient
    assert g_t[at_target].abs().min() > 0
