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
from shared.data.forward_check import quick_check
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
