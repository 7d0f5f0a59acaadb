"""B6: wall time until the DMD student's validation mean Dice first reaches 0.80.

    python benchmarks/time_to_dice.py --events runs/hippocampus/student/events.jsonl
    OMP_NUM_THREADS=2 python benchmarks/time_to_dice.py --teacher runs/hippocampus/teacher/best.pt \
        --data ../shared/data/msd_hippocampus --out runs/ttd --num-threads 2

The same as ``napari-dmd bench time-to-dice ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "time-to-dice", *sys.argv[1:]]))
