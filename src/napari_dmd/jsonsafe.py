"""Strict JSON for logs and reports: non-finite floats become ``null`` instead of the bare ``NaN``/``Infinity``
that :func:`json.dumps` writes by default (which no strict JSON parser reads).

Used where events and reports are written (``events.jsonl``, ``--json`` reports) so that ``jq``,
JavaScript's ``JSON.parse`` or pandas read them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "finite_or_none"]


def finite_or_none(obj: Any) -> Any:
    """A copy of ``obj`` with every NaN / inf float (also NumPy scalars and 0-d arrays) replaced by ``None``.

    Walks dicts, lists, tuples (as lists) and objects with ``tolist()`` (NumPy arrays and scalars,
    torch tensors); other values are returned as they are.
    """
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):  # numpy scalars/arrays, torch tensors
        return finite_or_none(tolist())
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """:func:`json.dumps` with non-finite floats written as ``null`` (``allow_nan=False``: strict JSON).

    Keyword arguments go to :func:`json.dumps` (``indent``, ``sort_keys``, ``default``...). Values that
    ``default`` converts are checked as well: a ``default`` returning NaN raises ValueError.
    """
    kwargs.setdefault("allow_nan", False)
    return json.dumps(finite_or_none(obj), **kwargs)
