"""A plain 2D/3D U-Net that returns logits and, on request, its decoder features at every scale."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import BLOCKS, NORMS, UPSAMPLE_MODES, ConvBlock, LogitUpsampler, _conv, _norm
from .linear_upsample import first_class, upsampled_labels

__all__ = ["ARCH_DEFAULTS", "BLOCKS", "NORMS", "UPSAMPLE_MODES", "ConvBlock", "UNet", "_norm", "padded_size"]

#: The architecture options a config may leave out, with the value they then mean (the classic U-Net).
ARCH_DEFAULTS: dict[str, Any] = {"norm": "instance", "stem": 1, "upsample": "bilinear", "block": "conv"}


def padded_size(size: Sequence[int], stride: int) -> list[int]:
    """``size`` rounded up to a multiple of ``stride`` along each axis: what :class:`UNet` pads its input to."""
    return [int(stride * -(-int(n) // stride)) for n in size]


class UNet(nn.Module):
    """U-Net with ``len(channels) - 1`` stride-2 downsamplings.

    ``forward(x)`` maps (N, in_channels, *spatial) to logits (N, num_classes, *spatial). Any spatial size
    works: the input is padded to a multiple of the total stride and the outputs cropped back.
    ``forward(x, return_features=True)`` also returns the decoder stage outputs, deepest to finest,
    at strides ``feature_strides`` (e.g. 8, 4, 2, 1 for 5 channel levels) with ``feature_channels``.

    Speed options (the defaults build the classic network): ``stem=2`` makes the first conv strided, so the
    whole U-Net runs at half resolution and its logits are brought back by ``upsample`` ("bilinear", a "learned"
    transposed conv, a sub-pixel "shuffle" or a "refine" conv over the image: :class:`LogitUpsampler`); the
    decoder features are then at strides 16, 8, 4, 2. ``block="dsconv"`` uses
    depthwise-separable convolutions.
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 channels: Sequence[int] = (16, 32, 64, 128, 256), norm: str = "instance",
                 dropout: float = 0.0, stem: int = 1, upsample: str = "bilinear", block: str = "conv") -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2:
            raise ValueError("a U-Net needs at least 2 channel levels")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background + 1 class), got {num_classes}")
        if int(stem) not in (1, 2, 4):
            raise ValueError(f"stem must be 1, 2 or 4 (stride of the first conv), got {stem}")
        if block not in BLOCKS:
            raise ValueError(f"unknown block {block!r}; choose one of {', '.join(BLOCKS)}")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.channels = tuple(int(c) for c in channels)
        self.norm = norm
        self.dropout = dropout
        self.stem = int(stem)
        self.upsample = upsample
        self.block = block
        ch = self.channels
        self.encoder = nn.ModuleList(
            [ConvBlock(spatial_dims, in_channels, ch[0], norm, stride=self.stem, block=block)]
            + [ConvBlock(spatial_dims, ch[i - 1], ch[i], norm, stride=2, dropout=dropout, block=block)
               for i in range(1, len(ch))]
        )
        up = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.upsamplers = nn.ModuleList(
            [up(ch[i], ch[i - 1], 2, stride=2) for i in range(len(ch) - 1, 0, -1)]
        )
        self.decoder = nn.ModuleList(
            [ConvBlock(spatial_dims, 2 * ch[i - 1], ch[i - 1], norm, block=block)
             for i in range(len(ch) - 1, 0, -1)]
        )
        self.logit_upsampler = LogitUpsampler(spatial_dims, num_classes, self.stem, upsample, in_channels)
        self.out = _conv(spatial_dims)(ch[0], self.logit_upsampler.out_channels(spatial_dims), 1)
        if self.logit_upsampler.shuffle:  # start as nearest-neighbour copies: every sub-voxel alike
            with torch.no_grad():
                w = self.out.weight.view(num_classes, -1, *self.out.weight.shape[1:])
                w.copy_(w[:, :1].expand_as(w))
                b = self.out.bias.view(num_classes, -1)
                b.copy_(b[:, :1].expand_as(b))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> UNet:
        """Rebuild from :meth:`config` (older configs without the speed options give the classic network)."""
        return cls(int(cfg["spatial_dims"]), int(cfg["in_channels"]), int(cfg["num_classes"]),
                   tuple(cfg["channels"]), dropout=float(cfg.get("dropout", 0.0)), **cls.arch_options(cfg))

    @staticmethod
    def arch_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The options (norm, stem, upsample, block) a config describes, :data:`ARCH_DEFAULTS` where it is silent."""
        opts = {k: cfg.get(k, d) for k, d in ARCH_DEFAULTS.items()}
        opts["stem"] = int(opts["stem"])
        return opts

    @property
    def total_stride(self) -> int:
        return self.stem * 2 ** (len(self.channels) - 1)

    @property
    def feature_strides(self) -> list[int]:
        """Stride of each decoder feature map, deepest to finest."""
        return [self.stem * 2 ** i for i in range(len(self.channels) - 2, -1, -1)]

    @property
    def feature_channels(self) -> list[int]:
        """Channel count of each decoder feature map, deepest to finest."""
        return [self.channels[i] for i in range(len(self.channels) - 2, -1, -1)]

    def config(self) -> dict:
        """Arguments that rebuild this architecture (:meth:`from_config`)."""
        cfg = {"spatial_dims": self.spatial_dims, "in_channels": self.in_channels,
               "num_classes": self.num_classes, "channels": list(self.channels), "norm": self.norm,
               "dropout": self.dropout}
        if any(getattr(self, k) != ARCH_DEFAULTS[k] for k in ("stem", "upsample", "block")):
            cfg.update(stem=self.stem, upsample=self.upsample, block=self.block)
        return cfg

    def forward(self, x: torch.Tensor, return_features: bool = False,
                region: Sequence[tuple[int, int]] | None = None):
        """Logits (and with ``return_features`` the decoder features). ``region`` (per spatial axis ``[a, b)``
        within the input): the logits of that part only, equal to cropping them, cheaper for a strided stem."""
        size = x.shape[2:]
        self._check_region(region, size)
        low, image, features, pad = self._decode(x)
        if region is None and any(pad):  # the padding is cropped off: the input's own extent is the region
            region = [(0, int(n)) for n in size]
        logits = self.logit_upsampler(low, image) if region is None else \
            self.logit_upsampler.forward_region(low, image, region)
        if any(pad):
            strides = self.feature_strides
            features = [f[(..., *[slice(0, -(-n // st)) for n in size])] for f, st in zip(features, strides)]
        if return_features:
            return logits, features
        return logits

    def labels(self, x: torch.Tensor, region: Sequence[tuple[int, int]] | None = None,
               dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        """``forward(x, region=region).argmax(1)`` as ``dtype`` (ties: the first class). A 2D U-Net with bilinear
        logits from a strided stem takes them from its logits before upsampling (:func:`upsampled_labels`: only
        pixels near a class boundary are blended; the same labels but where two classes' blended scores tie to
        float rounding), 1.8-2.7x faster than upsampling on 4-46 CHAOS slices; in 3D that was slower (a
        hippocampus volume: 0.7 against 0.3 ms) and the logits are upsampled (docs/benchmarks.md, B2)."""
        if not self.labels_from_low_res:
            return first_class(self(x, region=region), dtype)
        size = x.shape[2:]
        self._check_region(region, size)
        return upsampled_labels(self._decode(x)[0], self.stem, region or [(0, int(n)) for n in size], dtype)

    @property
    def labels_from_low_res(self) -> bool:
        """Whether :meth:`labels` takes the labels from the logits before upsampling."""
        return self.spatial_dims == 2 and self.stem > 1 and self.logit_upsampler.mode == "bilinear"

    @staticmethod
    def _check_region(region: Sequence[tuple[int, int]] | None, size: Sequence[int]) -> None:
        if region is not None and (len(region) != len(size)
                                   or any(not 0 <= a < b <= n for (a, b), n in zip(region, size))):
            raise ValueError(f"region {region} does not lie within the input's {tuple(size)}")

    def _decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[int]]:
        """Logits at the stem's resolution of ``x`` padded to a multiple of the total stride, that padded input,
        the decoder features (deepest to finest, of the padded input) and the padding per spatial axis."""
        s = self.total_stride
        pad = [(-n) % s for n in x.shape[2:]]
        if any(pad):
            flat: list[int] = []
            for p in reversed(pad):
                flat += [0, p]
            x = F.pad(x, flat)
        image = x
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        features = []
        for upsample, block in zip(self.upsamplers, self.decoder):
            x = block(torch.cat([upsample(x), skips.pop()], dim=1))
            features.append(x)
        return self.out(x), image, features, pad
