"""B1: one DMD training step vs the sum of its parts (teacher forward + student forward/backward).

    OMP_NUM_THREADS=2 python benchmarks/bench_step.py --dims 3 --repeats 10 --json bench-step.json

The same as ``napari-dmd bench step ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "step", *sys.argv[1:]]))
