"""Batch segmentation: many images (files, image folders or in-memory arrays) into label files in one folder.

The GUI's "Segment all open images" / "Segment a folder…" (``_widgets/_batch.py``) run :func:`segment_batch` in
a worker thread. Each input is read, segmented (:class:`napari_dmd.segment.Segmenter`) and written with its
spacing and affine (NIfTI keeps the scan's world geometry) before the next is read, so one image is in memory
at a time. A bad input gets one line naming it and what is wrong, and the batch goes on; an existing output
file is never replaced unless ``overwrite``, and no output replaces an input. ``should_stop()`` is polled
between files and between sliding windows; a cancelled file writes nothing. Output names follow
``napari-dmd predict``: the input's file name in the output folder (``<name>.nii.gz`` for a DICOM series or
OME-Zarr folder, an input format that cannot hold labels, or an array). Qt-free.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["BatchArray", "BatchItem", "BatchProgress", "BatchResult", "folder_inputs", "label_name",
           "segment_batch"]

DEFAULT_SUFFIX = ".nii.gz"


@dataclass
class BatchArray:
    """An image already in memory (e.g. a napari layer): its name, array, spacing and affine (NIfTI order)."""

    name: str
    array: Any  # numpy, dask or zarr; read with np.asarray in the worker
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None


@dataclass
class BatchItem:
    """One input's outcome: the output written and the seconds it took, or the one-line error."""

    source: str
    output: Path | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class BatchResult:
    """What a batch did: the items segmented, those that failed (one line each), and whether it was cancelled."""

    out_dir: Path
    total: int
    done: list[BatchItem] = field(default_factory=list)
    failed: list[BatchItem] = field(default_factory=list)
    cancelled: bool = False

    def summary(self) -> str:
        """One line for the status bar, then one line per failed input."""
        head = f"{len(self.done)} of {self.total} image(s) segmented into {self.out_dir}"
        if self.cancelled:
            head += f"; cancelled, {self.total - len(self.done) - len(self.failed)} not done"
        if self.failed:
            head += f"; {len(self.failed)} failed:"
        return "\n".join([head, *(f"  {item.error}" for item in self.failed)])


class BatchProgress(NamedTuple):
    """Where a batch is: input ``index`` (0-based) of ``files``, its sliding windows done of ``windows``."""

    index: int
    files: int
    windows_done: int
    windows: int
    name: str

    @property
    def fraction(self) -> float:
        """The share of the batch done (0..1), counting the current file's windows."""
        part = self.windows_done / self.windows if self.windows else 0.0
        return min(1.0, (self.index + part) / max(self.files, 1))


def folder_inputs(folder: str | Path) -> list[Path]:
    """The images in ``folder``, sorted: supported files, DICOM series and OME-Zarr folders (as ``predict``)."""
    from .data.cases import is_image_folder
    from .data.io import DataError, is_supported_file

    p = Path(folder)
    if not p.is_dir():
        raise DataError(f"{p}: not a folder; choose a folder of images")
    if is_image_folder(p):
        return [p]
    return sorted(q for q in p.iterdir() if (q.is_file() and is_supported_file(q)) or is_image_folder(q))


def _safe_name(name: str) -> str:
    """A file name from a layer name: path separators and control characters become '_'."""
    name = re.sub(r"[\x00-\x1f/\\:]+", "_", name).strip().strip(".") or "image"
    return name[:200]


def label_name(source: Path | BatchArray, suffix: str = DEFAULT_SUFFIX) -> str:
    """The output file name of an input: its own name where its format holds labels, else ``<stem><suffix>``."""
    from .data.cases import is_image_folder
    from .data.io import WRITABLE_SUFFIXES, file_suffix

    if isinstance(source, BatchArray):
        return _safe_name(source.name) + suffix
    if is_image_folder(source):
        from .data.zarr_io import ome_zarr_name

        return ome_zarr_name(source) + suffix
    own = file_suffix(source)
    if own in WRITABLE_SUFFIXES:
        return source.name
    return (source.name[: -len(own)] if own else source.name) + suffix


def _read(source: Path | BatchArray) -> tuple[np.ndarray, tuple[float, ...] | None, np.ndarray | None, str]:
    if isinstance(source, BatchArray):
        return np.asarray(source.array), source.spacing, source.affine, f"layer {source.name!r}"
    from .data.io import read_image

    img = read_image(source)
    return img.array, img.spacing, img.affine, str(source)


def _one_line(exc: BaseException, where: str) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename or where}: {exc.strerror}"
    return text if where in text else f"{where}: {text}"


def segment_batch(segmenter: Any, inputs: Sequence[Path | str | BatchArray], out_dir: str | Path, *,
                  overwrite: bool = False, suffix: str = DEFAULT_SUFFIX,
                  progress: Callable[[BatchProgress], object] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> BatchResult:
    """Segment every input with ``segmenter`` into ``out_dir`` (created); returns a :class:`BatchResult`.

    ``progress(BatchProgress)`` is called when a file starts and after each sliding window. Errors of one input
    (unreadable, wrong dimensions, output exists, write failed) are recorded and the batch goes on; a cancel
    (``should_stop()`` true) ends it after the windows done so far, writing nothing for the current input.
    """
    from .data.io import DataError, write_image
    from .inference import InferenceCancelled

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; choose a folder for the label files")
    out.mkdir(parents=True, exist_ok=True)
    items = [s if isinstance(s, BatchArray) else Path(s) for s in inputs]
    result = BatchResult(out, len(items))
    stop = should_stop or (lambda: False)
    sources = {p.resolve() for p in items if isinstance(p, Path) and p.exists()}
    taken: set[Path] = set()
    for index, src in enumerate(items):
        if stop():
            result.cancelled = True
            break
        name = src.name if isinstance(src, BatchArray) else str(src)
        if progress is not None:
            progress(BatchProgress(index, len(items), 0, 0, name))
        t0 = time.perf_counter()
        try:
            dst = out / label_name(src, suffix)
            if dst.resolve() in sources:
                raise DataError(f"{name}: its labels would replace the input image {dst}; choose another output "
                                "folder")
            if dst in taken:
                raise DataError(f"{name}: another input already writes {dst.name}; rename one of them")
            if dst.exists() and not overwrite:
                raise DataError(f"{name}: {dst} exists; tick 'overwrite' to replace it, or choose another folder")
            image, spacing, affine, where = _read(src)
            if min(image.shape, default=0) < 2:
                raise DataError(f"{where}: image too small to segment (shape {image.shape})")

            def windows(done: int, total: int, i: int = index, n: str = name) -> None:
                if progress is not None:
                    progress(BatchProgress(i, len(items), done, total, n))

            labels = segmenter(image, progress=windows, should_stop=stop, source=where)
            write_image(dst, labels, spacing, affine, overwrite=overwrite)
            taken.add(dst)
            result.done.append(BatchItem(name, dst, time.perf_counter() - t0))
        except InferenceCancelled:
            result.cancelled = True
            break
        except (ValueError, OSError, RuntimeError, MemoryError) as exc:  # DataError is a ValueError
            result.failed.append(BatchItem(name, error=_one_line(exc, name)))
    if progress is not None and not result.cancelled:
        progress(BatchProgress(len(items), len(items), 0, 0, ""))
    return result
