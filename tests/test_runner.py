"""The one run path (napari_dmd.runner): folders, checks, driving, stopping, the final checkpoint."""

from __future__ import annotations

import os
import signal

import pytest

from napari_dmd.config import TrainConfig
from napari_dmd.data.io import DataError
from napari_dmd.demo import phantom_cases
from napari_dmd.runner import default_output_dir, drive, events, final_checkpoint, free_folder, prepare_run
from napari_dmd.teachers import load_teacher

TINY = dict(model="4,8,16", batch_size=2, patch_size=[32, 32], val_interval=2, checkpoint_interval=3,
            num_threads=1)


@pytest.fixture(scope="module")
def cases():
    return phantom_cases(5, 2)


@pytest.fixture(scope="module")
def teacher(cases, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    run, warnings = prepare_run(TrainConfig(method="none", iterations=2, **TINY), cases, output_dir=out,
                                role="teacher", class_names=["bg", "a", "b", "c", "d", "e"])
    assert warnings == []
    drive(run)
    return load_teacher(final_checkpoint(run))


def test_free_folder_skips_folders_with_any_run_file(tmp_path):
    base = tmp_path / "run"
    assert free_folder(base) == base
    base.mkdir()
    (base / "config.yaml").write_text("x")  # not only last.pt marks a folder in use
    assert free_folder(base) == tmp_path / "run-2"
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "events.jsonl").write_text("")
    assert free_folder(base) == tmp_path / "run-3"


def test_default_output_dir_under_runs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DMD_RUNS", str(tmp_path))
    out = default_output_dir("student-dmd")
    assert out.parent == tmp_path and out.name.startswith("student-dmd-")


def test_prepare_run_takes_class_names_from_teacher_and_drives_to_the_end(cases, teacher, tmp_path):
    cfg = TrainConfig(method="dmd", iterations=3, **TINY)
    run, _ = prepare_run(cfg, cases, teacher=teacher, output_dir=tmp_path / "s", class_names=["x"] * 6)
    assert cfg.class_names == ["bg", "a", "b", "c", "d", "e"]  # the teacher's beat dataset.json's
    seen = []
    result = drive(run, on_event=lambda ev: seen.append(ev.kind))
    assert result["iteration"] == 3 and seen[0] == "start" and seen[-1] == "done"
    assert final_checkpoint(run) == run.best_path and run.best_path.exists()


def test_new_run_without_folder_goes_to_a_default_folder(cases, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_DMD_RUNS", str(tmp_path))
    run, _ = prepare_run(TrainConfig(method="none", iterations=1, **TINY), cases, role="teacher")
    assert run.output_dir.parent == tmp_path and run.output_dir.name.startswith("teacher-")


def test_dims_checked_before_anything_is_built(cases, tmp_path):
    cfg = TrainConfig(method="none", iterations=1, spatial_dims=3, **{**TINY, "patch_size": None})
    with pytest.raises(DataError, match="2D image of shape"):
        prepare_run(cfg, cases, output_dir=tmp_path / "x", role="teacher")
    assert not (tmp_path / "x").exists()


def test_should_stop_stops_at_the_next_step_and_keeps_last_pt(cases, teacher, tmp_path):
    cfg = TrainConfig(method="kd", iterations=50, **TINY)
    run, _ = prepare_run(cfg, cases, teacher=teacher, output_dir=tmp_path / "s")
    steps = []

    def on_event(ev):
        if ev.kind == "step":
            steps.append(ev.iteration)

    result = drive(run, on_event=on_event, should_stop=lambda: len(steps) >= 2)
    assert result["iteration"] == 2 and run.last_path.exists()


def test_first_ctrl_c_stops_cleanly(cases, teacher, tmp_path):
    cfg = TrainConfig(method="kd", iterations=50, **TINY)
    run, _ = prepare_run(cfg, cases, teacher=teacher, output_dir=tmp_path / "s")
    told = []
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background

    def on_event(ev):
        if ev.kind == "step" and ev.iteration == 1:
            os.kill(os.getpid(), signal.SIGINT)

    result = drive(run, on_event=on_event, on_interrupt=lambda: told.append(True))
    assert told == [True] and 1 <= result["iteration"] < 50 and run.last_path.exists()
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_closing_the_events_generator_keeps_last_pt(cases, teacher, tmp_path):
    run, _ = prepare_run(TrainConfig(method="kd", iterations=50, **TINY), cases, teacher=teacher,
                         output_dir=tmp_path / "s")
    gen = events(run)
    for ev in gen:
        if ev.kind == "step" and ev.iteration == 2:
            break
    gen.close()
    assert run.last_path.exists()
