"""Pack a trained teacher for the repository: a half-precision, weights-only napari-dmd checkpoint.

    python benchmarks/teachers/pack_teacher.py RUN/best.pt benchmarks/teachers/hippocampus3d/teacher.pt

Floating-point weights become float16 (loading casts them back to float32); the optimizer state, the scale heads
of deep supervision (unused at inference) and the per-step history are dropped. The packed teacher is checked
against the original on random inputs and the largest logit difference is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from napari_dmd.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint


def pack(src: Path, dst: Path, class_names: list[str] | None = None) -> float:
    """Write the packed copy of ``src`` to ``dst``; returns max |logits(packed) - logits(original)|."""
    ckpt = load_checkpoint(src)
    packed = {k: v for k, v in ckpt.items() if k not in ("optimizer", "scheduler", "heads", "train_state")}
    packed["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    packed["heads"] = None
    if class_names:
        packed["class_names"] = list(class_names)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, {k: v for k, v in packed.items() if k not in ("format", "format_version")})
    a, b = model_from_checkpoint(ckpt, src), model_from_checkpoint(load_checkpoint(dst), dst)
    torch.manual_seed(0)
    x = torch.randn(2, 1, *[int(p) for p in ckpt.get("patch_size") or [32] * a.spatial_dims])
    with torch.no_grad():
        return float((a(x) - b(x)).abs().max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="the run's best.pt (or last.pt)")
    p.add_argument("dst", type=Path, help="where the packed teacher goes")
    p.add_argument("--class-names", nargs="+", help="class names, background first (when the run recorded none)")
    a = p.parse_args(argv)
    diff = pack(a.src, a.dst, a.class_names)
    print(f"{a.dst}: {a.dst.stat().st_size / 1e6:.1f} MB, max logit difference to the float32 original {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
