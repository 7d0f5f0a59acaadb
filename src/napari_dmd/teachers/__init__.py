"""Teacher adapters: anything that maps an image batch to per-pixel class logits can teach."""

from .base import ModelTeacher, Teacher, load_teacher

__all__ = ["ModelTeacher", "Teacher", "load_teacher"]
