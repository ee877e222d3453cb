"""The one output rule (shared/files/outputs.py): the 11 ways an adversarial pass destroyed a user's files with
exit 0 are each refused with one line, and the user's files stay byte for byte what they were."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from feature_store.export import main as export_main
from phase1_teacher.train import main as teacher_main
from phase2_student.ablate import main as ablate_main
from phase2_student.evaluate import main as evaluate_main
from phase2_student.train import main as student_main
from shared.cli import run_main
from shared.data.check import main as check_main
from shared.data.synthetic import main as make_data_main
from shared.files.outputs import MARKER
from tests.conftest import tiny_student_config, tiny_teacher_config
from tests.test_bad_inputs import _fails_cleanly


def _digest(folder: Path) -> dict:
    """Every file below ``folder`` and its sha256: what must not change."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _users_folder(tmp_path, name, files) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


TINY_DATA = ["--n-train", "4", "--n-val", "2", "--n-test", "2", "--image-size", "32", "--pixel-mm", "12",
             "--n-radial", "48", "--n-angles", "40", "--no-montage"]


def test_make_data_never_replaces_a_folder_it_did_not_write(tiny_data, tmp_path, capsys):
    mine = _users_folder(tmp_path, "mine", {"dataset.json": '{"mine": 1}', "notes.txt": "scanner log"})
    before = _digest(mine)
    _fails_cleanly(make_data_main, ["--out", str(mine), *TINY_DATA, "--overwrite"], capsys,
                   "which FrozenFlow did not write as a dataset")
    users_dataset = tmp_path / "their_dataset"  # a dataset in FrozenFlow's format, but theirs
    shutil.copytree(tiny_data, users_dataset)
    (users_dataset / MARKER).unlink(missing_ok=True)
    theirs = _digest(users_dataset)
    _fails_cleanly(make_data_main, ["--out", str(users_dataset), *TINY_DATA, "--overwrite"], capsys,
                   "nothing there is replaced, even with --overwrite")
    assert _digest(mine) == before and _digest(users_dataset) == theirs
    made = tmp_path / "made"
    assert run_main(make_data_main, ["--out", str(made), *TINY_DATA]) == 0
    capsys.readouterr()
    _fails_cleanly(make_data_main, ["--out", str(made), *TINY_DATA, "--seed", "1"], capsys,
                   "already holds a dataset; pass --overwrite to replace it")
    assert run_main(make_data_main, ["--out", str(made), *TINY_DATA, "--seed", "1", "--overwrite"]) == 0


def _train(main, data, out, config, *extra, store=None):
    cfg = out.parent / f"{out.name}.json"
    cfg.write_text(json.dumps(config))
    args = ["--data", str(data), "--out", str(out), "--epochs", "1", "--config", str(cfg), "--quiet", *extra]
    return args + (["--features", str(store)] if store else [])


def test_runs_and_tunes_never_replace_each_other_or_a_run_without_last_pt(tiny_data, tiny_store, tmp_path, capsys):
    run = tmp_path / "teacher"
    args = _train(teacher_main, tiny_data, run, tiny_teacher_config())
    assert run_main(teacher_main, args) == 0
    capsys.readouterr()
    orphan = run / ".metrics.csv.k3j2h1.partial"  # what a kill during an atomic write leaves
    orphan.write_text("half a file")
    assert run_main(teacher_main, [*args[:5], "2", *args[6:], "--resume"]) == 0
    assert not orphan.exists() and (run / "metrics.csv").exists()
    capsys.readouterr()
    (run / "last.pt").unlink()  # a run that keeps config.json, metrics.csv and best.pt but lost last.pt
    before = _digest(run)
    _fails_cleanly(teacher_main, args, capsys, "already holds a teacher run; pass --resume to continue it")
    assert _digest(run) == before
    # a student run is not a teacher run, and neither is the folder of a tune
    _fails_cleanly(student_main, _train(student_main, tiny_data, run, tiny_student_config(inject_levels=[])), capsys,
                   "holds a teacher run, not a student run")
    tune = tmp_path / "tune"
    tune.mkdir()
    (tune / MARKER).write_text(json.dumps({"kind": "student tune"}))
    (tune / "student.pt").write_bytes(b"the tuned student")
    _fails_cleanly(student_main, _train(student_main, tiny_data, tune, tiny_student_config(inject_levels=[]),
                                        "--resume"), capsys, "holds a student tune, not a student run")
    single = tmp_path / "single"
    assert run_main(student_main, _train(student_main, tiny_data, single, tiny_student_config(inject_levels=[]))) == 0
    capsys.readouterr()
    before = _digest(single)
    _fails_cleanly(student_main, ["--data", str(tiny_data), "--out", str(single), "--tune", "--resume",
                                  "--num-samples", "1", "--epochs", "1", "--inject", "none"], capsys,
                   "holds a student run, not a student tune")
    assert _digest(single) == before and (tune / "student.pt").read_bytes() == b"the tuned student"


def test_export_overwrite_never_deletes_another_zarr_store(tiny_teacher, tiny_data, tmp_path, capsys):
    import zarr

    other = tmp_path / "other.zarr"
    root = zarr.open_group(str(other), mode="w")  # a Zarr store with no root attributes at all
    root.create_array("images", shape=(4, 8), dtype="float32")[:] = 1.0
    before = _digest(other)
    _fails_cleanly(export_main, ["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--out", str(other),
                                 "--overwrite", "--quiet"], capsys, "not a feature store")
    assert _digest(other) == before


def test_evaluate_ablate_and_check_data_keep_the_users_files(tiny_data, tiny_store, tmp_path, capsys):
    student = tmp_path / "student"
    assert run_main(student_main, _train(student_main, tiny_data, student, tiny_student_config(inject_levels=[]))) == 0
    capsys.readouterr()
    mine = _users_folder(tmp_path, "results", {"summary.json": '{"my": "numbers"}', "per_sample.csv": "a,b\n1,2\n",
                                               "ablation.md": "# my table", "ablation.json": "{}"})
    before = _digest(mine)
    _fails_cleanly(evaluate_main, ["--student", str(student / "student.pt"), "--data", str(tiny_data), "--out",
                                   str(mine), "--methods", "student", "--overwrite"], capsys,
                   "which FrozenFlow did not write as an evaluation")
    _fails_cleanly(ablate_main, ["--data", str(tiny_data), "--out", str(mine), "--variants", "none", "--seeds", "0",
                                 "--epochs", "1"], capsys, "which FrozenFlow did not write as an ablation")
    assert _digest(mine) == before
    dataset_json = Path(tiny_data) / "dataset.json"
    meta = dataset_json.read_bytes()
    _fails_cleanly(check_main, ["--data", str(tiny_data), "--json", str(dataset_json)], capsys,
                   "is not a check-data report FrozenFlow wrote")
    assert dataset_json.read_bytes() == meta
    report = tmp_path / "report.json"
    for _ in range(2):  # its own report is replaced by the next one
        assert run_main(check_main, ["--data", str(tiny_data), "--json", str(report)]) == 0
    capsys.readouterr()
    assert json.loads(report.read_text())["frozenflow_output"] == "check-data report"
    ev = tmp_path / "ev"
    args = ["--student", str(student / "student.pt"), "--data", str(tiny_data), "--out", str(ev), "--methods",
            "student"]
    assert run_main(evaluate_main, args) == 0
    capsys.readouterr()
    _fails_cleanly(evaluate_main, args, capsys, "already holds an evaluation; pass --overwrite to replace it")
    assert run_main(evaluate_main, [*args, "--overwrite"]) == 0
    capsys.readouterr()
    _fails_cleanly(evaluate_main, [*args[:-1], ""], capsys, "--methods must be a comma list")
