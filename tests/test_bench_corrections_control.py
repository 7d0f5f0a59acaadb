"""``bench corrections --control``: the same rounds from the same round-0 student with nothing painted."""

from __future__ import annotations

import json

import pytest

from napari_dmd.bench import corrections as bench
from napari_dmd.cli import main
from napari_dmd.corrections import round_info


@pytest.mark.timeout(90)  # about 8 s on one idle core; the budget leaves room for a loaded machine
def test_control_arm_shares_round_0_and_paints_nothing(tmp_path, capsys, monkeypatch):
    roles: list[str] = []
    train = bench._train

    def counting(cfg, cases, out, teacher=None, role="student"):
        roles.append(role)
        return train(cfg, cases, out, teacher=teacher, role=role)

    monkeypatch.setattr(bench, "_train", counting)
    out = tmp_path / "bench"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "1", "--control", "--round-seed", "5",
                 "--out", str(out),
                 "--json", str(tmp_path / "b.json")]) == 0
    printed = capsys.readouterr().out
    assert "control mean" in printed and "control round 1: nothing painted" in printed
    assert roles == ["teacher", "student"]  # the round-0 student is trained once, for both arms
    res = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]
    rows, control = res["rows"], res["control"]
    assert [r["round"] for r in control] == [0, 1] and rows[1]["voxels_painted"] > 0
    assert all(r["voxels_painted"] == 0 and r["slices_corrected"] == 0 for r in control)
    assert control[0]["student_dice"] == rows[0]["student_dice"] and len(control[1]["student_dice"]) == 3
    assert 0 <= control[1]["student_mean_dice"] <= 1 and "painted_minus_control_mean" in res["targets"]
    start = str(out / "student" / "last.pt")
    assert res["settings"]["control"] is True and res["settings"]["round0_checkpoint"] == start
    painted, ctl = round_info(out / "round-1"), round_info(out / "control" / "round-1")
    assert painted["parent"] == ctl["parent"] == start  # both arms start from the same weights
    assert ctl["painted_voxels"] == 0 and ctl["corrections"] == [] and painted["painted_voxels"] > 0
    assert (ctl["iterations"], ctl["lr"]) == (painted["iterations"], painted["lr"])  # same steps, same lr
    assert (out / "control" / "round-1" / "last.pt").is_file()
    from napari_dmd.checkpoint import load_checkpoint

    assert res["settings"]["round_seed"] == 5 and load_checkpoint(start)["config"]["seed"] != 5
    for arm in (out / "round-1", out / "control" / "round-1"):  # --round-seed: both arms' rounds
        assert load_checkpoint(arm / "last.pt")["config"]["seed"] == 5
    assert len((out / "control" / "rows.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_table_has_a_control_column_only_with_a_control_arm():
    rows = [{"round": 0, "slices_corrected": 0, "voxels_painted": 0, "student_dice": [0.5], "student_mean_dice": 0.5,
             "teacher_mean_dice": 0.8},
            {"round": 1, "slices_corrected": 15, "voxels_painted": 1200, "student_dice": [0.7],
             "student_mean_dice": 0.7, "teacher_mean_dice": 0.8}]
    control = [dict(rows[0]), {**rows[0], "round": 1, "student_mean_dice": 0.6}]
    without, with_control = bench._table(rows, None), bench._table(rows, control)
    assert "control mean" not in without and "1,200" in without
    last = with_control.splitlines()[-1].split()
    assert with_control.splitlines()[0].split()[:7] == ["round", "slices", "voxels", "student", "mean", "control",
                                                       "mean"]
    assert last[:6] == ["1", "15", "1,200", "0.7000", "0.6000", "0.8000"]


@pytest.mark.timeout(90)  # about 6 s on one idle core
def test_head_supervision_reaches_both_arms_rounds_not_round_0(tmp_path):
    from napari_dmd.checkpoint import load_checkpoint

    out = tmp_path / "bench"
    assert main(["bench", "corrections", "--quick", "--method", "dmd", "--threads", "1", "--rounds", "1",
                 "--control", "--head-supervision", "0.5", "--out", str(out), "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]
    assert res["settings"]["head_supervision"] == 0.5
    assert load_checkpoint(out / "student" / "last.pt")["config"]["head_supervision"] == 1.0  # round 0: DMD's default
    for arm in (out / "round-1", out / "control" / "round-1"):
        assert load_checkpoint(arm / "last.pt")["config"]["head_supervision"] == 0.5


def test_head_supervision_is_checked_before_any_data_is_read(tmp_path):
    with pytest.raises(ValueError, match="head_supervision"):
        bench.bench_corrections("chaos", data=str(tmp_path / "nowhere"), head_supervision=-1.0)


@pytest.mark.timeout(90)  # about 6 s on one idle core
def test_augment_reaches_round_0_and_both_arms(tmp_path):
    from napari_dmd.checkpoint import load_checkpoint

    out = tmp_path / "bench"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "1", "--control",
                 "--augment", "spatial", "--seed", "3", "--out", str(out), "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]
    assert res["settings"]["augment_setting"] == "spatial" and res["settings"]["seed"] == 3
    assert load_checkpoint(out / "student" / "last.pt")["config"]["seed"] == 3
    for ck in (out / "student", out / "round-1", out / "control" / "round-1"):
        cfg = load_checkpoint(ck / "last.pt")["config"]
        assert (cfg["augment"], cfg["flips"], cfg["spatial_augment"]) == (True, False, True), ck


@pytest.mark.timeout(120)  # about 8 s on one idle core
def test_augment_off_turns_an_augmented_parents_rounds_plain(tmp_path):
    from napari_dmd.checkpoint import load_checkpoint

    first = tmp_path / "first"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "0", "--augment", "spatial",
                 "--out", str(first), "--json", str(tmp_path / "a.json")]) == 0
    parent = first / "student" / "last.pt"
    assert load_checkpoint(parent)["config"]["augment"] is True
    out = tmp_path / "second"
    assert main(["bench", "corrections", "--quick", "--threads", "1", "--rounds", "1", "--round0", str(parent),
                 "--augment", "off", "--out", str(out), "--json", str(tmp_path / "b.json")]) == 0
    res = json.loads((tmp_path / "b.json").read_text(encoding="utf-8"))["results"]
    assert res["settings"]["augment_setting"] == "off"
    cfg = load_checkpoint(out / "round-1" / "last.pt")["config"]
    assert (cfg["augment"], cfg["flips"], cfg["spatial_augment"]) == (False, False, False)


def test_augment_is_checked_before_any_data_is_read(tmp_path):
    with pytest.raises(ValueError, match="--augment 'flips'"):
        bench.bench_corrections("chaos", data=str(tmp_path / "nowhere"), augment="flips")
