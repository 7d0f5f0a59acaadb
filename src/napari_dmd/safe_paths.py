"""Keep every file the tool writes inside the output folder the user chose.

Paths and names that come from a config file, a checkpoint or the data (run names, class names, file names
derived from them) are joined to the chosen folder only through :func:`resolve_inside`, which refuses absolute
paths, ``..`` components and symbolic links that lead out of the folder. :func:`safe_component` turns any
string (e.g. a class name) into one harmless file-name component.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .config import ConfigError

__all__ = ["PathEscapeError", "resolve_inside", "safe_component"]

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


class PathEscapeError(ConfigError):
    """A path would lead outside the chosen output folder; the message names both."""


def resolve_inside(base: str | os.PathLike, relative: str | os.PathLike, *, what: str = "path") -> Path:
    """``base / relative`` with symbolic links resolved, refused unless it stays inside ``base``.

    ``relative`` must be relative, without ``..`` components, NUL characters or a leading ``~``; any symbolic
    link on the way (the final component included) must point inside ``base``. ``what`` names the setting or
    file in the error message. Returns the joined (unresolved) path.
    """
    text = os.fspath(relative)
    base_p = Path(base)
    problem = None
    if not text or not text.strip():
        problem = "is empty"
    elif "\x00" in text:
        problem = "contains a NUL character"
    elif text.startswith("~") or Path(text).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", text) or \
            text.startswith("\\"):
        problem = "is an absolute path"
    elif ".." in re.split(r"[\\/]", text):
        problem = "contains '..'"
    if problem is None:
        root = base_p.resolve()
        target = (base_p / text).resolve()
        if target != root and not target.is_relative_to(root):
            problem = f"leads through a symbolic link to {target}"
    if problem is not None:
        raise PathEscapeError(f"{what} {text!r} {problem}; it must name a file inside the output folder "
                              f"{base_p}")
    return base_p / text


def safe_component(name: str, *, default: str = "unnamed", max_len: int = 120) -> str:
    """One file-name component from any string: separators and control characters become ``_``, leading dots
    and spaces are dropped (no hidden files, no ``..``), long names are cut; empty results give ``default``."""
    text = _UNSAFE_CHARS.sub("_", str(name)).strip().lstrip(".").strip()
    return text[:max_len].rstrip() or default
