"""Building blocks of the U-Net: normalization, conv blocks (plain or depthwise-separable), logit upsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .linear_upsample import linear_upsample, upsample

NORMS = ("instance", "batch", "group", "none")
BLOCKS = ("conv", "dsconv")
UPSAMPLE_MODES = ("bilinear", "learned", "shuffle", "refine")


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv3d if spatial_dims == 3 else nn.Conv2d


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "instance":
        return (nn.InstanceNorm3d if spatial_dims == 3 else nn.InstanceNorm2d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d)(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(NORMS)}")


def _layer(spatial_dims: int, c_in: int, c_out: int, norm: str, stride: int, block: str) -> list[nn.Module]:
    """One conv (3x3 plain, or depthwise 3x3 + pointwise 1x1) -> norm -> LeakyReLU."""
    conv = _conv(spatial_dims)
    bias = norm == "none"
    if block == "conv":
        convs = [conv(c_in, c_out, 3, stride=stride, padding=1, bias=bias)]
    elif block == "dsconv":
        convs = [conv(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False),
                 conv(c_in, c_out, 1, bias=bias)]
    else:
        raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
    return [*convs, _norm(norm, spatial_dims, c_out), nn.LeakyReLU(0.01, inplace=True)]


class ConvBlock(nn.Sequential):
    """Two (conv 3 -> norm -> LeakyReLU) layers; the first may downsample with stride 2.

    ``block="dsconv"`` makes each conv depthwise-separable (depthwise 3x3, then pointwise 1x1); the very first
    layer of a network (one input channel) stays a plain conv either way.
    """

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, norm: str, stride: int = 1,
                 dropout: float = 0.0, block: str = "conv") -> None:
        first = "conv" if c_in < 4 else block
        layers = _layer(spatial_dims, c_in, c_out, norm, stride, first)
        if dropout > 0:
            layers.append((nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d)(dropout))
        layers += _layer(spatial_dims, c_out, c_out, norm, 1, block)
        super().__init__(*layers)


def pixel_shuffle(x: torch.Tensor, factor: int, num_classes: int) -> torch.Tensor:
    """(N, C * f^d, *S) -> (N, C, *(f * S)): each voxel's f^d channels per class become its f^d sub-voxels."""
    n, s = x.shape[0], x.shape[2:]
    if len(s) == 3:
        y = x.reshape(n, num_classes, factor, factor, factor, s[0], s[1], s[2]).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return y.reshape(n, num_classes, s[0] * factor, s[1] * factor, s[2] * factor)
    y = x.reshape(n, num_classes, factor, factor, s[0], s[1]).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, num_classes, s[0] * factor, s[1] * factor)


class LogitUpsampler(nn.Module):
    """Brings logits computed at stride ``factor`` back to the input grid. Identity when ``factor`` is 1.

    ``bilinear``: bilinear/trilinear interpolation. ``learned``: a transposed conv (initialised to nearest-neighbour
    copies). ``shuffle``: the output conv gives ``factor ** d`` logits per class and voxel (:meth:`out_channels`),
    rearranged into the sub-voxels (sub-pixel convolution; no interpolation at full resolution). ``refine``:
    interpolation, then a residual 3x3 conv over the interpolated logits and the input image (zero-initialised, so
    training starts from plain interpolation), which can move boundaries to the image's edges.
    """

    def __init__(self, spatial_dims: int, num_classes: int, factor: int, mode: str = "bilinear",
                 in_channels: int = 1) -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise ValueError(f"unknown upsampling {mode!r}; choose one of {', '.join(UPSAMPLE_MODES)}")
        self.factor = int(factor)
        self.num_classes = num_classes
        self.interp = "trilinear" if spatial_dims == 3 else "bilinear"
        self.mode = mode if self.factor > 1 else "bilinear"
        self.learned = self.mode == "learned"
        self.shuffle = self.mode == "shuffle"
        self.refine = self.mode == "refine"
        self.up: nn.Module = nn.Identity()  # always present, so TorchScript can compile every branch
        if self.learned:
            up = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
            self.up = up(num_classes, num_classes, self.factor, stride=self.factor, groups=num_classes)
            with torch.no_grad():
                self.up.weight.fill_(1.0)
                self.up.bias.zero_()
        if self.refine:
            self.up = _conv(spatial_dims)(num_classes + in_channels, num_classes, 3, padding=1)
            with torch.no_grad():
                self.up.weight.zero_()
                self.up.bias.zero_()

    def out_channels(self, spatial_dims: int) -> int:
        """Channels the U-Net's output conv must give this upsampler."""
        return self.num_classes * self.factor ** spatial_dims if self.shuffle else self.num_classes

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return x
        if self.learned:
            return self.up(x)
        if self.shuffle:
            return pixel_shuffle(x, self.factor, self.num_classes)
        y = self._interpolate(x)
        if self.refine:
            return y + self.up(torch.cat([y, image], dim=1))
        return y

    def forward_region(self, x: torch.Tensor, image: torch.Tensor, region: Sequence[tuple[int, int]]) -> torch.Tensor:
        """``forward(x, image)`` cropped to ``region`` (per axis ``[a, b)`` of the output grid), with the same values.
        Plain interpolation then computes only that part (:func:`linear_upsample`): on a hippocampus volume padded
        to its window this is under half of the upsampling, which took a fifth of a small 3D student's time."""
        crop = (..., *[slice(a, b) for a, b in region])
        if self.factor == 1:
            return x[crop]
        if self.mode != "bilinear":
            return self.forward(x, image)[crop]
        return linear_upsample(x, self.factor, region)

    def _interpolate(self, x: torch.Tensor) -> torch.Tensor:
        """Linear interpolation by ``factor``: per-axis matrix products in eager PyTorch (:func:`upsample`, up to 7x
        faster on the CPU), ``F.interpolate`` when scripted, traced or compiled (export keeps any size)."""
        if torch.jit.is_scripting():
            return F.interpolate(x, scale_factor=float(self.factor), mode=self.interp, align_corners=False)
        return self._eager_interpolate(x)

    @torch.jit.unused
    def _eager_interpolate(self, x: torch.Tensor) -> torch.Tensor:
        return upsample(x, self.factor)
