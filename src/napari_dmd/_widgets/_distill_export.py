"""The Distill widget's Export… button: write the finished run's student with
:func:`napari_dmd.export.export_student` (TorchScript, ONNX, model card) in a worker.

:class:`DistillExport` is a mixin of :class:`~napari_dmd._widgets.distill.DistillWidget`; it reads the widget's
``run``, ``device_combo`` and ``status_label`` and keeps ``export_worker`` and ``last_export``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QMessageBox

from ._notify import notify_error, notify_info
from ._workers import start_worker

__all__ = ["DistillExport", "export_formats"]


def export_formats() -> tuple[tuple[str, ...], str]:
    """Export formats this installation supports, and a note on what is skipped or unchecked ("" if nothing)."""
    if importlib.util.find_spec("onnx") is None:
        return ("torchscript",), "ONNX skipped: the onnx package is not installed (pip install 'napari-dmd[onnx]')"
    if importlib.util.find_spec("onnxruntime") is None:
        return ("torchscript", "onnx"), "ONNX not checked against PyTorch: onnxruntime is not installed"
    return ("torchscript", "onnx"), ""



class DistillExport:
    """Mixin of the Distill widget: which checkpoint to export, and the export worker with its handlers."""

    def export_checkpoint(self) -> Path | None:
        """The finished or stopped run's student to export: its best.pt if it exists, else last.pt."""
        run = self.run
        if run is None or run.distiller is None or not run.events or run.events[-1].kind not in ("done", "stopped"):
            return None
        return next((p for p in (run.distiller.best_path, run.distiller.last_path) if p.is_file()), None)

    def export(self, folder: str | Path | None = None):
        """Export the finished run's student into ``folder`` (asked for if None) in a worker; returns the worker."""
        ckpt = self.export_checkpoint()
        if self.running or self.export_worker is not None or ckpt is None:
            return None
        folder = folder or QFileDialog.getExistingDirectory(self, "Export the student into", str(ckpt.parent))
        if not folder:
            return None
        from ..export import CARD_JSON, CARD_MD, ONNX_NAME, TORCHSCRIPT_NAME, export_student

        out = Path(folder).expanduser()
        formats, note = export_formats()
        names = [TORCHSCRIPT_NAME] + ([ONNX_NAME] if "onnx" in formats else []) + [CARD_JSON, CARD_MD]
        existing = [n for n in names if (out / n).exists()]
        if existing and QMessageBox.question(self, "Export", f"{out} already holds {', '.join(existing)}. "
                                             "Replace?") != QMessageBox.StandardButton.Yes:
            return None
        d = self.run.distiller
        self.status_label.setText(f"exporting {ckpt} to {out} …")
        self.export_worker = start_worker(
            export_student, ckpt, out, formats=formats, cases=d.val_cases, teacher=d.teacher,
            device=str(self.device_combo.currentData()), overwrite=bool(existing),
            on_returned=lambda card: self._on_exported(card, ckpt, out, note), on_failed=self._on_export_failed,
            on_finished=self._on_export_finished)
        self._update_buttons()
        return self.export_worker

    def _on_exported(self, card: dict[str, Any], ckpt: Path, out: Path, note: str) -> None:
        self.last_export = card
        files = ", ".join(Path(f).name for f in card["files"].values())
        retention = (card.get("evaluation") or {}).get("dice_retention")
        text = f"Distill: exported {ckpt.parent.name}/{ckpt.name} to {out}: {files}"
        text += f" (Dice retention {100 * retention:.1f} %)" if retention is not None else ""
        text += f". {note}" if note else ""
        self.status_label.setText(text)
        notify_info(text)

    def _on_export_failed(self, exc: BaseException) -> None:
        self.last_error = notify_error(exc, "Distill export")
        self.status_label.setText(self.last_error)

    def _on_export_finished(self) -> None:
        self.export_worker = None
        with contextlib.suppress(RuntimeError):  # the widget is being deleted with the viewer
            self._update_buttons()
