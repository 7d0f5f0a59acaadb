"""The exportable student network: the U-Net's logits path for TorchScript / ONNX, and its ONNX-ready copy.

:class:`ExportableUNet` keeps any input size (padding to the stride and cropping back inside); :func:`onnx_ready`
computes instance/group-norm statistics in float64 (onnxruntime's float32 reductions drifted from PyTorch).
Used by :mod:`napari_dmd.export` (the files) and :mod:`napari_dmd.model_card` (FLOPs and latency).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .models.unet import UNet


class ExportError(ValueError):
    """An export failed or does not reproduce PyTorch; the message names the file and the problem."""


# ------------------------------------------------------------------------------------------- network
class ExportableUNet(nn.Module):
    """The logits path of a :class:`UNet`, written so that ``torch.jit.script`` and ONNX keep any input size.

    Shares the U-Net's modules (no copy). Pads the spatial axes to a multiple of the total stride and crops the
    logits back, with sizes taken from the input at run time (never baked in at export).
    """

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.encoder = unet.encoder
        self.upsamplers = unet.upsamplers
        self.decoder = unet.decoder
        self.out = unet.out
        self.logit_upsampler = unet.logit_upsampler  # identity unless the net runs at reduced resolution
        self.stride = int(unet.total_stride)
        self.three_d = unet.spatial_dims == 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        h, w = x.shape[-2], x.shape[-1]
        d = x.shape[-3]
        ph, pw, pd = (s - h % s) % s, (s - w % s) % s, (s - d % s) % s
        if self.three_d:
            x = F.pad(x, [0, pw, 0, ph, 0, pd])
        else:
            x = F.pad(x, [0, pw, 0, ph])
        image = x
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.upsamplers, self.decoder):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        logits = self.logit_upsampler(self.out(x), image)
        if self.three_d:
            return logits[:, :, :d, :h, :w]
        return logits[:, :, :h, :w]


class _PreciseInstanceNorm(nn.Module):
    """Instance normalization with float64 statistics, for ONNX.

    onnxruntime sums a ReduceMean / InstanceNormalization naively in float32; over a 3D patch that drifted up to
    3e-4 from PyTorch on a trained student. Statistics in float64 keep it within ~1e-5 at no measurable cost.
    """

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, float(norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = list(range(2, x.dim()))
        xd = x.double()
        dev = xd - xd.mean(dim=dims, keepdim=True)
        var = (dev * dev).mean(dim=dims, keepdim=True)
        y = (dev / torch.sqrt(var + self.eps)).to(x.dtype)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class _PreciseGroupNorm(nn.Module):
    """Group normalization with float64 statistics, for ONNX (see :class:`_PreciseInstanceNorm`)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps = int(norm.num_groups), float(norm.eps)
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xd = x.double().reshape(x.shape[0], self.groups, -1)
        dev = xd - xd.mean(dim=-1, keepdim=True)
        var = (dev * dev).mean(dim=-1, keepdim=True)
        y = (dev / torch.sqrt(var + self.eps)).reshape(x.shape).to(x.dtype)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def onnx_ready(model: UNet) -> ExportableUNet:
    """A copy of the student for ONNX export, with float64 normalization statistics (the original is untouched)."""
    import copy

    clone = copy.deepcopy(model).eval().cpu()

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, (nn.InstanceNorm2d, nn.InstanceNorm3d)) and not child.track_running_stats:
                setattr(module, name, _PreciseInstanceNorm(child))
            elif isinstance(child, nn.GroupNorm):
                setattr(module, name, _PreciseGroupNorm(child))
            else:
                swap(child)

    swap(clone)
    return ExportableUNet(clone).eval()
