"""Data that do not match the forward model are refused before export and training, on every row
(the adversarial pass: partly mirrored splits, one row or one split in other units, μ in 1/mm, a wrong
declared calibration, an undeclared angle offset — all went through to a trained student)."""
import json
import shutil

import numpy as np
import pytest

from phase1_teacher.train import main as teacher_main
from shared.data.check import main as check_main
from shared.data.dataset_io import DataError, open_dataset
from shared.data.forward_check import check_forward_model, quick_check
from shared.data.orientation import roll_angles
from tests.test_bad_inputs import _fails_cleanly


def _edit(tiny_data, tmp_path, file, fn):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    arr = np.load(data / file)
    np.save(data / file, fn(arr).astype(np.float32))
    return data


def _meta(data, **entries):
    meta = json.loads((data / "dataset.json").read_text())
    for k, v in entries.items():
        if k in ("orientation", "angle_offset"):
            meta["geometry"][k] = v
        else:
            meta[k] = v
    (data / "dataset.json").write_text(json.dumps(meta))


def _mirror_rows(rows):
    def fn(a):
        a = a.copy()
        a[rows] = a[rows][:, :, ::-1, :]  # radial flip of those sinograms
        return a
    return fn


def _scale_rows(rows, factor):
    def fn(a):
        a = a.copy()
        a[rows] = a[rows] * factor
        return a
    return fn


CASES = {
    "three train sinograms mirrored": ("train-actSino.npy", _mirror_rows([3, 11, 17]),
                                       r"train-actSino.npy: rows \[3, 11, 17\] of 24 fit the forward model markedly "
                                       r"better as radial_flip"),
    "mirrored val sinograms": ("val-actSino.npy", _mirror_rows(list(range(8))),  # a whole split: the fit's fix
                               r"val-actSino.npy: sinograms fit the forward model best with orientation 'radial_flip'"),
    "one train actMap row x1000": ("train-actMap.npy", _scale_rows([5], 1000.0),
                                   r"train-actSino.npy: rows \[5\] have a calibration c far from"),
    "val actMap x1000": ("val-actMap.npy", lambda a: a * 1000.0, r"the splits' calibrations disagree"),
    "mu in 1/mm": ("train-attenMap.npy", lambda a: a / 10.0, r"train-attenMap.npy: largest μ is .* looks like 1/mm"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_row_is_checked(case, tiny_data, tmp_path, capsys):
    file, fn, text = CASES[case]
    data = _edit(tiny_data, tmp_path, file, fn)
    with pytest.raises(DataError, match=text):
        quick_check(open_dataset(data), log=lambda *_: None)
    # and the training command stops before anything is written
    _fails_cleanly(teacher_main, ["--data", str(data), "--out", str(tmp_path / "t"), "--epochs", "1"], capsys,
                   file.split("-")[0])
    assert not (tmp_path / "t").exists()


def test_a_wrong_declared_calibration_is_refused_naming_both(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    _meta(data, calibration=5.0)
    with pytest.raises(DataError, match=r"calibration = 5 is declared, but the data fit c = 0\.99"):
        quick_check(open_dataset(data), log=lambda *_: None)


@pytest.mark.parametrize("k", [1, 3])
def test_an_undeclared_angle_offset_is_refused_and_a_declared_one_accepted(k, tiny_data, tmp_path, capsys):
    data = _edit(tiny_data, tmp_path, "train-actSino.npy", lambda a: roll_angles(a, k))
    for split in ("val", "test"):
        arr = np.load(data / f"{split}-actSino.npy")
        np.save(data / f"{split}-actSino.npy", roll_angles(arr, k).astype(np.float32))
    with pytest.raises(DataError, match=rf"angle offset {k} bins"):
        quick_check(open_dataset(data), log=lambda *_: None)
    _meta(data, angle_offset=k)
    quick_check(open_dataset(data), log=lambda *_: None)


def test_clean_data_pass_and_check_data_reports_every_row(tiny_data, tmp_path, capsys):
    quick_check(open_dataset(tiny_data), log=lambda *_: None)
    report = tmp_path / "r.json"
    assert check_main(["--data", str(tiny_data), "--json", str(report)]) == 0
    rows = json.loads(report.read_text())["every_row"]["splits"]
    assert rows["train"]["rows"] == 24 and rows["train"]["mirrored_rows"] == []
    assert abs(rows["val"]["c_median"] - 1) < 0.02


def _roll_all(data, k):
    for split in ("train", "val", "test"):
        arr = np.load(data / f"{split}-actSino.npy")
        np.save(data / f"{split}-actSino.npy", roll_angles(arr, k).astype(np.float32))


@pytest.mark.parametrize("k", [1, -1])
def test_a_one_bin_offset_at_180_angles_is_refused(k, tmp_path):
    """At 180 angles a whole-bin roll moves the residual by < 1 % (below forward_check's refusal gain): the
    pooled minimum's location over every row finds it (the adversarial pass's "offset printed, called clean")."""
    from shared.data.row_check import check_every_row
    from shared.data.synthetic import make_synthetic_dataset

    data = tmp_path / "data"
    make_synthetic_dataset(data, 6, 3, 3, seed=2, counts=2e5, montage=False, progress=False, image_size=64,
                           n_radial=64, n_angles=180)
    clean = check_every_row(open_dataset(data))
    assert clean["errors"] == []
    assert all(abs(s["angle_offset"]["location"]) < 0.1 for s in clean["splits"].values())
    _roll_all(data, k)
    rolled = open_dataset(data)
    fit = check_forward_model(rolled, samples=2)
    assert fit["errors"] == []  # the residual gain alone does not see it
    report = check_every_row(rolled)
    assert any(f"best at angle offset {k} bins" in e for e in report["errors"]), report["errors"]
    assert all(abs(s["angle_offset"]["location"] - k) < 0.1 for s in report["splits"].values())
    _meta(data, angle_offset=k)
    assert check_every_row(open_dataset(data))["errors"] == []


def test_independent_projector_data_are_not_refused_for_their_own_mismatch(tmp_path):
    """skimage's radon favours a sub-bin shift of its own (0.1–0.35 bins at 180 angles; at 64 angles the
    splits disagree): not an offset to refuse; a real 1-bin roll of the same data is."""
    from shared.data.row_check import check_every_row
    from tests.independent_data import make_independent_dataset

    data = tmp_path / "indep"
    make_independent_dataset(data, size=180, c=50.0, sizes=(("train", 4), ("val", 3)))
    report = check_every_row(open_dataset(data))
    assert report["errors"] == []
    assert all(0 < abs(s["angle_offset"]["location"]) < 0.5 for s in report["splits"].values())
    for split in ("train", "val"):
        arr = np.load(data / f"{split}-actSino.npy")
        np.save(data / f"{split}-actSino.npy", roll_angles(arr, 1).astype(np.float32))
    assert any("best at angle offset 1 bins" in e for e in check_every_row(open_dataset(data))["errors"])
