"""A plain 2D/3D U-Net that returns logits and, on request, its decoder features at every scale."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch", "group", "none")


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


class ConvBlock(nn.Sequential):
    """Two (conv 3 -> norm -> LeakyReLU) layers; the first may downsample with stride 2."""

    def __init__(self, spatial_dims: int, c_in: int, c_out: int, norm: str, stride: int = 1,
                 dropout: float = 0.0) -> None:
        conv = _conv(spatial_dims)
        layers: list[nn.Module] = [
            conv(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none"),
            _norm(norm, spatial_dims, c_out),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        if dropout > 0:
            layers.append((nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d)(dropout))
        layers += [
            conv(c_out, c_out, 3, padding=1, bias=norm == "none"),
            _norm(norm, spatial_dims, c_out),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net with ``len(channels) - 1`` stride-2 downsamplings.

    ``forward(x)`` maps (N, in_channels, *spatial) to logits (N, num_classes, *spatial). Any spatial size
    works: the input is padded to a multiple of the total stride and the outputs cropped back.
    ``forward(x, return_features=True)`` also returns the decoder stage outputs, deepest to finest,
    at strides ``feature_strides`` (e.g. 8, 4, 2, 1 for 5 channel levels) with ``feature_channels``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 channels: Sequence[int] = (16, 32, 64, 128, 256), norm: str = "instance",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2:
            raise ValueError("a U-Net needs at least 2 channel levels")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(int(c) for c in channels)
        self.norm = norm
        self.dropout = dropout
        ch = self.channels
        self.encoder = nn.ModuleList(
            [ConvBlock(spatial_dims, in_channels, ch[0], norm)]
            + [ConvBlock(spatial_dims, ch[i - 1], ch[i], norm, stride=2, dropout=dropout)
               for i in range(1, len(ch))]
        )
        up = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.upsamplers = nn.ModuleList(
            [up(ch[i], ch[i - 1], 2, stride=2) for i in range(len(ch) - 1, 0, -1)]
        )
        self.decoder = nn.ModuleList(
            [ConvBlock(spatial_dims, 2 * ch[i - 1], ch[i - 1], norm) for i in range(len(ch) - 1, 0, -1)]
        )
        self.out = _conv(spatial_dims)(ch[0], num_classes, 1)

    @property
    def total_stride(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def feature_strides(self) -> list[int]:
        """Stride of each decoder feature map, deepest to finest."""
        return [2 ** i for i in range(len(self.channels) - 2, -1, -1)]

    @property
    def feature_channels(self) -> list[int]:
        """Channel count of each decoder feature map, deepest to finest."""
        return [self.channels[i] for i in range(len(self.channels) - 2, -1, -1)]

    def config(self) -> dict:
        """Arguments that rebuild this architecture."""
        return {"spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
                "num_classes": self.num_classes, "channels": list(self.channels), "norm": self.norm,
                "dropout": self.dropout}

    def forward(self, x: torch.Tensor, return_features: bool = False):
        size = x.shape[2:]
        s = self.total_stride
        pad = [(-n) % s for n in size]
        if any(pad):
            flat: list[int] = []
            for p in reversed(pad):
                flat += [0, p]
            x = F.pad(x, flat)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        features = []
        for upsample, block in zip(self.upsamplers, self.decoder):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1))
            features.append(x)
        logits = self.out(x)
        if any(pad):
            logits = logits[(..., *[slice(0, n) for n in size])]
            strides = self.feature_strides
            features = [f[(..., *[slice(0, -(-n // st)) for n in size])] for f, st in zip(features, strides)]
        if return_features:
            return logits, features
        return logits
