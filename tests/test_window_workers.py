"""The windows of one call side by side in CPU threads (WindowPool, Segmenter.cpu_workers): same results."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_dmd import inference
from napari_dmd.inference import InferenceCancelled, class_argmax, predict_labels, sliding_window_predict
from napari_dmd.models.presets import build_model
from napari_dmd.segment import CPU_POOL_FIRST_LEVEL, Segmenter
from napari_dmd.window_pool import WindowPool


def _count_in_new_thread() -> int:
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    return seen[0]


def test_pool_runs_chunks_in_worker_threads_in_order(two_threads):
    x = torch.arange(10.0).reshape(10, 1)
    seen = []

    def fn(part):
        seen.append((threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled(), len(part)))
        return part * 2

    with WindowPool(3, threads_each=1) as pool, torch.inference_mode():
        parts = pool.map(fn, x)
    assert torch.equal(torch.cat(parts), x * 2) and [len(p) for p in parts] == [4, 3, 3]
    assert {s[0] for s in seen} != {threading.get_ident()}, "the chunks ran in worker threads"
    assert {s[1:3] for s in seen} == {(1, True)}, "each worker on its share of threads, in the caller's mode"
    assert torch.get_num_threads() == 2 and _count_in_new_thread() == 2, "the process default is given back"


def test_pool_of_one_or_a_single_window_runs_in_the_calling_thread():
    me = threading.get_ident()
    with WindowPool(1) as pool:
        assert pool.map(lambda p: torch.tensor(threading.get_ident()), torch.zeros(4, 1))[0].item() == me
    with WindowPool(2) as pool:
        assert pool.map(lambda p: torch.tensor(threading.get_ident()), torch.zeros(1, 1))[0].item() == me
    with pytest.raises(ValueError, match="workers"):
        WindowPool(0)


def test_pool_passes_a_workers_error_to_the_caller():
    def fn(part):
        raise RuntimeError("worker failed")

    with pytest.raises(RuntimeError, match="worker failed"), WindowPool(2) as pool:
        pool.map(fn, torch.zeros(4, 1))


@pytest.mark.parametrize("dims,image_shape,patch", [(2, (9, 40, 50), [32, 32]), (2, (7, 30, 30), [32, 32]),
                                                    (3, (40, 44, 36), [24, 24, 24])])
def test_workers_give_the_labels_and_probabilities_of_one_thread(two_threads, dims, image_shape, patch):
    torch.manual_seed(0)
    model = build_model("student", dims, 3).eval()
    image = np.random.default_rng(1).standard_normal(image_shape).astype(np.float32)
    one = Segmenter(model, 3, dims, patch, workers=1, batch_size=3)
    two = Segmenter(model, 3, dims, patch, workers=2, batch_size=3)
    assert one.cpu_workers() == (1, 2) and two.cpu_workers() == (2, 1)
    np.testing.assert_allclose(two.probabilities(image), one.probabilities(image), atol=1e-5)
    assert np.array_equal(two(image), one(image))
    assert torch.get_num_threads() == 2 and _count_in_new_thread() == 2


def test_cpu_workers_one_per_thread_within_the_memory_budget(two_threads):
    student = Segmenter(build_model("student", 2, 5), 5, 2, [128, 128])
    assert student.cpu_workers() == (2, 1)
    assert Segmenter(build_model("student", 2, 5), 5, 2, [128, 128], threads=1).cpu_workers() == (1, 1)
    assert Segmenter(build_model("student", 2, 5), 5, 2, [128, 128], threads=4).cpu_workers() == (4, 1)
    assert Segmenter(build_model("student", 2, 5), 5, 2, [128, 128], threads=4, workers=2).cpu_workers() == (2, 2)
    big = Segmenter(build_model("teacher", 3, 2), 2, 3, [128, 128, 128])  # 4 windows of 128^3 x 32 channels
    assert big._first_level_values() * big.windows_per_call() > CPU_POOL_FIRST_LEVEL
    assert big.cpu_workers() == (1, 2), "a 3D teacher on large windows keeps one worker (memory)"
    assert Segmenter(lambda x: x, 3, 2, [8, 8]).cpu_workers() == (1, 2), "a foreign predictor: no workers"
    tiny = Segmenter(build_model("student-tiny", 2, 5), 5, 2, [128, 128])
    assert tiny.model.stem == 4 and tiny.cpu_workers() == (1, 2), "a quarter-resolution student keeps one worker"
    assert Segmenter(build_model("student-tiny", 2, 5), 5, 2, [128, 128], workers=2).cpu_workers() == (2, 1)


def test_workers_keep_progress_and_cancel():
    torch.manual_seed(0)
    net = build_model("student", 2, 3).eval()
    image = np.random.default_rng(0).standard_normal((33, 32, 32)).astype(np.float32)
    sizes, ticks = [], []

    def counted(x):
        sizes.append(int(x.shape[0]))
        return net(x)

    counted_net = torch.nn.Sequential()  # a module, so the pool is used
    counted_net.forward = counted  # type: ignore[method-assign]
    predict_labels(counted_net, image, [32, 32], batch_size=32, workers=2, progress=lambda d, t: ticks.append((d, t)))
    assert sorted(sizes) == [8, 8, 8, 9], "33 windows: two equal calls of 17 and 16, each split in two"
    assert ticks == [(17, 33), (33, 33)]
    with pytest.raises(InferenceCancelled):
        sliding_window_predict(counted_net, image, [32, 32], batch_size=4, workers=2,
                               should_stop=lambda: len(ticks) > 2, progress=lambda d, t: ticks.append(d))
    with pytest.raises(ValueError, match="workers"):
        sliding_window_predict(net, image, [32, 32], workers=0)


def test_a_wrong_output_from_a_worker_is_reported():
    net = build_model("student", 2, 3).eval()
    with pytest.raises(ValueError, match="classes"):
        predict_labels(net, np.zeros((6, 32, 32), np.float32), [32, 32], num_classes=4, batch_size=2, workers=2)


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_class_argmax_in_parts_equals_numpy(monkeypatch, workers):
    monkeypatch.setattr(inference, "ARGMAX_SPLIT_VALUES", 1)
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(4, 5, 6, 7)).astype(np.float32)  # many ties: the first class wins
    assert np.array_equal(class_argmax(scores, np.uint8, workers), scores.argmax(0))
    flat = rng.standard_normal((3, 11)).astype(np.float32)
    assert np.array_equal(class_argmax(flat, np.int16, workers), flat.argmax(0))
