"""Teacher adapters: anything that maps an image batch to per-pixel class logits can teach.

``load_teacher(path, kind="auto", trust=False, ...)`` reads napari-dmd checkpoints, TorchScript files,
nnU-Net v2 model folders, MONAI bundles and state dicts, and ONNX files; see ``docs/teachers.md``.
"""

from .base import ModelTeacher, Teacher, TeacherError, check_teacher, checkpoint_teacher, probe_teacher
from .loader import KINDS, detect_kind, load_teacher, teacher_from_args

__all__ = [
    "KINDS",
    "ModelTeacher",
    "Teacher",
    "TeacherError",
    "check_teacher",
    "checkpoint_teacher",
    "detect_kind",
    "load_teacher",
    "probe_teacher",
    "teacher_from_args",
]
