"""Plot the correction loop's curve (student and teacher mean Dice vs slices corrected) from bench JSON files.

    python benchmarks/corrections_plot.py docs/benchmarks/bench-corrections-*.json \
        --out docs/images/corrections_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help="JSON files written by napari-dmd bench corrections --json")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for f in a.files:
        res = json.loads(f.read_text(encoding="utf-8"))["results"]
        rows = res["rows"]
        name = f.stem.removeprefix("bench-corrections-")
        x = [r["slices_corrected"] for r in rows]
        line, = ax.plot(x, [100 * r["student_mean_dice"] for r in rows], "o-", label=f"{name}: student")
        ax.axhline(100 * rows[0]["teacher_mean_dice"], color=line.get_color(), ls="--", lw=1,
                   label=f"{name}: teacher")
    ax.set_xlabel("slices corrected (cumulative, 5 per case and round, 3 cases)")
    ax.set_ylabel("mean Dice on validation (%)")
    ax.set_title("Correction rounds: student vs teacher")
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
