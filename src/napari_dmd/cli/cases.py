"""Data and output folders of a verb: the data flags, loading the cases, label splits, writable-folder checks."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from ..runs import RUN_FILES  # the files of a run folder (last.pt, best.pt, config.yaml, ...)


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """``--data`` / ``--images`` / ``--labels`` ... as one argument group."""
    g = p.add_argument_group("data")
    g.add_argument("--data", help="folder in Medical Segmentation Decathlon layout (imagesTr/, labelsTr/), "
                                  "or a folder with images/ and labels/ subfolders")
    g.add_argument("--images", nargs="+", help="image files, DICOM series or OME-Zarr folders (or one folder of "
                                               "images)")
    g.add_argument("--labels", nargs="+", help="label files matching --images (or one folder)")
    g.add_argument("--spacing-csv", help="CSV with 'filename' and 'pixel size' columns (2D images)")
    g.add_argument("--max-cases", type=int, help="use at most this many cases (after sorting by name)")
    g.add_argument("--labelled-cases", type=int,
                   help="keep labels for only this many training cases; the rest are distilled unlabelled "
                        "(the validation split keeps its labels)")
    g.add_argument("--no-labels", action="store_true", help="distil without any training labels")


def _load_cases(args: argparse.Namespace) -> tuple[list[Any], list[str] | None]:
    """The cases the data flags name, sorted by name, and the class names of a dataset.json (else None)."""
    from ..config import ConfigError
    from ..data.cases import is_image_folder, load_folder_pairs, load_msd_folder, load_pair_lists
    from ..data.io import DataError

    if args.max_cases is not None and args.max_cases < 1:
        raise ConfigError(f"--max-cases must be >= 1, got {args.max_cases}")
    if getattr(args, "labelled_cases", None) is not None and args.labelled_cases < 0:
        raise ConfigError(f"--labelled-cases must be >= 0, got {args.labelled_cases}")
    names = None
    if args.data:
        root = Path(args.data)
        if not root.is_dir():
            raise DataError(f"{root}: --data must be a folder (MSD layout or images/ + labels/)")
        if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir():
            cases, names = load_msd_folder(root)
        elif (root / "images").is_dir():
            labels = root / "labels"
            csv = args.spacing_csv or next(iter(sorted(root.glob("*.csv"))), None)
            cases = load_folder_pairs(root / "images", labels if labels.is_dir() else None, spacing_csv=csv)
        else:
            raise DataError(f"{root}: found neither imagesTr/ (MSD layout) nor images/ in this folder")
    elif args.images:
        one = Path(args.images[0])
        if len(args.images) == 1 and one.is_dir() and not is_image_folder(one):  # a folder of images
            lab = args.labels[0] if args.labels else None
            cases = load_folder_pairs(args.images[0], lab, spacing_csv=args.spacing_csv)
        else:
            cases = load_pair_lists(args.images, args.labels)
    else:
        raise DataError("no input data: give --data FOLDER or --images FILE...")
    cases = sorted(cases, key=lambda c: c.name)
    if args.max_cases is not None:
        cases = cases[: args.max_cases]
    if not cases:
        raise DataError(f"{args.data or args.images}: no image files found")
    return cases, names


def _split_for_labels(cases: list[Any], cfg: Any, args: argparse.Namespace) -> tuple[list[Any], list[Any] | None]:
    """Return (train, val) when only some training cases keep labels, else (cases, None)."""
    n_lab = 0 if args.no_labels else args.labelled_cases
    if n_lab is None:
        return cases, None
    from ..data.sampling import split_cases

    labelled = [c for c in cases if c.has_label]
    tr, va = split_cases(len(labelled), cfg.val_fraction, cfg.seed)
    val = [labelled[i] for i in va]
    train = [labelled[i] for i in tr] + [c for c in cases if not c.has_label]
    for i, c in enumerate(train):
        if i >= n_lab:
            train[i] = dataclasses.replace(c, label=None)
    return train, val


def _check_writable(folder: Path, what: str = "output folder") -> None:
    """Refuse a folder that cannot be created or written, before any work is done (nothing is created)."""
    from ..data.io import DataError

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise DataError(f"{folder}: cannot be used as {what}: {probe} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise DataError(f"{folder}: {what} is not writable ({e.strerror or e})") from e


def _check_run_dir(out: Path, resume: str | None = None) -> None:
    """The run folder: writable, no run file leading outside through a link, no other run's files in a new run."""
    from ..runs import check_new_run_folder
    from ..safe_paths import resolve_inside

    for name in RUN_FILES:
        resolve_inside(out, name, what="run file")
    _check_writable(out, "the --out folder")
    if resume is None:
        check_new_run_folder(out)
