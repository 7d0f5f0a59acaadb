"""B2: student vs teacher inference on the same volumes: speed-up and Dice retention.

    OMP_NUM_THREADS=2 python benchmarks/bench_inference.py --teacher runs/teacher/best.pt \
        --student runs/student/best.pt --data ../shared/data/msd_hippocampus --cases 20

The same as ``napari-dmd bench inference ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "inference", *sys.argv[1:]]))
