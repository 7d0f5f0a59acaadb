"""Time `napari_dmd.inference.sliding_window_predict` against MONAI's `sliding_window_inference` directly.

Both run in this process with the same tiny 3D U-Net, windows, overlap and Gaussian blending. The baseline
also takes the softmax and copies to NumPy, so both produce the same (C, z, y, x) float32 probabilities; the
time of the bare MONAI call (logits tensor) is printed as well. Ours wraps MONAI, so the ratio should be ~1.0.

    python benchmarks/bench_sliding_window.py --size 96 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from napari_dmd.inference import SIGMA_SCALE, count_windows, sliding_window_predict


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1),
        nn.InstanceNorm3d(cout),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1),
        nn.InstanceNorm3d(cout),
        nn.LeakyReLU(0.01, inplace=True),
    )


class TinyUNet3D(nn.Module):
    """Three-level 3D U-Net: (B, 1, z, y, x) -> (B, C, z, y, x) logits; z, y, x divisible by 4."""

    def __init__(self, num_classes: int = 4, width: int = 8) -> None:
        super().__init__()
        w = width
        self.enc0, self.enc1, self.bottom = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.up1, self.dec1 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2), _block(4 * w, 2 * w)
        self.up0, self.dec0 = nn.ConvTranspose3d(2 * w, w, 2, stride=2), _block(2 * w, w)
        self.head = nn.Conv3d(w, num_classes, 1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(x)
        e1 = self.enc1(self.pool(e0))
        b = self.bottom(self.pool(e1))
        d1 = self.dec1(torch.cat([self.up1(b), e1], dim=1))
        d0 = self.dec0(torch.cat([self.up0(d1), e0], dim=1))
        return self.head(d0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96, help="volume edge (voxels), cubic volume")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each (median reported)")
    ap.add_argument("--patch", type=int, default=64, help="window edge (multiple of 4)")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    net = TinyUNet3D(args.classes).to(device).eval()
    image = np.random.default_rng(0).normal(size=(args.size,) * 3).astype(np.float32)
    patch = (args.patch,) * 3
    n_win = count_windows(image.shape, patch, args.overlap)
    print(
        f"device={device} volume={image.shape} patch={patch} overlap={args.overlap} "
        f"batch={args.batch_size} windows={n_win} threads={torch.get_num_threads()}"
    )

    def ours() -> np.ndarray:
        return sliding_window_predict(
            net, image, patch, overlap=args.overlap, batch_size=args.batch_size, device=device
        )

    def monai_raw() -> torch.Tensor:
        with torch.inference_mode():
            x = torch.from_numpy(image).to(device)[None, None]
            return sliding_window_inference(
                x, patch, args.batch_size, net, overlap=args.overlap, mode="gaussian", sigma_scale=SIGMA_SCALE
            )

    def monai_probs() -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(monai_raw()[0], dim=0).cpu().numpy()

    def timed(fn) -> float:  # noqa: ANN001
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    a, b = ours(), monai_probs()  # warm-up, and a check that both compute the same thing
    print(f"max |ours - monai| = {np.abs(a - b).max():.2e}")
    times: dict[str, list[float]] = {"ours": [], "monai+softmax": [], "monai raw": []}
    for _ in range(args.repeats):  # interleaved, so drifts hit all alike
        times["ours"].append(timed(ours))
        times["monai+softmax"].append(timed(monai_probs))
        times["monai raw"].append(timed(monai_raw))
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        runs = [round(t * 1000, 1) for t in times[k]]
        print(f"{k:>14}: {v * 1000:9.1f} ms  (median of {args.repeats}; runs {runs})")
    same, bare = med["ours"] / med["monai+softmax"], med["ours"] / med["monai raw"]
    print(f"ratio ours/MONAI time (same output, probabilities as NumPy): {same:.3f}")
    print(f"ratio ours/MONAI time (bare MONAI call, logits tensor):       {bare:.3f}")


if __name__ == "__main__":
    main()
