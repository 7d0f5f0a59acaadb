"""The Distill widget states before Start what its settings gave in the ablation."""

from __future__ import annotations

from napari_dmd._widgets.distill import DistillWidget
from napari_dmd.expectation import expectation_lines, matching_rows


def test_distill_shows_the_measured_expectation_and_follows_the_settings(make_napari_viewer):
    w = DistillWidget(make_napari_viewer())
    w.iterations_spin.setValue(600)
    row = matching_rows("dmd-hs", "student")[0]  # DMD's default: head supervision on
    text = w.expect_info.text()
    assert expectation_lines("dmd-hs", "student", 600)[0] in text
    assert f"{100 * row['retention']:.0f} % of the teacher's Dice" in text
    w.student_combo.setCurrentText("student-fast-tiny")
    assert w.expect_info.text().startswith(
        "No measurement for DMD (with head supervision) with the 'student-fast-tiny' student")


def test_unticking_heads_shows_the_published_methods_rows(make_napari_viewer):
    w = DistillWidget(make_napari_viewer())
    w.set_method("dmd")
    w.iterations_spin.setValue(400)
    with_heads = w.expect_info.text()
    assert matching_rows("dmd-hs", "student"), "expectations.json holds no dmd-hs rows"
    assert expectation_lines("dmd-hs", "student", 400)[0] in with_heads
    w.heads_check.setChecked(False)
    assert matching_rows("dmd", "student"), "expectations.json holds no dmd rows"
    text = w.expect_info.text()
    assert text != with_heads and expectation_lines("dmd", "student", 400)[0] in text
    w.set_method("kd")  # heads do not apply: back to KD's own (unmeasured) expectation
    assert w.expect_info.text().startswith("No measurement for KD")
