"""CPU threads of a prediction: one for a small U-Net while idle OpenMP threads sleep, restored afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_dmd.models.presets import build_model
from napari_dmd.segment import CPU_THREADED_FIRST_LEVEL, Segmenter, torch_threads


def test_small_students_run_on_one_thread_only_when_idle_threads_sleep(monkeypatch, two_threads):
    student = Segmenter(build_model("student", 3, 3), 3, 3, [48, 64, 48])
    teacher = Segmenter(build_model("teacher", 3, 3), 3, 3, [48, 64, 48])
    # the student's call: 4 windows x 24x32x24 positions x 8 channels, under the threshold; the teacher's above
    assert student._first_level_values() * student.windows_per_call() == 4 * 24 * 32 * 24 * 8 < CPU_THREADED_FIRST_LEVEL
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert (student.cpu_threads(), teacher.cpu_threads()) == (1, 2)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert (student.cpu_threads(), teacher.cpu_threads()) == (2, 2)
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert student.cpu_threads() == 2
    assert Segmenter(build_model("student", 3, 3), 3, 3, [48, 64, 48], threads=3).cpu_threads() == 3
    assert Segmenter(lambda x: x, 3, 3, [8, 8, 8]).cpu_threads() == 2, "a foreign model keeps torch's count"


def test_a_prediction_sets_and_restores_the_thread_count(monkeypatch, two_threads):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = build_model("student", 2, 3).eval()

        def forward(self, x):
            seen.append(torch.get_num_threads())
            return self.net(x)

    seg = Segmenter(Spy(), 3, 2, [64, 64], threads=1)
    labels = seg(np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32))
    assert labels.shape == (40, 50) and seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_torch_threads_restores_after_an_error(two_threads):
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2
