"""The :class:`Case`: one image with its optional label map (arrays in ``(z, y, x)`` / ``(y, x)`` order)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Case"]


@dataclass
class Case:
    """One image with its optional label map, spacing (array order), affine (NIfTI x, y, z) and name."""

    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, ...]
    affine: np.ndarray
    name: str
    image_path: str | None = None
    label_path: str | None = None

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.image.ndim

    @property
    def has_label(self) -> bool:
        """True when the case carries a label map."""
        return self.label is not None

    @property
    def source(self) -> str:
        """What to name in messages: the image file, else the case name."""
        return self.image_path or self.name
