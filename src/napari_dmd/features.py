"""Decoder feature maps -> arrays ready for napari layers (Qt-free).

``compute_features(model, image, ...)`` runs a U-Net with ``return_features=True`` on an image (or the
current slice / a slab of a volume) and returns one :class:`ScaleFeatures` per chosen decoder stage with

* ``pca_rgb`` ``(*s, 3)`` in [0, 1]: the first three principal components of the channels as RGB,
* ``energy`` ``(*s)``: the mean squared activation over channels,
* ``channel(i)`` ``(*s)``: one raw channel,
* ``head_labels`` ``(*s)`` uint8: the argmax of the stage's class head (students trained with heads),

all with the image's number of axes, and the layer ``scale`` / ``translate`` that overlay them on the image.

Placement: a decoder stage at stride ``k`` has one voxel per ``k`` input voxels along each model axis. Its
layer scale is ``spacing * k`` and its translate is ``origin + spacing * (offset + (k - 1) / 2)``, so the
centre of a coarse voxel sits over the centre of the ``k`` fine voxels it covers (napari places data index
``j`` at ``translate + j * scale``). For a 2D model on a 3D volume the maps are computed on one slice and
given a singleton first axis placed at that slice; a 3D model on a volume larger than ``max_voxels`` runs on
a slab of whole slices around ``slice_index`` (slab start a multiple of the network stride, so the coarse
grid stays aligned with the volume's).

Also :class:`StudentSnapshot`: a CPU copy of a student's weights taken between training steps, so feature
inspection never touches the model being trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .data.transforms import normalize
from .models.heads import ScaleHeads
from .models.unet import UNet

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "ScaleFeatures",
    "StudentSnapshot",
    "compute_features",
    "energy_map",
    "pca_rgb",
    "placement",
]

#: Largest input (voxels) a 3D model sees at once; bigger volumes are cut to a slab around the slice.
DEFAULT_MAX_VOXELS = 96 * 160 * 160
#: Voxels drawn to fit the PCA basis.
PCA_SAMPLES = 20000


@dataclass
class ScaleFeatures:
    """Features of one decoder stage, shaped and placed for napari layers.

    Arrays have the image's number of axes (a slice gets a singleton first axis). ``features`` is
    ``(C, *s)`` float32.
    """

    stage: int  # decoder stage, 0 = deepest
    stride: int
    features: np.ndarray
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    pca_rgb: np.ndarray
    energy: np.ndarray
    head_labels: np.ndarray | None = None
    explained_variance: list[float] = field(default_factory=list)

    @property
    def num_channels(self) -> int:
        return int(self.features.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape ``*s`` of every array of this stage."""
        return tuple(self.features.shape[1:])

    def channel(self, index: int) -> np.ndarray:
        """One raw feature channel ``(*s)``; IndexError names the valid range."""
        if not 0 <= index < self.num_channels:
            raise IndexError(f"channel {index} does not exist at stride {self.stride}: "
                             f"this stage has channels 0..{self.num_channels - 1}")
        return self.features[index]


def placement(spacing: Sequence[float], origin: Sequence[float], stride_per_axis: Sequence[int],
              offset: Sequence[int]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Layer ``(scale, translate)`` of a map at ``stride_per_axis`` whose index 0 starts at voxel ``offset``.

    Coarse voxel ``j`` covers fine voxels ``offset + j*k .. offset + j*k + k - 1`` (``k`` the axis stride);
    its centre ``offset + j*k + (k - 1)/2`` lands on the centre of those voxels.
    """
    scale = tuple(float(s) * int(k) for s, k in zip(spacing, stride_per_axis))
    translate = tuple(float(o) + float(s) * (int(off) + (int(k) - 1) / 2.0)
                      for o, s, k, off in zip(origin, spacing, stride_per_axis, offset))
    return scale, translate


def energy_map(features: np.ndarray) -> np.ndarray:
    """Mean squared activation over channels: ``(C, *s) -> (*s)`` float32."""
    f = np.asarray(features, dtype=np.float32)
    return np.mean(np.square(f), axis=0, dtype=np.float32)


def pca_rgb(features: np.ndarray, *, max_samples: int = PCA_SAMPLES, seed: int = 0,
            clip: tuple[float, float] = (1.0, 99.0)) -> tuple[np.ndarray, list[float]]:
    """First three principal components of ``(C, *s)`` features as RGB ``(*s, 3)`` in [0, 1].

    The basis (the sample scatter matrix's eigenvectors) is fitted on at most ``max_samples`` voxels drawn with
    ``seed``; each component's sign is fixed so that its largest loading is positive (deterministic colours), and
    it is scaled to [0, 1] between the ``clip`` percentiles of the sample. Fewer than three channels (or
    components) leave the remaining colour channels at 0. Also returns the explained-variance ratio of each component.
    """
    f = np.asarray(features, dtype=np.float32)
    c = f.shape[0]
    spatial = f.shape[1:]
    x = f.reshape(c, -1).T  # (N, C)
    n = x.shape[0]
    if n > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(n, size=max_samples, replace=False))
        sample = x[idx]
    else:
        sample = x
    mean = sample.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = (sample - mean).astype(np.float64)
    rgb = np.zeros((n, 3), dtype=np.float32)
    ratios: list[float] = []
    if centred.shape[0] >= 2 and np.any(centred):
        # the right singular vectors of `centred` are the eigenvectors of its C x C scatter matrix: 10-70x
        # faster than an SVD of the (N, C) sample (which also builds its N x C left vectors)
        eigvals, eigvecs = np.linalg.eigh(centred.T @ centred)
        order = np.argsort(eigvals)[::-1]
        sq = np.clip(eigvals[order], 0.0, None)  # squared singular values
        vt = eigvecs[:, order].T
        k = min(3, c, centred.shape[0])
        comps = vt[:k]
        signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
        comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
        total = float(np.sum(sq))
        ratios = [float(v / total) if total > 0 else 0.0 for v in sq[:k]]
        proj_sample = centred @ comps.T
        lo = np.percentile(proj_sample, clip[0], axis=0)
        hi = np.percentile(proj_sample, clip[1], axis=0)
        proj = (x - mean).astype(np.float64) @ comps.T
        span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
        rgb[:, :k] = np.clip((proj - lo) / span, 0.0, 1.0).astype(np.float32)
        rgb[:, :k][:, (hi - lo) <= 1e-12] = 0.0
    return rgb.reshape(*spatial, 3), ratios


def _slab(depth: int, plane: int, max_voxels: int, centre: int, multiple: int) -> tuple[int, int]:
    """``(start, stop)`` of a slab of whole slices around ``centre`` holding at most ~``max_voxels``."""
    n = max(multiple, (max_voxels // max(plane, 1)) // multiple * multiple)
    if n >= depth:
        return 0, depth
    start = max(0, (centre - n // 2) // multiple * multiple)
    if centre >= start + n:
        start = centre // multiple * multiple
    stop = min(depth, start + n)
    if stop - start < n:  # at the end of the volume: the last aligned slab (may hold < multiple extra)
        start = max(0, (depth - n) // multiple * multiple)
        stop = depth
    return start, stop


@torch.no_grad()
def compute_features(model: UNet, image: np.ndarray, *, heads: ScaleHeads | None = None,
                     head_stages: Sequence[int] | None = None, feature_scales: Sequence[int] | None = None,
                     normalization: str = "zscore", spacing: Sequence[float] | None = None,
                     origin: Sequence[float] | None = None, slice_index: int | None = None,
                     max_voxels: int = DEFAULT_MAX_VOXELS, device: str | torch.device | None = None,
                     pca_samples: int = PCA_SAMPLES) -> list[ScaleFeatures]:
    """Decoder features of ``model`` on ``image`` (raw intensities, spatial axes only), placed for napari.

    ``feature_scales``: decoder stages to return (0 = deepest; default all). ``heads``/``head_stages``: the
    student's class heads and the stages they belong to (``head_labels`` is set where a stage has one).
    ``spacing``/``origin``: the image layer's scale and translate. ``slice_index``: the slice (axis 0) a 2D
    model runs on in a volume, or the centre of a 3D slab; default the middle. The model runs in eval mode
    under ``no_grad`` on ``device`` (default: where its weights are); pass a copy of a model being trained.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"features need a 2D image or a 3D volume with one channel, got shape {image.shape}")
    dims = model.spatial_dims
    if dims > image.ndim:
        raise ValueError(f"a {dims}D model cannot run on a {image.ndim}D image (shape {image.shape})")
    if min(image.shape) < 1 or image.size == 0:
        raise ValueError(f"the image is empty (shape {image.shape})")
    if not np.isfinite(image).all():
        raise ValueError("the image holds NaN or infinite values")
    nstages = len(model.feature_strides)
    stages = list(range(nstages)) if feature_scales is None else [int(s) for s in feature_scales]
    if not stages:
        raise ValueError("choose at least one decoder scale")
    bad = [s for s in stages if not 0 <= s < nstages]
    if bad:
        raise ValueError(f"decoder scale(s) {bad} out of range: the model has stages 0..{nstages - 1} "
                         f"(strides {model.feature_strides})")
    spacing = tuple(float(s) for s in (spacing if spacing is not None else (1.0,) * image.ndim))
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0,) * image.ndim))
    if len(spacing) != image.ndim or len(origin) != image.ndim:
        raise ValueError(f"spacing {spacing} / origin {origin} must have one entry per image axis "
                         f"({image.ndim})")
    if heads is not None:
        head_stages = list(head_stages) if head_stages is not None else list(range(len(heads.heads)))
        if len(head_stages) != len(heads.heads):
            raise ValueError(f"{len(heads.heads)} heads but {len(head_stages)} head stages")

    norm = normalize(image, normalization)
    depth = image.shape[0] if image.ndim == 3 else 1
    centre = depth // 2 if slice_index is None else int(slice_index)
    if image.ndim == 3 and not 0 <= centre < depth:
        raise ValueError(f"slice {centre} is outside the volume (0..{depth - 1})")
    if dims == 2 and image.ndim == 3:  # 2D model: the current slice, placed on it
        x = norm[centre]
        z_offset: int | None = centre
    elif dims == 3 and image.size > max_voxels:  # big volume: a slab of whole slices
        start, stop = _slab(depth, int(np.prod(image.shape[1:])), max_voxels, centre, model.total_stride)
        x = norm[start:stop]
        z_offset = start
    else:
        x = norm
        z_offset = None

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None].to(dev)
    _, feats = model(xt, return_features=True)
    head_out: dict[int, torch.Tensor] = {}
    if heads is not None and head_stages is not None:
        heads.eval()
        wanted = [(i, s) for i, s in enumerate(head_stages) if s in stages]
        for i, s in wanted:
            head_out[s] = heads.heads[i](feats[s])

    out: list[ScaleFeatures] = []
    for s in stages:
        stride = int(model.feature_strides[s])
        f = feats[s][0].float().cpu().numpy()  # (C, *model_spatial)
        labels = head_out[s][0].argmax(0).to(torch.uint8).cpu().numpy() if s in head_out else None
        if dims == 2 and image.ndim == 3:
            f = f[:, None]
            labels = labels[None] if labels is not None else None
            strides = (1, stride, stride)
            offset = (int(z_offset), 0, 0)
        else:
            strides = (stride,) * image.ndim
            offset = (int(z_offset), 0, 0) if z_offset is not None else (0,) * image.ndim
        scale, translate = placement(spacing, origin, strides, offset)
        rgb, ratios = pca_rgb(f, max_samples=pca_samples)
        out.append(ScaleFeatures(stage=s, stride=stride, features=f, scale=scale, translate=translate,
                                 pca_rgb=rgb, energy=energy_map(f), head_labels=labels,
                                 explained_variance=ratios))
    return out


@dataclass
class StudentSnapshot:
    """CPU copy of a student (and its class heads) at one training iteration."""

    iteration: int
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    normalization: str = "zscore"
    heads_in_channels: list[int] | None = None
    heads_state: dict[str, torch.Tensor] | None = None
    feature_scales: list[int] | None = None
    name: str = "live student"

    @classmethod
    def take(cls, model: UNet, *, heads: ScaleHeads | None = None,
             feature_scales: Sequence[int] | None = None, normalization: str = "zscore", iteration: int = 0,
             name: str = "live student") -> StudentSnapshot:
        """Copy the weights to CPU (call between training steps, from the thread that trains)."""
        def copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}

        return cls(int(iteration), model.config(), copy(model), normalization,
                   list(heads.in_channels) if heads is not None else None,
                   copy(heads) if heads is not None else None,
                   list(feature_scales) if feature_scales is not None and heads is not None else None, name)

    def build(self, device: str | torch.device = "cpu",
              reuse: tuple[UNet, ScaleHeads | None] | None = None) -> tuple[UNet, ScaleHeads | None]:
        """The model (and heads) in eval mode with these weights; ``reuse`` recycles a previous build."""
        cfg = self.model_config
        model, heads = reuse if reuse is not None else (None, None)
        if model is None or model.config() != cfg:
            model = UNet.from_config(cfg)
            heads = None
        model.load_state_dict(self.state_dict)
        if self.heads_state is not None and self.heads_in_channels is not None:
            if heads is None or heads.in_channels != self.heads_in_channels:
                heads = ScaleHeads(model.spatial_dims, self.heads_in_channels, model.num_classes)
            heads.load_state_dict(self.heads_state)
            heads.to(device).eval()
        else:
            heads = None
        return model.to(device).eval(), heads
