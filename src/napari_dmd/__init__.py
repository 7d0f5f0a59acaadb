"""napari-dmd: compress segmentation U-Nets by Decoupled Multi-scale Distillation.

Kept free of heavy imports (torch, Qt) so that napari starts fast; import submodules directly.
"""

__version__ = "0.1.0"  # the one place: pyproject reads it (setuptools attr), CLI, checkpoints and exports report it
