"""Their files as they keep them: other dtypes, sinograms stored larger than the working size, attenuation
sinograms in other units."""
import json
import shutil

import numpy as np
import pytest
import torch

from phase2_student.train import StudentOptions, fit
from shared.data.dataset_io import DataError, open_dataset
from shared.data.forward_check import check_forward_model, quick_check
from shared.data.resample import Resampled, axis_weights
from shared.physics.acquisition import Acquisition
from shared.physics.projector import ParallelGeometry, Projector
from tests.conftest import tiny_student_config


def _copy(tiny_data, folder, edit=None, **arrays):
    shutil.copytree(tiny_data, folder)
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    meta = json.loads((folder / "dataset.json").read_text())
    if edit:
        edit(meta)
    (folder / "dataset.json").write_text(json.dumps(meta))
    return folder


def test_other_dtypes_are_read_as_float32_and_values_beyond_it_are_refused(tiny_data, tmp_path):
    data = open_dataset(tiny_data)
    counts = {s: np.asarray(data.split(s).actSino) for s in data.splits}
    assert all(np.array_equal(c, np.round(c)) for c in counts.values())  # Poisson counts: integers
    ints = {f"{s}-actSino": counts[s].astype(np.int32) for s in data.splits}
    wide = {f"{s}-actMap": np.asarray(data.split(s).actMap).astype(np.float64) for s in data.splits}
    mine = open_dataset(_copy(tiny_data, tmp_path / "ints", **ints, **wide))
    row = mine.split("val").actSino[3]
    assert row.dtype == np.float32 and np.array_equal(row, counts["val"][3])
    assert mine.split("test").actMap[:2].dtype == np.float32
    assert quick_check(mine, log=lambda *_: None) is not None  # the forward model holds on what is read
    assert mine.fingerprint() != data.fingerprint()  # other bytes on disk, another dataset
    big = counts["train"].astype(np.int64)
    big[5, 0, 3, 3] = 2 ** 25
    with pytest.raises(DataError, match=r"train-actSino.npy: sample 5: \|value\| 3.35544e\+07 does not fit float32.*"
                                        r"integers beyond ±2\^24"):
        open_dataset(_copy(tiny_data, tmp_path / "big", **{"train-actSino": big}))
    huge = np.asarray(data.split("val").actMap).astype(np.float64)
    huge[2] = 1e39
    with pytest.raises(DataError, match=r"val-actMap.npy: sample 2: .*would be ±inf"):
        open_dataset(_copy(tiny_data, tmp_path / "huge", **{"val-actMap": huge}))
    with pytest.raises(DataError, match="dtype complex64: expected real floats or integers"):
        open_dataset(_copy(tiny_data, tmp_path / "cplx", **{"val-actMap": np.asarray(data.split("val").actMap).astype(np.complex64)}))


def test_resampling_weights_respect_the_sampling_of_both_grids():
    # bilinear, 2× in angle: the output angles jπ/A are stored angles 2j — taken exactly, no blur
    W, Wf = axis_weights(40, 80, "bilinear", periodic=True)
    assert np.array_equal(W, np.eye(80)[::2]) and not Wf.any()
    # area, 2× radially (centred bins): each output bin the mean of the two input bins it covers
    W, _ = axis_weights(48, 96, "area", periodic=False)
    assert np.allclose(W, np.kron(np.eye(48), [[0.5, 0.5]]))
    # area in angle: output bin 0 spans [−¼, ¼] of the input's 2 bins … half of it lies before 0°, where
    # p(r, θ − π) = p(−r, θ): the last column, radially flipped
    W, Wf = axis_weights(40, 80, "area", periodic=True)
    assert W[0, 0] == 0.5 and W[0, 1] == 0.25 and Wf[0, 79] == 0.25 and np.allclose(W.sum(1) + Wf.sum(1), 1)
    # a sinogram that is a function of θ only survives any resampling unchanged, and weights sum to one
    for n_in, n_out in ((57, 40), (513, 288), (40, 57)):
        for method in ("bilinear", "area"):
            W, Wf = axis_weights(n_out, n_in, method, periodic=True)
            assert np.allclose(W.sum(1) + Wf.sum(1), 1)
    p = np.broadcast_to(np.cos(np.arange(57) * np.pi / 57 * 2)[None, None, None, :], (1, 1, 9, 57)).copy()
    out = Resampled(p, 9, 40, "bilinear")[0, 0]
    assert np.allclose(out, np.cos(np.arange(40) * np.pi / 40 * 2)[None, :], atol=0.01)


@pytest.mark.parametrize("method", ["area", "bilinear"])
def test_a_sinogram_set_stored_larger_is_resized_passes_check_data_and_trains(tiny_data, tmp_path, method):
    """382×513-style: a scanner's sinograms at a non-integer multiple of the working size."""
    data = open_dataset(tiny_data)
    g = data.geometry  # working: 48 radial bins of 12 mm, 40 angles
    fine = ParallelGeometry(g.image_size, g.pixel_mm, 67, 57, radial_mm=g.radial_mm * g.n_radial / 67)  # same FOV
    physics = Acquisition.of(fine)
    rng = np.random.default_rng(0)
    stored = {}
    for s in data.splits:
        x = torch.from_numpy(np.array(data.split(s).actMap, np.float32))
        mu = torch.from_numpy(np.array(data.split(s).attenMap, np.float32))
        stored[f"{s}-actSino"] = rng.poisson(40.0 * physics.expected(x, mu).numpy()).astype(np.float32)

    def declare(meta):
        meta["geometry"]["resize"] = {"from": [67, 57], "method": method}
        meta.pop("calibration", None)

    mine = open_dataset(_copy(tiny_data, tmp_path / "big", declare, **stored))
    assert mine.split("val").actSino.shape == (8, 1, 48, 40)
    report = check_forward_model(mine)
    assert report["errors"] == [], report["errors"]
    # resampled counts are no longer integers, so the check holds them to the relative-residual limit; here
    # the residual is the Poisson noise of ~40 counts per fine bin, averaged
    assert all(s["actSino"]["residual"]["relative"] < 0.25 for s in report["splits"].values()), report["splits"]
    assert report["calibration"]["c"] == pytest.approx(40.0 * data.calibration if data.calibration else 40.0,
                                                       rel=0.1)
    # the working model sees what the scanner's finer sinograms say, resampled
    out = tmp_path / "student"
    best = fit(tiny_student_config(inject_levels=[]), mine, out, StudentOptions(epochs=1, progress=False,
                                                                               val_samples=4))
    assert np.isfinite(best["val_nrmse"]) and (out / "student.pt").exists()
    bad = _copy(tiny_data, tmp_path / "wrong", lambda m: m["geometry"].update(resize={"from": [67], "method": "area"}))
    with pytest.raises(DataError, match="geometry.resize: expected"):
        open_dataset(bad)


def test_attenuation_sinograms_in_other_units_are_calibrated_by_check_data(tiny_data, tmp_path):
    data = open_dataset(tiny_data)
    P = Projector(data.geometry)
    per_mm = {f"{s}-attenSino": (10 * P.forward(torch.from_numpy(np.array(data.split(s).attenMap,
                                                                            np.float32)))).numpy()
              for s in data.splits}  # line integrals with μ in 1/mm … ×10
    folder = _copy(tiny_data, tmp_path / "mm", **per_mm)
    errors = check_forward_model(open_dataset(folder))["errors"]
    assert any("the attenuation sinograms are 10× the line integrals" in e and "atten_calibration = 10" in e
               for e in errors), errors
    meta = json.loads((folder / "dataset.json").read_text())
    meta["atten_calibration"] = 10.0
    (folder / "dataset.json").write_text(json.dumps(meta))
    mine = open_dataset(folder)
    assert check_forward_model(mine)["errors"] == []
    want = P.forward(torch.from_numpy(np.array(mine.split("val").attenMap[:2], np.float32))).numpy()
    assert np.allclose(mine.split("val").attenSino[:2], want, rtol=1e-5, atol=1e-6)  # divided on read
