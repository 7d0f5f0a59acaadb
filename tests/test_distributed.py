"""torchrun with 2 CPU processes (gloo): identical weights, different patches, resumable in one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from napari_dmd.checkpoint import load_checkpoint
from napari_dmd.cli import main

TORCHRUN = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")


@pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun is not installed")
def test_torchrun_two_ranks_on_cpu(hippocampus_dir, tmp_path):
    data = ["--data", str(hippocampus_dir), "--max-cases", "6"]
    fast = ["--iterations", "4", "--val-interval", "2", "--checkpoint-interval", "2", "--batch-size", "1",
            "--num-threads", "1", "--device", "cpu", "--quiet"]
    assert main(["train-teacher", *data, "--out", str(tmp_path / "t"), "--model", "4,8,16", *fast]) == 0
    dump = tmp_path / "ranks"
    env = {**os.environ, "NAPARI_DMD_RANK_DUMP": str(dump), "OMP_NUM_THREADS": "1"}
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "napari_dmd.cli", "distill", "--teacher",
           str(tmp_path / "t" / "last.pt"), *data, "--out", str(tmp_path / "s"), "--method", "dmd",
           "--model", "4,8,16", *fast]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((dump / f"rank{i}.json").read_text(encoding="utf-8")) for i in range(2)]
    assert [d["world_size"] for d in ranks] == [2, 2] and [d["iteration"] for d in ranks] == [4, 4]
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"], "DDP keeps the replicas identical"
    assert ranks[0]["weights_abs_sum"] == ranks[1]["weights_abs_sum"]
    assert set(ranks[0]["patch_hashes"]).isdisjoint(ranks[1]["patch_hashes"]), "ranks sample different patches"
    ckpt = load_checkpoint(tmp_path / "s" / "last.pt")
    assert ckpt["iteration"] == 4 and len(ckpt["train_state"]["samplers"]) == 2
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    # the DDP checkpoint resumes in a single process
    assert main(["distill", "--teacher", str(tmp_path / "t" / "last.pt"), *data, "--out", str(tmp_path / "s"),
                 "--method", "dmd", "--model", "4,8,16", "--resume", str(tmp_path / "s" / "last.pt"),
                 *[a if a != "4" else "6" for a in fast]]) == 0
    assert load_checkpoint(tmp_path / "s" / "last.pt")["iteration"] == 6


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_gpu_path_runs(tmp_path):
    from napari_dmd.config import TrainConfig
    from napari_dmd.demo import phantom_cases
    from napari_dmd.distill.engine import Distiller

    cfg = TrainConfig(method="none", model="8,16,32", iterations=5, patch_size=[64, 64], device="cuda",
                      amp=True, channels_last=True, val_interval=5)
    d = Distiller(cfg, phantom_cases(4, 2), output_dir=tmp_path)
    assert d.amp_dtype in (torch.bfloat16, torch.float16)
    assert d.run_to_end()["iteration"] == 5
