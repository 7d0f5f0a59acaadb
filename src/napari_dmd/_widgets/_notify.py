"""Notifications: one-line messages for errors and information, shown by napari (never a traceback)."""

from __future__ import annotations

from typing import Any

from napari.utils.notifications import show_error, show_info, show_warning

__all__ = ["error_message", "guard_layer", "notify_error", "notify_info", "notify_warning", "report_inference_error"]


def error_message(exc: BaseException, context: str | None = None) -> str:
    """One-line user message for an exception, prefixed by ``context`` (e.g. ``"Segment"``).

    Our own errors (DataError, ConfigError, CheckpointError, ExportError, TrainingError...) already name the
    file or setting and are shown as they are; other exceptions get their type name in front.
    """
    from ..checkpoint import CheckpointError
    from ..config import ConfigError
    from ..data.io import DataError
    from ..export import ExportError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    ours = (DataError, ConfigError, CheckpointError, ExportError, KeyError) + _training_error()
    if isinstance(exc, KeyError):
        text = str(exc.args[0]) if exc.args else text
    if not isinstance(exc, ours) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{context}: {text}" if context else text


def _training_error() -> tuple[type, ...]:
    try:
        from ..distill.engine import TrainingError
    except ImportError:  # pragma: no cover - engine always importable in a full install
        return ()
    return (TrainingError,)


def notify_error(exc: BaseException | str, context: str | None = None) -> str:
    """Show ``exc`` as a napari error notification (never a traceback); return the message shown."""
    message = exc if isinstance(exc, str) else error_message(exc, context)
    if isinstance(exc, str) and context:
        message = f"{context}: {exc}"
    show_error(message)
    return message


def notify_info(message: str) -> None:
    """Show an information notification."""
    show_info(message)


def report_inference_error(exc: BaseException, where: str) -> str:
    """Show a failed or cancelled inference run (info for a cancel, error otherwise); return the status text."""
    from ..inference import InferenceCancelled

    if isinstance(exc, InferenceCancelled):
        notify_info(f"{where}: {exc}")
        return str(exc)
    return notify_error(exc, where)


def notify_warning(message: str) -> None:
    """Show a warning notification."""
    show_warning(message)


def guard_layer(entry: Any, layer: Any, where: str) -> str | None:
    """Warn (napari notification) when the image layer ``layer`` is unlike the data ``entry`` was trained on
    (:func:`napari_dmd.guard.check_entry`: dims, spacing, intensity range); return the warning or None.
    A warning, not a refusal: the caller proceeds."""
    from ..guard import check_entry

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    try:
        message = check_entry(entry, data, image_name=layer.name, image_spacing=tuple(float(s) for s in layer.scale))
    except Exception:  # noqa: BLE001 - the guard never stops a run: an image it cannot read is reported later
        return None
    if message:
        show_warning(f"{where}: {message}")
    return message
