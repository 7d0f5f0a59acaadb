"""B3: what the project's sliding-window inference adds to MONAI's (whose tiling and blending it uses), same network,
windows and overlap: the wrapper's overhead on a 3D net, and a 2D net slice-wise on a volume (slices as MONAI's batch
axis in one call) against one MONAI call per slice.

    OMP_NUM_THREADS=2 python benchmarks/bench_sliding_window.py --size 96 --patch 64 --repeats 3

The same as ``napari-dmd bench sliding-window ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "sliding-window", *sys.argv[1:]]))
