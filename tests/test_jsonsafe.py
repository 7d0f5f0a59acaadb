"""napari_dmd.jsonsafe writes strict JSON: NaN and inf become null, everything else as json.dumps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from napari_dmd.jsonsafe import dumps, finite_or_none


def _strict_loads(text: str) -> object:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_become_null_recursively() -> None:
    record = {"step": 3, "loss": float("nan"), "parts": {"kd": math.inf, "task": 0.5, "dmd": -math.inf},
              "dice": [0.9, float("nan"), (1.0, np.float32("nan"))], "np": np.float64(np.inf),
              "arr": np.array([1.0, np.nan]), "ok": True, "name": "NaN", "none": None}
    text = dumps(record)
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    back = _strict_loads(text)
    assert back == {"step": 3, "loss": None, "parts": {"kd": None, "task": 0.5, "dmd": None},
                    "dice": [0.9, None, [1.0, None]], "np": None, "arr": [1.0, None], "ok": True,
                    "name": "NaN", "none": None}
    # json.dumps as it is writes bare NaN, which a strict parser refuses: the reason for this module
    with pytest.raises(ValueError, match="not JSON"):
        _strict_loads(json.dumps({"loss": float("nan")}))


def test_finite_values_and_kwargs_unchanged() -> None:
    record = {"b": 1.5, "a": [1, 2], "t": (3, 4)}
    assert dumps(record, sort_keys=True) == json.dumps(record, sort_keys=True)
    assert dumps(record, indent=2) == json.dumps(record, indent=2)
    assert finite_or_none(np.int64(7)) == 7 and isinstance(finite_or_none(np.int64(7)), int)
    assert dumps({"p": object()}, default=lambda o: "obj") == '{"p": "obj"}'
