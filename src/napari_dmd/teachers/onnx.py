"""ONNX teachers, run by onnxruntime (``pip install 'napari-dmd[onnx]'``).

An ONNX file is a graph of standard operators and weights: it carries no code, and loading it runs nothing
(custom-operator libraries are never registered). A graph can still loop: a ``Loop`` node without a constant trip
count of at most :data:`MAX_LOOP_TRIPS` (in any subgraph) is refused unless the file is trusted (``trust=True``),
and the test calls made at load stop after :data:`LOAD_TIME_LIMIT_S` seconds (onnxruntime's terminate flag).

The model must take one input ``(N, 1, *spatial)`` and return per-pixel logits ``(N, C, *spatial)`` as its
first output. Fixed input sizes are handled: a fixed batch size is filled call by call, a fixed spatial size is
tiled by MONAI's sliding window (Gaussian blending).

Metadata: files written by :func:`napari_dmd.export.export_onnx` hold ``napari_dmd`` (JSON: classes,
normalization, patch size, spacing) in their metadata properties; otherwise the class count is read from the
output shape or a test call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import TeacherError, probe_teacher

METADATA_KEY = "napari_dmd"
LOAD_TIME_LIMIT_S = 120.0  # the test calls at load; a big 3D model on two CPU cores needs well under a minute
MAX_LOOP_TRIPS = 10_000


def _require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise TeacherError("ONNX teachers need onnxruntime: pip install 'napari-dmd[onnx]'") from e
    return onnxruntime


def _fixed(dim: Any) -> int | None:
    return int(dim) if isinstance(dim, int) and dim > 0 else None


class OnnxTeacher:
    """A teacher backed by an onnxruntime session (CPU, or CUDA when onnxruntime has it and ``to('cuda')``)."""

    def __init__(self, path: str | Path, *, num_classes: int | None = None, spatial_dims: int | None = None,
                 class_names: Sequence[str] | None = None, normalization: str | None = None,
                 patch_size: Sequence[int] | None = None, probe: bool = True, trust: bool = False) -> None:
        _require_onnxruntime()
        self.path = Path(path)
        self.source = str(self.path)
        if not self.path.is_file():
            raise TeacherError(f"{self.path}: no such ONNX file")
        if not trust:
            check_loops(self.path)
        self._time_limit: float | None = LOAD_TIME_LIMIT_S  # for the test calls at load only
        self._providers = ["CPUExecutionProvider"]
        self.session = self._session(self._providers)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise TeacherError(f"{self.path}: the model takes {len(inputs)} inputs "
                               f"({', '.join(i.name for i in inputs)}); a teacher takes one image batch")
        inp = inputs[0]
        self.input_name, self.output_name = inp.name, outputs[0].name
        self.input_dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        shape = list(inp.shape)
        if len(shape) not in (4, 5):
            raise TeacherError(f"{self.path}: input {inp.name!r} has shape {shape}; expected (N, 1, y, x) or "
                               "(N, 1, z, y, x)")
        dims = len(shape) - 2
        if spatial_dims is not None and int(spatial_dims) != dims:
            raise TeacherError(f"{self.path}: the model is {dims}D, not {spatial_dims}D")
        if _fixed(shape[1]) not in (None, 1):
            raise TeacherError(f"{self.path}: input {inp.name!r} takes {shape[1]} channels (shape {shape}); "
                               "napari-dmd teachers take single-channel images")
        self.spatial_dims = dims
        self.fixed_batch = _fixed(shape[0])
        fixed_spatial = [_fixed(d) for d in shape[2:]]
        self.fixed_spatial = fixed_spatial if any(d is not None for d in fixed_spatial) else None
        meta_text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        try:
            meta = json.loads(meta_text) if meta_text else {}
        except ValueError:
            meta = {}
        out_shape = list(outputs[0].shape)
        out_classes = _fixed(out_shape[1]) if len(out_shape) > 1 else None
        self.num_classes = int(num_classes or meta.get("num_classes") or out_classes or 0)
        if out_classes is not None and self.num_classes != out_classes:
            raise TeacherError(f"{self.path}: the model returns {out_classes} channels, not {self.num_classes} "
                               "classes")
        self.class_names = list(class_names or meta.get("class_names") or []) or None
        self.normalization = normalization or meta.get("normalization", "zscore")
        fixed_patch = [int(d) for d in fixed_spatial] if all(d is not None for d in fixed_spatial) else None
        self.patch_size = [int(p) for p in patch_size or meta.get("patch_size") or fixed_patch or []] or None
        self.spacing = meta.get("spacing")
        self.info = {"format": "ONNX", "opset": None, "trusted": bool(trust), "fixed_batch": self.fixed_batch,
                     "fixed_spatial": self.fixed_spatial}
        self.device = torch.device("cpu")
        if self.num_classes == 0:  # dynamic output channels: ask the model
            self.num_classes = int(self(torch.zeros(1, 1, *self._probe_shape())).shape[1])
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise TeacherError(f"{self.path}: {len(self.class_names)} class names for {self.num_classes} classes")
        if probe:
            probe_teacher(self, self._probe_shape())
        self._time_limit = None

    def _probe_shape(self) -> list[int]:
        if self.fixed_spatial is not None:
            return [d or 32 for d in self.fixed_spatial]
        return [32, 32] if self.spatial_dims == 2 else [16, 16, 16]

    def _session(self, providers: list[str]):
        ort = _require_onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # noqa: BLE001 - reported with the file name
            raise TeacherError(f"{self.path}: onnxruntime cannot load this model "
                               f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})"
                               ) from e

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """Run the session on (B, 1, *spatial) at a size the model accepts."""
        arr = x.detach().to("cpu", torch.float32).numpy().astype(self.input_dtype, copy=False)
        if self.fixed_batch is not None and arr.shape[0] != self.fixed_batch:
            outs = []
            for i in range(0, arr.shape[0], self.fixed_batch):
                chunk = arr[i:i + self.fixed_batch]
                n = chunk.shape[0]
                if n < self.fixed_batch:
                    chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - n, *chunk.shape[1:]), chunk.dtype)])
                outs.append(self._session_run(chunk)[:n])
            out = np.concatenate(outs)
        else:
            out = self._session_run(arr)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))

    def _session_run(self, arr: np.ndarray) -> np.ndarray:
        """One session call; while loading, stopped by onnxruntime's terminate flag after the time limit."""
        if self._time_limit is None:
            return self.session.run([self.output_name], {self.input_name: arr})[0]
        ort = _require_onnxruntime()
        opts = ort.RunOptions()
        opts.log_severity_level = 4
        timer = threading.Timer(self._time_limit, lambda: setattr(opts, "terminate", True))
        timer.start()
        try:
            return self.session.run([self.output_name], {self.input_name: arr}, opts)[0]
        except Exception as e:  # noqa: BLE001
            if opts.terminate:
                raise TeacherError(f"{self.path}: the test call at load ran longer than {self._time_limit:g} s "
                                   f"on an input of shape {tuple(arr.shape)} and was stopped (a model that loops "
                                   "or is far too large for this machine)") from e
            raise
        finally:
            timer.cancel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device
        spatial = list(x.shape[2:])
        if self.fixed_spatial is not None and any(f is not None and f != s
                                                  for f, s in zip(self.fixed_spatial, spatial)):
            from monai.inferers import sliding_window_inference

            roi = [f or s for f, s in zip(self.fixed_spatial, spatial)]
            out = sliding_window_inference(x.detach().to("cpu", torch.float32), roi_size=roi,
                                           sw_batch_size=self.fixed_batch or 4, predictor=self._run,
                                           overlap=0.25, mode="gaussian")
            out = torch.as_tensor(out)
        else:
            out = self._run(x)
        if out.ndim != x.ndim:
            raise TeacherError(f"{self.path}: the model maps {tuple(x.shape)} to {tuple(out.shape)}; expected "
                               "per-pixel logits")
        return out.to(device)

    def to(self, device: torch.device | str) -> OnnxTeacher:
        """Run on CUDA when onnxruntime offers it; otherwise stay on the CPU (outputs follow the input)."""
        ort = _require_onnxruntime()
        dev = torch.device(device)
        want = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev.type == "cuda" and \
            "CUDAExecutionProvider" in ort.get_available_providers() else ["CPUExecutionProvider"]
        if want != self._providers:
            self.session = self._session(want)
            self._providers = want
        self.device = dev
        return self

    def parameters(self) -> Iterator[torch.Tensor]:
        """The graph's weights as shape-only tensors (for counting; needs the onnx package)."""
        try:
            import onnx
        except ImportError:
            return iter(())
        model = onnx.load(str(self.path), load_external_data=False)
        return iter([torch.empty(tuple(init.dims), device="meta") for init in model.graph.initializer])

    def __repr__(self) -> str:
        return (f"OnnxTeacher({self.source!r}, {self.spatial_dims}D, {self.num_classes} classes, "
                f"normalization={self.normalization!r})")


def _constant_ints(graph: Any) -> dict[str, int]:
    """Scalar integer constants of a graph (initializers and Constant nodes), by name."""
    from onnx import numpy_helper

    out: dict[str, int] = {}
    tensors = [(t.name, t) for t in graph.initializer]
    tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" and n.output
                for a in n.attribute if a.name == "value" and a.HasField("t")]
    for name, t in tensors:
        if t.data_type in (6, 7) and len(t.dims) <= 1 and int(np.prod(t.dims or [1])) == 1:  # INT32 / INT64
            out[name] = int(numpy_helper.to_array(t).reshape(-1)[0])
    return out


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def check_loops(path: Path) -> None:
    """Refuse a graph with a ``Loop`` whose trip count is not a constant <= MAX_LOOP_TRIPS (needs ``onnx``)."""
    try:
        import onnx
    except ImportError:  # onnxruntime alone: the time limit on the test calls still holds
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnxruntime reports an unreadable file with its own message
        return
    for graph in _graphs(model.graph):
        consts = _constant_ints(graph)
        for node in graph.node:
            if node.op_type != "Loop":
                continue
            trips = consts.get(node.input[0]) if node.input and node.input[0] else None
            if trips is None or trips > MAX_LOOP_TRIPS:
                what = "no constant trip count" if trips is None else f"a trip count of {trips}"
                raise TeacherError(f"{path}: Loop node {node.name or '(unnamed)'!r} has {what} (it may run without "
                                   f"end); napari-dmd runs loops of at most {MAX_LOOP_TRIPS} constant steps. If you "
                                   "trust this file, load it with trust=True (CLI: --trust-teacher)")


def load_onnx_teacher(path: str | Path, **kw: Any) -> OnnxTeacher:
    """Load an ONNX logits model as a teacher (keyword arguments as :class:`OnnxTeacher`)."""
    return OnnxTeacher(path, **kw)
