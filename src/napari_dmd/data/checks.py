"""Checks on cases before training: image values, label geometry and values, class count, patch size.

Every problem raises :class:`~napari_dmd.data.io.DataError` naming the file (or case); things worth knowing that
are not errors are issued as :class:`DataWarning` (one line, printed as ``warning: ...`` by the CLI and shown as
a notification by napari). Shapes and spacings in messages are given in the file's own axis order: ``(x, y, z)``
for NIfTI, NRRD, MetaImage and DICOM (as nibabel, ITK and their viewers show them), ``(z, y, x)`` for TIFF,
NumPy and OME-Zarr. Files with a world geometry (those and OME-Zarr) are compared by their affines.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dmd.data.case import Case
from napari_dmd.data.io import NIFTI_SUFFIXES, DataError, ImageData, file_suffix
from napari_dmd.data.itk_io import ITK_SUFFIXES
from napari_dmd.data.zarr_io import is_ome_zarr

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "DataWarning",
    "check_class_names",
    "check_image",
    "check_image_values",
    "check_label_geometry",
    "check_patch_size",
    "infer_num_classes",
    "resolve_class_names",
    "shape_text",
    "validate_case",
    "validate_cases",
    "warn",
]

DEFAULT_IGNORE_INDEX = 255
SPACING_RTOL = 1e-3  # relative difference of voxel sizes tolerated between a label and its image
DIRECTION_ATOL = 1e-3  # difference of direction cosines tolerated
ORIGIN_VOXELS = 0.05  # origin shift tolerated, in voxels (of the smallest spacing)
_CLASS_HINT = ("give the class count with --num-classes (num_classes in a config) or list the classes in "
               "dataset.json \"labels\"")


class DataWarning(UserWarning):
    """Something in the data worth knowing that does not stop the run (an unpaired image, a count mismatch)."""


def warn(message: str) -> None:
    """Issue a one-line :class:`DataWarning`."""
    warnings.warn(message, DataWarning, stacklevel=3)


_plain_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001 - warnings' API
    """DataWarnings print as one ``warning: ...`` line (other warnings keep Python's format)."""
    if isinstance(category, type) and issubclass(category, DataWarning):
        return f"warning: {message}\n"
    return _plain_format(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning


def _is_nifti(path: str | None) -> bool:
    """Whether the file stores its voxels in ``(x, y, z)`` order with a world affine: NIfTI, NRRD, MetaImage,
    a DICOM series folder."""
    if path is None:
        return False
    if file_suffix(path) in NIFTI_SUFFIXES + ITK_SUFFIXES:
        return True
    p = Path(path)
    return p.is_dir() and not is_ome_zarr(p)


def _has_world(path: str | None) -> bool:
    """Whether the file records a world geometry (spacing, orientation, origin) to compare labels by."""
    return _is_nifti(path) or (path is not None and is_ome_zarr(Path(path)))


def _in_file_order(values: Sequence, path: str | None) -> tuple:
    """Array-order values ((z, y, x)) in the file's own axis order: reversed for NIfTI, NRRD, MHA, DICOM."""
    values = tuple(values)
    return tuple(reversed(values)) if _is_nifti(path) else values


def shape_text(shape: Sequence[int], path: str | None) -> str:
    """An array's shape as the file stores it, e.g. ``(1, 48, 48)`` for a NIfTI read as ``(48, 48, 1)``."""
    return str(tuple(int(s) for s in _in_file_order(shape, path)))


def _spacing_text(spacing: Sequence[float], path: str | None) -> str:
    axes = ("(x, y, z)" if _is_nifti(path) else "(z, y, x)") if len(spacing) == 3 else \
        ("(x, y)" if _is_nifti(path) else "(y, x)")
    return " x ".join(f"{float(s):g}" for s in _in_file_order(spacing, path)) + f" mm {axes}"


# ------------------------------------------------------------------------------------------------ images


def check_image_values(image: np.ndarray, where: str) -> None:
    """Refuse an image with NaN/Inf voxels or one constant value (nothing to learn or segment)."""
    image = np.asarray(image)
    if image.dtype.kind not in "biuf":
        raise DataError(f"{where}: image has unsupported type {image.dtype}")
    if image.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise DataError(f"{where}: image contains {bad} NaN/Inf voxels; fix or mask them before use")
    if image.size and image.min() == image.max():
        raise DataError(f"{where}: constant image (every voxel is {float(image.flat[0]):g}); nothing to segment")


def check_image(image: np.ndarray, where: str, path: str | None = None) -> None:
    """Refuse an image that cannot be a case: not 2D/3D, a dimension under 2 voxels, NaN/Inf or constant."""
    shape = shape_text(image.shape, path)
    if image.ndim not in (2, 3):
        raise DataError(f"{where}: image has {image.ndim} spatial dims (shape {shape}); need 2D or 3D")
    if min(image.shape) < 2:
        raise DataError(f"{where}: image too small (shape {shape}); every dimension needs >= 2 voxels")
    check_image_values(image, where)


def check_label_geometry(img: ImageData, lab: ImageData) -> None:
    """Refuse a label map whose voxel grid is not its image's: spacing, orientation (flips) or origin differ.

    Two files with a world geometry (NIfTI, NRRD, MetaImage, DICOM, OME-Zarr, in any mix) are compared by spacing
    and affine. Otherwise only a label that records its own spacing (not all 1) is compared by spacing: a
    TIFF/PNG mask without metadata takes its image's spacing.
    """
    where = f"{lab.path}: label geometry differs from its image {img.path}"
    fix = "resample the label onto the image grid or fix the header; the label would be placed wrongly"
    both_nifti = _has_world(img.path) and _has_world(lab.path)
    if not both_nifti and all(float(s) == 1.0 for s in lab.spacing):
        return
    a, b = np.asarray(img.spacing, float), np.asarray(lab.spacing, float)
    if a.shape != b.shape or np.any(np.abs(a - b) > SPACING_RTOL * np.maximum(a, b)):
        raise DataError(f"{where}: voxel size {_spacing_text(lab.spacing, lab.path)} vs "
                        f"{_spacing_text(img.spacing, img.path)}; {fix}")
    if not both_nifti:
        return
    ndim = img.ndim
    ai, al = np.asarray(img.affine, float), np.asarray(lab.affine, float)
    di = ai[:3, :ndim] / np.linalg.norm(ai[:3, :ndim], axis=0)
    dl = al[:3, :ndim] / np.linalg.norm(al[:3, :ndim], axis=0)
    if np.any(np.abs(di - dl) > DIRECTION_ATOL):
        flipped = [ax for i, ax in enumerate("xyz"[:ndim]) if np.allclose(dl[:, i], -di[:, i], atol=DIRECTION_ATOL)]
        what = (f"flipped along {', '.join(flipped)}" if flipped else
                f"orientation differs (label axes {np.round(dl, 3).T.tolist()} vs image {np.round(di, 3).T.tolist()})")
        raise DataError(f"{where}: {what} (file axes x, y, z); {fix}")
    shift = float(np.linalg.norm(ai[:3, 3] - al[:3, 3]))
    if shift > ORIGIN_VOXELS * float(a.min()):
        raise DataError(f"{where}: origin shifted by {shift:.3g} mm (label {np.round(al[:3, 3], 3).tolist()} vs "
                        f"image {np.round(ai[:3, 3], 3).tolist()}); {fix}")


# ------------------------------------------------------------------------------------------------ labels


def _label_values(label: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """Label values that are classes (``ignore_index`` voxels excluded)."""
    values = np.unique(label)
    return values[values != ignore_index] if ignore_index is not None else values


def _values_text(values: Sequence[int], limit: int = 8) -> str:
    values = [int(v) for v in values]
    text = ", ".join(str(v) for v in values[:limit])
    return "{" + text + (f", ... ({len(values)} values)" if len(values) > limit else "") + "}"


def validate_case(
    case: Case, num_classes: int | None = None, *, ignore_index: int | None = DEFAULT_IGNORE_INDEX
) -> None:
    """Check one case; raise DataError naming its file (or name) on the first problem found.

    Image: 2 or 3 spatial dims, every dim >= 2 voxels, finite, not constant. Label (if any): same shape,
    integral, >= 0 and < ``num_classes`` when given (``ignore_index`` voxels are allowed).
    """
    where = case.source
    image = np.asarray(case.image)
    shape = shape_text(image.shape, case.image_path)
    check_image(image, where, case.image_path)
    if case.label is None:
        return
    lwhere = case.label_path or where
    label = np.asarray(case.label)
    if label.shape != image.shape:
        raise DataError(f"{lwhere}: label shape {shape_text(label.shape, case.label_path)} does not match image "
                        f"{where} shape {shape}")
    if label.dtype.kind == "f":
        finite = np.isfinite(label)
        if not finite.all() or np.any(label[finite] != np.round(label[finite])):
            raise DataError(f"{lwhere}: label map holds non-integer values; labels must be class indices")
    elif label.dtype.kind not in "biu":
        raise DataError(f"{lwhere}: label map has unsupported type {label.dtype}")
    values = _label_values(label, ignore_index)
    if values.size and values.min() < 0:
        raise DataError(f"{lwhere}: negative label value {values.min():g}; labels must be 0, 1, 2, ...")
    if num_classes is not None and values.size and values.max() >= num_classes:
        bad = [int(v) for v in values if v >= num_classes]
        raise DataError(
            f"{lwhere}: labels out of range: values {_values_text(bad)} but only {num_classes} classes "
            f"(0..{num_classes - 1}) expected"
        )


def check_patch_size(patch_size: Sequence[int] | None, cases: Sequence[Case], *, min_allowed: int = 32) -> None:
    """Refuse a training patch far larger than every image (it would hold mostly padding).

    An axis may exceed the largest image along it up to twice, or up to ``min_allowed`` voxels (small images
    are padded to the network's stride); beyond that a ConfigError names the setting and the largest image.
    """
    from napari_dmd.config import ConfigError

    if not patch_size or not cases:
        return
    n = len(patch_size)
    shaped = [c for c in cases if c.ndim >= n]
    if not shaped:
        return
    largest = [max(int(c.image.shape[c.ndim - n + i]) for c in shaped) for i in range(n)]
    if any(int(p) > max(2 * e, min_allowed) for p, e in zip(patch_size, largest)):
        biggest = max(shaped, key=lambda c: int(np.prod(c.image.shape[-n:])))
        raise ConfigError(
            f"patch_size {[int(p) for p in patch_size]} is far larger than every image (largest extent per axis "
            f"{largest}, e.g. {biggest.source}); the patch would be mostly padding: use patch_size {largest} "
            "or smaller"
        )


def infer_num_classes(cases: Sequence[Case], *, ignore_index: int | None = DEFAULT_IGNORE_INDEX) -> int:
    """Largest label value + 1 over the labelled cases (``ignore_index`` excluded); DataError if none.

    The values found must be 0..K-1 without gaps: labels {0, 1, 5} (or a stray 300) would silently make a
    6-class (301-class) model, so they are refused with the file holding the value above the gap.
    """
    first_file: dict[int, str] = {}
    labelled = False
    for case in cases:
        if case.label is None:
            continue
        labelled = True
        for v in _label_values(np.asarray(case.label), ignore_index):
            first_file.setdefault(int(v), case.label_path or case.name)
    if not labelled:
        raise DataError("no labelled case: cannot infer the number of classes; give it explicitly")
    if not first_file:
        return 1
    found = sorted(first_file)
    top = found[-1]
    missing = sorted(set(range(top + 1)) - set(found))
    if missing:
        raise DataError(f"{first_file[top]}: holds label {top} but no label map holds {_values_text(missing)} "
                        f"(values found {_values_text(found)}): classes must be numbered 0, 1, 2, ... without "
                        f"gaps; renumber the labels, or {_CLASS_HINT}")
    return top + 1


def check_class_names(num_classes: int | None, names: Sequence[str] | None, where: str) -> int | None:
    """The class count with class names known: ``len(names)``; DataError if ``num_classes`` says otherwise."""
    if names is None:
        return num_classes
    if num_classes is not None and int(num_classes) != len(names):
        raise DataError(f"{where}: lists {len(names)} class names ({', '.join(map(str, names))}) but there are "
                        f"{num_classes} classes; give one name per class, background included")
    return len(names)


def resolve_class_names(num_classes: int | None,
                        *sources: tuple[str | None, Sequence[str] | None]) -> tuple[int | None, list[str] | None]:
    """(class count, names) from the first source ``(where, names)`` that has names (config, teacher,
    dataset.json, in the caller's order); DataError naming that source if ``num_classes`` disagrees."""
    for where, names in sources:
        if names:
            return check_class_names(num_classes, names, str(where)), list(names)
    return num_classes, None


def _warn_ignore_label(labelled: Sequence[Case], ignore_index: int | None) -> None:
    """Label value ``ignore_index`` (255) marks voxels without a loss; say so where it may be meant as a class."""
    if ignore_index is None:
        return
    marked = [c for c in labelled if np.any(np.asarray(c.label) == ignore_index)]
    if marked:
        names = ", ".join(c.label_path or c.name for c in marked[:2])
        more = f" and {len(marked) - 2} more" if len(marked) > 2 else ""
        warn(f"{names}{more}: label {ignore_index} marks voxels to ignore (no loss, not a class, left out of "
             f"validation); if {ignore_index} is a class, renumber the labels to 0, 1, 2, ...")


def validate_cases(
    cases: Sequence[Case], num_classes: int | None = None, *, ignore_index: int | None = DEFAULT_IGNORE_INDEX
) -> int:
    """Validate every case and the set as a whole; return the number of classes.

    The set must be non-empty, share one spatial dimensionality and, if any case is labelled, hold some
    foreground. Without labels, ``num_classes`` must be given. Inferred from the labels, the class values must
    be 0..K-1 without gaps (:func:`infer_num_classes`).
    """
    cases = list(cases)
    if not cases:
        raise DataError("no cases to use: load at least one image")
    if num_classes is not None and num_classes < 2:
        raise DataError(f"num_classes must be at least 2 (background + one class), got {num_classes}")
    first = cases[0]
    for case in cases:
        if case.ndim != first.ndim:
            raise DataError(
                f"{case.source}: {case.ndim}D image mixed with {first.ndim}D image {first.source}; "
                "all cases must have the same number of spatial dims"
            )
    for case in cases:
        validate_case(case, num_classes, ignore_index=ignore_index)
    labelled = [c for c in cases if c.label is not None]
    if not labelled:
        if num_classes is None:
            raise DataError("no case has a label map: give the number of classes (e.g. from the teacher)")
        return num_classes
    foreground = any(np.any(_label_values(np.asarray(c.label), ignore_index) > 0) for c in labelled)
    if not foreground:
        hint = ""
        if ignore_index is not None and any(np.any(np.asarray(c.label) == ignore_index) for c in labelled):
            hint = (
                f"; value {ignore_index} marks ignored voxels, so a 0/{ignore_index} mask must be "
                "converted to 0/1"
            )
        names = ", ".join(c.label_path or c.name for c in labelled[:3])
        more = f" and {len(labelled) - 3} more" if len(labelled) > 3 else ""
        raise DataError(f"all labels are background (no foreground voxel in {names}{more}){hint}")
    _warn_ignore_label(labelled, ignore_index)
    return (
        num_classes
        if num_classes is not None
        else max(infer_num_classes(cases, ignore_index=ignore_index), 2)
    )
