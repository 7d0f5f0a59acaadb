"""Thin Qt views of the napari-dmd engine (one widget per module; shared helpers in ``_common``).

Widgets import the core; the core never imports Qt or napari (DESIGN.md §5).
"""
