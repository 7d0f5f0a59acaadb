"""Keep every file the tool writes inside the output folder the user chose.

Paths and names that come from a config file, a checkpoint or the data (run names, class names, file names
derived from them) are joined to the chosen folder only through :func:`resolve_inside`, which refuses absolute
paths, ``..`` components and symbolic links that lead out of the folder. :func:`safe_component` turns any
string (e.g. a class name) into one harmless file-name component.

Files are replaced atomically by :func:`atomic_write`: the data goes to a temp file of unpredictable name created
next to the target with ``O_EXCL`` (``tempfile.mkstemp``: never an existing file, never through a planted
symbolic link), is flushed to disk, gets the mode the umask gives a new file (mkstemp makes it 0600), and is
renamed over the target, so the target is whole or untouched.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .config import ConfigError

__all__ = ["PathEscapeError", "atomic_write", "atomic_write_text", "new_file_mode", "publish", "resolve_inside",
           "safe_component", "temp_file"]

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


# ------------------------------------------------------------------------------------------ atomic writes
def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the process umask (0644 under umask 022)."""
    mask = None
    try:  # Linux: read the umask without changing it (os.umask would change it for other threads meanwhile)
        with open("/proc/self/status") as f:
            mask = next((int(ln.split()[1], 8) for ln in f if ln.startswith("Umask:")), None)
    except (OSError, ValueError, IndexError):
        mask = None
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def temp_file(path: str | os.PathLike) -> tuple[int, Path]:
    """A new, empty temp file beside ``path`` (random hidden name, created exclusively): (fd, temp path)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    return fd, Path(tmp)


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give the finished temp file the umask's mode and rename it over ``path`` (a link there is replaced,
    not followed)."""
    os.chmod(tmp, new_file_mode())
    os.replace(tmp, path)
    return Path(path)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Replace ``path`` by what ``write(file)`` writes: temp file, fsync, umask mode, rename. On failure the old
    file is untouched and the temp file removed; an ``OSError`` names ``path``."""
    path = Path(path)
    fd, tmp = temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write() names no file
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
