"""Inference-time rewrites of a trained network that keep its outputs: batch-norm folding."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .onednn import OneDNNConv3d

__all__ = ["fold_batchnorm", "has_batchnorm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch-norm layer with running statistics (something to fold)."""
    return any(isinstance(m, _BNS) and m.track_running_stats for m in model.modules())


def _fold_sequential(seq: nn.Sequential) -> int:
    """Fuse every (conv, batch norm) pair that follows each other in ``seq``; return how many."""
    names = list(seq._modules)
    folded = 0
    for a, b in zip(names, names[1:]):
        conv, bn = seq._modules[a], seq._modules[b]
        if isinstance(conv, _CONVS) and isinstance(bn, _BNS) and bn.track_running_stats \
                and bn.running_mean is not None:
            seq._modules[a] = fuse_conv_bn_eval(conv, bn)
            seq._modules[b] = nn.Identity()
            folded += 1
    return folded


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each batch norm folded into the conv before it (same outputs).

    Only a conv directly followed by a batch norm in an ``nn.Sequential`` is folded (every :class:`UNet` block);
    any other module is copied unchanged, so a model without batch norm comes back as an equivalent copy.
    The original is left untouched. Folding removes one memory-bound pass over every activation.
    """
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if type(module) is OneDNNConv3d:  # copied while a prediction had it routed: plain, for scripting/export
            module.__class__ = nn.Conv3d
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    return clone
