"""Command line: napari-dmd train-teacher | distill | predict | evaluate | export | bench | demo.

Every verb calls the same run path (:mod:`napari_dmd.runner`) and evaluator (:mod:`napari_dmd.evaluation`)
as the napari widgets. Bad input ends with a one-line error and a non-zero exit status, never a traceback.

Modules: ``main`` (parser, ``main``, error handling), ``flags`` (training-setting flags, config files),
``cases`` (data flags, case loading, output-folder checks), ``progress`` (progress bar, drive with Ctrl-C),
one module per verb group: ``train`` (train-teacher, distill), ``predict`` (predict, evaluate), ``export``,
``demo``; ``bench`` lives in :mod:`napari_dmd.bench`. The libraries never import this package.
"""

from __future__ import annotations

from .cases import RUN_FILES, _add_data_flags, _check_run_dir, _check_writable, _load_cases, _split_for_labels
from .demo import cmd_demo
from .export import add_export_parser, cmd_export
from .flags import _add_config_flags, _build_config, _load_config_file
from .main import EXIT_BAD_INPUT, EXIT_BUG, build_parser, main
from .predict import cmd_evaluate, cmd_predict
from .progress import ProgressPrinter, _drive, _fmt_eta, _progress_line
from .train import cmd_distill, cmd_train_teacher

__all__ = [
    "EXIT_BAD_INPUT", "EXIT_BUG", "RUN_FILES", "ProgressPrinter", "_add_config_flags", "_add_data_flags",
    "_build_config", "_check_run_dir", "_check_writable", "_drive", "_fmt_eta",
    "_load_cases", "_load_config_file", "_progress_line", "_split_for_labels", "add_export_parser", "build_parser",
    "cmd_demo", "cmd_distill", "cmd_evaluate", "cmd_export", "cmd_predict", "cmd_train_teacher", "main",
]
