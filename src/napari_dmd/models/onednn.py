"""Small convolutions on oneDNN at inference on the CPU.

PyTorch (2.13) sends a float32 convolution with batch 1 to its slow reference kernel (``slow_conv3d`` /
``thnn_conv2d``) when ``N * C * D * H <= 20480`` and the kernel is at most 3 wide: a rule written for small 2D
images that catches almost every layer of a small 3D student (8-40 channels) and the deep layers of a teacher.
Those layers run 4-9x slower there than on oneDNN (``benchmarks/bench_onednn_convs.py``). One sliding window
per call (a hippocampus volume fits one) is exactly batch 1. :func:`route_convs_to_onednn` makes such a model's
plain convolutions call oneDNN directly whenever no gradient is recorded on a float32 CPU tensor; training,
CUDA, other dtypes and tracing/export keep PyTorch's own choice. Outputs agree to float rounding (tests).
"""

from __future__ import annotations

import torch
from torch import nn

from .fold import fold_batchnorm

__all__ = ["OneDNNConv2d", "OneDNNConv3d", "inference_copy", "onednn_usable", "route_convs_to_onednn"]


def onednn_usable() -> bool:
    """Whether this PyTorch build has oneDNN (mkldnn) for the CPU and it is enabled."""
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _direct(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> bool:
    """Whether this call may go straight to oneDNN: CPU float32 inference, zero padding given as numbers."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and conv.weight.dtype == torch.float32
            and not torch.is_grad_enabled() and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export())


def _mkldnn(conv: nn.Conv2d | nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                    conv.groups)


class OneDNNConv2d(nn.Conv2d):
    """``nn.Conv2d`` that calls oneDNN directly for CPU float32 inference (same weights, same outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mkldnn(self, x) if _direct(self, x) else super().forward(x)


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that calls oneDNN directly for CPU float32 inference (same weights, same outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mkldnn(self, x) if _direct(self, x) else super().forward(x)


_SWAP: dict[type, type] = {nn.Conv2d: OneDNNConv2d, nn.Conv3d: OneDNNConv3d}


def route_convs_to_onednn(model: nn.Module) -> int:
    """Turn, in place, every plain ``nn.Conv2d`` / ``nn.Conv3d`` of ``model`` into its oneDNN twin (the same
    parameters and state-dict keys); return how many. Nothing changes without oneDNN. Meant for an inference
    copy (:func:`inference_copy`): a scripted export of the routed model would not compile."""
    if not onednn_usable():
        return 0
    routed = 0
    for m in model.modules():
        twin = _SWAP.get(type(m))
        if twin is not None:
            m.__class__ = twin
            routed += 1
    return routed


def inference_copy(model: nn.Module, *, cpu: bool) -> nn.Module:
    """An eval-mode copy of ``model`` for prediction: batch norm folded, and on the CPU its convolutions routed
    to oneDNN. The original is left untouched."""
    clone = fold_batchnorm(model)
    if cpu:
        route_convs_to_onednn(clone)
    return clone
