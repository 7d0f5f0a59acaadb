"""B4: event-loop stalls while the Distill widget trains in napari, and GUI vs headless samples/s.

    OMP_NUM_THREADS=2 xvfb-run -a python benchmarks/bench_gui.py --steps 200

The same as ``napari-dmd bench gui ...``: the benchmark lives in ``napari_dmd.bench`` (installed users have
no benchmarks/ folder). Options: ``--help``; ``--quick`` runs a seconds-long smoke version; ``--json PATH`` writes
the results with the machine and the exact command. See docs/benchmarks.md.
"""

import sys

from napari_dmd.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "gui", *sys.argv[1:]]))
