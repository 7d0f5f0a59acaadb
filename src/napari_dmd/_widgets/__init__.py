"""Thin Qt views of the napari-dmd engine (one widget per module; shared helpers in ``_``-modules).

Widgets import the core; the core never imports Qt or napari (docs/architecture.md).
"""

import os as _os

# Idle OpenMP threads sleep instead of spinning (as the CLI does): on a small or shared CPU, torch's spinning
# threads next to napari's Qt thread slowed training by an order of magnitude. Effective when torch is first
# imported after this (npe2 imports a widget module before the core modules that import torch).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
