"""Choice lists the command line offers before torch is loaded, shared with the library that acts on them."""

from __future__ import annotations

#: Teacher file formats (``--teacher-kind``); "auto" detects the format from the file.
TEACHER_KINDS: tuple[str, ...] = ("auto", "checkpoint", "torchscript", "nnunet", "monai-bundle", "monai", "onnx")
#: Student export formats (``napari-dmd export --formats``).
EXPORT_FORMATS: tuple[str, ...] = ("torchscript", "onnx")
