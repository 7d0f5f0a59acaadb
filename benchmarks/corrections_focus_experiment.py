"""Experiment: corrections rounds with focus samples drawn case-uniformly (docs/results.md, the correction loop).

In a corrections round, ``PatchSampler(focus=...)`` takes half of the samples from a *painted* case; on hippocampus a
patch holds a whole volume, so the painted arm trains on the 3-9 painted cases half the time. Here a case is drawn
uniformly first, and only if it holds painted voxels is the patch centred on them (the same focus fraction). The
arguments are those of ``napari-dmd``; the package is patched for this process only::

    python benchmarks/corrections_focus_experiment.py bench corrections --dataset hippocampus --unseen \
        --shift scanner --threads 1 --json bench-corrections-hippocampus-shift-focus-uniform.json
"""
import sys

from napari_dmd.cli import main
from napari_dmd.data.sampling import PatchSampler

orig = PatchSampler._sample_one


def case_uniform(self: PatchSampler) -> tuple:
    """One sample; the focus branch only for a uniformly drawn case that holds painted voxels."""
    full = self._focus_cases
    if not full:
        return orig(self)
    case = int(self._rng.integers(self.num_cases))
    self._focus_cases = [case] if case in full else []
    try:
        return orig(self)
    finally:
        self._focus_cases = full


if __name__ == "__main__":
    PatchSampler._sample_one = case_uniform
    sys.exit(main(sys.argv[1:]))
