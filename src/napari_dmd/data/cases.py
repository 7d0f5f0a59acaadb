"""Cases (image + optional label map) from files and folders, and their validation.

A :class:`Case` holds arrays in ``(z, y, x)`` / ``(y, x)`` order (see ``docs/architecture.md``). Loaders check
what can be checked per pair (label shape, integral labels); :func:`validate_cases` checks a whole set before
training. Every problem raises :class:`~napari_dmd.data.io.DataError` naming the file (or case).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dmd.data.case import Case
from napari_dmd.data.checks import (
    DEFAULT_IGNORE_INDEX,
    check_class_names,
    check_image,
    check_label_geometry,
    check_patch_size,
    infer_num_classes,
    shape_text,
    validate_case,
    validate_cases,
    warn,
)
from napari_dmd.data.io import (
    NIFTI_SUFFIXES,
    DataError,
    affine_from_spacing,
    file_suffix,
    is_supported_file,
    read_image,
    strip_suffix,
)
from napari_dmd.data.itk_io import ITK_SUFFIXES, is_dicom_folder
from napari_dmd.data.zarr_io import is_ome_zarr, ome_zarr_name

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "Case",
    "check_class_names",
    "check_patch_size",
    "find_pixel_size",
    "is_image_folder",
    "infer_num_classes",
    "load_case",
    "load_folder_pairs",
    "load_msd_folder",
    "load_pair_lists",
    "read_class_names",
    "validate_case",
    "validate_cases",
]

_NNUNET_CHANNEL = "_0000"


# ------------------------------------------------------------------------------------------------ labels


def _to_label_dtype(label: np.ndarray, where: str) -> np.ndarray:
    """Cast an integral label map to uint8 (0..255) or int16 (else int32); fractional values -> DataError."""
    label = np.asarray(label)
    if label.dtype.kind == "b":
        return label.astype(np.uint8)
    if label.dtype.kind == "f":
        finite = np.isfinite(label)
        if not finite.all():
            raise DataError(f"{where}: label map holds {int((~finite).sum())} NaN/Inf values")
        frac = label != np.round(label)
        if frac.any():
            example = float(label[frac].flat[0])
            raise DataError(
                f"{where}: label map holds non-integer values (e.g. {example:g}); "
                "labels must be class indices 0, 1, 2, ..."
            )
    elif label.dtype.kind not in "iu":
        raise DataError(f"{where}: label map has unsupported type {label.dtype}")
    if label.size == 0:
        return label.astype(np.uint8)
    lo, hi = float(label.min()), float(label.max())
    if lo >= 0 and hi < 256:
        return label.astype(np.uint8)
    if lo >= -32768 and hi < 32768:
        return label.astype(np.int16)
    if lo >= -(2**31) and hi < 2**31:
        return label.astype(np.int32)
    raise DataError(f"{where}: label values {lo:g}..{hi:g} are far out of any class range")


def _case_name(path: str | os.PathLike) -> str:
    """Case name from a file name (a DICOM folder's name, ``.ome.zarr`` removed from an OME-Zarr folder's):
    suffix and an nnU-Net ``_0000`` channel suffix removed."""
    stem = ome_zarr_name(Path(path)) if Path(path).is_dir() else strip_suffix(path)
    return stem[: -len(_NNUNET_CHANNEL)] if stem.endswith(_NNUNET_CHANNEL) else stem


def load_case(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    spacing: Sequence[float] | None = None,
) -> Case:
    """Read one image and its optional label map into a :class:`Case`.

    Labels are cast to uint8/int16 when their values are integral (fractional -> DataError naming the label
    file); the label shape must equal the image shape and its geometry (spacing, orientation, origin) the
    image's (:func:`~napari_dmd.data.checks.check_label_geometry`). An image with NaN/Inf voxels or a single
    value is refused, labelled or not. ``spacing`` (array order) overrides the file's; for files without a
    world affine (TIFF, PNG, NumPy) the affine is rebuilt from it, files with one (NIfTI, NRRD, MetaImage, DICOM,
    OME-Zarr) keep theirs, so that labels written with it overlay the source.
    """
    img = read_image(image_path)
    check_image(img.array, str(img.path), img.path)
    case_spacing = img.spacing
    affine = img.affine
    if spacing is not None:
        case_spacing = tuple(float(s) for s in spacing)
        if len(case_spacing) != img.ndim or not all(np.isfinite(s) and s > 0 for s in case_spacing):
            raise DataError(
                f"{img.path}: spacing {case_spacing} does not fit a {img.ndim}D image (need {img.ndim} "
                "positive values)"
            )
        if not _has_world(image_path):
            affine = affine_from_spacing(case_spacing)
    label = None
    lab_path = None
    if label_path is not None:
        lab = read_image(label_path)
        lab_path = lab.path
        if lab.array.shape != img.array.shape:
            raise DataError(
                f"{lab_path}: label shape {shape_text(lab.array.shape, lab_path)} does not match image {img.path} "
                f"shape {shape_text(img.array.shape, img.path)}"
            )
        if spacing is None:  # an explicit spacing replaces both files' own
            check_label_geometry(img, lab)
        label = _to_label_dtype(lab.array, lab_path)
    return Case(
        image=img.array,
        label=label,
        spacing=case_spacing,
        affine=affine,
        name=name if name is not None else _case_name(image_path),
        image_path=img.path,
        label_path=lab_path,
    )


# ------------------------------------------------------------------------------------------------ folders


def is_image_folder(p: Path) -> bool:
    """Whether folder ``p`` is one image: an OME-Zarr image or a DICOM series."""
    return p.is_dir() and not p.name.startswith(".") and (is_ome_zarr(p) or is_dicom_folder(p))


def _list_images(folder: Path) -> list[Path]:
    """Visible files with a supported image suffix, OME-Zarr and DICOM series folders, sorted by name (hidden and
    ``._*`` files skipped)."""
    return sorted(p for p in folder.iterdir() if (p.is_file() and is_supported_file(p)) or is_image_folder(p))


def _has_world(path: str | os.PathLike) -> bool:
    """Whether an image file records a world affine (NIfTI, NRRD, MetaImage, a DICOM or OME-Zarr folder)."""
    return file_suffix(path) in NIFTI_SUFFIXES + ITK_SUFFIXES or Path(path).is_dir()


def _label_index(folder: Path | None) -> dict[str, Path]:
    """Label files of a folder keyed by file name and by name without suffix."""
    index: dict[str, Path] = {}
    if folder is None or not folder.is_dir():
        return index
    for p in _list_images(folder):
        index.setdefault(p.name, p)
        index.setdefault(strip_suffix(p), p)
    return index


def _find_label(image: Path, index: dict[str, Path]) -> Path | None:
    """Label for an image: same file name, same stem, or the stem without nnU-Net's ``_0000``."""
    if image.name in index:
        return index[image.name]
    stem = strip_suffix(image)
    if stem in index:
        return index[stem]
    if stem.endswith(_NNUNET_CHANNEL):
        return index.get(stem[: -len(_NNUNET_CHANNEL)])
    return None


def _refuse_multichannel(images: list[Path], folder: Path) -> None:
    """nnU-Net multi-channel cases (``_0001`` files next to ``_0000``) are not supported."""
    stems = {strip_suffix(p) for p in images}
    for stem in sorted(stems):
        if stem.endswith("_0001") and f"{stem[:-5]}{_NNUNET_CHANNEL}" in stems:
            raise DataError(
                f"{folder / stem}: multi-channel cases (nnU-Net _0000/_0001 files) are not supported; "
                "keep one channel per case"
            )


def read_class_names(dataset_json: str | os.PathLike) -> list[str] | None:
    """Class names from a ``dataset.json`` (MSD ``{"0": "background"}`` or nnU-Net v2 ``{"background": 0}``).

    Returns None when the file or its "labels" entry is missing; gaps in the class indices get
    ``"class <k>"``. A file that cannot be parsed raises DataError.
    """
    p = Path(dataset_json)
    meta = _read_json(p)
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if not isinstance(labels, dict) or not labels:
        return None
    names: dict[int, str] = {}
    try:
        for key, value in labels.items():
            if isinstance(value, str):  # MSD: {"0": "background"}
                names[int(key)] = value
            elif isinstance(value, int) and not isinstance(value, bool):  # nnU-Net v2: {"background": 0}
                names[value] = str(key)
            else:  # nnU-Net region-based labels ([1, 2]) have no single class index
                raise ValueError(f"label {key!r} -> {value!r} is not a single class index")
    except ValueError as exc:
        raise DataError(f'{p}: unsupported "labels" entry ({exc})') from exc
    if min(names) < 0:
        raise DataError(f'{p}: negative class index in "labels"')
    return [names.get(k, f"class {k}") for k in range(max(names) + 1)]


def load_msd_folder(
    root: str | os.PathLike, *, require_labels: bool = False
) -> tuple[list[Case], list[str] | None]:
    """Load a Medical Segmentation Decathlon / nnU-Net raw folder.

    Reads ``imagesTr/`` paired with ``labelsTr/`` by file name (``case_0000.nii.gz`` pairs with
    ``case.nii.gz``), then ``imagesTs/`` (paired with ``labelsTs/`` if present). Cases without a label are
    kept unless ``require_labels``, which makes a missing ``imagesTr`` label an error and skips unlabelled
    ``imagesTs`` cases. Returns the cases sorted by name and the class names from ``dataset.json`` (or None).
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError(f"{root_p}: not a folder" if root_p.exists() else f"{root_p}: folder not found")
    tr, ts = root_p / "imagesTr", root_p / "imagesTs"
    if not tr.is_dir() and not ts.is_dir():
        raise DataError(f"{root_p}: no imagesTr/ or imagesTs/ folder (Medical Segmentation Decathlon layout)")
    cases: list[Case] = []
    for images_dir, labels_dir, is_train in (
        (tr, root_p / "labelsTr", True),
        (ts, root_p / "labelsTs", False),
    ):
        if not images_dir.is_dir():
            continue
        images = _list_images(images_dir)
        _refuse_multichannel(images, images_dir)
        index = _label_index(labels_dir)
        unpaired = []
        for image in images:
            label = _find_label(image, index)
            if label is None and require_labels:
                if is_train:
                    raise DataError(f"{image}: no label file for this image in {labels_dir}")
                continue
            if label is None:
                unpaired.append(image)
            cases.append(load_case(image, label))
        _report_unpaired(unpaired, images, labels_dir)
    if not cases:
        raise DataError(f"{root_p}: no images found in imagesTr/ or imagesTs/")
    names = read_class_names(root_p / "dataset.json")
    _check_dataset_json(root_p, cases, names)
    return cases, names


def _report_unpaired(unpaired: list[Path], images: list[Path], labels_dir: Path | None) -> None:
    """Images without a label in a folder that has labels: an error when none pairs (the names do not match),
    else a warning naming them (they are used unlabelled: distillation learns from the teacher on them,
    train-teacher leaves them out)."""
    if not unpaired or labels_dir is None or not labels_dir.is_dir() or not _list_images(labels_dir):
        return
    shown = ", ".join(p.name for p in unpaired[:3]) + (f" and {len(unpaired) - 3} more" if len(unpaired) > 3 else "")
    if len(unpaired) == len(images):
        raise DataError(f"{labels_dir}: no label file matches any image name (e.g. {shown}); a label must have its "
                        "image's file name (case.nii.gz or case_0000.nii.gz pairs with case.nii.gz)")
    warn(f"{unpaired[0].parent}: {len(unpaired)} of {len(images)} images have no label in {labels_dir} ({shown}); "
         "they are used unlabelled (train-teacher leaves them out)")


def _check_dataset_json(root: Path, cases: list[Case], names: list[str] | None) -> None:
    """Cross-check ``dataset.json`` with the folder: listed files present (error naming them), ``numTraining``
    equal to the images in imagesTr/ (warning), label values within the listed classes (error)."""
    path = root / "dataset.json"
    meta = _read_json(path)
    if not isinstance(meta, dict):
        return
    listed: list[str] = []
    for entry in meta.get("training") or []:
        if isinstance(entry, dict):
            listed += [v for k, v in entry.items() if k in ("image", "label") and isinstance(v, str)]
    listed += [v for v in meta.get("test") or [] if isinstance(v, str)]
    missing = []
    for rel in listed:
        p = root / rel
        alt = p.with_name(f"{strip_suffix(p)}{_NNUNET_CHANNEL}{file_suffix(p)}")  # nnU-Net's image name
        if not p.is_file() and not alt.is_file():
            missing.append(rel)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{path}: lists {len(missing)} files that are missing: {shown}; restore them or correct "
                        "dataset.json")
    n_train = meta.get("numTraining")
    found = sum(1 for c in cases if Path(c.image_path or "").parent.name == "imagesTr")
    if isinstance(n_train, int) and not isinstance(n_train, bool) and n_train != found:
        warn(f"{path}: numTraining is {n_train} but imagesTr/ holds {found} images")
    if names:
        for case in cases:
            if case.label is None:
                continue
            label = np.asarray(case.label)
            top = int(np.where(label == DEFAULT_IGNORE_INDEX, 0, label).max()) if label.size else 0
            if top >= len(names):
                raise DataError(f"{case.label_path}: holds label {top} but {path} lists {len(names)} classes "
                                f"({', '.join(names)}); add the class to \"labels\" or correct the label map")


def _read_json(path: Path) -> object:
    """Parsed JSON of ``path`` (None if the file is absent); DataError naming it if unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read dataset.json ({exc})") from exc


def _read_spacing_csv(csv_path: Path) -> dict[str, float]:
    """Map file name -> isotropic pixel size from a CSV with ``filename`` and ``pixel size...`` columns."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read spacing CSV ({exc})") from exc
    if not rows:
        raise DataError(f"{csv_path}: spacing CSV is empty")
    header = [h.strip().lower() for h in rows[0]]
    try:
        name_col = header.index("filename")
    except ValueError:
        raise DataError(f"{csv_path}: spacing CSV has no 'filename' column (columns: {rows[0]})") from None
    size_cols = [i for i, h in enumerate(header) if h.startswith("pixel size")]
    if not size_cols:
        raise DataError(f"{csv_path}: spacing CSV has no 'pixel size' column (columns: {rows[0]})")
    size_col = size_cols[0]
    table: dict[str, float] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            value = float(row[size_col])
        except (IndexError, ValueError):
            raise DataError(f"{csv_path}: line {line_no}: pixel size is not a number") from None
        if not (np.isfinite(value) and value > 0):
            raise DataError(f"{csv_path}: line {line_no}: pixel size {value} must be positive")
        table[row[name_col].strip()] = value
    return table


def _is_spacing_csv(csv_path: Path) -> bool:
    """Whether a CSV's header has the ``filename`` and ``pixel size...`` columns of a spacing CSV."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip().lower() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return "filename" in header and any(h.startswith("pixel size") for h in header)


def find_pixel_size(image_path: str | os.PathLike) -> tuple[float, Path] | None:
    """(pixel size in mm, CSV) of a 2D image without geometry (PNG, JPEG) from an HC18-style CSV beside it.

    The rule: the CSV files (``*.csv``, by name) of the image's folder, then of its parent folder, that have a
    ``filename`` and a ``pixel size...`` column; the first that lists the image's file name gives its pixel
    size (HC18's ``X_HC_Annotation.png`` is looked up as ``X_HC.png``). None when no CSV lists it; a listed
    file with a bad pixel size raises DataError naming the CSV line.
    """
    p = Path(image_path)
    names = [p.name]
    stem = strip_suffix(p)
    if stem.lower().endswith("_annotation"):
        names.append(stem[: -len("_annotation")] + file_suffix(p))
    for folder in (p.parent, p.parent.parent):
        try:
            found = sorted(q for q in folder.glob("*.csv") if q.is_file())
        except OSError:
            continue
        for csv_path in found:
            if not _is_spacing_csv(csv_path):
                continue
            table = _read_spacing_csv(csv_path)
            for name in names:
                if name in table:
                    return table[name], csv_path
    return None


def load_folder_pairs(
    images_dir: str | os.PathLike,
    labels_dir: str | os.PathLike | None = None,
    *,
    spacing_csv: str | os.PathLike | None = None,
) -> list[Case]:
    """Load every image of ``images_dir`` with the label of the same file name in ``labels_dir`` (if any).

    ``spacing_csv`` (e.g. HC18's ``pixel_size_and_HC.csv``) gives an isotropic pixel size in mm per image from
    its ``filename`` and ``pixel size...`` columns; an image missing from it is an error. Images without a
    label are loaded unlabelled with a warning naming them; when none has a label, DataError.
    """
    img_dir = Path(images_dir)
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: images folder not found")
    lab_dir = Path(labels_dir) if labels_dir is not None else None
    if lab_dir is not None and not lab_dir.is_dir():
        raise DataError(f"{lab_dir}: labels folder not found")
    table = _read_spacing_csv(Path(spacing_csv)) if spacing_csv is not None else None
    images = _list_images(img_dir)
    if not images:
        raise DataError(f"{img_dir}: no image files found")
    index = _label_index(lab_dir)
    unpaired = [image for image in images if _find_label(image, index) is None]
    _report_unpaired(unpaired, images, lab_dir)
    cases = []
    for image in images:
        spacing = None
        if table is not None:
            if image.name not in table:
                raise DataError(f"{image}: not listed in spacing CSV {spacing_csv}")
            spacing = table[image.name]
        label = _find_label(image, index)
        case = load_case(image, label)
        if spacing is not None:
            case.spacing = (spacing,) * case.ndim
            if not _has_world(image):
                case.affine = affine_from_spacing(case.spacing)
        cases.append(case)
    return cases


def load_pair_lists(
    image_paths: Sequence[str | os.PathLike],
    label_paths: Sequence[str | os.PathLike | None] | None = None,
) -> list[Case]:
    """Load cases from explicit lists; ``label_paths`` (same length, entries may be None) is optional."""
    images = list(image_paths)
    if label_paths is None:
        labels: list = [None] * len(images)
    else:
        labels = list(label_paths)
        if len(labels) != len(images):
            n = min(len(images), len(labels))
            odd = images[n] if len(images) > n else labels[n]
            kind = "image has no label file" if len(images) > n else "label file has no image"
            raise DataError(f"{odd}: this {kind} (got {len(images)} images but {len(labels)} label files); "
                            "the lists must pair up")
    return [load_case(img, lab) for img, lab in zip(images, labels)]


