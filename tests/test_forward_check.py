"""check-data's forward-model fit: calibration, orientation, radial spacing, residual; declared orientation."""
import json
import shutil

import numpy as np
import pytest
import torch

from shared.cli import run_main
from shared.data.check import main as check_main
from shared.data.dataset_io import open_dataset
from shared.data.forward_check import check_forward_model
from shared.data.orientation import ORIENTATIONS, orient, to_projector
from shared.physics.projector import ParallelGeometry, Projector


def _resimulate(src, dst, *, c=1.0, orientation="identity", offset=0, radial_factor=1.0, declare=None):
    """A copy of the tiny dataset whose sinograms are Poisson(c · exp(−Pμ) · P act), stored in another
    orientation (and/or simulated with another radial bin size); ``declare`` edits dataset.json."""
    shutil.copytree(src, dst)
    data = open_dataset(dst)
    g = data.geometry
    P = Projector(ParallelGeometry(g.image_size, g.pixel_mm, g.n_radial, g.n_angles, g.radial_mm * radial_factor))
    rng = np.random.default_rng(0)
    for split in data.splits:
        a = data.split(split)
        mu, act = torch.from_numpy(np.array(a.attenMap)), torch.from_numpy(np.array(a.actMap))
        lam = (c * torch.exp(-P.forward(mu)) * P.forward(act)).numpy()
        y = rng.poisson(np.clip(orient(lam, orientation, offset), 0, None)).astype(np.float32)
        np.save(dst / f"{split}-actSino.npy", y)
    meta = json.loads((dst / "dataset.json").read_text())
    for key, value in (declare or {}).items():
        if key in ("orientation", "angle_offset"):
            meta["geometry"][key] = value
        else:
            meta[key] = value
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


def test_orient_and_to_projector_are_inverse():
    s = torch.randn(2, 1, 6, 8)
    for o in ORIENTATIONS:
        for k in (-3, 0, 5):
            assert torch.equal(to_projector(orient(s, o, k), o, k), s), (o, k)
            assert np.array_equal(orient(s.numpy(), o, k), orient(s, o, k).numpy())


def test_consistent_data_fits_identity_with_calibration_one(tiny_data):
    fit = check_forward_model(open_dataset(tiny_data), samples=4)
    assert fit["errors"] == []
    for entry in fit["splits"].values():
        f = entry["actSino"]
        assert f["orientation"]["best"] == "identity" and f["orientation"]["angle_offset"] == 0
        assert f["radial_spacing"]["best_factor"] == 1.0
        assert 0.5 < f["residual"]["ratio_to_noise"] < 1.5  # the synthetic data is the model plus Poisson noise
    assert abs(fit["calibration"]["c"] - 1.0) < 0.05


def test_calibration_factor_is_found(tiny_data, tmp_path):
    d = _resimulate(tiny_data, tmp_path / "c5", c=5.0)
    fit = check_forward_model(open_dataset(d), samples=4)
    assert fit["errors"] == [] and abs(fit["calibration"]["c"] - 5.0) < 0.15


@pytest.mark.parametrize("orientation,offset", [("radial_flip", 0), ("angle_reverse", 0),
                                                ("radial_flip+angle_reverse", 0), ("identity", 7)])
def test_undeclared_orientation_is_refused_and_declared_one_trains(tiny_data, tmp_path, capsys, orientation, offset):
    d = _resimulate(tiny_data, tmp_path / "m", orientation=orientation, offset=offset)
    assert run_main(check_main, ["--data", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"orientation {orientation!r}, angle offset {offset} bins" in err[0]
    assert "actSino.npy" in err[0] and "geometry.orientation" in err[0]
    # declared: the check passes and the reader hands out sinograms in the projector's convention
    meta = json.loads((d / "dataset.json").read_text())
    meta["geometry"].update(orientation=orientation, angle_offset=offset)
    (d / "dataset.json").write_text(json.dumps(meta))
    assert run_main(check_main, ["--data", str(d)]) == 0
    data, plain = open_dataset(d), open_dataset(tiny_data)
    P = Projector(data.geometry)
    mu, act = (torch.from_numpy(np.array(data.split("val").__getattribute__(k)[:2])) for k in ("attenMap", "actMap"))
    lam = (torch.exp(-P.forward(mu)) * P.forward(act)).numpy()
    got = np.asarray(data.split("val").actSino[:2])
    assert np.corrcoef(got.ravel(), lam.ravel())[0, 1] > 0.9  # aligned with the model, not mirrored
    assert got.shape == np.asarray(plain.split("val").actSino[:2]).shape


def test_declared_orientation_trains_a_student(tiny_data, tmp_path):
    from phase2_student import StudentOptions, fit
    from tests.conftest import tiny_student_config

    d = _resimulate(tiny_data, tmp_path / "m", orientation="radial_flip", declare={"orientation": "radial_flip"})
    best = fit(tiny_student_config(inject_levels=[]), d, tmp_path / "s", StudentOptions(epochs=2, progress=False))
    assert np.isfinite(best["val_loss"])


def test_wrong_radial_spacing_is_reported(tiny_data, tmp_path):
    d = _resimulate(tiny_data, tmp_path / "r", radial_factor=1.2)
    fit = check_forward_model(open_dataset(d), samples=4)
    f = fit["splits"]["val"]["actSino"]["radial_spacing"]
    assert f["best_factor"] == pytest.approx(1.2) and any("radial bin size 1.2" in e for e in fit["errors"])


def test_bad_inputs_to_the_check_name_the_file_and_write_nothing(tiny_data, tmp_path, capsys):
    cases = {}
    d = shutil.copytree(tiny_data, tmp_path / "zero_act")
    a = np.load(d / "val-actMap.npy")
    a[:] = 0
    np.save(d / "val-actMap.npy", a)
    cases["zero_act"] = "val-actMap.npy"
    d = shutil.copytree(tiny_data, tmp_path / "zero_sino")
    y = np.load(d / "train-actSino.npy")
    y[:] = 0
    np.save(d / "train-actSino.npy", y)
    cases["zero_sino"] = "train-actSino.npy"
    d = shutil.copytree(tiny_data, tmp_path / "nan")
    mu = np.load(d / "test-attenMap.npy")
    mu[3, 0, 0, 0] = np.nan
    np.save(d / "test-attenMap.npy", mu)
    cases["nan"] = "test-attenMap.npy"
    d = shutil.copytree(tiny_data, tmp_path / "no_mu")
    (d / "val-attenMap.npy").unlink()
    cases["no_mu"] = "val-attenMap.npy"
    for name, file in cases.items():
        out = tmp_path / f"{name}.json"
        assert run_main(check_main, ["--data", str(tmp_path / name), "--json", str(out)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and file in err[0], (name, err)
        assert not out.exists(), name


def test_baselines_use_the_calibration(tiny_data, tmp_path):
    """Data in other units (c = 5): the fitted factor brings FBP and MLEM back to actMap units."""
    from phase2_student.evaluate import baseline_recons, per_sample_metrics
    from shared.evaluation.baselines import reconstruct_split

    data = open_dataset(_resimulate(tiny_data, tmp_path / "c5", c=5.0))
    target = np.array(data.split("test").actMap)
    recons = baseline_recons(data, "test", ("fbp", "mlem"), tuned_on=None)
    for m, rec in recons.items():
        nrmse = float(np.mean(per_sample_metrics(rec, target)["nrmse"]))
        raw = float(np.mean(per_sample_metrics(reconstruct_split(data, "test", m), target)["nrmse"]))
        assert nrmse < 0.5 and raw > 2.5, (m, nrmse, raw)  # uncalibrated: ~5x too bright


def test_binding_the_chain_teacher_store_student(tiny_data, tiny_store, tiny_teacher, tmp_path, capsys):
    """train-student --ckpt refuses a store of another teacher; evaluate and --resume refuse another store."""
    from feature_store.export import main as export_main
    from phase1_teacher import TeacherOptions
    from phase1_teacher import fit as fit_teacher
    from phase2_student.evaluate import main as evaluate_main
    from phase2_student.train import main as student_main
    from tests.conftest import tiny_student_config, tiny_teacher_config

    other = tmp_path / "other_teacher"
    fit_teacher(tiny_teacher_config(), tiny_data, other, TeacherOptions(epochs=1, seed=9, progress=False))
    other_store = tmp_path / "other.zarr"
    assert run_main(export_main, ["--ckpt", str(other / "best.pt"), "--data", str(tiny_data), "--out",
                                  str(other_store), "--shard-size", "4", "--quiet"]) == 0
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps(tiny_student_config(inject_levels=[9])))
    base = ["--data", str(tiny_data), "--config", str(cfg), "--epochs", "1", "--quiet"]

    assert run_main(student_main, base + ["--features", str(other_store), "--ckpt", str(tiny_teacher),
                                          "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(other_store) in err and str(tiny_teacher) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()

    run = tmp_path / "s"
    assert run_main(student_main, base + ["--features", str(tiny_store), "--ckpt", str(tiny_teacher),
                                          "--out", str(run)]) == 0
    capsys.readouterr()
    assert run_main(evaluate_main, ["--student", str(run / "student.pt"), "--features", str(other_store), "--data",
                                    str(tiny_data), "--out", str(tmp_path / "e"), "--methods", "student"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(other_store) in err and str(run / "student.pt") in err and "teacher" in err
    assert run_main(student_main, base + ["--features", str(other_store), "--out", str(run), "--resume",
                                          "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "last.pt" in err and "teacher_sha256 differs" in err


def test_resume_refuses_another_config_or_dataset(tiny_data, tmp_path):
    from phase1_teacher import TeacherOptions, fit
    from tests.conftest import tiny_teacher_config

    fit(tiny_teacher_config(), tiny_data, tmp_path / "t", TeacherOptions(epochs=1, progress=False))
    with pytest.raises(ValueError, match="config key 'gen_lr' is 0.01 here but 0.003"):
        fit(tiny_teacher_config(gen_lr=0.01), tiny_data, tmp_path / "t", TeacherOptions(epochs=2, resume=True,
                                                                                          progress=False))
    other = _resimulate(tiny_data, tmp_path / "d2", c=2.0)
    with pytest.raises(ValueError, match="data_fingerprint differs"):
        fit(tiny_teacher_config(), other, tmp_path / "t", TeacherOptions(epochs=2, resume=True, progress=False))
    fit(tiny_teacher_config(), tiny_data, tmp_path / "t", TeacherOptions(epochs=2, resume=True, progress=False))


def test_independently_simulated_data(tmp_path, capsys):
    """skimage radon data in other units: c ≈ 5 and identity; a radially mirrored copy is refused; the
    calibrated baselines reconstruct in the activity maps' units."""
    from phase2_student.evaluate import baseline_recons, per_sample_metrics
    from tests.independent_data import make_independent_dataset

    data = make_independent_dataset(tmp_path / "indep", c=5.0)
    fit = check_forward_model(data, samples=4)
    assert fit["errors"] == [], fit["errors"]
    assert abs(fit["calibration"]["c"] - 5.0) < 0.3
    assert {s["actSino"]["orientation"]["best"] for s in fit["splits"].values()} == {"identity"}
    recons = baseline_recons(data, "test", ("fbp", "mlem"), tuned_on="val")
    target = np.array(data.split("test").actMap)
    for m, rec in recons.items():
        assert float(np.mean(per_sample_metrics(rec, target)["nrmse"])) < 0.6, m
    mirrored = shutil.copytree(tmp_path / "indep", tmp_path / "mirrored")
    for split in ("train", "val", "test"):
        y = np.load(mirrored / f"{split}-actSino.npy")
        np.save(mirrored / f"{split}-actSino.npy", np.ascontiguousarray(y[:, :, ::-1]))
    assert run_main(check_main, ["--data", str(mirrored)]) == 2
    assert "orientation 'radial_flip'" in capsys.readouterr().err
