"""Which inference path pays: per-volume sliding-window latency of one model under each path, interleaved.

Paths: ``eager`` (batch norm unfolded), ``folded`` (fold_batchnorm, what Segmenter runs), ``channels-last``,
window batch sizes, ``amp`` (bfloat16 autocast, CUDA), ``compile`` (torch.compile of the folded model) and
``onnxruntime`` (the folded model exported to ONNX, one session; CPU only). Examples::

    python benchmarks/fast_inference_paths.py --preset student --threads 1
    python benchmarks/fast_inference_paths.py --preset teacher --device cuda \\
        --paths eager,folded,channels-last,amp,batch16,compile
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
import torch

from napari_dmd.inference import sliding_window_predict
from napari_dmd.models.fold import fold_batchnorm
from napari_dmd.models.presets import build_model

SETUPS = {"3d": (3, (48, 64, 48), (40, 56, 40)), "2d": (2, (8, 256, 256), (128, 128))}


def _onnx(model: torch.nn.Module, patch: tuple[int, ...], threads: int):
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 1, *patch),), buf, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])


def _channels_last(model: torch.nn.Module, fmt: torch.memory_format):
    """The model and its inputs in channels-last memory format."""
    model = model.to(memory_format=fmt)
    return lambda x: model(x.contiguous(memory_format=fmt))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="student")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--setups", default="3d,2d")
    p.add_argument("--paths", default="eager,folded,channels-last,batch1,batch16,compile,onnxruntime")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    for setup in a.setups.split(","):
        dims, shape, patch = SETUPS[setup]
        image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        torch.manual_seed(0)
        net = build_model(a.preset, dims, 3).eval().to(dev)
        folded = fold_batchnorm(net)
        fmt = torch.channels_last_3d if dims == 3 else torch.channels_last
        runs = {"eager": (net, 4), "folded": (folded, 4), "batch1": (folded, 1), "batch16": (folded, 16),
                "channels-last": (_channels_last(folded, fmt), 4), "amp": (folded, 4)}
        chosen = a.paths.split(",")
        if "compile" in chosen:
            runs["compile"] = (torch.compile(fold_batchnorm(net), dynamic=False), 4)
        if "onnxruntime" in chosen and dev.type == "cpu":
            runs["onnxruntime"] = (_onnx(folded, patch, a.threads), 4)
        names = [n for n in chosen if n in runs]
        ref = sliding_window_predict(net, image, patch, device=dev).argmax(0)
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(a.repeats + 1):
            for n in names if r % 2 else reversed(names):
                fn, bs = runs[n]
                t0 = time.perf_counter()
                out = sliding_window_predict(fn, image, patch, batch_size=bs, device=dev, amp=n == "amp")
                if r:
                    times[n].append(time.perf_counter() - t0)
                else:
                    same = float((out.argmax(0) == ref).mean())
                    print(f"  {setup} {n}: labels equal to eager: {same:.5f} of voxels", flush=True)
        base = statistics.median(times[names[0]])
        print(f"\n{a.preset} {setup}: volume {shape}, patch {patch}, {a.threads} thread(s), {dev}, "
              f"median of {a.repeats}")
        for n in names:
            med = statistics.median(times[n])
            print(f"{n:14s} {1000 * med:9.1f} ms  {base / med:5.2f}x vs {names[0]}", flush=True)


if __name__ == "__main__":
    main()
