"""Choice lists the command line offers before torch is loaded, shared with the library that acts on them."""

from __future__ import annotations

#: Teacher file formats (``--teacher-kind``); "auto" detects the format from the file.
TEACHER_KINDS: tuple[str, ...] = ("auto", "checkpoint", "torchscript", "nnunet", "monai-bundle", "monai", "onnx")
#: Student export formats (``napari-dmd export --formats``).
EXPORT_FORMATS: tuple[str, ...] = ("torchscript", "onnx")
#: Package formats built from the exported files (``--formats bioimageio``: a bioimage.io model zip; needs both
#: TorchScript and ONNX, which it exports too). Not in the default.
PACKAGE_FORMATS: tuple[str, ...] = ("bioimageio",)
#: Everything ``napari-dmd export --formats`` accepts.
EXPORT_CHOICES: tuple[str, ...] = EXPORT_FORMATS + PACKAGE_FORMATS
