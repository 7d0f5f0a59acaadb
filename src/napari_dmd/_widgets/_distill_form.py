"""The Distill widget's settings: the training-data box, the distillation form, and settings -> run inputs.

:class:`DistillSettings` is a mixin of :class:`~napari_dmd._widgets.distill.DistillWidget`: it builds the
"Training data" and "Distillation" boxes (the widget keeps the same attribute names, e.g. ``method_combo``)
and turns their values into a validated :class:`~napari_dmd.config.TrainConfig`, the teacher entry and the
training cases. Bad settings raise ConfigError / DataError with one line naming the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..config import HELP, ConfigError, TrainConfig
from ..data.io import DataError
from ..distill.methods import get_method, head_weight, menu_methods
from ..models.presets import PRESET_INFO, PRESETS, preset_summary
from ..runs import runs_root
from ..runtime import available_devices, cpu_bf16_supported, resolve_device
from ._choosers import ModelChooser
from ._geometry import cases_from_layers, dmd_metadata
from ._tables import PairTable
from ._workers import training_threads

if TYPE_CHECKING:
    import napari

    from ..data.cases import Case
    from ..registry import ModelEntry

__all__ = ["METHODS", "METHOD_TIPS", "STUDENT_PRESETS", "DistillSettings", "available_devices"]

METHODS = tuple(m.name for m in menu_methods())  # the methods table's menu order
METHOD_TIPS = {m.name: m.tip for m in menu_methods()}
STUDENT_PRESETS = tuple(p for p in PRESETS if p != "teacher")


class DistillSettings:
    """Mixin of the Distill widget: its settings boxes and their values as run inputs."""

    def _build_data_box(self, napari_viewer: napari.Viewer) -> QGroupBox:
        """The "Training data" box: a layer-pair table and an MSD-folder tab."""
        data_box = QGroupBox("Training data")
        data_layout = QVBoxLayout(data_box)
        self.data_tabs = QTabWidget()
        self.data_tabs.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)  # no empty space
        self.pair_table = PairTable(napari_viewer)
        self.data_tabs.addTab(self.pair_table, "Layers")
        folder_page = QWidget()
        fl = QHBoxLayout(folder_page)
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("folder with imagesTr/ (+ labelsTr/)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_folder)
        fl.addWidget(self.folder_edit)
        fl.addWidget(browse)
        self.data_tabs.addTab(folder_page, "MSD folder")
        data_layout.addWidget(self.data_tabs)
        self.pairs_label = QLabel("")  # which checked images have labels: what Start trains on
        self.pairs_label.setWordWrap(True)
        data_layout.addWidget(self.pairs_label)
        self.pair_table.pairs_changed.connect(self._show_pairs)
        self.data_tabs.currentChanged.connect(self._show_pairs)
        self._show_pairs()
        return data_box

    def _show_pairs(self, *_: object) -> None:
        """State, before Start, which checked images have labels (layers tab) or where the data comes from."""
        try:
            if self.data_tabs.currentIndex() == 1:
                self.pairs_label.setText("Training on the MSD folder's imagesTr/ (with labelsTr/ where present)")
            else:
                self.pairs_label.setText(f"Training images: {self.pair_table.summary()}")
        except RuntimeError:  # the widget is being deleted
            pass

    def _guard_teacher(self, teacher: ModelEntry | None) -> list[str]:
        """Warnings (shown as notifications) for checked images unlike the teacher's training data."""
        if teacher is None or self.data_tabs.currentIndex() == 1:
            return []
        from ._notify import guard_layer

        warnings = [guard_layer(teacher, image, "Distill") for image, _ in self.pair_table.pairs()]
        return [w for w in warnings if w]

    def _update_expectation(self, *_: object) -> None:
        """State before Start what the chosen method and student gave in the ablation, per measured dataset."""
        from ..expectation import expectation_lines

        method = (self.method_combo.currentData() or "dmd") + ("-hs" if self.head_supervision() else "")
        lines = expectation_lines(method, self.student_combo.currentText().strip(), self.iterations_spin.value())
        self.expect_info.setText("measured with full labels (docs/results.md):\n" + "\n".join(lines)
                                 if not lines[0].startswith("No measurement") else lines[0])

    def _build_settings_box(self) -> QGroupBox:
        """The "Distillation" box: teacher, method, student, schedule, device, precision, output folder."""
        form_box = QGroupBox("Distillation")
        form = QFormLayout(form_box)
        self.teacher_chooser = ModelChooser("teacher")
        form.addRow("Teacher", self.teacher_chooser)
        self.method_combo = QComboBox()
        for m in METHODS:
            self.method_combo.addItem(get_method(m).label, m)
        self.method_combo.setToolTip("\n".join(METHOD_TIPS.values()))
        form.addRow("Method", self.method_combo)
        self.heads_check = QCheckBox("also train the scale heads on the labels")
        self.heads_check.setToolTip(
            "MFD/DMD: the task loss (cross-entropy + Dice) at every scale head as well, as the deep-supervision "
            "control does (head_supervision 1; on by default for DMD, off for MFD; untick for the method as "
            "published, CLI --head-supervision 0). Measured: CHAOS, student, 2400 iterations, 3 seeds: 80.6 mean "
            "Dice against 76.0 without and the control's 76.7 (teacher 81.8), no class lost where DMD alone lost "
            "the left kidney in 3 of 6 short runs; hippocampus 3D: 81.5 against 80.0 (400 iterations), 87.0 "
            "against 87.3 (1600). See docs/method.md.")
        self.method_combo.currentIndexChanged.connect(self._update_heads)
        self.heads_check.toggled.connect(self._update_expectation)
        form.addRow("Heads", self.heads_check)
        self.student_combo = QComboBox()
        self.student_combo.setEditable(True)
        for i, name in enumerate(STUDENT_PRESETS):
            self.student_combo.addItem(name)
            self.student_combo.setItemData(i, f"{name}: {PRESET_INFO[name]['description']}\n"
                                              f"{preset_summary(name)}", Qt.ItemDataRole.ToolTipRole)
        self.student_combo.setToolTip("a preset, or channels per level such as 8,16,32,64")
        form.addRow("Student", self.student_combo)
        self.student_info = QLabel()  # what the chosen preset costs and gains, as measured
        self.student_info.setWordWrap(True)
        self.student_info.setStyleSheet("color: gray; font-size: 10px")
        form.addRow("", self.student_info)
        self.student_combo.currentTextChanged.connect(
            lambda text: self.student_info.setText(preset_summary(text.strip())))
        self.student_info.setText(preset_summary(self.student_combo.currentText()))
        self.iterations_spin = QSpinBox()
        self.iterations_spin.setRange(1, 10_000_000)
        self.iterations_spin.setValue(2000)
        form.addRow("Iterations", self.iterations_spin)
        self.expect_info = QLabel()  # what these settings gave in the ablation (resources/expectations.json)
        self.expect_info.setWordWrap(True)
        self.expect_info.setStyleSheet("color: gray; font-size: 10px")
        form.addRow("Expect", self.expect_info)
        self.method_combo.currentIndexChanged.connect(self._update_expectation)
        self.student_combo.currentTextChanged.connect(self._update_expectation)
        self.iterations_spin.valueChanged.connect(self._update_expectation)
        self._update_heads()  # before the expectation, which reads whether the box applies
        self._update_expectation()
        self.patch_edit = QLineEdit()
        self.patch_edit.setPlaceholderText("auto (e.g. 128,128 or 64,64,64)")
        form.addRow("Patch size", self.patch_edit)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(1, 512)
        self.batch_spin.setValue(2)
        form.addRow("Batch size", self.batch_spin)
        self.flips_check = QCheckBox("flip and rotate patches")
        self.flips_check.setChecked(True)
        self.flips_check.setToolTip("Augmentation: random flips and 90° rotations (intensity changes stay on). "
                                    "Turn off when classes differ by side or position rather than look, e.g. "
                                    "right and left kidney, or the hippocampus's head and tail (flips cost its "
                                    "students 4-8 Dice points).")
        form.addRow("Augment", self.flips_check)
        self.spatial_check = QCheckBox("zoom 0.8-1.25x, rotate up to 30°")
        self.spatial_check.setToolTip("Augmentation: " + HELP["spatial_augment"])
        form.addRow("", self.spatial_check)
        self.device_combo = QComboBox()
        for dev in available_devices():
            if dev == "auto":

                self.device_combo.addItem(f"auto ({resolve_device('auto').type})", "auto")
            else:
                self.device_combo.addItem(dev, dev)
        form.addRow("Device", self.device_combo)

        self.bf16_check = QCheckBox("bfloat16 on the CPU (faster)")
        self.bf16_check.setToolTip("Training on this CPU, which does bfloat16 natively: a 2D model's teacher and "
                                   "student run under bfloat16 autocast (about 1.4x faster jobs measured); a 3D "
                                   "model's teacher only, its student stays float32 (1.4-1.6x faster steps). "
                                   "Weights and losses stay float32; no effect on a GPU. Can change which seeds "
                                   "lose a small class: see docs/results.md.")
        has_bf16 = cpu_bf16_supported()
        self.bf16_check.setVisible(has_bf16)
        if has_bf16:
            form.addRow("Precision", self.bf16_check)
        out_row = QHBoxLayout()
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText(str(runs_root() / "<method>-<time>"))
        self.output_edit.textChanged.connect(self._update_buttons)
        out_browse = QPushButton("…")
        out_browse.setMaximumWidth(30)
        out_browse.clicked.connect(self._browse_output)
        out_row.addWidget(self.output_edit)
        out_row.addWidget(out_browse)
        form.addRow("Output", out_row)
        return form_box

    def _update_heads(self, *_: object) -> None:
        """Head supervision applies to the methods that take it (MFD, DMD) only; the box shows the method's
        default (ticked for DMD)."""
        method = get_method(self.method())
        self.heads_check.setEnabled(method.takes_head_supervision)
        self.heads_check.setChecked(head_weight(method.name, None) > 0)

    def head_supervision(self) -> float:
        """The config's ``head_supervision``: 1 when the box is ticked and applies, else 0."""
        return 1.0 if self.heads_check.isChecked() and self.heads_check.isEnabled() else 0.0

    def method(self) -> str:
        """The chosen distillation method (``dmd``, ``kd``, ``dkd``, ``mfd`` or ``none``)."""
        return str(self.method_combo.currentData())

    def set_method(self, method: str) -> None:
        """Choose a method by name; ValueError for an unknown one."""
        idx = self.method_combo.findData(method)
        if idx < 0:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.method_combo.setCurrentIndex(idx)

    def _browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "MSD / nnU-Net raw folder")
        if path:
            self.folder_edit.setText(path)

    def _browse_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder")
        if path:
            self.output_edit.setText(path)

    # ------------------------------------------------------------------ settings -> run
    def _patch(self) -> tuple[list[int] | None, int | None]:
        text = self.patch_edit.text().strip().lower()
        if text in ("", "auto"):
            return None, None
        try:
            values = [int(v) for v in text.replace("x", ",").replace(" ", ",").split(",") if v]
        except ValueError:
            raise ConfigError(f"patch size {text!r}: give 'auto', one number, or one per axis like 64,64") \
                from None
        if not values or any(v < 4 for v in values):
            raise ConfigError(f"patch size {text!r}: every entry must be a number >= 4")
        if len(values) == 1:
            return None, values[0]
        if len(values) not in (2, 3):
            raise ConfigError(f"patch size {text!r}: give 2 (2D) or 3 (3D) numbers")
        return values, None

    def _teacher(self) -> ModelEntry | None:
        entry = self.teacher_chooser.entry()
        if entry is None and self.method() != "none":
            raise ConfigError(f"method {self.method()!r} needs a teacher: load or train one in the Teacher "
                              "widget, or choose method 'none'")
        return entry

    def _cases(self) -> tuple[list[Case] | None, str | None, list[str] | None]:
        if self.data_tabs.currentIndex() == 1:
            folder = self.folder_edit.text().strip()
            if not folder:
                raise DataError("choose an MSD folder (with imagesTr/), or train on layers")
            if not Path(folder).is_dir():
                raise DataError(f"{folder}: folder not found")
            return None, folder, None
        pairs = self.pair_table.pairs()
        if not pairs:
            raise DataError("no image layer is checked: open images (File > Open) and tick them under "
                            "Training data, or use an MSD folder")
        names = None
        for image, labels in pairs:
            names = names or dmd_metadata(labels or image).get("class_names")
        return cases_from_layers(pairs), None, names

    @staticmethod
    def _intervals(iterations: int) -> dict[str, int]:
        """Validate ~10 times a run (at least every 500 steps); write last.pt at least every 200 steps."""
        every = max(1, min(iterations // 10, 500))
        return {"val_interval": every, "checkpoint_interval": min(every, 200)}

    def _config(self) -> tuple[TrainConfig, int | None]:
        patch, single = self._patch()
        iterations = self.iterations_spin.value()
        cfg = TrainConfig(method=self.method(), model=self.student_combo.currentText().strip() or "student",
                          iterations=iterations, patch_size=patch, batch_size=self.batch_spin.value(),
                          flips=self.flips_check.isChecked(), spatial_augment=self.spatial_check.isChecked(),
                          device=str(self.device_combo.currentData()),
                          cpu_bf16=self.bf16_check.isChecked(), head_supervision=self.head_supervision(),
                          num_threads=training_threads(), **self._intervals(iterations))
        cfg.model_channels()  # raises a clear message on a malformed channel list
        return cfg.validate(), single
