"""Small 3D convolutions on oneDNN at inference on the CPU.

PyTorch (2.13) sends a float32 convolution with batch 1 to its slow reference kernel (``slow_conv3d``) when
``N * C * D * H <= 20480`` and the kernel is at most 3 wide: a rule written for small 2D images that catches
almost every layer of a small 3D student (8-40 channels) and the deep layers of a teacher. Those layers run 4-9x
slower there than on oneDNN; one sliding window per call (a hippocampus volume fits one) is exactly batch 1.
:func:`onednn_convs` (used by every sliding-window prediction on the CPU) makes a model's ``nn.Conv3d`` layers
call oneDNN directly for a batch of one when no gradient is recorded on a float32 CPU tensor; larger batches
(PyTorch already picks oneDNN), 2D (no gain measured), training, CUDA, other dtypes and tracing/export keep
PyTorch's own choice. Outputs agree to float rounding (tests); ``benchmarks/bench_onednn_convs.py`` measures the
gain per volume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["OneDNNConv3d", "onednn_convs", "onednn_usable", "route_convs_to_onednn"]


def onednn_usable() -> bool:
    """Whether this PyTorch build has oneDNN (mkldnn) for the CPU and it is enabled."""
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def _direct(conv: nn.Conv3d, x: torch.Tensor) -> bool:
    """Whether this call should go straight to oneDNN: batch 1, CPU float32 inference, numeric zero padding."""
    return (x.shape[0] == 1 and x.device.type == "cpu" and x.dtype == torch.float32
            and conv.weight.dtype == torch.float32 and not torch.is_grad_enabled() and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export())


def _mkldnn(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    return torch.mkldnn_convolution(x, conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation,
                                    conv.groups)


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that calls oneDNN directly for a batch of one in CPU float32 inference (same outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _mkldnn(self, x) if _direct(self, x) else super().forward(x)


def route_convs_to_onednn(model: nn.Module) -> list[nn.Module]:
    """Turn, in place, every plain ``nn.Conv3d`` of ``model`` into :class:`OneDNNConv3d` (the same parameters,
    state-dict keys and, with gradients, the same code path); return the layers turned. Nothing changes without
    oneDNN. A scripted export of a routed model would not compile: prefer :func:`onednn_convs`, which restores."""
    if not onednn_usable():
        return []
    routed = [m for m in model.modules() if type(m) is nn.Conv3d]
    for m in routed:
        m.__class__ = OneDNNConv3d
    return routed


@contextlib.contextmanager
def onednn_convs(model: nn.Module) -> Iterator[int]:
    """Within the block, ``model``'s ``nn.Conv3d`` layers are routed to oneDNN (yields how many); afterwards they
    are plain again. Safe while another thread trains the same model: with gradients the routed layer runs
    PyTorch's own path."""
    routed = route_convs_to_onednn(model)
    try:
        yield len(routed)
    finally:
        for m in routed:
            m.__class__ = nn.Conv3d
