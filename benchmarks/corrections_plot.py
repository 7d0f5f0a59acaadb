"""Plot the correction loop's curve (student and teacher mean Dice vs slices corrected) from bench JSON files.

One panel per file, side by side (hippocampus, then CHAOS when its JSON exists): the student's mean Dice per
round against the teacher's (dashed); classes the student had lost at round 0 (more than 10 points below the
teacher) are drawn too, thin, with the teacher's Dice of that class (dotted), and so are the classes named by
``--classes``. A JSON written with ``--control``
also gets the control arm's mean (the same rounds with nothing painted), grey, at the painted arm's x of that round;
one written with ``--shift`` says so in its title.

    python benchmarks/corrections_plot.py --out docs/images/corrections_curve.png
    python benchmarks/corrections_plot.py docs/benchmarks/bench-corrections-*.json --out FIGURE.png
    python benchmarks/corrections_plot.py A.json B.json --titles "first panel" "second panel" --out FIGURE.png
    python benchmarks/corrections_plot.py A.json --classes spleen --out FIGURE.png   # a class drawn in any case
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
DEFAULT_FILES = [DOCS / "bench-corrections-hippocampus.json", DOCS / "bench-corrections-chaos.json"]
CLASS_NAMES = {"hippocampus": ["anterior", "posterior"],  # for JSON files written before settings had them
               "chaos": ["liver", "right kidney", "left kidney", "spleen"]}


def _panel(ax: Any, name: str, res: dict[str, Any], classes: list[str] | None = None) -> None:
    rows, settings, teacher = res["rows"], res.get("settings", {}), res["teacher"]
    names = settings.get("class_names") or CLASS_NAMES.get(name) or \
        [f"class {i + 1}" for i in range(len(teacher["dice"]))]
    x = [r["slices_corrected"] for r in rows]
    line, = ax.plot(x, [100 * r["student_mean_dice"] for r in rows], "o-", lw=2, label="student, mean")
    ax.axhline(100 * teacher["mean"], color=line.get_color(), ls="--", lw=1, label="teacher, mean")
    control = res.get("control")
    if control:
        ax.plot(x[:len(control)], [100 * r["student_mean_dice"] for r in control][:len(x)], "^-", color="0.5",
                lw=1.5, ms=4, label="control (nothing painted), mean")
    lost = res.get("targets", {}).get("lost_classes_at_round_0", [])
    recovered = set(res.get("targets", {}).get("lost_classes_recovered", []))
    named = [names.index(c) + 1 for c in classes or [] if c in names and names.index(c) + 1 not in lost]
    for k in [*lost, *named]:
        gap = 100 * (teacher["dice"][k - 1] - rows[0]["student_dice"][k - 1])
        note = (f"> 10 below the teacher at round 0{', recovered' if k in recovered else ''}" if k in lost
                else f"{gap:.1f} below the teacher at round 0")
        cl, = ax.plot(x, [100 * r["student_dice"][k - 1] for r in rows], "s-", lw=1, ms=3, color=f"C{k + 1}",
                      label=f"student, {names[k - 1]} ({note})")  # one colour per class in every panel
        ax.axhline(100 * teacher["dice"][k - 1], color=cl.get_color(), ls=":", lw=1,
                   label=f"teacher, {names[k - 1]}")
    down = settings.get("downsample")
    title = f"{name} ({settings.get('val_cases', '?')} validation cases" + \
        (f", {down}x down-sampled" if down and down > 1 else "") + \
        (f", images shifted: {settings['shift']}" if settings.get("shift") else "") + \
        (f", augmentation: {aug}" if (aug := settings.get("augment_setting") or
                                      ("spatial" if settings.get("spatial_augment") else None)) else "") + ")"
    ax.set_title(textwrap.fill(title, 60), fontsize=9)
    ax.set_xlabel(f"slices corrected (cumulative; {settings.get('slices', 5)} per case, "
                  f"{settings.get('cases', 3)} cases a round)", fontsize=8)
    ax.set_xticks(x)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, frameon=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="*", type=Path, help="JSON files written by napari-dmd bench corrections --json "
                   "(default: the hippocampus and CHAOS files in docs/benchmarks/ that exist)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--titles", nargs="+", help="one panel name per file (default: the file name)")
    p.add_argument("--classes", nargs="+", help="also draw these classes (by name) in every panel that has them, "
                   "beside the classes lost at round 0")
    a = p.parse_args(argv)
    files = a.files or [f for f in DEFAULT_FILES if f.exists()]
    missing = [str(f) for f in files if not f.exists()]
    if not files or missing:
        print(f"corrections_plot: error: {', '.join(missing) or 'no bench-corrections JSON in docs/benchmarks'}: "
              "not found; run napari-dmd bench corrections --json FILE first", file=sys.stderr)
        return 2
    if a.titles and len(a.titles) != len(files):
        print(f"corrections_plot: error: {len(a.titles)} --titles for {len(files)} files", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(files), figsize=(5.2 * len(files), 6.4), squeeze=False)
    names = a.titles or [f.stem.removeprefix("bench-corrections-") for f in files]
    for ax, f, name in zip(axes[0], files, names):
        _panel(ax, name, json.loads(f.read_text(encoding="utf-8"))["results"], a.classes)
    axes[0][0].set_ylabel("Dice on validation (%)")
    fig.suptitle("Correction rounds: student vs teacher", fontsize=10)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
