"""Faults: SIGKILL mid-run, kill during a checkpoint write, full disk, out of memory, existing runs."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from napari_dmd import checkpoint as ckpt_mod
from napari_dmd.checkpoint import load_checkpoint, save_checkpoint
from napari_dmd.cli import main
from napari_dmd.config import ConfigError, TrainConfig
from napari_dmd.demo import phantom_cases
from napari_dmd.distill.engine import Distiller, TrainingError

TINY = dict(model="4,8,16", batch_size=2, patch_size=[32, 32], val_interval=100, num_threads=1)


def _last_logged_step(events_file) -> int:
    steps = [json.loads(line)["iteration"] for line in events_file.read_text(encoding="utf-8").splitlines()
             if json.loads(line)["kind"] == "step"]
    return max(steps) if steps else 0


def test_sigkill_mid_run_resumes_losing_at_most_one_interval(hippocampus_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train-teacher", "--data", str(hippocampus_dir), "--max-cases", "5", "--model", "4,8,16",
            "--iterations", "100000", "--checkpoint-interval", "3", "--log-interval", "1", "--val-interval",
            "100000", "--batch-size", "1", "--num-threads", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "napari_dmd.cli", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / "events.jsonl").exists() and _last_logged_step(out / "events.jsonl") >= 8:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _last_logged_step(out / "events.jsonl")
    assert killed_at >= 8
    saved = load_checkpoint(out / "last.pt")["iteration"]
    assert killed_at - saved <= 3 + 1, (killed_at, saved)
    # rerunning without --resume refuses to overwrite the run
    assert main([*args[:-1], "--out", str(out), "--iterations", "20"]) == 2
    assert main([*args[:-1], "--out", str(out), "--iterations", str(saved + 2),
                 "--resume", str(out / "last.pt")]) == 0
    assert load_checkpoint(out / "last.pt")["iteration"] == saved + 2


def test_kill_during_checkpoint_write_never_leaves_a_half_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {}, "state_dict": {}, "tag": "old"})
    script = ("import sys, torch; from napari_dmd.checkpoint import save_checkpoint\n"
              "big = torch.zeros(60_000_000)\n"
              "while True: save_checkpoint(sys.argv[1], {'model': {}, 'state_dict': {'w': big}, 'tag': 'new'})\n")
    for delay in (0.5, 1.0, 1.7):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = load_checkpoint(path)  # always a complete file: the old one or a new one
        assert data["tag"] in ("old", "new")
    save_checkpoint(path, {"model": {}, "state_dict": {}, "tag": "after"})
    assert not list(tmp_path.glob(".last.pt.*.tmp")), "stale temp files are cleaned up"


def test_full_disk_keeps_previous_checkpoint(tmp_path, monkeypatch):
    d = Distiller(TrainConfig(method="none", iterations=6, checkpoint_interval=2, **TINY), phantom_cases(4, 2),
                  output_dir=tmp_path)
    gen = d.run()
    for ev in gen:
        if ev.kind == "checkpoint":
            break
    before = (tmp_path / "last.pt").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(TrainingError, match="No space left on device.*previous last.pt is intact"):
        for _ in gen:
            pass
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".last.pt.*.tmp"))


def test_out_of_memory_names_the_setting_to_lower(tmp_path, monkeypatch):
    d = Distiller(TrainConfig(method="none", iterations=3, **TINY), phantom_cases(4, 2), output_dir=tmp_path)

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(d, "_step", oom)
    with pytest.raises(TrainingError, match="out of memory.*batch_size.*patch_size"):
        d.run_to_end()


def test_existing_run_is_not_overwritten(tmp_path):
    cases = phantom_cases(4, 2)
    Distiller(TrainConfig(method="none", iterations=1, **TINY), cases, output_dir=tmp_path).run_to_end()
    with pytest.raises(ConfigError, match="already holds a run"):
        Distiller(TrainConfig(method="none", iterations=1, **TINY), cases, output_dir=tmp_path)
