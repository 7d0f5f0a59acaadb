"""B5: peak memory (RSS, CUDA) and step time of DMD, 2D and 3D, over 3 patch sizes.

    OMP_NUM_THREADS=2 python benchmarks/bench_memory.py --steps 5

The same as ``napari-dmd bench memory ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "memory", *sys.argv[1:]]))
