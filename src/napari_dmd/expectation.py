"""What a user should expect from a distillation with the widget's defaults, read from the ablation's results.

``resources/expectations.json`` is written by ``benchmarks/ablation.py --expectations`` from the ablation's job
files (never typed by hand): per dataset, the default student distilled with DMD, mean over seeds of the
retention (student / teacher mean Dice), the speed-up (teacher / student seconds per volume) and
the CPU training time per iteration (``threads``: the jobs' training threads; ``latency_threads``: the
speed-up's); method ``dmd-hs`` is DMD with head supervision (the Heads box); ``recipe`` notes how a dataset's
jobs were trained unlike the widget's defaults (e.g. without flips). The Distill
widget shows :func:`expectation_lines` before Start, and
docs/results.md states the same numbers.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def load_expectations() -> dict[str, Any]:
    """The committed expectations: ``{"source": ..., "rows": [{dataset, dims, method, student, ...}, ...]}``."""
    try:
        text = resources.files("napari_dmd.resources").joinpath("expectations.json").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        return {"source": "", "rows": []}
    data = json.loads(text)
    return {"source": data.get("source", ""), "rows": list(data.get("rows", []))}


def matching_rows(method: str, student: str, spatial_dims: int | None = None) -> list[dict[str, Any]]:
    """The measured rows for this method and student preset (and dimensionality, when given)."""
    return [r for r in load_expectations()["rows"]
            if r.get("method") == method and r.get("student") == student
            and (spatial_dims is None or r.get("dims") == spatial_dims)]


def _threads(n: int) -> str:
    return f"{n} CPU thread{'s' if n > 1 else ''}"


def _after(row: dict[str, Any]) -> str:
    """", after N iterations" where the row records its training length (the Dice is that budget's)."""
    return f", after {int(row['iterations'])} iterations" if row.get("iterations") else ""


def expectation_lines(method: str, student: str, iterations: int, spatial_dims: int | None = None) -> list[str]:
    """One line per measured dataset: retention, speed-up and CPU wall time scaled to ``iterations``; a plain
    "not measured" line when the ablation has no row for these settings."""
    rows = matching_rows(method, student, spatial_dims) or matching_rows(method, student)
    if not rows:
        name = method.upper().replace("-HS", " (with head supervision)")
        return [f"No measurement for {name} with the {student!r} student yet: "
                "docs/results.md lists the measured settings."]
    lines = []
    for r in rows:
        minutes = r["seconds_per_iteration"] * iterations / 60
        lat = int(r.get("latency_threads", r["threads"]))
        lines.append(f"{r['dataset']} ({r['dims']}D): {100 * r['retention']:.0f} % of the teacher's Dice "
                     f"({r['seeds']} seeds{_after(r)}), {r['speedup']:.1f}x faster ({_threads(lat)}), "
                     f"~{minutes:.0f} min for "
                     f"{iterations} iterations on {_threads(int(r['threads']))}"
                     + (f" ({r['recipe']})" if r.get("recipe") else ""))
    return lines
