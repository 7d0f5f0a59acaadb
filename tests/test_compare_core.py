"""compare_models (Qt-free core of the Compare widget): warm-up, median timing, Dice."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from napari_dmd.compare import compare_models


@dataclass
class _Seg:
    """A fake segmenter: fixed labels, a scripted time per timed call."""

    labels: np.ndarray
    times: list[float]
    num_classes: int = 3
    class_names: list[str] | None = None
    calls: list[str] = field(default_factory=list)

    def __call__(self, image, **kw):
        self.calls.append("call")
        return self.labels

    def timed(self, image, **kw):
        self.calls.append("timed")
        return self.labels, self.times.pop(0)


@dataclass
class _Entry:
    name: str
    segmenter: _Seg


def test_times_are_medians_after_a_warm_up():
    lab = np.array([[0, 1], [2, 2]])
    t = _Entry("t", _Seg(lab, [9.0, 1.0, 1.2]))  # one slow run (a busy machine) must not decide the speed-up
    s = _Entry("s", _Seg(lab.copy(), [0.1, 0.2, 5.0]))
    seen = []
    res = compare_models(t, s, np.zeros((2, 2), np.float32), progress=lambda d, n: seen.append((d, n)))
    assert t.segmenter.calls == ["call", "timed", "timed", "timed"]  # warm-up first, then 3 timed runs
    assert res.teacher_s == pytest.approx(1.2) and res.student_s == pytest.approx(0.2)
    assert res.timing_runs == 3
    assert np.allclose(res.dice_ts, [1.0, 1.0])


def test_one_timing_run_still_warms_up():
    lab = np.array([[0, 1], [1, 0]])
    t = _Entry("t", _Seg(lab, [2.0]))
    s = _Entry("s", _Seg(lab.copy(), [0.5]))
    res = compare_models(t, s, np.zeros((2, 2), np.float32), timing_runs=1)
    assert (res.teacher_s, res.student_s, res.timing_runs) == (2.0, 0.5, 1)
    assert t.segmenter.calls == ["call", "timed"]
