"""Named model sizes: a teacher and two students (<= 1/10 and <= 1/30 of the teacher's parameters)."""

from __future__ import annotations

from torch import nn

from .unet import UNet

PRESETS: dict[str, tuple[int, ...]] = {
    "teacher": (16, 32, 64, 128, 256),
    "student": (8, 16, 24, 40, 64),
    "student-tiny": (4, 8, 16, 24, 32),
}


def build_model(preset: str | tuple[int, ...] | list[int], spatial_dims: int, num_classes: int,
                in_channels: int = 1, norm: str = "instance") -> UNet:
    """Build a U-Net from a preset name or an explicit channel tuple."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; choose one of {', '.join(PRESETS)}")
        channels = PRESETS[preset]
    else:
        channels = tuple(int(c) for c in preset)
    return UNet(spatial_dims, in_channels, num_classes, channels, norm=norm)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
