"""The whole pipeline with classes FrozenFlow did not write, as teacher and as student:
make-data → train-teacher → export → verify → train-student → evaluate (tiny sizes, a few epochs)."""
import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from feature_store import open_store
from feature_store.export import main as export_main
from feature_store.verify import main as verify_main
from phase1_teacher.train import main as teacher_main
from phase2_student.evaluate import main as evaluate_main
from phase2_student.task import load_student
from phase2_student.train import main as student_main
from shared.files import checkpoint as ckpt_io
from shared.cli import run_main
from shared.models.frozen import load_frozen
from tests.test_model_contract import FOREIGN, OWN, monai_config, researcher_config

TRAIN = {"batch_size": 4, "gen_lr": 3e-3}


def _pipeline(tmp, data, teacher_spec, teacher_cfg, student_spec, student_cfg, epochs=3):
    (tmp / "t.json").write_text(json.dumps({**teacher_cfg, **TRAIN}))
    (tmp / "s.json").write_text(json.dumps({**student_cfg, **TRAIN}))
    assert teacher_main(["--data", str(data), "--out", str(tmp / "teacher"), "--epochs", str(epochs), "--config",
                         str(tmp / "t.json"), "--model", str(teacher_spec), "--quiet"]) == 0
    best = tmp / "teacher" / "best.pt"
    store = tmp / "features.zarr"
    assert export_main(["--ckpt", str(best), "--data", str(data), "--out", str(store), "--shard-size", "4",
                        "--batch-size", "4", "--quiet"]) == 0
    assert verify_main(["--features", str(store), "--ckpt", str(best), "--data", str(data), "--full"]) == 0
    assert student_main(["--data", str(data), "--features", str(store), "--out", str(tmp / "student"), "--epochs",
                         str(epochs), "--config", str(tmp / "s.json"), "--model", str(student_spec),
                         "--inject", "144,36,9", "--quiet"]) == 0
    assert evaluate_main(["--student", str(tmp / "student" / "student.pt"), "--features", str(store), "--data",
                          str(data), "--split", "test", "--out", str(tmp / "eval"), "--methods", "student,fbp"]) == 0
    return best, store


def _curve(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_monai_unet_as_teacher_and_student(tiny_data, tmp_path):
    spec = FOREIGN / "monai_unet.yaml"
    torch.manual_seed(0)
    best, store = _pipeline(tmp_path, tiny_data, spec, monai_config(), spec, monai_config())
    teacher = load_frozen(best, kind="teacher", direction="IS")
    assert type(teacher.net).__module__.startswith("monai.") and teacher.meta["model"]["factory"].endswith(
        "monai_unet.py:make")
    assert teacher.meta["model"]["parameters"] == teacher.parameter_count()
    curve = _curve(tmp_path / "teacher")
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]  # it learns
    m = open_store(store)
    assert m.attrs["teacher_model"]["taps"]["enc9"].endswith("submodule.0") and m.tap_shapes["enc9"][1:] == (2, 2)
    student = load_student(tmp_path / "student" / "student.pt")
    assert "net.model.0.conv.weight" in student.state_dict() and "side.dec144.weight" in student.state_dict()
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert "student" in summary["methods"] or "student" in json.dumps(summary)
    assert _curve(tmp_path / "student")[-1]["train_loss"] < _curve(tmp_path / "student")[0]["train_loss"]


def test_researchers_generator_as_teacher_and_student_and_a_builtin_student_on_its_features(tiny_data, tmp_path):
    spec = OWN / "spec.yaml"
    torch.manual_seed(0)
    best, store = _pipeline(tmp_path, tiny_data, spec, researcher_config(), spec, researcher_config(), epochs=2)
    teacher = load_frozen(best, kind="teacher", direction="IS")
    assert teacher.net.gen_SI is False and teacher.meta["model"]["taps"]["enc144"] == "contract_blocks.0"
    student = load_student(tmp_path / "student" / "student.pt")
    assert student.net.gen_SI is True and sorted(student.side) == ["dec144", "dec36", "dec9", "enc144", "enc36",
                                                                   "enc9"]
    # teacher and student may be different classes: the built-in Generator on the researcher's features
    from tests.conftest import tiny_student_config

    (tmp_path / "b.json").write_text(json.dumps(tiny_student_config()))
    assert student_main(["--data", str(tiny_data), "--features", str(store), "--out", str(tmp_path / "builtin"),
                         "--epochs", "1", "--config", str(tmp_path / "b.json"), "--inject", "144,9", "--quiet"]) == 0
    assert load_student(tmp_path / "builtin" / "student.pt").meta["model"]["source"] == "builtin"


def test_checkpoints_bind_the_model_spec(tiny_data, tmp_path, capsys):
    """A changed or missing factory is refused by name, and a run resumes only with the same --model."""
    factory = tmp_path / "mine" / "generator.py"
    factory.parent.mkdir()
    shutil.copy(OWN / "generator.py", factory)
    spec = tmp_path / "mine" / "spec.yaml"
    spec.write_text((OWN / "spec.yaml").read_text())
    (tmp_path / "t.json").write_text(json.dumps({**researcher_config(SI_unused=1), **TRAIN}))
    run = tmp_path / "teacher"
    args = ["--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--config", str(tmp_path / "t.json"),
            "--model", str(spec)]
    assert teacher_main(args) == 0
    out = capsys.readouterr().out
    assert "not read by" in out and "SI_unused" in out and "SI_gen_hidden_dim" in out  # an IS run reads IS_ keys
    other = tmp_path / "mine" / "other.yaml"  # the same class, another tap map
    other.write_text(spec.read_text().replace("  dec9: neck\n", "", 1))
    assert run_main(teacher_main, [*args[:5], "2", *args[6:9], str(other), "--resume"]) == 2
    assert "the model differs from the run being resumed (taps:" in capsys.readouterr().err
    factory.write_text(factory.read_text() + "\n# a comment changes the file's hash, not the model\n")
    assert teacher_main([*args[:5], "2", *args[6:], "--resume", "--quiet"]) == 0  # resumes
    assert ckpt_io.load(run / "last.pt")["epoch"] == 2
    factory.write_text(factory.read_text().replace("dims = [int(h * mult ** k)", "dims = [1 + int(h * mult ** k)"))
    with pytest.raises(ckpt_io.CheckpointError, match=r"now builds [\d,]+ parameters, the checkpoint holds [\d,]+ "
                                                      r"\(the factory file changed since\)"):
        load_frozen(run / "best.pt", kind="teacher", direction="IS")
    factory.unlink()
    with pytest.raises(ckpt_io.CheckpointError, match="factory file .*generator.py not found"):
        load_frozen(run / "best.pt", kind="teacher", direction="IS")


def test_tune_student_samples_the_researchers_own_keys(tiny_data, tiny_store, tmp_path):
    """Ray trials import the class from the spec's absolute path; its keys come from --set and the space file."""
    space = tmp_path / "space.yaml"
    space.write_text("SI_gen_hidden_dim: {choice: [3, 4]}\n")
    out = tmp_path / "tune"
    args = ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(out), "--tune", "--num-samples",
            "2", "--epochs", "1", "--inject", "144,9", "--search-space", str(space), "--model",
            str(OWN / "spec.yaml")]
    for pin in ("gen_sino_size=64", "gen_image_size=32", "SI_gen_mult=1.5", "batch_size=4", "inject_enc_to_dec=true",
                "inject_dec_to_enc=true"):
        args += ["--set", pin]
    assert run_main(student_main, args) == 0
    student = load_student(out / "student.pt")
    assert student.net.gen_SI is True and student.config["SI_gen_hidden_dim"] in (3, 4)
    assert sorted(student.side) == ["dec144", "dec9", "enc144", "enc9"]
    assert "SI_gen_neck" not in student.config  # the built-in's architecture keys are not this class's
