"""The training engine: every method with and without labels, stop/resume equivalence, faults."""

from __future__ import annotations

import dataclasses
import multiprocessing
import threading

import numpy as np
import pytest
import torch

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.config import ConfigError, TrainConfig
from napari_dmd.data.io import DataError
from napari_dmd.demo import phantom_cases
from napari_dmd.distill import engine as engine_mod
from napari_dmd.distill.engine import Distiller, TrainingError, lr_factor, resolve_num_workers
from napari_dmd.distill.state import payload
from napari_dmd.teachers import ModelTeacher, load_teacher

TINY = dict(model="4,8,16", batch_size=2, patch_size=[32, 32], val_interval=2, checkpoint_interval=3,
            num_threads=2)


@pytest.fixture(scope="module")
def cases():
    return phantom_cases(6, 2)


@pytest.fixture(scope="module")
def teacher_path(cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = TrainConfig(method="none", iterations=4, **TINY)
    d = Distiller(cfg, cases, output_dir=out, role="teacher")
    d.run_to_end()
    return d.last_path


@pytest.mark.parametrize("method", ["none", "ds", "kd", "dkd", "mfd", "dmd"])
@pytest.mark.parametrize("labelled", [True, False])
def test_every_method_runs_with_and_without_labels(method, labelled, cases, teacher_path, tmp_path):
    train = cases if labelled else [dataclasses.replace(c, label=None) for c in cases[:4]]
    val = None if labelled else cases[4:]
    cfg = TrainConfig(method=method, iterations=3, **TINY)
    d = Distiller(cfg, train, val_cases=val, teacher=load_teacher(teacher_path), output_dir=tmp_path)
    events = list(d.run())
    steps = [e for e in events if e.kind == "step"]
    assert [e.iteration for e in steps] == [1, 2, 3]
    assert all(np.isfinite(v) for e in steps for v in e.parts.values())
    expected = {"none": {"task"}, "ds": {"task", "ds"}, "kd": {"task", "kd"}, "dkd": {"task", "tckd", "nckd"},
                "mfd": {"task", "mfd"}, "dmd": {"task", "tckd", "nckd", "ds"}}[method]  # DMD: heads supervised
    assert expected <= set(steps[0].parts)
    assert ("ds" in steps[0].parts) == (method in ("ds", "dmd")), "head supervision: DMD's default only"
    assert load_checkpoint(d.last_path)["config"]["head_supervision"] == (1.0 if method == "dmd" else 0.0)
    assert events[-1].kind == "done"
    assert any(e.kind == "validation" and e.mean_dice is not None for e in events)
    ckpt = load_checkpoint(d.last_path)
    assert ckpt["config"]["method"] == method and ckpt["iteration"] == 3
    assert (ckpt["heads"] is not None) == (method in ("ds", "mfd", "dmd"))


def test_dmd_as_published_with_head_supervision_0(cases, teacher_path, tmp_path):
    cfg = TrainConfig(method="dmd", iterations=2, head_supervision=0.0, **TINY)
    d = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path)
    steps = [e for e in d.run() if e.kind == "step"]
    assert {"task", "tckd", "nckd"} <= set(steps[0].parts) and "ds" not in steps[0].parts
    assert load_checkpoint(d.last_path)["config"]["head_supervision"] == 0.0


def test_teacher_free_distillation_needs_labels(cases, tmp_path):
    with pytest.raises(ConfigError, match="needs a teacher"):
        Distiller(TrainConfig(method="dmd", **TINY), cases, output_dir=tmp_path)
    unl = [dataclasses.replace(c, label=None) for c in cases]
    with pytest.raises(ConfigError, match="labelled"):
        Distiller(TrainConfig(method="none", **TINY), unl, output_dir=tmp_path)


def _lrs_and_params(events, d):
    return [e.lr for e in events if e.kind == "step"], {k: v.clone() for k, v in d.model.state_dict().items()}


def test_stop_and_resume_equals_uninterrupted_run(cases, teacher_path, tmp_path):
    cfg = TrainConfig(method="dmd", iterations=8, **TINY)
    full = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path / "full")
    full_lrs, full_params = _lrs_and_params(list(full.run()), full)

    part = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path / "part")
    events = []
    for ev in part.run():
        events.append(ev)
        if ev.kind == "step" and ev.iteration == 5:
            part.request_stop()
    assert events[-1].kind == "stopped" and events[-1].iteration == 5, "stop takes effect within one step"
    resumed = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path / "part",
                        resume=part.last_path)
    assert resumed.iteration == 5
    events2 = list(resumed.run())
    lrs = [e.lr for e in events if e.kind == "step"] + [e.lr for e in events2 if e.kind == "step"]
    assert resumed.iteration == 8 and events2[-1].kind == "done"
    assert lrs == pytest.approx(full_lrs, rel=1e-12), "same schedule"
    for k, v in resumed.model.state_dict().items():
        assert torch.allclose(v, full_params[k], atol=1e-5), k


def test_closing_the_generator_saves_a_checkpoint(cases, tmp_path):
    d = Distiller(TrainConfig(method="none", iterations=50, **TINY), cases, output_dir=tmp_path)
    gen = d.run()
    for ev in gen:
        if ev.kind == "step" and ev.iteration == 2:
            break
    gen.close()
    assert load_checkpoint(d.last_path)["iteration"] == 2


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(cases, tmp_path, monkeypatch):
    d = Distiller(TrainConfig(method="none", iterations=10, **TINY), cases, output_dir=tmp_path)
    gen = d.run()
    for ev in gen:
        if ev.kind == "checkpoint":
            break
    good = load_checkpoint(d.last_path)["iteration"]

    def nan_loss(*a, **k):
        t = torch.tensor(float("nan"), requires_grad=True)
        return t, {"task": t.detach(), "total": t.detach()}

    monkeypatch.setattr(engine_mod, "distill_loss", nan_loss)
    with pytest.raises(TrainingError, match="nan.*last good checkpoint.*lr"):
        for _ in gen:
            pass
    assert load_checkpoint(d.last_path)["iteration"] == good


def test_teacher_mismatch_is_reported(cases, tmp_path):
    net3d = torch.nn.Conv3d(1, 3, 1)
    with pytest.raises(ConfigError, match="3D"):
        Distiller(TrainConfig(method="kd", **TINY), cases, teacher=ModelTeacher(net3d, 6, 3), output_dir=tmp_path)
    net = torch.nn.Conv2d(1, 3, 1)
    with pytest.raises(Exception, match="out of range|classes"):
        Distiller(TrainConfig(method="kd", **TINY), cases, teacher=ModelTeacher(net, 3, 2), output_dir=tmp_path)


@pytest.mark.parametrize("bad", [dict(iterations=-1), dict(batch_size=0), dict(temperature=0),
                                 dict(method="fitnet"), dict(patch_size=[2, 2]), dict(num_workers=-2),
                                 dict(scale_resample="nearest")])
def test_absurd_settings_rejected(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad).validate()


def test_lr_schedule_shape():
    total = 100
    f = [lr_factor(i, total, 0.1) for i in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] < 0.05


# ------------------------------------------------------------------ data-loading workers


def test_num_workers_setting_is_checked_and_resolved(monkeypatch):
    for bad in (-2, 1.5, "4"):
        with pytest.raises(ConfigError, match="num_workers must be -1 .auto."):
            TrainConfig(num_workers=bad).validate()
    assert resolve_num_workers(-1, torch.device("cpu")) == 0 and resolve_num_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr(engine_mod.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert resolve_num_workers(-1, torch.device("cuda")) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 ranks share the node's 16 cores
    assert resolve_num_workers(-1, torch.device("cuda")) == 1


def test_loader_workers_train_from_a_thread_and_stop_cleanly(cases, tmp_path, monkeypatch):
    batches = []
    next_batch = Distiller._next_batch
    monkeypatch.setattr(Distiller, "_next_batch", lambda self: batches.append(next_batch(self)) or batches[-1])
    d = Distiller(TrainConfig(method="none", iterations=50, num_workers=2, **TINY), cases, val_cases=[],
                  output_dir=tmp_path)
    events, children = [], []

    def train():  # as the napari widget does: the generator is driven from a worker thread
        for ev in d.run():
            events.append(ev)
            if ev.kind == "step" and ev.iteration == 3:
                children.extend(multiprocessing.active_children())
                d.request_stop()

    thread = threading.Thread(target=train)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and events[-1].kind == "stopped" and events[-1].iteration == 3
    assert "2 loader workers" in events[0].message and len(children) == 2
    assert all(np.isfinite(v) for e in events if e.kind == "step" for v in e.parts.values())
    assert not torch.equal(batches[0][0], batches[1][0]), "workers 0 and 1 draw different patches"
    assert multiprocessing.active_children() == [] and not any(c.is_alive() for c in children)


def test_loader_workers_shut_down_on_close_and_on_error(cases, tmp_path, monkeypatch):
    cfg = TrainConfig(method="none", iterations=50, num_workers=2, **TINY)
    d = Distiller(cfg, cases, val_cases=[], output_dir=tmp_path / "close")
    gen = d.run()
    for ev in gen:
        if ev.kind == "step" and ev.iteration == 2:
            break
    assert len(multiprocessing.active_children()) == 2
    gen.close()
    assert multiprocessing.active_children() == [] and load_checkpoint(d.last_path)["iteration"] == 2

    d = Distiller(cfg, cases, val_cases=[], output_dir=tmp_path / "error")
    gen = d.run()
    for ev in gen:
        if ev.kind == "step":
            break

    def nan_loss(*a, **k):
        t = torch.tensor(float("nan"), requires_grad=True)
        return t, {"task": t.detach(), "total": t.detach()}

    monkeypatch.setattr(engine_mod, "distill_loss", nan_loss)
    with pytest.raises(TrainingError, match="nan"):
        for _ in gen:
            pass
    assert multiprocessing.active_children() == []


def test_loader_workers_resume_deterministically(cases, tmp_path):
    cfg = TrainConfig(method="none", iterations=4, num_workers=2, **TINY)
    part = Distiller(cfg, cases, val_cases=[], output_dir=tmp_path)
    for ev in part.run():
        if ev.kind == "step" and ev.iteration == 2:
            part.request_stop()
    params = []
    for _ in range(2):  # the workers are re-seeded from (seed, iteration): the same checkpoint, the same run
        d = Distiller(cfg, cases, val_cases=[], output_dir=tmp_path, resume=part.last_path)
        d.run_to_end()
        params.append(d.model.state_dict())
    for k, v in params[0].items():
        assert torch.equal(v, params[1][k]), k


@pytest.mark.parametrize("supported", [True, False])
def test_cpu_bf16_autocasts_teacher_and_student_where_supported(supported, cases, teacher_path, tmp_path,
                                                                monkeypatch):
    if supported and not engine_mod.cpu_bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    monkeypatch.setattr(engine_mod, "cpu_bf16_supported", lambda: supported)
    cfg = TrainConfig(method="dmd", iterations=2, cpu_bf16=True, device="cpu", **TINY)
    teacher = load_teacher(teacher_path)
    seen: list[torch.dtype] = []
    original = teacher.__call__
    monkeypatch.setattr(type(teacher), "__call__", lambda self, x: seen.append(
        torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32) or original(x))
    # no validation: it calls the teacher too (its per-class Dice, once), outside the training steps counted here
    d = Distiller(cfg, cases, val_cases=[], teacher=teacher, output_dir=tmp_path)
    events = list(d.run())
    start = events[0].message
    assert ("bfloat16 autocast" in start) == supported
    assert ("cpu_bf16 ignored" in start) == (not supported)
    assert seen == [torch.bfloat16 if supported else torch.float32] * 2
    assert all(np.isfinite(v) for e in events if e.kind == "step" for v in e.parts.values())
    assert next(d.model.parameters()).dtype == torch.float32  # weights stay float32


@pytest.mark.parametrize("method", ["mfd", "dmd"])
def test_pooled_scale_resampling_trains(method, cases, teacher_path, tmp_path, monkeypatch):
    seen: list[str] = []
    original = engine_mod.distill_loss
    monkeypatch.setattr(engine_mod, "distill_loss", lambda *a, **k: seen.append(k["resample"]) or original(*a, **k))
    cfg = TrainConfig(method=method, iterations=2, scale_resample="pool", **TINY)
    d = Distiller(cfg, cases, teacher=load_teacher(teacher_path), output_dir=tmp_path)
    steps = [e for e in d.run() if e.kind == "step"]
    assert seen == ["pool", "pool"]
    assert all(np.isfinite(v) for e in steps for v in e.parts.values())


@pytest.mark.parametrize("supported", [True, False])
def test_cpu_bf16_on_a_3d_model_casts_only_the_teachers_forward(supported, tmp_path, monkeypatch):
    """3D + ``cpu_bf16``: the teacher's forward pass runs under bfloat16 autocast, the student's step in float32
    (its 3D bfloat16 gradients were unstable); without native bfloat16 both stay float32, and the start message
    says which."""
    if supported and not engine_mod.cpu_bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    monkeypatch.setattr(engine_mod, "cpu_bf16_supported", lambda: supported)
    from napari_dmd.models.presets import build_model

    torch.manual_seed(0)
    teacher = ModelTeacher(build_model((4, 8, 16), 3, 6), 6, 3)
    seen: list[torch.dtype] = []
    original = teacher.__call__

    def dtype_now() -> torch.dtype:
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32

    monkeypatch.setattr(type(teacher), "__call__", lambda self, x: seen.append(dtype_now()) or original(x))
    cfg = TrainConfig(method="dmd", model="4,8,16", iterations=2, batch_size=1, patch_size=[16, 16, 16],
                      cpu_bf16=True, device="cpu", val_interval=5, num_threads=1)
    d = Distiller(cfg, phantom_cases(2, 3), val_cases=[], teacher=teacher, output_dir=tmp_path)
    student_seen: list[torch.dtype] = []
    d.train_net.register_forward_pre_hook(lambda *_: student_seen.append(dtype_now()))
    events = list(d.run())
    start = events[0].message
    assert d.amp_dtype is None and student_seen == [torch.float32] * 2
    assert seen == [torch.bfloat16 if supported else torch.float32] * 2
    assert ("bfloat16 teacher forward" in start) == supported and ("cpu_bf16 ignored" in start) == (not supported)
    assert all(np.isfinite(v) for e in events if e.kind == "step" for v in e.parts.values())


@pytest.mark.parametrize(("dims", "channels_last"), [(3, True), (3, False), (2, True)])
def test_cpu_3d_students_train_channels_last_and_the_teacher_does_not(dims, channels_last, tmp_path, monkeypatch):
    """On the CPU a 3D student (and its batch) go channels-last when ``channels_last`` is on; the teacher's input
    and 2D students keep the default layout; the first step's losses equal the default layout's to rounding."""
    from napari_dmd.models.presets import build_model

    cases_nd = phantom_cases(3, dims)
    patch = [16, 16, 16] if dims == 3 else [32, 32]
    torch.manual_seed(0)
    teacher = ModelTeacher(build_model((4, 8, 16), dims, 6), 6, dims)
    seen: list[bool] = []
    original = teacher.__call__
    monkeypatch.setattr(type(teacher), "__call__", lambda self, x: seen.append(x.is_contiguous()) or original(x))
    parts = {}
    for cl in (channels_last, False):
        cfg = TrainConfig(method="dmd", model="4,8,16", iterations=1, batch_size=2, patch_size=patch,
                          device="cpu", channels_last=cl, val_interval=5, num_threads=1, seed=3)
        d = Distiller(cfg, cases_nd, val_cases=[], teacher=teacher, output_dir=tmp_path / str(cl))
        weight = next(p for p in d.model.parameters() if p.ndim == dims + 2 and p.shape[1] > 1)
        expect_cl = cl and dims == 3
        if dims == 3:
            assert weight.is_contiguous(memory_format=torch.channels_last_3d) == expect_cl
        assert weight.is_contiguous() == (not expect_cl)
        parts.setdefault(cl, d._step())
        assert all(v.is_contiguous() for v in payload(d, False)["state_dict"].values())  # saved in the default layout
    assert seen and all(seen)  # the teacher saw channels-first batches every time
    for k, v in parts[False].items():
        assert parts[channels_last][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


# ------------------------------------------------------------------ checks and validation


def test_unlabelled_cases_are_checked_for_nan_and_constant_images(cases, teacher_path, tmp_path):
    bad = cases[0].image.astype(np.float32).copy()
    bad[0, 0] = np.nan
    unl = [dataclasses.replace(c, label=None) for c in cases[1:4]]
    teacher = load_teacher(teacher_path)
    with pytest.raises(DataError, match="NaN"):
        Distiller(TrainConfig(method="dmd", **TINY), [dataclasses.replace(cases[0], image=bad, label=None)] + unl,
                  teacher=teacher, output_dir=tmp_path / "nan")
    flat = np.zeros_like(cases[0].image)
    with pytest.raises(DataError, match="constant image"):
        Distiller(TrainConfig(method="dmd", **TINY), [dataclasses.replace(cases[0], image=flat, label=None)] + unl,
                  teacher=teacher, output_dir=tmp_path / "flat")


def test_ignored_voxels_are_left_out_of_validation_dice(cases, tmp_path):
    from napari_dmd.distill.engine import IGNORE
    from napari_dmd.metrics import dice_per_class

    label = cases[4].label.copy()
    label[:, : label.shape[1] // 2] = IGNORE  # half the validation case is marked "ignore"
    val = [dataclasses.replace(cases[4], label=label)]
    d = Distiller(TrainConfig(method="none", iterations=1, **TINY), cases[:4], val_cases=val, output_dir=tmp_path)
    events = list(d.run())  # validates at the last step: no "labels out of range"
    dice = next(e for e in events if e.kind == "validation").dice
    pred = d.predict(d._val_images[0]).argmax(0)
    keep = label != IGNORE
    from napari_dmd.distill.validation import case_dice

    expected = dice_per_class(pred[keep], label[keep], d.num_classes)
    np.testing.assert_allclose(np.nan_to_num(dice, nan=-1), np.nan_to_num(expected, nan=-1))
    assert np.allclose(np.nan_to_num(case_dice(pred, label, d.num_classes), nan=-1), np.nan_to_num(expected, nan=-1))


def test_a_run_without_a_folder_goes_under_the_runs_root(cases, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DMD_RUNS", str(tmp_path))
    d = Distiller(TrainConfig(method="none", iterations=1, **TINY), cases, role="teacher")
    assert d.output_dir.parent == tmp_path and d.output_dir.name.startswith("teacher-")
