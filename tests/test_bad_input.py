"""Catalogue of bad input: each case gets one clear line naming the input and the problem, and changes nothing.

Every case runs in-process and cheaply (tiny arrays in tmp_path, untrained tiny checkpoints; no case trains).
CLI cases call ``napari_dmd.cli.main``: the exit status is non-zero, stderr holds exactly one line naming the file
or setting and what is wrong, and no traceback. Library cases call the reader/writer functions napari uses and
check the exception's message the same way. After each case every file under tmp_path and the model folder is
byte-for-byte and mtime-for-mtime what it was, and no file or folder has appeared.
The end of the file tests that paths from config files cannot escape the chosen output folder.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from napari_dmd._reader import get_reader, read_layers
from napari_dmd._writer import write_labels
from napari_dmd.checkpoint import save_checkpoint
from napari_dmd.cli import RUN_FILES, main
from napari_dmd.data.io import write_image
from napari_dmd.models.unet import UNet
from napari_dmd.safe_paths import PathEscapeError, resolve_inside, safe_component

RNG = np.random.default_rng(0)
IMAGE = RNG.random((32, 32)).astype(np.float32)
LABEL = np.zeros((32, 32), np.uint8)
LABEL[4:12, 4:12] = 1
LABEL[18:28, 18:28] = 2
FAST = ["--model", "4,8", "--iterations", "1", "--num-threads", "1", "--quiet"]


# ------------------------------------------------------------------------------------------------ helpers
def _checkpoint(path: Path, dims: int = 2, classes: int = 3, channels=(4, 8), **extra: Any) -> str:
    torch.manual_seed(0)
    model = UNet(dims, 1, classes, channels)
    payload = {"kind": "teacher", "model": model.config(), "state_dict": model.state_dict(),
               "normalization": "zscore", "patch_size": [16] * dims, "class_names": None, **extra}
    save_checkpoint(path, payload)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Untrained tiny checkpoints: a 2D and a 3D 3-class model (enough for every check, cheap to load)."""
    root = tmp_path_factory.mktemp("models")
    return {"root": str(root), "t2": _checkpoint(root / "t2.pt"), "t3": _checkpoint(root / "t3.pt", dims=3)}


def _snapshot(*roots: str | Path) -> dict[str, tuple]:
    """Every file (size, mtime, sha1) and folder under ``roots``."""
    snap: dict[str, tuple] = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_symlink():
                snap[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                snap[str(p)] = ("dir",)
            else:
                st = p.stat()
                snap[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
    return snap


@dataclass
class Ctx:
    """A case's workspace: tmp folder, the tiny models, and writers of small input files."""

    tmp: Path
    models: dict[str, str]
    monkeypatch: pytest.MonkeyPatch
    undo: list[Callable[[], None]] = field(default_factory=list)

    @property
    def t2(self) -> str:
        return self.models["t2"]

    @property
    def t3(self) -> str:
        return self.models["t3"]

    def nii(self, name: str, array: np.ndarray | None = None) -> str:
        """A NIfTI file of ``array`` ((z, y, x) / (y, x) order; default: a random 32 x 32 image)."""
        array = IMAGE if array is None else np.asarray(array)
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array.T if array.ndim <= 3 else array, np.eye(4)), str(path))
        return str(path)

    def label(self, name: str = "lab.nii.gz", array: np.ndarray | None = None) -> str:
        return self.nii(name, LABEL if array is None else array)

    def raw(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def folder(self, name: str) -> str:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        return str(self.tmp / name)

    def read_only(self, name: str) -> str:
        """A folder nothing can be written to (simulated with failing opens when running as root)."""
        folder = Path(self.folder(name))
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
        self.undo.append(lambda: folder.chmod(0o755))
        if os.geteuid() == 0:  # root ignores permissions: refuse writes below the folder ourselves
            _simulate_read_only(self.monkeypatch, folder)
        return str(folder)

    def predict(self, image: str, out: str | None = None, *extra: str) -> list[str]:
        return ["predict", "--model", self.t2, "--input", image, "--output", out or str(self.tmp / "out.nii.gz"),
                "--quiet", *extra]

    def train(self, *extra: str, image: str | None = None, label: str | None = None) -> list[str]:
        return ["train-teacher", "--images", image or self.nii("img.nii.gz"), "--labels", label or self.label(),
                "--out", str(self.tmp / "run"), *FAST, *extra]

    def distill(self, *extra: str, image: str | None = None, label: str | None = None) -> list[str]:
        return ["distill", "--teacher", self.t2, "--images", image or self.nii("img.nii.gz"), "--labels",
                label or self.label(), "--out", str(self.tmp / "run"), *FAST, *extra]


def _simulate_read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    base = str(folder.resolve())

    def inside(path: Any) -> bool:
        try:
            return os.path.abspath(os.fspath(path)).startswith(base)
        except TypeError:  # a file descriptor
            return False

    def deny(path: Any):
        return PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def fake_open(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            raise deny(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise deny(path)
        return real_os_open(path, flags, *a, **k)

    def fake_mkdir(path, *a, **k):
        if inside(path):
            raise deny(path)
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def _nifti_bytes(offset: int, value: int, signed: bool = False) -> bytes:
    """A valid uncompressed NIfTI-1 of IMAGE with one 2-byte header field overwritten."""
    blob = bytearray(nib.Nifti1Image(IMAGE.T, np.eye(4)).to_bytes())
    blob[offset:offset + 2] = value.to_bytes(2, "little", signed=signed)
    return bytes(blob)


def _gz_truncated() -> bytes:
    big = RNG.random((16, 32, 32)).astype(np.float32)
    blob = gzip.compress(nib.Nifti1Image(big.T, np.eye(4)).to_bytes())
    return blob[: len(blob) // 2]


def _colour_png(c: Ctx) -> str:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    path = c.tmp / "colour.png"
    Image.fromarray(rgb).save(path)
    return str(path)


def _rgb_nifti(c: Ctx) -> str:
    rgb = np.zeros((32, 32), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = c.tmp / "rgb.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    return str(path)


def _other_architecture(c: Ctx) -> str:
    """Weights of a 4,8 U-Net in a checkpoint that says it is a 4,8,16 U-Net."""
    path = Path(_checkpoint(c.tmp / "other.pt"))
    data = torch.load(path, weights_only=True)
    data["model"]["channels"] = [4, 8, 16]
    save_checkpoint(path, {k: v for k, v in data.items() if k not in ("format", "format_version")})
    return str(path)


def _existing_run(c: Ctx) -> str:
    run = c.tmp / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(Path(c.t2).read_bytes())
    return str(run)


def _labels(corner: float, dtype=np.float32) -> np.ndarray:
    """LABEL with its 2 x 2 top-left corner set to ``corner``."""
    lab = LABEL.astype(dtype)
    lab[:2, :2] = corner
    return lab


# ---------------------------------------------------------------------------------------------- catalogue
Build = Callable[[Ctx], tuple[list[str] | Callable[[], Any], str]]


@dataclass(frozen=True)
class Bad:
    """One bad input: ``build`` makes the files and returns (CLI argv or a library call, text the message must
    name); ``problem`` is what the message must say (case-insensitive)."""

    id: str
    build: Build
    problem: str


def _p(c: Ctx, image: str, *extra: str) -> tuple[list[str], str]:
    return c.predict(image, None, *extra), image


CATALOGUE: list[Bad] = [
    # ------------------------------------------------------------------ unreadable files
    Bad("corrupt-nii-gz", lambda c: _p(c, c.raw("scan.nii.gz", b"\x1f\x8b\x08\x00junk" * 40)),
        "cannot read NIfTI file, it may be corrupt or truncated"),
    Bad("truncated-nii-gz", lambda c: _p(c, c.raw("cut.nii.gz", _gz_truncated())), "corrupt or truncated"),
    Bad("nifti-header-bad-datatype", lambda c: _p(c, c.raw("hdr.nii", _nifti_bytes(70, 999))),
        "cannot read NIfTI file"),
    Bad("nifti-header-negative-dim", lambda c: _p(c, c.raw("hdr.nii", _nifti_bytes(42, -5, signed=True))),
        "cannot read NIfTI file"),
    Bad("empty-file", lambda c: _p(c, c.raw("empty.nii.gz", b"")), "file is empty"),
    Bad("missing-file", lambda c: _p(c, str(c.tmp / "nope.nii.gz")), "file not found"),
    Bad("unsupported-file-type", lambda c: _p(c, c.raw("scan.txt", "hello")), "unsupported file type"),
    Bad("directory-instead-of-image",
        lambda c: (["train-teacher", "--images", c.nii("a.nii.gz"), (p := c.folder("scan.nii.gz")), "--labels",
                    c.label(), c.label(), "--out", str(c.tmp / "run"), *FAST], p), "is a folder"),
    Bad("directory-instead-of-label",
        lambda c: (c.train(label=c.folder("lab.nii.gz")), str(c.tmp / "lab.nii.gz")), "is a folder"),
    Bad("directory-instead-of-checkpoint",
        lambda c: (["predict", "--model", c.folder("m.pt"), "--input", c.nii("i.nii.gz"), "--output",
                    str(c.tmp / "o.nii.gz")], str(c.tmp / "m.pt")), "is a folder"),
    # ------------------------------------------------------------------ wrong kind of image
    Bad("4d-nifti", lambda c: _p(c, c.nii("dwi.nii.gz", RNG.random((32, 32, 4, 2)).astype(np.float32))),
        "4D image"),
    Bad("rgb-nifti", lambda c: _p(c, _rgb_nifti(c)), "colour (RGB)"),
    Bad("rgb-png", lambda c: _p(c, _colour_png(c)), "colour (RGB) image is not supported"),
    Bad("one-voxel-volume-predict", lambda c: _p(c, c.nii("one.nii.gz", np.ones((1, 1, 1), np.float32))),
        "too small"),
    Bad("one-voxel-volume-train",
        lambda c: (c.train(image=(p := c.nii("one.nii.gz", np.ones((1, 1, 1), np.float32))), label=p), p),
        "image too small"),
    Bad("one-slice-volume-3d-model",
        lambda c: (["predict", "--model", c.t3, "--input", (p := c.nii("slice.nii.gz", IMAGE[None])), "--output",
                    str(c.tmp / "o.nii.gz")], p), "3D model cannot segment"),
    Bad("one-slice-volume-3d-teacher",
        lambda c: (["distill", "--teacher", c.t3, "--images", (p := c.nii("slice.nii.gz", IMAGE[None])),
                    "--labels", c.label("slice_lab.nii.gz", LABEL[None]), "--out", str(c.tmp / "run"), *FAST],
                   p), "single slice"),
    Bad("nan-intensities",
        lambda c: (c.train(image=(p := c.nii("nan.nii.gz", np.where(LABEL == 1, np.nan, IMAGE)))), p),
        "NaN/Inf"),
    Bad("inf-intensities", lambda c: _p(c, c.nii("inf.nii.gz", np.where(LABEL == 2, np.inf, IMAGE))),
        "NaN or infinite"),
    Bad("constant-image", lambda c: (c.train(image=(p := c.nii("flat.nii.gz", np.full((32, 32), 7.0)))), p),
        "constant image"),
    # ------------------------------------------------------------------ labels
    Bad("image-label-shape-mismatch",
        lambda c: (c.train(label=(p := c.label("small.nii.gz", LABEL[:20]))), p), "does not match"),
    Bad("image-label-count-mismatch",
        lambda c: (["train-teacher", "--images", c.nii("a.nii.gz"), (p := c.nii("b.nii.gz")), "--labels",
                    c.label(), "--out", str(c.tmp / "run"), *FAST], p), "has no label file"),
    Bad("float-labels-fractional",
        lambda c: (c.train(label=(p := c.label("frac.nii.gz", LABEL + np.float32(0.5)))), p), "non-integer"),
    Bad("labels-above-class-count",
        lambda c: (c.distill(label=(p := c.label("seven.nii.gz", _labels(7)))),
                   p), "holds label 7"),
    Bad("negative-labels",
        lambda c: (c.train(label=(p := c.label("neg.nii.gz", _labels(-1, np.int16)))), p), "negative label"),
    Bad("all-background-labels",
        lambda c: (c.train(label=(p := c.label("bg.nii.gz", np.zeros((32, 32), np.uint8)))), p),
        "all labels are background"),
    Bad("mixed-2d-3d-cases",
        lambda c: (["train-teacher", "--images", c.nii("a.nii.gz"), (p := c.nii("v.nii.gz", RNG.random((4, 32, 32)))),
                    "--labels", c.label(), c.label("v_lab.nii.gz", np.stack([LABEL] * 4)),
                    "--out", str(c.tmp / "run"), *FAST], p), "mixed with"),
    # ------------------------------------------------------------------ teachers and checkpoints
    Bad("teacher-class-count-differs", lambda c: (c.distill("--num-classes", "5"), c.t2),
        "predicts 3 classes but 5 were asked for"),
    Bad("teacher-dimensionality-differs",
        lambda c: (c.distill("--spatial-dims", "3", image=c.nii("v.nii.gz", RNG.random((8, 32, 32))),
                             label=c.label("v_lab.nii.gz", np.stack([LABEL] * 8))), c.t2), "is 2D but the student"),
    Bad("teacher-not-a-model", lambda c: (["distill", "--teacher", (p := c.raw("teacher.pt", "hello")),
                                           "--images", c.nii("i.nii.gz"), "--out", str(c.tmp / "run")], p),
        "not a readable PyTorch"),
    Bad("teacher-folder-not-a-model",
        lambda c: (["distill", "--teacher", (p := c.folder("teacher")), "--images", c.nii("i.nii.gz"), "--out",
                    str(c.tmp / "run")], p),
        "not a teacher folder"),
    Bad("checkpoint-other-format-version",
        lambda c: (["predict", "--model", (p := _checkpoint(c.tmp / "v99.pt", format_version=99)),
                    "--input", c.nii("i.nii.gz"), "--output", str(c.tmp / "o.nii.gz")], p),
        "format version 99 is not supported"),
    Bad("checkpoint-other-architecture",
        lambda c: (["predict", "--model", (p := _other_architecture(c)), "--input", c.nii("i.nii.gz"),
                    "--output", str(c.tmp / "o.nii.gz")], p), "weights do not fit"),
    Bad("checkpoint-not-a-model",
        lambda c: (["predict", "--model", (p := c.raw("notes.pt", "hello")), "--input", c.nii("i.nii.gz"),
                    "--output", str(c.tmp / "o.nii.gz")], p), "not a PyTorch file"),
    Bad("checkpoint-truncated",
        lambda c: (["predict", "--model", (p := c.raw("cut.pt", Path(c.t2).read_bytes()[:400])), "--input",
                    c.nii("i.nii.gz"), "--output", str(c.tmp / "o.nii.gz")], p), "truncated or corrupt"),
    Bad("resume-from-weights-only-checkpoint", lambda c: (c.train("--resume", c.t2), c.t2), "no training state"),
    Bad("resume-other-architecture",
        lambda c: (c.train("--resume", c.t2, "--model", "4,8,16"), c.t2), "does not match this run"),
    # ------------------------------------------------------------------ paths and outputs
    Bad("non-ascii-path-with-spaces", lambda c: _p(c, c.raw("données ü/scan 1.nii.gz", b"junk")),
        "cannot read NIfTI"),
    Bad("read-only-output-folder",
        lambda c: (c.predict(c.nii("i.nii.gz"), str(Path(c.read_only("locked")) / "o.nii.gz")),
                   str(c.tmp / "locked")), "not writable"),
    Bad("existing-output-file",
        lambda c: (c.predict(c.nii("i.nii.gz"), (p := c.raw("o.nii.gz", b"precious"))), p), "exists"),
    Bad("output-would-replace-input",
        lambda c: (c.predict((p := c.nii("i.nii.gz")), p, "--overwrite"), p), "replace the input"),
    Bad("output-suffix-not-writable",
        lambda c: (c.predict(c.nii("i.nii.gz"), (p := str(c.tmp / "o.png"))), p), "cannot write labels"),
    Bad("existing-run-folder", lambda c: (c.train(), _existing_run(c)), "already holds a run"),
    Bad("out-is-a-file", lambda c: (c.train()[:-len(FAST)] + ["--out", (p := c.raw("runfile", "x")), *FAST], p),
        "is a file"),
    Bad("existing-report-file",
        lambda c: (["evaluate", "--model", c.t2, "--images", c.nii("i.nii.gz"), "--labels", c.label(),
                    "--split", "all", "--json", (p := c.raw("report.json", "{}"))], p), "report file exists"),
    # ------------------------------------------------------------------ absurd settings
    Bad("patch-larger-than-volume", lambda c: (c.train("--patch-size", "512", "512"), "patch_size"),
        "far larger than every image"),
    Bad("patch-too-small-for-model",
        lambda c: (c.train("--patch-size", "16", "16", "--model", "4,8,16,32,64"), "patch_size"),
        "too small for model"),
    Bad("patch-wrong-dimensionality", lambda c: (c.train("--patch-size", "16", "16", "16"), "patch_size"),
        "does not match a 2D model"),
    Bad("batch-size-0", lambda c: (c.train("--batch-size", "0"), "batch_size"), "must be >= 1"),
    Bad("negative-iterations", lambda c: (c.train("--iterations", "-5"), "iterations"), "must be >= 1"),
    Bad("temperature-0", lambda c: (c.distill("--temperature", "0"), "temperature"), "must be > 0"),
    Bad("negative-lr", lambda c: (c.train("--lr", "-0.1"), "lr"), "must be > 0"),
    Bad("val-fraction-1", lambda c: (c.train("--val-fraction", "1"), "val_fraction"), "in [0, 1)"),
    Bad("negative-max-cases", lambda c: (c.train("--max-cases", "-1"), "--max-cases"), "must be >= 1"),
    Bad("negative-labelled-cases", lambda c: (c.distill("--labelled-cases", "-1"), "--labelled-cases"),
        "must be >= 0"),
    Bad("one-class", lambda c: (c.train("--num-classes", "1"), "num_classes"), "at least 2"),
    Bad("model-channels-garbage", lambda c: (c.train("--model", "8,x,16"), "8,x,16"), "channels like"),
    Bad("unknown-method", lambda c: (c.train("--method", "fitnet"), "fitnet"), "unknown"),
    Bad("non-numeric-flag", lambda c: (c.train("--iterations", "many"), "--iterations"), "invalid int value"),
    Bad("monai-args-not-json", lambda c: (c.distill("--monai-args", "{bad"), "--monai-args"), "not valid JSON"),
    # ------------------------------------------------------------------ config files and data folders
    Bad("config-unknown-setting",
        lambda c: (c.train("--config", (p := c.raw("c.yaml", "output_dir: ../../etc\n"))), p), "unknown setting"),
    Bad("config-wrong-type",
        lambda c: (c.train("--config", (p := c.raw("c.yaml", "iterations: many\n"))), p),
        "iterations must be integer"),
    Bad("config-absurd-value",
        lambda c: (["train-teacher", "--config", (p := c.raw("c.yaml", "batch_size: 0\n")), "--images",
                    c.nii("i.nii.gz"), "--labels", c.label(), "--out", str(c.tmp / "run")], p), "batch_size"),
    Bad("config-not-a-mapping", lambda c: (c.train("--config", (p := c.raw("c.yaml", "- 1\n- 2\n"))), p),
        "must hold a mapping"),
    Bad("config-bad-yaml", lambda c: (c.train("--config", (p := c.raw("c.yaml", "iterations: [\n"))), p),
        "line 2, column 1"),
    Bad("config-missing", lambda c: (c.train("--config", (p := str(c.tmp / "none.yaml"))), p),
        "cannot read config"),
    Bad("data-folder-wrong-layout",
        lambda c: (["train-teacher", "--data", (p := c.folder("dataset")), "--out", str(c.tmp / "run")], p),
        "found neither imagesTr"),
    Bad("spacing-csv-without-columns",
        lambda c: (["train-teacher", "--images", (c.nii("imgs/a.nii.gz"), c.folder("imgs"))[1], "--spacing-csv",
                    (p := c.raw("sizes.csv", "name,size\na.nii.gz,1\n")), "--out", str(c.tmp / "run")], p),
        "no 'filename' column"),
    Bad("evaluate-without-validation-split",
        lambda c: (["evaluate", "--model", c.t2, "--images", c.nii("i.nii.gz"), "--labels", c.label()], c.t2),
        "records no validation split"),
    Bad("evaluate-without-labels",
        lambda c: (["evaluate", "--model", c.t2, "--images", (p := c.nii("i.nii.gz")), "--split", "all"], p),
        "needs labelled cases"),
    # ------------------------------------------------------------------ napari reader and writer
    Bad("reader-corrupt-nii-gz", lambda c: (lambda: read_layers(p), p := c.raw("r.nii.gz", b"junk" * 50)),
        "cannot read NIfTI"),
    Bad("reader-truncated-tiff",
        lambda c: (lambda: read_layers(p), p := c.raw("r.tif", _tiff_bytes(c)[:300])), "corrupt or truncated"),
    Bad("reader-4d-nifti",
        lambda c: (lambda: read_layers(p), p := c.nii("r4.nii.gz", np.zeros((8, 8, 3, 2), np.float32))), "4D"),
    Bad("writer-unsupported-suffix",
        lambda c: (lambda: write_labels(p, LABEL, {}), p := str(c.tmp / "w.png")), "saves labels as"),
    Bad("writer-4d-layer",
        lambda c: (lambda: write_labels(p, np.zeros((2, 2, 4, 4), np.uint8), {}), p := str(c.tmp / "w.nii.gz")),
        "2D or 3D labels"),
    Bad("writer-broken-affine-metadata",
        lambda c: (lambda: write_labels(p, LABEL, {"metadata": {"napari_dmd": {"affine": [[1, 0], [0, 1]]}}}),
                   p := str(c.tmp / "w.nii.gz")), "not a finite 4x4 matrix"),
    Bad("writer-read-only-folder",
        lambda c: (lambda: write_labels(p, LABEL, {}), p := _existing_in_read_only(c)), "could not write"),
    Bad("writer-target-is-folder",
        lambda c: (lambda: write_labels(p, LABEL, {}), p := c.folder("w.nii.gz")), "is a folder"),
    Bad("write-image-existing-file",
        lambda c: (lambda: write_image(p, LABEL), p := c.raw("kept.nii.gz", b"precious")), "already exists"),
    # ------------------------------------------------------------------ resource limits and data checks
    Bad("nifti-header-1200-cubed", lambda c: _p(c, c.raw("bomb.nii.gz", _header_only((1200, 1200, 1200), True))),
        "implausible size"),
    Bad("nifti-header-32767-cubed", lambda c: _p(c, c.raw("h.nii", _header_only((32767, 32767, 32767)))),
        "implausible size"),
    Bad("complex-tiff", lambda c: _p(c, _complex_tiff(c)), "complex-valued"),
    Bad("config-python-tag",
        lambda c: (c.train("--config", (p := c.raw("c.yaml", "iterations: !!python/object/apply:os.system [x]\n"))),
                   p), "python tag !!python/object/apply:os.system refused for safety"),
    Bad("config-yaml-alias",
        lambda c: (c.train("--config", (p := c.raw("c.yaml", "extra:\n  a: &a [1, 2]\n  b: [*a, *a]\n"))), p),
        "alias *a refused"),
    Bad("lr-warmup-nan", lambda c: (c.train("--lr-warmup", "nan"), "lr_warmup"), "must be a finite number"),
    Bad("distill-warmup-inf", lambda c: (c.distill("--distill-warmup", "inf"), "distill_warmup"),
        "must be a finite number"),
    Bad("grad-clip-nan", lambda c: (c.train("--grad-clip", "nan"), "grad_clip"), "must be a finite number"),
    Bad("temperature-1e-30", lambda c: (c.distill("--temperature", "1e-30"), "temperature"), "within [0.1, 100]"),
    Bad("label-flipped-affine",
        lambda c: (c.train(label=(p := _nii_affine(c, "flip.nii.gz", LABEL, np.diag([-1.0, 1, 1, 1])))), p),
        "flipped along x"),
    Bad("label-spacing-differs",
        lambda c: (c.train(label=(p := _nii_affine(c, "thick.nii.gz", LABEL, np.diag([1.0, 2, 1, 1])))), p),
        "voxel size 1 x 2 mm"),
    Bad("labels-with-gap", lambda c: (c.train(label=(p := c.label("gap.nii.gz", _labels(5)))), p), "without gaps"),
    Bad("unlabelled-nan-image",
        lambda c: (["distill", "--teacher", c.t2, "--images", (p := c.nii("nan.nii.gz", np.where(LABEL == 1, np.nan,
                   IMAGE))), "--no-labels", "--out", str(c.tmp / "run"), *FAST], p), "NaN/Inf"),
    Bad("dataset-json-lists-missing-files",
        lambda c: (["train-teacher", "--data", _msd_missing(c), "--out", str(c.tmp / "run"), *FAST],
                   str(c.tmp / "T" / "dataset.json")), "files that are missing: ./imagesTr/gone.nii.gz"),
]


def _header_only(shape: tuple[int, ...], gz: bool = False) -> bytes:
    """A NIfTI header declaring ``shape`` (uint8) followed by 4 kB of zeros instead of the data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    blob = hdr.binaryblock + b"\0" * 4100
    return gzip.compress(blob) if gz else blob


def _complex_tiff(c: Ctx) -> str:
    import tifffile

    path = c.tmp / "complex.tif"
    tifffile.imwrite(path, (IMAGE + 1j * IMAGE).astype(np.complex64))
    return str(path)


def _nii_affine(c: Ctx, name: str, array: np.ndarray, affine: np.ndarray) -> str:
    path = c.tmp / name
    nib.save(nib.Nifti1Image(array.T, affine), str(path))
    return str(path)


def _msd_missing(c: Ctx) -> str:
    """An MSD folder whose dataset.json lists a case that is not there."""
    c.nii("T/imagesTr/a.nii.gz")
    c.label("T/labelsTr/a.nii.gz")
    c.raw("T/dataset.json", '{"labels": {"0": "bg", "1": "a", "2": "b"}, "training": '
          '[{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}, '
          '{"image": "./imagesTr/gone.nii.gz", "label": "./labelsTr/gone.nii.gz"}]}')
    return str(c.tmp / "T")


def _tiff_bytes(c: Ctx) -> bytes:
    path = write_image(c.tmp / ".full.tif", RNG.random((4, 64, 64)).astype(np.float32))
    data = path.read_bytes()
    path.unlink()
    return data


def _existing_in_read_only(c: Ctx) -> str:
    """An existing label file inside a folder that then becomes read-only."""
    folder = c.folder("locked")
    path = write_image(Path(folder) / "seg.nii.gz", LABEL)
    c.read_only("locked")
    return str(path)


def test_catalogue_is_large_and_distinct():
    ids = [b.id for b in CATALOGUE]
    assert len(ids) == len(set(ids)) >= 30


@pytest.mark.parametrize("case", CATALOGUE, ids=[b.id for b in CATALOGUE])
def test_bad_input(case: Bad, models, tmp_path, monkeypatch, capsys):
    ctx = Ctx(tmp_path, models, monkeypatch)
    try:
        target, names = case.build(ctx)
        capsys.readouterr()
        before = _snapshot(tmp_path, models["root"])
        if callable(target):
            with pytest.raises(Exception) as info:  # noqa: PT011 - the message is what is checked
                target()
            out, err = capsys.readouterr()
            message = str(info.value)
            assert not isinstance(info.value, (AssertionError, TypeError, KeyError, AttributeError)), message
        else:
            try:
                code = main(target)
            except SystemExit as e:  # argparse
                code = e.code
            out, err = capsys.readouterr()
            assert code != 0, out
            assert err.strip(), "no message"
            message = err.strip()
            assert message.startswith("napari-dmd"), message
        assert "Traceback" not in out + err
        assert len(message.splitlines()) == 1, message
        assert names in message, f"message does not name {names!r}: {message}"
        assert case.problem.lower() in message.lower(), message
        monkeypatch.undo()
        assert _snapshot(tmp_path, models["root"]) == before, "files were changed, created or lost"
    finally:
        monkeypatch.undo()
        for fn in ctx.undo:
            fn()


# ---------------------------------------------------------------------------------------- good twins
def test_non_ascii_paths_and_spaces_work(models, tmp_path, capsys):
    """The bad-path case above fails for its content, not its name: the same path with a real image works."""
    ctx = Ctx(tmp_path, models, pytest.MonkeyPatch())
    src = ctx.nii("données ü/scan 1.nii.gz")
    dst = tmp_path / "résultats é" / "seg 1.nii.gz"
    assert main(ctx.predict(src, str(dst))) == 0
    assert nib.load(dst).shape == (32, 32)
    assert str(dst) in capsys.readouterr().out


def test_reader_declines_folders_and_other_files(tmp_path):
    folder = tmp_path / "scan.nii.gz"
    folder.mkdir()
    assert get_reader(str(folder)) is None
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_unexpected_errors_are_one_line_too(models, tmp_path, monkeypatch, capsys):
    """A bug (not bad input) still ends with one line and status 1, the traceback only on request."""
    from napari_dmd import segment

    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr(segment.Segmenter, "from_checkpoint", boom)
    ctx = Ctx(tmp_path, models, monkeypatch)
    assert main(ctx.predict(ctx.nii("i.nii.gz"))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected KeyError" in err and "Traceback" not in err
    monkeypatch.setenv("NAPARI_DMD_DEBUG", "1")
    with pytest.raises(KeyError):
        main(ctx.predict(ctx.nii("i.nii.gz")))


# ------------------------------------------------------------------------------- config-path escape
@pytest.mark.parametrize("relative", ["last.pt", "sub/dir/file.txt", "./x", "a/./b"])
def test_resolve_inside_accepts_paths_inside(tmp_path, relative):
    assert resolve_inside(tmp_path, relative) == tmp_path / relative


@pytest.mark.parametrize("relative,problem", [
    ("../escaped", "'..'"), ("a/../../escaped", "'..'"), ("a\\..\\..\\escaped", "'..'"), ("/etc/passwd", "absolute"),
    ("~/escaped", "absolute"), ("C:\\escaped", "absolute"), ("", "empty"), ("a\x00b", "NUL"),
])
def test_resolve_inside_refuses_escapes(tmp_path, relative, problem):
    with pytest.raises(PathEscapeError, match=problem) as info:
        resolve_inside(tmp_path, relative, what="class name")
    assert str(tmp_path) in str(info.value) and "class name" in str(info.value)


def test_resolve_inside_refuses_symlinks_out_and_allows_symlinks_in(tmp_path):
    base, outside = tmp_path / "out", tmp_path / "elsewhere"
    base.mkdir()
    outside.mkdir()
    (base / "sub").mkdir()
    (base / "link_out").symlink_to(outside, target_is_directory=True)
    (base / "file_out").symlink_to(outside / "victim.txt")
    (base / "link_in").symlink_to(base / "sub", target_is_directory=True)
    for relative in ("link_out/x.pt", "file_out"):
        with pytest.raises(PathEscapeError, match="symbolic link"):
            resolve_inside(base, relative)
    assert resolve_inside(base, "link_in/x.pt") == base / "link_in" / "x.pt"


@pytest.mark.parametrize("name,expected", [
    ("liver", "liver"), ("../../etc/passwd", "_.._etc_passwd"), ("..", "unnamed"), (".hidden", "hidden"),
    ("a/b\\c:d", "a_b_c_d"), ("", "unnamed"), ("tab\there", "tab_here"), ("x" * 300, "x" * 120),
])
def test_safe_component(name, expected):
    out = safe_component(name)
    assert out == expected and "/" not in out and "\\" not in out and out not in (".", "..")


@pytest.mark.parametrize("key", ["output_dir: ../../escaped", "out: /tmp/escaped", "resume: ../x.pt",
                                 "teacher: ../t.pt", "run_name: ../../escaped"])
def test_config_file_cannot_choose_output_paths(models, tmp_path, monkeypatch, capsys, key):
    ctx = Ctx(tmp_path / "box", models, monkeypatch)
    cfg = ctx.raw("c.yaml", key + "\n")
    argv = ctx.train("--config", cfg)
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert cfg in err and "unknown setting" in err and "--out" in err and len(err.splitlines()) == 1
    assert _snapshot(tmp_path) == before


def test_config_values_never_become_paths_outside_the_run(models, tmp_path, monkeypatch, capsys):
    """Class names and extra settings with '..' or absolute paths only land as text inside --out."""
    ctx = Ctx(tmp_path / "box", models, monkeypatch)
    cfg = ctx.raw("c.yaml", "class_names: ['../../escaped', '/tmp/escaped-abs', 'a/b']\n"
                            "extra: {output_dir: ../../escaped, log: /tmp/escaped-abs.log}\n")
    outside_before = {p.name for p in Path("/tmp").iterdir() if p.name.startswith("escaped")}
    argv = ctx.train("--config", cfg, "--patch-size", "32", "32")
    before = _snapshot(tmp_path)
    assert main(argv) == 0
    created = set(_snapshot(tmp_path)) - set(before)
    run = tmp_path / "box" / "run"
    assert created and all(Path(p) == run or Path(p).is_relative_to(run) for p in created), created
    assert not list(tmp_path.rglob("escaped*"))
    assert {p.name for p in Path("/tmp").iterdir() if p.name.startswith("escaped")} == outside_before


@pytest.mark.parametrize("name", ["config.yaml", "events.jsonl", "last.pt"])
def test_run_file_symlinked_outside_is_refused(models, tmp_path, monkeypatch, capsys, name):
    assert name in RUN_FILES
    ctx = Ctx(tmp_path, models, monkeypatch)
    victim = ctx.raw("outside/victim.txt", "keep me")
    run = Path(ctx.folder("run"))
    (run / name).symlink_to(victim)
    argv = ctx.train()
    before = _snapshot(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "symbolic link" in err and name in err and str(run) in err and len(err.splitlines()) == 1
    assert _snapshot(tmp_path) == before and Path(victim).read_text(encoding="utf-8") == "keep me"


def test_predict_into_folder_never_follows_a_symlink_out(models, tmp_path, monkeypatch, capsys):
    ctx = Ctx(tmp_path, models, monkeypatch)
    a, b = ctx.nii("in/a.nii.gz"), ctx.nii("in/b.nii.gz")
    victim = ctx.raw("outside/victim.nii.gz", "keep me")
    out = Path(ctx.folder("preds"))
    (out / "b.nii.gz").symlink_to(victim)
    before = _snapshot(tmp_path)
    assert main(["predict", "--model", ctx.t2, "--input", a, b, "--output", str(out), "--overwrite",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "symbolic link" in err and "b.nii.gz" in err
    assert _snapshot(tmp_path) == before


def test_config_numbers_written_as_text_are_read(tmp_path):
    """YAML reads ``1e-3`` (no dot) as text; a number setting takes it as the number it means."""
    from napari_dmd.cli import _load_config_file

    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nweight_decay: '0'\niterations: 5\n")
    cfg = _load_config_file(str(path))
    assert cfg.lr == pytest.approx(1e-3) and cfg.weight_decay == 0.0 and cfg.iterations == 5
