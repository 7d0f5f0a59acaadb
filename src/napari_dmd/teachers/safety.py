"""What a teacher file may make napari-dmd do: which classes its names resolve to, no downloads, bounded work.

* Names in files (nnU-Net plans, MONAI bundle ``_target_``) are *resolved*, never *located*: the module part is
  imported only under the allowed packages, the class is an attribute of that module itself (no attribute walk
  through other modules, as ``pydoc.locate`` does), and it must be a ``torch.nn.Module`` subclass defined under
  the allowed packages. A function is never returned, so nothing named by a file is ever called but a
  constructor of an allowed network or layer class.
* Networks whose constructors download pretrained weights (``pretrained``, ``pretrained_url``, ...) are built with
  downloads off: a teacher's weights come from its own file, loaded right after.
* Config walks are bounded (:class:`Budget`) and ONNX test calls at load are time-limited (``onnx.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .base import TeacherError

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")

#: Constructor arguments that download or read pretrained weights, and the value that turns that off.
DOWNLOAD_OFF: dict[str, Any] = {"pretrained": False, "pretrained_url": None, "pretrained_path": None,
                                "weights": None, "download": False, "checkpoint": None}
#: Networks that cannot be built without fetching files from elsewhere (built only from a trusted bundle).
FETCHES_WHEN_BUILT = {"Transchex": "downloads a BERT model from the Hugging Face hub when built"}


def _under(module: str, packages: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def resolve_class(name: Any, *, packages: Sequence[str], where: str, key: str, what: str = "network class",
                  missing_ok: bool = False) -> type[nn.Module] | None:
    """The ``torch.nn.Module`` subclass ``name`` ("package.module.Class") names, or TeacherError.

    The module is imported only if it lies under ``packages``; the class is taken from that module alone and must
    be defined under ``packages``. ``where`` (the file) and ``key`` (the entry) name the culprit in the one-line
    message. ``missing_ok``: return None, importing nothing, when the top-level package is not installed (the
    caller then asks for it); the name has still passed every check that needs no import.
    """
    def refused(why: str = "") -> TeacherError:
        return TeacherError(f"{where}: {key!r} = {name!r} is not an allowed {what} (must be a torch.nn.Module "
                            f"subclass defined in {', '.join(packages)}{why}); a file must not make napari-dmd "
                            "import or call other code")

    if not isinstance(name, str) or not _DOTTED.fullmatch(name):
        raise refused()
    module_name, attr = name.rsplit(".", 1)
    if not _under(module_name, packages) or not attr[:1].isupper():
        raise refused()
    root = module_name.split(".", 1)[0]
    if importlib.util.find_spec(root) is None:
        if missing_ok:
            return None
        raise TeacherError(f"{where}: {key!r} = {name!r} needs the {root} package, which is not installed")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - e.g. "torch.nn.parallel.distributed.os": not a module
        raise refused(f"; no module {module_name}") from e
    if getattr(module, "__name__", None) != module_name:
        raise refused()
    obj = getattr(module, attr, None)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module) and _under(obj.__module__, packages)):
        raise refused()
    return obj


def check_plain(value: Any, where: str, key: str, depth: int = 0) -> None:
    """Refuse anything but plain JSON values (None, bool, numbers, strings, lists, string-keyed mappings)."""
    if depth > 32:
        raise TeacherError(f"{where}: {key!r} nests more than 32 levels deep")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for v in value:
            check_plain(v, where, key, depth + 1)
        return
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        for v in value.values():
            check_plain(v, where, key, depth + 1)
        return
    raise TeacherError(f"{where}: {key!r} holds a {type(value).__name__}; network arguments must be plain JSON "
                       "values")


def downloads_off(cls: type, args: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """``args`` with every download argument of ``cls`` turned off (also where the default downloads).

    Returns (arguments, names of the arguments changed). TeacherError for a network that cannot be built
    without fetching files.
    """
    if cls.__name__ in FETCHES_WHEN_BUILT:
        raise TeacherError(f"{where}: {cls.__name__} {FETCHES_WHEN_BUILT[cls.__name__]}; napari-dmd builds networks "
                           "from files without network access. If you trust this bundle, load it with trust=True "
                           "(CLI: --trust-teacher)")
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        params = {}
    out, changed = dict(args), []
    for arg, off in DOWNLOAD_OFF.items():
        if arg not in params:
            continue
        current = out.get(arg, params[arg].default)
        if current is not inspect.Parameter.empty and current is not off and current != off:
            changed.append(arg)
        out[arg] = off
    return out, changed


class BoundExceeded(TeacherError):
    """A file asks for more work than any real teacher needs (refused whether or not it is trusted)."""


class Budget:
    """Counts the values a config walk visits; past ``limit`` it stops with one line naming the file."""

    def __init__(self, where: str, limit: int = 20_000) -> None:
        self.where, self.limit, self.used = where, int(limit), 0

    def take(self, n: int = 1) -> None:
        self.used += n
        if self.used > self.limit:
            raise BoundExceeded(f"{self.where}: expands to more than {self.limit} values through '@' references or "
                               "YAML aliases (a reference bomb?); napari-dmd stops reading it")
