"""Shared fixtures: the real data beside the clone (../shared/data, or $NAPARI_DMD_DATA); two torch threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("NAPARI_DMD_DATA", REPO.parent / "shared" / "data"))


def data_dir(name: str) -> Path:
    path = DATA_ROOT / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not present (set NAPARI_DMD_DATA)")
    return path


@pytest.fixture
def hippocampus_dir() -> Path:
    return data_dir("msd_hippocampus")


@pytest.fixture
def chaos_dir() -> Path:
    return data_dir("chaos_mr_t2")


@pytest.fixture
def hc18_dir() -> Path:
    return data_dir("hc18_fetal_head")


@pytest.fixture
def two_threads():
    """Torch runs 2 intra-op threads in the test; the previous count is restored after, whatever the test set."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
