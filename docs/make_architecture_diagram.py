"""Draw docs/images/architecture.png: the layers of napari-dmd and which layer imports which.

    .venv/bin/python docs/make_architecture_diagram.py [--out docs/images/architecture.png]

Boxes are layers (the modules in each are named inside); an arrow A -> B means "A imports B". Layers import
downwards (``python3 ../shared/tools/check_structure.py`` checks that there are no import cycles); the one
upward import, ``python -m napari_dmd.bench`` calling the CLI, is the dashed arrow. The shared modules of the
bottom strip are used by several layers (``config.py`` reads the torch-free method table). Drawn with
Matplotlib's Agg renderer, no display needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# colours per layer
FRONT, PATH, ENGINE, BASE, SHARED = "#dbe9f6", "#fde9c9", "#e2f0d9", "#eee3f3", "#efefef"
EDGE = "#444444"


def box(ax, x: float, y: float, w: float, h: float, title: str, body: str, color: str) -> tuple:
    """A rounded box with a bold title and a smaller body; returns (x, y, w, h)."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                                fc=color, ec=EDGE, lw=1.2))
    ax.text(x + w / 2, y + h - 0.2, title, ha="center", va="top", fontsize=11, fontweight="bold")
    ax.text(x + w / 2, y + h - 0.55, body, ha="center", va="top", fontsize=8.3, linespacing=1.35)
    return (x, y, w, h)


def arrow(ax, src: tuple, dst: tuple, fx: float = 0.5, tx: float = 0.5, color: str = EDGE,
          style: str = "-", label: str | None = None) -> None:
    """An import arrow from the bottom of ``src`` (at fraction ``fx`` of its width) to the top of ``dst``."""
    x0, y0 = src[0] + fx * src[2], src[1]
    x1, y1 = dst[0] + tx * dst[2], dst[1] + dst[3]
    ax.add_patch(FancyArrowPatch((x0, y0 - 0.03), (x1, y1 + 0.05), arrowstyle="-|>", mutation_scale=14,
                                 color=color, lw=1.4, linestyle=style, shrinkA=0, shrinkB=0))
    if label:
        ax.text((x0 + x1) / 2 + 0.08, (y0 + y1) / 2, label, fontsize=7.5, color=color, va="center")


def draw(out: Path) -> None:
    """Draw the diagram into ``out`` (PNG)."""
    fig, ax = plt.subplots(figsize=(13, 9.4), dpi=110)
    ax.set_xlim(0, 13)
    ax.set_ylim(-0.55, 9.4)
    ax.axis("off")
    ax.text(6.5, 9.25, "napari-dmd: layers and imports (an arrow A \u2192 B: A imports B)",
            ha="center", va="top", fontsize=13, fontweight="bold")

    # front ends: neither imports the other
    widgets = box(ax, 0.3, 7.1, 6.0, 1.6, "_widgets/  (Qt + napari)",
                  "teacher, distill, features, compare, segment, loss_plot\n"
                  "_distill_form / _distill_run / _distill_export, _live\n"
                  "_workers, _notify, _geometry, _choosers, _tables", FRONT)
    cli = box(ax, 6.7, 7.1, 6.0, 1.6, "cli/  (napari-dmd VERB)",
              "main (parser, exit codes), flags, cases, progress\n"
              "train, predict (predict, evaluate), export, demo\n"
              "no library imports the CLI", FRONT)

    # what the front ends call
    run = box(ax, 0.3, 4.55, 2.95, 1.65, "run path", "runner.py\nprepare_run \u2192 events / drive\n"
              "\u2192 final_checkpoint\n(also demo.py, pretrained.py)", PATH)
    ev = box(ax, 3.5, 4.55, 2.95, 1.65, "evaluator", "evaluation.py\nevaluate_cases,\nteacher_segmenter\n"
             "compare.py (teacher vs student)", PATH)
    exp = box(ax, 6.7, 4.55, 2.95, 1.65, "export", "export.py\nexportable.py\nmodel_card.py", PATH)
    bench = box(ax, 9.75, 4.55, 2.95, 1.65, "bench/", "B1 step, B2 inference,\nB3 sliding window, B4 gui,\n"
                "B5 memory, B6 dice_time", PATH)

    # the engine
    engine = box(ax, 0.3, 2.45, 12.4, 1.35, "engine + methods + losses  (distill/)",
                 "engine.py (Distiller) + events.py, resolve.py, validation.py, state.py, distributed.py\n"
                 "methods/: one module per method + TABLE   \u00b7   losses.py (+ task.py, scales.py, _common.py)",
                 ENGINE)

    # the base
    models = box(ax, 0.3, 0.55, 2.95, 1.3, "models/", "unet, blocks, heads,\npresets, fold", BASE)
    teachers = box(ax, 3.45, 0.55, 2.95, 1.3, "teachers/", "loader + adapters,\nsafety", BASE)
    data = box(ax, 6.6, 0.55, 2.95, 1.3, "data/", "io, cases, checks, limits,\nsampling, transforms", BASE)
    rt = box(ax, 9.75, 0.55, 2.95, 1.3, "runtime.py \u00b7 runs.py", "devices, threads, machine\n"
             "run folders, resume checks", BASE)

    ax.add_patch(FancyBboxPatch((0.3, -0.45), 12.4, 0.6, boxstyle="round,pad=0.02,rounding_size=0.1",
                                fc=SHARED, ec="#888888", lw=1.0, linestyle="--"))
    shared = ["config.py", "choices.py", "checkpoint.py", "segment.py / inference.py", "metrics.py", "features.py",
              "registry.py", "safe_paths.py", "jsonsafe.py"]
    ax.text(6.5, -0.15, "used across the layers: " + " \u00b7 ".join(shared),
            ha="center", va="center", fontsize=8.6, color="#333333")

    blue, orange = "#2f6db3", "#c0641a"
    # widgets -> run path, evaluator, export
    arrow(ax, widgets, run, 0.2, 0.5, blue)
    arrow(ax, widgets, ev, 0.55, 0.5, blue)
    arrow(ax, widgets, exp, 0.9, 0.3, blue)
    # cli -> run path, evaluator, export, bench
    arrow(ax, cli, run, 0.08, 0.8, orange)
    arrow(ax, cli, ev, 0.2, 0.85, orange)
    arrow(ax, cli, exp, 0.45, 0.6, orange)
    arrow(ax, cli, bench, 0.8, 0.5, orange)
    # bench/__main__ calls the CLI (the one upward import)
    ax.add_patch(FancyArrowPatch((bench[0] + 0.85 * bench[2], bench[1] + bench[3] + 0.03),
                                 (cli[0] + 0.93 * cli[2], cli[1] - 0.05), arrowstyle="-|>", mutation_scale=12,
                                 color="#777777", lw=1.1, linestyle="--", connectionstyle="arc3,rad=-0.35"))
    ax.text(12.68, 6.62, "python -m\nnapari_dmd\n.bench", fontsize=7.2, color="#666666", ha="left", va="center")

    # middle -> engine
    arrow(ax, run, engine, 0.5, 0.12)
    arrow(ax, bench, engine, 0.5, 0.89)
    # engine -> base
    for b in (models, teachers, data, rt):
        arrow(ax, engine, b, (b[0] + b[2] / 2 - engine[0]) / engine[2], 0.5)
    ax.text(6.5, 4.25, "the evaluator and export call models, teachers and data directly (arrows through the engine "
            "layer left out)", ha="center", va="center", fontsize=8, style="italic", color="#555555")

    fig.savefig(out, bbox_inches="tight", facecolor="white")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("images") / "architecture.png")
    args = p.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
