"""B3 (``napari-dmd bench sliding-window``): what napari-dmd's inference path adds to MONAI's sliding window.

``napari_dmd.inference.sliding_window_predict`` *is* MONAI's ``sliding_window_inference`` (Gaussian blending, same
sigma) plus a per-window wrapper (stop request, progress, output checks) and the softmax to NumPy. So B3 measures
two things, each against plain MONAI with the same network and windows, outputs checked equal, timed interleaved:

1. the wrapper's overhead on a 3D network over a 3D volume (expected: none beyond noise, ratio ~1.0);
2. the plugin's own batching for a 2D network on a 3D volume (the GUI and ``predict`` segmenting a volume with a
   2D model): all slices go to MONAI as its batch axis in one call, so windows of different slices share a forward
   pass, against what a MONAI user would write, one ``sliding_window_inference`` call per slice.
"""

from __future__ import annotations

import statistics
from typing import Any

from .machine import _channels, _interleaved, _ms, _table


def _tiny_unet3d(num_classes: int, width: int = 8) -> Any:
    """Three-level 3D U-Net (instance norm): (B, 1, z, y, x) -> (B, C, z, y, x); sides divisible by 4."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.LeakyReLU(0.01, True),
                             nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout), nn.LeakyReLU(0.01, True))

    class TinyUNet3D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w = width
            self.enc0, self.enc1, self.bottom = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
            self.up1, self.dec1 = nn.ConvTranspose3d(4 * w, 2 * w, 2, stride=2), block(4 * w, 2 * w)
            self.up0, self.dec0 = nn.ConvTranspose3d(2 * w, w, 2, stride=2), block(2 * w, w)
            self.head, self.pool = nn.Conv3d(w, num_classes, 1), nn.MaxPool3d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            e0 = self.enc0(x)
            e1 = self.enc1(self.pool(e0))
            b = self.bottom(self.pool(e1))
            d1 = self.dec1(torch.cat([self.up1(b), e1], dim=1))
            return self.head(self.dec0(torch.cat([self.up0(d1), e0], dim=1)))

    return TinyUNet3D()


def bench_sliding_window(size: int | None = None, repeats: int | None = None, patch: int | None = None,
                         overlap: float = 0.5, batch_size: int = 2, classes: int = 4, model: str = "tiny",
                         device: str = "auto", quick: bool = False) -> dict[str, Any]:
    """B3: napari_dmd.inference.sliding_window_predict vs MONAI's sliding_window_inference, same net and windows:
    the wrapper's overhead on a 3D net, then the slices-as-batch path of a 2D net on a volume (``res["slicewise"]``)."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from ..inference import SIGMA_SCALE, count_windows, sliding_window_predict
    from ..models.presets import build_model
    from ..runtime import resolve_device

    size, repeats, patch = size or (32 if quick else 96), repeats or (1 if quick else 3), patch or (16 if quick else 64)
    dev = resolve_device(device)
    torch.manual_seed(0)
    if model == "tiny":
        net = _tiny_unet3d(classes)
    else:
        net = build_model(_channels(model), 3, classes)
        if patch % net.total_stride:
            raise ValueError(f"--patch {patch} must be a multiple of the {model} U-Net's stride {net.total_stride}")
    net = net.to(dev).eval()
    image = np.random.default_rng(0).normal(size=(size,) * 3).astype(np.float32)
    win = (patch,) * 3
    n_win = count_windows(image.shape, win, overlap)

    def ours() -> np.ndarray:
        return sliding_window_predict(net, image, win, overlap=overlap, batch_size=batch_size, device=dev)

    def monai_raw() -> torch.Tensor:
        with torch.inference_mode():
            x = torch.from_numpy(image).to(dev)[None, None]
            return sliding_window_inference(x, win, batch_size, net, overlap=overlap, mode="gaussian",
                                            sigma_scale=SIGMA_SCALE)

    def monai_probs() -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(monai_raw()[0], dim=0).cpu().numpy()

    diff = float(np.abs(ours() - monai_probs()).max())  # both compute the same thing
    times = _interleaved({"ours": ours, "monai_probs": monai_probs, "monai_raw": monai_raw}, repeats, dev)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"settings": {"volume": list(image.shape), "patch": list(win), "overlap": overlap, "batch": batch_size,
                        "windows": n_win, "classes": classes, "model": model, "repeats": repeats, "device": str(dev)},
           **{f"{k}_s": v for k, v in med.items()}, "max_abs_diff": diff,
           "speed_vs_monai": med["monai_probs"] / med["ours"], "speed_vs_monai_raw": med["monai_raw"] / med["ours"],
           "runs_s": times}
    print(f"B3 sliding window: volume {size}^3, window {patch}^3, overlap {overlap}, {n_win} windows, batch "
          f"{batch_size}, model {model}, {dev}; median of {repeats} interleaved runs; max |ours - MONAI| {diff:.2e}")
    print(_table(["path", "ms", "MONAI time / this"],
                 [["napari-dmd sliding_window_predict (probabilities, NumPy)", _ms(med["ours"]), "1.000"],
                  ["MONAI sliding_window_inference + softmax + NumPy (same output)", _ms(med["monai_probs"]),
                   f"{res['speed_vs_monai']:.3f}"],
                  ["MONAI sliding_window_inference alone (logits tensor)", _ms(med["monai_raw"]),
                   f"{res['speed_vs_monai_raw']:.3f}"]]))
    print(f"speed vs MONAI (same output) = {res['speed_vs_monai']:.3f}x  (target >= 1.0x, or use MONAI's)")
    res["slicewise"] = _bench_slicewise(size, patch, overlap, batch_size, classes, dev, repeats, quick)
    return res


def _bench_slicewise(size: int, patch: int, overlap: float, batch_size: int, classes: int, dev: Any,
                     repeats: int, quick: bool) -> dict[str, Any]:
    """B3, part 2: a 2D student over a (size/4, size, size) volume: the plugin's slices-as-batch call against a
    per-slice loop of MONAI calls (same windows, same Gaussian blending, same output)."""
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from ..inference import SIGMA_SCALE, count_windows, sliding_window_predict
    from ..models.presets import build_model

    torch.manual_seed(0)
    net = build_model(_channels("4,8,16" if quick else "student"), 2, classes).to(dev).eval()
    stride = int(net.total_stride)
    win = (max(stride, patch // stride * stride),) * 2
    depth = max(2, size // 4)
    vol = np.random.default_rng(1).normal(size=(depth, size, size)).astype(np.float32)
    n_win = depth * count_windows(vol.shape[1:], win, overlap)

    def ours() -> np.ndarray:
        return sliding_window_predict(net, vol, win, overlap=overlap, batch_size=batch_size, device=dev)

    def monai_per_slice() -> np.ndarray:
        out = []
        with torch.inference_mode():
            for k in range(depth):
                x = torch.from_numpy(vol[k]).to(dev)[None, None]
                logits = sliding_window_inference(x, win, batch_size, net, overlap=overlap, mode="gaussian",
                                                  sigma_scale=SIGMA_SCALE)
                out.append(torch.softmax(logits[0], dim=0).cpu().numpy())
        return np.stack(out, axis=1)  # (C, z, y, x) like ours

    diff = float(np.abs(ours() - monai_per_slice()).max())
    times = _interleaved({"ours": ours, "monai_per_slice": monai_per_slice}, repeats, dev)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {"volume": list(vol.shape), "patch": list(win), "windows": n_win, "max_abs_diff": diff,
           "ours_s": med["ours"], "monai_per_slice_s": med["monai_per_slice"],
           "speed_vs_monai_per_slice": med["monai_per_slice"] / med["ours"], "runs_s": times}
    print(f"B3 part 2, 2D model slice-wise on a 3D volume: volume {depth}x{size}x{size}, window {win[0]}^2, "
          f"{n_win} windows, batch {batch_size}; max |ours - MONAI per slice| {diff:.2e}")
    print(_table(["path", "ms", "MONAI time / this"],
                 [["napari-dmd: slices as MONAI's batch axis, one call", _ms(med["ours"]), "1.000"],
                  ["MONAI sliding_window_inference per slice + softmax + NumPy", _ms(med["monai_per_slice"]),
                   f"{res['speed_vs_monai_per_slice']:.3f}"]]))
    return res
