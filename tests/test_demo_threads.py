"""The demo pair's CPU threads: one on a 2-core machine (a second thread made it twice as slow there when busy)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from napari_dmd import pretrained

TINY = pretrained.DemoRecipe(teacher_model="4,8,16", student_model="2,4,8", teacher_iterations=2,
                             student_iterations=1, teacher_patch=32, student_patch=32, teacher_batch=2,
                             student_batch=2, n_2d=1, sizes_2d=(48,), n_3d=1, shape_3d=(4, 48, 48), slice_step=2)


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 4)])
def test_demo_threads_by_cores(cores, threads):
    assert pretrained.demo_threads(cores) == threads


def test_demo_trains_with_one_thread_on_two_cores(tmp_path, monkeypatch):
    """With no thread count in the recipe, a 2-core machine trains the pair with 1 thread (not 2), and the
    process's thread count is restored afterwards."""
    import torch

    monkeypatch.setattr(pretrained, "usable_cores", lambda cap=8: min(cap, 2))
    before = torch.get_num_threads()
    seen: set[int] = set()
    pretrained.phantom_models(lambda d, n: seen.add(torch.get_num_threads()), tmp_path, recipe=TINY, device="cpu")
    assert seen == {1}
    assert torch.get_num_threads() == before
    seen.clear()  # a recipe's own count wins
    pretrained.phantom_models(lambda d, n: seen.add(torch.get_num_threads()), tmp_path / "b",
                              recipe=replace(TINY, num_threads=2), device="cpu")
    assert seen == {2}
