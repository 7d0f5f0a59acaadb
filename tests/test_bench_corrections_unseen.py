"""``bench corrections --unseen``: the cases a committed teacher's own split left out (never trained on)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_dmd.bench.corrections import unseen_cases
from napari_dmd.data.io import DataError
from napari_dmd.data.sampling import split_cases


def _cases(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=f"case_{i:02d}", label=np.zeros((2, 2), np.uint8), has_label=True)
            for i in range(n)]


def test_unseen_are_the_validation_fifth_beyond_the_recorded_cases():
    cases = _cases(20) + [SimpleNamespace(name="unlabelled", label=None, has_label=False)]
    tr, va = split_cases(20, 0.25, 3)  # the teacher's own split: 15 train, 5 in the validation share
    ckpt = {"config": {"val_fraction": 0.25, "max_val_cases": 2, "seed": 3},
            "val_cases": [f"case_{i:02d}" for i in va[:2]]}
    got = unseen_cases(cases, ckpt, "t.pt")
    assert got == {f"case_{i:02d}" for i in va[2:]} and len(got) == 3
    assert not got & {f"case_{i:02d}" for i in tr}  # never one the teacher trained on


def test_unseen_refuses_a_split_it_cannot_reproduce_or_that_left_nothing_out():
    cases = _cases(12)
    _, va = split_cases(12, 0.25, 0)
    with pytest.raises(DataError, match="not a split of this data"):
        unseen_cases(cases, {"config": {"val_fraction": 0.25, "seed": 0}, "val_cases": ["nope"]}, "t.pt")
    with pytest.raises(DataError, match="none is left unseen"):
        unseen_cases(cases, {"config": {"val_fraction": 0.25, "max_val_cases": 16, "seed": 0},
                             "val_cases": [f"case_{i:02d}" for i in va]}, "t.pt")
