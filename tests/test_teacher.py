import json

import pytest
import torch

from shared.config.schema import RunConfig
from phase1_teacher import load_teacher
from shared.data.views import TeacherKind, TeacherRows
from phase1_teacher.task import teacher_task
from phase1_teacher.train import main as teacher_main
from shared.files import checkpoint as ckpt_io
from shared.data.dataset_io import open_dataset
from phase1_teacher import TeacherOptions, fit
from shared.train.loop import train
from tests.conftest import tiny_teacher_config


def _fit(tiny_data, out, epochs, report=None, seed=0, resume=False):
    """The library call a user makes: phase1_teacher.fit(config, data, out, options)."""
    opts = TeacherOptions(epochs=epochs, seed=seed, progress=False, report=report, resume=resume)
    return fit(tiny_teacher_config(), tiny_data, out, opts)


def test_target_is_the_projection_of_the_mu_map(tiny_data):
    data = open_dataset(tiny_data)
    config = tiny_teacher_config(IS_fixedScale=1.0)
    task = teacher_task(RunConfig.parse(config, "teacher"), data)
    batch = next(iter(torch.utils.data.DataLoader(TeacherRows(data, "val", TeacherKind()), batch_size=2)))
    _, target = task.step(task.model, batch, torch.device("cpu"))
    from shared.physics.projector import Projector

    expected = Projector(data.geometry).forward(batch["attenMap"]) * data.scales.get("attenSino", 1.0)
    assert torch.allclose(target, expected, atol=1e-5)
    # line integrals of μ through a body of tens of cm: order 1, positive
    assert 0.3 < float(expected.max()) / data.scales.get("attenSino", 1.0) < 8


def test_teacher_learns_val_loss_drops_5x(tiny_data, tmp_path):
    _fit(tiny_data, tmp_path, epochs=6)
    hist = json.loads(json.dumps(ckpt_io.load(tmp_path / "last.pt")["history"]))
    first, best_loss = hist[0]["val_loss"], min(r["val_loss"] for r in hist)
    assert best_loss < first / 5, (first, best_loss)
    for name in ("best.pt", "last.pt", "metrics.csv", "learning_curve.png", "val_preview.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("epoch,train_loss")


def test_resume_reproduces_uninterrupted_run(tiny_data, tmp_path):
    _fit(tiny_data, tmp_path / "full", epochs=3)

    class Crash(Exception):
        pass

    def crash_after_epoch_2(metrics, out):
        if metrics["epoch"] == 2:
            raise Crash()

    with pytest.raises(Crash):
        _fit(tiny_data, tmp_path / "cut", epochs=3, report=crash_after_epoch_2)
    assert ckpt_io.load(tmp_path / "cut" / "last.pt")["epoch"] == 2
    with pytest.raises(ValueError, match="--resume"):  # never silently overwritten (shared.files.outputs)
        _fit(tiny_data, tmp_path / "cut", epochs=3)
    _fit(tiny_data, tmp_path / "cut", epochs=3, resume=True)  # resumes from epoch 2
    full = ckpt_io.load(tmp_path / "full" / "last.pt")
    cut = ckpt_io.load(tmp_path / "cut" / "last.pt")
    assert cut["epoch"] == 3 and [r["epoch"] for r in cut["history"]] == [1, 2, 3]
    for k, v in full["model"].items():
        assert torch.equal(v, cut["model"][k]), k


def test_load_teacher_frozen_and_refusals(tiny_data, tmp_path):
    _fit(tiny_data, tmp_path, epochs=1)
    teacher = load_teacher(tmp_path / "best.pt")
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    assert teacher.sha256 == ckpt_io.sha256_file(tmp_path / "best.pt") and len(teacher.sha256) == 64
    mu = torch.rand(2, 1, 32, 32)
    out, taps = teacher.forward_taps(mu)
    assert out.shape == (2, 1, 64, 64) and set(taps) == {"enc144", "enc36", "enc9", "dec9", "dec36", "dec144"}

    ckpt = ckpt_io.load(tmp_path / "best.pt")
    ckpt_io.save_atomic({**ckpt, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="v99.pt.*format_version 99"):
        load_teacher(tmp_path / "v99.pt")
    ckpt_io.save_atomic({**ckpt, "kind": "student"}, tmp_path / "student.pt")
    with pytest.raises(ckpt_io.CheckpointError, match="student.pt.*expected a teacher"):
        load_teacher(tmp_path / "student.pt")
    raw = (tmp_path / "best.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ckpt_io.CheckpointError, match="truncated.pt.*truncated or corrupted"):
        load_teacher(tmp_path / "truncated.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 1000)
    with pytest.raises(ckpt_io.CheckpointError, match="garbage.pt"):
        load_teacher(tmp_path / "garbage.pt")


def test_cli_refuses_to_overwrite_and_bad_data_names_file(tiny_data, tmp_path, capsys):
    from shared.cli import run_main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_teacher_config()))
    args = ["--data", str(tiny_data), "--out", str(tmp_path / "run"), "--epochs", "1", "--config", str(cfg), "--quiet"]
    assert run_main(teacher_main, args) == 0
    before = (tmp_path / "run" / "best.pt").read_bytes()
    assert run_main(teacher_main, args) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "best.pt").read_bytes() == before
    assert run_main(teacher_main, ["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "nowhere/dataset.json" in capsys.readouterr().err


def test_interrupted_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "kind": "teacher", "value": 1}, tmp_path / "c.pt")

    def boom(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "kind": "teacher", "value": 2}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert ckpt_io.load(tmp_path / "c.pt")["value"] == 1
    assert list(tmp_path.iterdir()) == [tmp_path / "c.pt"]  # no temp file left behind


def test_two_trial_ray_tune_yields_best_pt(tiny_data, tmp_path):
    from shared.cli import run_main

    out = tmp_path / "tune"
    pins = ["gen_sino_size=64", "gen_image_size=32", "IS_gen_hidden_dim=4", "IS_gen_z_dim=8", "batch_size=4",
            "IS_gen_mult=1.5", "IS_gen_fill=0"]
    args = ["--data", str(tiny_data), "--out", str(out), "--tune", "--num-samples", "2", "--epochs", "2"]
    for p in pins:
        args += ["--set", p]
    assert run_main(teacher_main, args) == 0
    teacher = load_teacher(out / "best.pt")
    assert teacher.config["gen_sino_size"] == 64
    import csv

    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2 and all(r["config/IS_gen_neck"] == "medium" for r in rows)
    assert (out / "tuning_curve.png").stat().st_size > 0


def test_teacher_predicts_one_plane_and_shape_mismatch_is_an_error(tiny_data, tmp_path):
    from shared.train.loop import FitOptions, Task

    data = open_dataset(tiny_data)
    with pytest.raises(ValueError, match=r"the attenuation IS teacher predicts the 1-plane .*outputs \[3, 64, 64\] \(gen_sino_channels_IS=3"):
        teacher_task(RunConfig.parse(tiny_teacher_config(gen_sino_channels_IS=3), "teacher"), data)
    task = teacher_task(RunConfig.parse(tiny_teacher_config(), "teacher"), data)
    broken = Task(model=task.model, kind="teacher", step=lambda m, b, d: (task.step(m, b, d)[0].repeat(1, 3, 1, 1),
                                                                         task.step(m, b, d)[1]))
    with pytest.raises(ValueError, match=r"prediction has shape \[4, 3, 48, 40\] but the target \[4, 1, 48, 40\]"):
        train(broken, RunConfig.parse(tiny_teacher_config(), "teacher"), TeacherRows(data, "train", TeacherKind()), TeacherRows(data, "val", TeacherKind()), tmp_path,
              FitOptions(epochs=1, progress=False))
