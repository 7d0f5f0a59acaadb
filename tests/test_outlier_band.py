"""The outlier band's tail order statistics: exactly NumPy's partition, by pre-selection or by the fallback."""

import numpy as np
import pytest

from napari_dmd.data import transforms
from napari_dmd.data.transforms import _tail_order_statistics, outlier_band


def _partitioned(flat: np.ndarray, k: int) -> tuple[float, float]:
    """Reference, written independently: the k-th smallest and k-th largest of a full sort."""
    ordered = np.sort(flat)
    return float(ordered[k]), float(ordered[flat.size - 1 - k])


def _k(n: int) -> int:
    return max(1, int(np.ceil(n * 1e-3)))


@pytest.mark.parametrize("n", [6, 511, 512, 4000, 61_250, 300_001])
@pytest.mark.parametrize("kind", ["normal", "uint8", "int16-ties", "heavy-tail"])
def test_tails_equal_a_full_sort(n, kind):
    rng = np.random.default_rng(n)
    values = {"normal": lambda: rng.normal(100, 20, n),
              "uint8": lambda: rng.integers(0, 256, n),
              "int16-ties": lambda: rng.choice([0, 0, 0, 5, 7, 1200], n),
              "heavy-tail": lambda: rng.standard_cauchy(n)}[kind]().astype(np.float32)
    k = min(_k(n), n // 2 - 1)
    assert _tail_order_statistics(values, k) == _partitioned(values, k)


def test_strided_views_and_extreme_values():
    rng = np.random.default_rng(1)
    flat = rng.normal(0, 1, 1_000_000).astype(np.float32)
    flat[::9973] = 3e38
    flat[5::7919] = -np.inf
    view = flat[::3]
    k = _k(view.size)
    assert _tail_order_statistics(view, k) == _partitioned(view, k)


def test_a_sample_that_misses_the_tails_falls_back(monkeypatch):
    """Every 8th value far below (and above) the rest: the sample's tails hold fewer than k values of the whole."""
    rng = np.random.default_rng(2)
    n = 80_000
    flat = rng.uniform(1, 2, n).astype(np.float32)
    flat[::16] = rng.uniform(0, 1e-3, flat[::16].size)
    flat[8::16] = rng.uniform(3, 3.001, flat[8::16].size)
    sizes = _partition_sizes(monkeypatch)
    k = 200  # more than the sample's thinner tails hold of the whole
    assert _tail_order_statistics(flat, k) == _partitioned(flat, k)
    assert max(sizes) == n  # the whole was partitioned


def test_a_scan_partitions_only_its_tails(monkeypatch):
    """On a smooth volume the pre-selection holds: nothing near the whole volume is partitioned."""
    z, y, x = np.mgrid[:35, :51, :35]
    rng = np.random.default_rng(3)
    volume = (100 * np.exp(-((z - 17) ** 2 + (y - 25) ** 2 + (x - 17) ** 2) / 300)
              + rng.normal(0, 3, z.shape)).astype(np.float32)
    sizes = _partition_sizes(monkeypatch)
    band = outlier_band(volume)
    lo, hi = _partitioned(volume.reshape(-1), _k(volume.size))
    assert band == (lo - 4 * (hi - lo), hi + 4 * (hi - lo))
    assert sizes and max(sizes) <= volume.size // 8 + 1


def _partition_sizes(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = np.partition

    def spy(a, kth, *args, **kw):
        sizes.append(int(np.asarray(a).size))
        return real(a, kth, *args, **kw)

    monkeypatch.setattr(transforms.np, "partition", spy)
    return sizes
