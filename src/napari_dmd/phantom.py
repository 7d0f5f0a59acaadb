"""Synthetic multi-class phantom (2D or 3D): the project's own sample data and demo dataset.

An abdomen-like scene, axes ``(z, y, x)`` or ``(y, x)``: a body ellipse (class 1, with an unlabelled bright
"vertebra" inside it) holding smooth, randomly deformed organs — liver (2, large, lobed, image left),
kidneys (3, two bean-like blobs either side of the spine, the right one touching the liver), spleen (4,
image right) and a small hypo-intense lesion inside the liver (5). Classes beyond the default six are
extra random blobs. Each class has its own mean intensity with overlapping distributions and its own
texture; Rician-like noise and a smooth multiplicative bias field are added. NumPy + SciPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PHANTOM_CLASS_NAMES = ["background", "body", "liver", "kidney", "spleen", "lesion"]

# class mean intensities (before bias and noise); background is air
_BODY_MEAN = 0.45
_SPINE_MEAN = 0.85
_ORGAN_MEANS = {2: 0.62, 3: 0.78, 4: 0.70, 5: 0.40}
_TEXTURE_AMP = {0: 0.0, 1: 0.06, 2: 0.05, 3: 0.04, 4: 0.05, 5: 0.03}


@dataclass
class _Blob:
    """Ellipsoid in normalized coordinates ([-1, 1] per axis), in-plane rotation, boundary deformation."""

    centre: tuple[float, float, float]  # (w, u, v) = (z, y, x)
    radii: tuple[float, float, float]
    angle: float
    deform: float


def _gaussian_basis(n: int, n_ctrl: int) -> np.ndarray:
    """(n, n_ctrl) smooth interpolation matrix: Gaussian bumps at evenly spaced control points."""
    if n == 1:
        return np.ones((1, n_ctrl), dtype=np.float32) / np.sqrt(n_ctrl)
    x = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    c = np.linspace(-0.1, 1.1, n_ctrl, dtype=np.float32)[None, :]
    s = 1.2 / (n_ctrl - 1)
    return np.exp(-0.5 * ((x - c) / s) ** 2)


def _smooth_fields(
    shape3: tuple[int, int, int], rng: np.random.Generator, n_ctrl: int, count: int
) -> np.ndarray:
    """``count`` smooth random fields of ``shape3``, each scaled to unit std (separable Gaussian RBFs)."""
    bases = [_gaussian_basis(n, n_ctrl if n > 1 else 1) for n in shape3]
    ctrl = rng.standard_normal((count, *(b.shape[1] for b in bases))).astype(np.float32)
    f = np.einsum("kabc,za,yb,xc->kzyx", ctrl, *bases, optimize=True)
    std = f.reshape(count, -1).std(axis=1)
    return f / np.maximum(std, 1e-6)[:, None, None, None]


def _blob_mask(
    grids: tuple[np.ndarray, np.ndarray, np.ndarray], blob: _Blob, field: np.ndarray, min_radii: np.ndarray
) -> np.ndarray:
    """Boolean mask of a deformed, rotated ellipsoid."""
    w, u, v = grids
    cw, cu, cv = blob.centre
    rw, ru, rv = np.maximum(np.asarray(blob.radii), min_radii)
    du, dv = u - cu, v - cv
    ca, sa = np.cos(blob.angle), np.sin(blob.angle)
    uu = ca * du - sa * dv
    vv = sa * du + ca * dv
    f = ((w - cw) / rw) ** 2 + (uu / ru) ** 2 + (vv / rv) ** 2
    return f < (1.0 + blob.deform * field) ** 2


def _scene(num_classes: int, rng: np.random.Generator, is_2d: bool) -> tuple[_Blob, list[tuple[int, _Blob]]]:
    """Body blob and (class, blob) list in paint order, with jittered positions, sizes and angles."""

    def j(scale: float) -> float:
        return float(rng.uniform(-scale, scale))

    def s() -> float:
        return float(rng.uniform(0.85, 1.15))

    zc = 0.0 if is_2d else j(0.1)
    body = _Blob((0.0, j(0.04), j(0.04)), (1.6, 0.72 * s() ** 0.3, 0.88 * s() ** 0.3), j(0.08), 0.04)
    blobs: list[tuple[int, _Blob]] = []
    liver_c = (zc + j(0.1), -0.12 + j(0.06), -0.36 + j(0.06))
    liver = _Blob(liver_c, (0.75 * s(), 0.42 * s(), 0.36 * s()), -0.5 + j(0.25), 0.22)
    if num_classes > 2:  # right lobe plus a smaller left lobe reaching across the midline, anteriorly
        blobs.append((2, liver))
        left_c = (liver_c[0] + j(0.1), liver_c[1] - 0.16 + j(0.04), liver_c[2] + 0.3 + j(0.06))
        blobs.append((2, _Blob(left_c, (0.5 * s(), 0.17 * s(), 0.28 * s()), -0.3 + j(0.2), 0.2)))
    if num_classes > 3:  # kidneys either side of the spine; the right one touches the liver
        kz = zc + j(0.1)
        for side in (-1.0, 1.0):
            c = (kz + j(0.05), 0.33 + j(0.04), side * (0.36 + j(0.04)))
            blobs.append((3, _Blob(c, (0.45 * s(), 0.15 * s(), 0.10 * s()), side * (0.6 + j(0.2)), 0.12)))
    if num_classes > 4:
        c = (zc + j(0.1), 0.02 + j(0.06), 0.52 + j(0.05))
        blobs.append((4, _Blob(c, (0.5 * s(), 0.24 * s(), 0.13 * s()), 0.7 + j(0.25), 0.15)))
    if num_classes > 5:  # small lesion inside the liver
        c = (liver_c[0] + j(0.1), liver_c[1] + j(0.08), liver_c[2] + j(0.08))
        blobs.append((5, _Blob(c, (0.25 * s(), 0.1 * s(), 0.1 * s()), j(1.0), 0.1)))
    for cls in range(6, num_classes):  # extra classes: random blobs in the anterior half of the body
        c = (zc + j(0.3), float(rng.uniform(-0.45, 0.1)), float(rng.uniform(-0.45, 0.45)))
        r = float(rng.uniform(0.07, 0.15))
        blobs.append((cls, _Blob(c, (0.4 * s(), r * s(), r * s()), j(1.5), 0.15)))
    return body, blobs


def _centre_index(blob: _Blob, shape3: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        int(np.clip(round((c + 1.0) * 0.5 * (n - 1)), 0, n - 1)) for c, n in zip(blob.centre, shape3)
    )


def _ensure_present(label: np.ndarray, centres: dict[int, tuple[int, int, int]], num_classes: int) -> None:
    """Make sure every class has at least one voxel (tiny grids), taking voxels from the largest class."""
    if label.size < num_classes:
        raise ValueError(f"phantom shape {label.shape} has fewer voxels than num_classes={num_classes}")
    for cls in range(num_classes):
        counts = np.bincount(label.ravel(), minlength=num_classes)
        if counts[cls]:
            continue
        pos = centres.get(cls)
        if pos is None or counts[label[pos]] <= 1:
            donor = int(np.argmax(counts))
            pos = tuple(int(i) for i in np.argwhere(label == donor)[0])
        label[pos] = cls


def make_phantom(
    shape: tuple[int, ...] = (48, 96, 96),
    *,
    num_classes: int = 6,
    seed: int = 0,
    noise: float = 0.08,
    bias: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic abdomen-like image and label: ``(image float32, label uint8)`` of ``shape``.

    2D ``(y, x)`` when ``len(shape) == 2``, else 3D ``(z, y, x)``. Classes: 0 background, 1 body, then
    liver, kidney, spleen, lesion (``PHANTOM_CLASS_NAMES``) and extra random blobs when ``num_classes > 6``.
    Every class is present. Deterministic for ``seed``; other seeds jitter positions, sizes and shapes.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"phantom shape must be 2D (y, x) or 3D (z, y, x) with sizes >= 1, got {shape}")
    if not 2 <= num_classes <= 255:
        raise ValueError(f"num_classes must be in 2..255, got {num_classes}")
    is_2d = len(shape) == 2
    shape3: tuple[int, int, int] = (1, *shape) if is_2d else shape  # type: ignore[assignment]
    rng = np.random.default_rng(seed)

    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) if n > 1 else np.zeros(1, np.float32) for n in shape3]
    w, u, v = np.meshgrid(*axes, indexing="ij", sparse=True)
    # coordinate warp for an organic look, then per-object boundary deformation fields
    warp = _smooth_fields(shape3, rng, 5, 3)
    grids = (w + 0.04 * warp[0], u + 0.04 * warp[1], v + 0.04 * warp[2])
    deform = _smooth_fields(shape3, rng, 7, 4)
    min_radii = np.array([1.5 / max(n - 1, 1) * 2.0 for n in shape3], dtype=np.float32)
    if is_2d:
        min_radii[0] = 0.0

    body, blobs = _scene(num_classes, rng, is_2d)
    label = np.zeros(shape3, dtype=np.uint8)
    body_mask = _blob_mask(grids, body, deform[0], min_radii)
    label[body_mask] = 1
    spine = _Blob((0.0, 0.5 + float(rng.uniform(-0.03, 0.03)), 0.0), (2.0, 0.11, 0.11), 0.0, 0.0)
    spine_mask = _blob_mask(grids, spine, deform[0], min_radii) & body_mask
    centres = {1: _centre_index(body, shape3)}
    for cls, blob in blobs:
        weights = rng.standard_normal(deform.shape[0]).astype(np.float32)
        weights /= np.linalg.norm(weights)
        field = np.tensordot(weights, deform, axes=1)
        label[_blob_mask(grids, blob, field, min_radii) & body_mask] = cls
        centres.setdefault(cls, _centre_index(blob, shape3))
    _ensure_present(label, centres, num_classes)

    # intensities: class mean + class-specific texture, partial-volume blur, bias field, Rician noise
    means = np.zeros(256, dtype=np.float32)
    tex_amp = np.zeros(256, dtype=np.float32)
    tex_phase = rng.uniform(0.0, 2.0 * np.pi, 256).astype(np.float32)
    means[1] = _BODY_MEAN
    for cls in range(2, num_classes):
        means[cls] = _ORGAN_MEANS.get(cls, float(rng.uniform(0.3, 0.9)))
    for cls in range(1, num_classes):
        tex_amp[cls] = _TEXTURE_AMP.get(cls, 0.05)
    texture = _smooth_fields(shape3, rng, max(4, min(24, max(shape3) // 4)), 2)
    image = means[label]
    image[spine_mask & (label == 1)] = _SPINE_MEAN
    image += tex_amp[label] * (np.cos(tex_phase[label]) * texture[0] + np.sin(tex_phase[label]) * texture[1])
    sigma = [0.0 if n == 1 else 0.6 for n in shape3]
    image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    if bias:
        field = _smooth_fields(shape3, rng, 3, 1)[0]
        image *= np.exp(bias * (field - field.mean()) / 2.0)
    if noise:
        n1 = rng.standard_normal(shape3, dtype=np.float32)
        n2 = rng.standard_normal(shape3, dtype=np.float32)
        image = np.sqrt((image + noise * n1) ** 2 + (noise * n2) ** 2)
    image = image.astype(np.float32, copy=False)
    if is_2d:
        return image[0], label[0]
    return image, label


def make_phantom_dataset(
    n_cases: int, shape: tuple[int, ...], *, num_classes: int = 6, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_cases`` phantoms ``(image, label)`` with distinct per-case seeds derived from ``seed``."""
    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}")
    case_seeds = np.random.SeedSequence(seed).generate_state(max(n_cases, 1), dtype=np.uint64)[:n_cases]
    return [make_phantom(shape, num_classes=num_classes, seed=int(s)) for s in case_seeds]
