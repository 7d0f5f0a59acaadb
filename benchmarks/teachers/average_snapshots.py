"""Average a teacher run's snapshots (weights averaged, as in stochastic weight averaging) and evaluate candidates.

    python benchmarks/teachers/average_snapshots.py hc18 RUN --from 1000 [--write RUN/averaged.pt]

RUN comes from ``train_teacher.py ... --snapshots``. Printed per candidate (``best.pt``, every snapshot, and the
average of the snapshots from iteration ``--from`` on): mean Dice on the ablation's validation split with the
ablation's own evaluator (``ablation_jobs.evaluate_model``). Instance-normalized networks need no statistics
update after averaging. ``--write`` saves the average as a checkpoint (the last snapshot's, weights replaced).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ablation_jobs import evaluate_model  # noqa: E402
from ablation_specs import SPECS, dataset  # noqa: E402


def snapshots(run: Path) -> dict[int, Path]:
    """{iteration: path} of ``RUN/snapshots/itN.pt``."""
    out = {}
    for p in (run / "snapshots").glob("it*.pt"):
        m = re.fullmatch(r"it(\d+)\.pt", p.name)
        if m:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def average(cks: list[dict]) -> dict:
    """The last of the checkpoints ``cks`` with its model weights replaced by the mean over all of them."""
    import torch

    avg = {}
    for k, v in cks[-1]["state_dict"].items():
        if v.is_floating_point():
            avg[k] = torch.stack([c["state_dict"][k].float() for c in cks]).mean(0).to(v.dtype)
        else:
            avg[k] = v
    return {**cks[-1], "state_dict": avg}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=sorted(SPECS))
    p.add_argument("run", type=Path)
    p.add_argument("--from", dest="start", type=int, default=0, help="average the snapshots from this iteration on")
    p.add_argument("--write", type=Path, help="save the average here")
    p.add_argument("--each", action="store_true", help="also evaluate every snapshot alone")
    a = p.parse_args(argv)

    import torch

    from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    torch.set_num_threads(1)
    spec = SPECS[a.dataset]
    _, val, num_classes = dataset(a.dataset)
    snaps = snapshots(a.run)
    chosen = [i for i in snaps if i >= a.start]
    loaded = {i: load_checkpoint(pth) for i, pth in snaps.items() if a.each or i in chosen}  # each file read once
    cands: dict[str, dict] = {"best.pt": load_checkpoint(a.run / "best.pt")}
    if a.each:
        cands.update({f"it{i}": ck for i, ck in loaded.items()})
    averaged = average([loaded[i] for i in chosen]) if chosen else None
    if averaged is not None:
        cands[f"average it{chosen[0]}-{chosen[-1]} ({len(chosen)})"] = averaged
    for name, ck in cands.items():
        net = model_from_checkpoint(ck, a.run / "best.pt")
        res = evaluate_model(net, spec, val, num_classes)
        print(f"{name:28s} mean Dice {res['mean_dice']:.4f}  per class {[round(d, 4) for d in res['dice']]}",
              flush=True)
    if a.write and averaged is not None:
        save_checkpoint(a.write, {k: v for k, v in averaged.items() if k not in ("format", "format_version")})
        print(f"wrote {a.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
