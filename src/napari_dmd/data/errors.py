"""The error every data problem raises (re-exported by :mod:`napari_dmd.data.io`)."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad input data; the message is one line naming the file (or case/layer) and what is wrong."""
