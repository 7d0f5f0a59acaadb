"""``bench corrections --shift scanner``: the images as another scanner shows them, labels kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_dmd.bench import corrections as bench
from napari_dmd.bench.domain_shift import scanner_shift, shift_cases
from napari_dmd.cli import main
from napari_dmd.data.case import Case


def test_scanner_shift_matches_the_formula_written_out():
    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 20.0, size=(3, 4, 5)).astype(np.float32)
    lo, hi = np.percentile(img, 0.5), np.percentile(img, 99.5)
    got = scanner_shift(img)
    for idx in [(0, 0, 0), (1, 2, 4), (2, 3, 2)]:
        x = min(max((img[idx] - lo) / (hi - lo), 0.0), 1.0)
        field = 0.5 + 1.0 * idx[-1] / 4  # 0.5 at the first column, 1.5 at the last
        assert got[idx] == pytest.approx(lo + (hi - lo) * np.sqrt(x) * field, rel=1e-5)
    assert got.dtype == np.float32 and got.shape == img.shape
    mid = (lo + hi) / 2  # gamma 0.5 brightens the middle grey: sqrt(0.5) > 0.5 at a field of 1 (the centre column)
    flat = np.full((1, 1, 3), mid, np.float32)
    flat[0, 0, 0], flat[0, 0, 2] = lo, hi
    assert scanner_shift(flat)[0, 0, 1] > mid


def test_shift_cases_keeps_labels_and_rejects_unknown_names():
    case = Case(image=np.arange(24, dtype=np.float32).reshape(2, 3, 4), label=np.ones((2, 3, 4), np.uint8),
                spacing=(1.0, 1.0, 1.0), affine=np.eye(4), name="c")
    assert shift_cases([case], None)[0] is case
    out = shift_cases([case], "scanner")[0]
    assert out.label is case.label and out.name == "c" and not np.allclose(out.image, case.image)
    with pytest.raises(ValueError, match="--shift 'mri'"):
        shift_cases([case], "mri")
    with pytest.raises(ValueError, match="choose one of scanner"):
        bench.bench_corrections("phantom2d", quick=True, shift="mri")


@pytest.mark.timeout(90)
def test_bench_shifts_pool_and_validation(tmp_path, monkeypatch):
    seen: list[float] = []
    evaluate = bench._evaluate

    def recording(seg, val):
        seen.append(float(np.mean([c.image.mean() for c in val])))
        return evaluate(seg, val)

    monkeypatch.setattr(bench, "_evaluate", recording)
    train, val, _ = bench._phantom(2, True)
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "1", "--shift", "scanner",
                 "--out", str(tmp_path / "b"), "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]
    assert res["settings"]["shift"] == "scanner"
    shifted = float(np.mean([scanner_shift(c.image).mean() for c in val]))
    assert seen and all(v == pytest.approx(shifted, rel=1e-5) for v in seen)  # validation cases were shifted
    assert shifted != pytest.approx(float(np.mean([c.image.mean() for c in val])), rel=1e-3)
