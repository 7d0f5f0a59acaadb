"""B3: the project's sliding-window inference vs MONAI's, same network, windows and overlap.

    OMP_NUM_THREADS=2 python benchmarks/bench_sliding_window.py --size 96 --patch 64 --repeats 3

The same as ``napari-dmd bench sliding-window ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sliding-window", *sys.argv[1:]]))
