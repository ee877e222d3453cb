"""Bad numbers and files found by the adversarial pass: each is one line naming the flag, key or file,
before any work (and before Ray starts)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from feature_store.export import main as export_main
from phase1_teacher.train import main as teacher_main
from phase2_student.ablate import main as ablate_main
from phase2_student.train import main as student_main
from shared.data.synthetic import main as make_data_main
from tests.test_bad_inputs import _fails_cleanly


@pytest.mark.parametrize("flags,text", [
    (["--n-train", "-5"], "--n-train must be an integer ≥ 0, got -5"),
    (["--counts", "nan"], "--counts must be a finite number > 0, got nan"),
    (["--pixel-mm", "inf"], "--pixel-mm must be a finite number > 0"),
    (["--n-train", "0", "--n-val", "0", "--n-test", "0"], "nothing to make"),
])
def test_make_data_numbers(flags, text, tmp_path, capsys):
    _fails_cleanly(make_data_main, ["--out", str(tmp_path / "d"), *flags], capsys, text)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("flags,text", [
    (["--lr", "inf"], "config key 'gen_lr'=inf: must be a positive number"),
    (["--set", "gen_lr=NaN"], "config key 'gen_lr'=nan: must be a positive number"),
])
def test_non_finite_settings_are_refused(flags, text, tiny_data, tmp_path, capsys):
    _fails_cleanly(teacher_main, ["--data", str(tiny_data), "--out", str(tmp_path / "t"), *flags], capsys, text)
    assert not (tmp_path / "t").exists()


def test_tune_settings_fail_before_ray(tiny_data, tiny_store, tmp_path, capsys):
    base = ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(tmp_path / "tune"), "--tune",
            "--epochs", "1"]
    _fails_cleanly(student_main, [*base, "--set", "gen_lr=-1"], capsys, "config key 'gen_lr'=-1: must be a positive")
    space = tmp_path / "space.yaml"
    space.write_text("gen_lr: {loguniform: [-1.0e-3, 1.0e-2]}\n")
    _fails_cleanly(student_main, [*base, "--search-space", str(space)], capsys,
                   f"{space}: gen_lr: loguniform expects [low, high] with 0 < low < high, got [-0.001, 0.01]")
    _fails_cleanly(student_main, [*base, "--num-samples", "0"], capsys, "--num-samples must be ≥ 1, got 0")
    _fails_cleanly(student_main, [*base, "--cpus-per-trial", "0"], capsys, "--cpus-per-trial must be a positive")
    assert "ray" not in sys.modules or not (tmp_path / "tune" / "ray").exists()


def test_other_flags_and_files_are_named(tiny_teacher, tiny_data, tmp_path, capsys):
    _fails_cleanly(export_main, ["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--out",
                                 str(tmp_path / "s.zarr"), "--shard-size", "-3"], capsys,
                   "--shard-size must be ≥ 0 (0: a file per sample), got -3")
    _fails_cleanly(ablate_main, ["--data", str(tiny_data), "--out", str(tmp_path / "a"), "--seeds", "a,b"], capsys,
                   "--seeds must be a comma list of integers, got 'a,b'")
    latin1 = tmp_path / "config.json"
    latin1.write_bytes('{"gen_lr": 0.001, "note": "Größe"}'.encode("latin-1"))
    _fails_cleanly(teacher_main, ["--data", str(tiny_data), "--out", str(tmp_path / "t"), "--config", str(latin1)],
                   capsys, f"{latin1}: cannot read config JSON")


def test_a_fifo_in_place_of_an_array_is_refused_not_waited_on(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    target = data / "val-actMap.npy"
    target.unlink()
    os.mkfifo(target)
    r = subprocess.run([sys.executable, "-m", "frozenflow", "check-data", "--data", str(data)], capture_output=True,
                       text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {target}: not a regular file (a .npy " \
                                                                       f"array is expected here)", r.stderr


def test_verify_and_runs_name_what_they_cannot_read(tmp_path, capsys):
    import zarr

    from feature_store.verify import main as verify_main
    from shared.evaluation.runs_table import main as runs_main

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").create_array("a", shape=(2, 2), dtype="float32")
    assert verify_main(["--features", str(other)]) == 2
    assert f"{other}: not a feature store (a Zarr store without a teacher identity)" in capsys.readouterr().out
    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{bad")
    (run / "metrics.csv").write_text("epoch,val_nrmse\n1,0.5\n")
    _fails_cleanly(runs_main, [str(tmp_path / "runs")], capsys, f"{run / 'config.json'}: not a readable config")
    (run / "config.json").write_text("{}")
    (run / "metrics.csv").write_text("epoch,val_nrmse\nx,0.5\n")
    _fails_cleanly(runs_main, [str(tmp_path / "runs")], capsys, f"{run / 'metrics.csv'}: not a FrozenFlow metrics table")


def test_a_deleted_tap_array_is_named(tiny_store, tiny_data, tmp_path, capsys):
    from feature_store.verify import main as verify_main
    from tests.conftest import tiny_student_config

    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    (store / "train" / "enc36" / "zarr.json").unlink()
    assert verify_main(["--features", str(store)]) == 2
    assert f"train/enc36: array missing ({store}/train/enc36/zarr.json deleted?)" in capsys.readouterr().out
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    _fails_cleanly(student_main, ["--data", str(tiny_data), "--features", str(store), "--out", str(tmp_path / "st"),
                                  "--epochs", "1", "--config", str(cfg), "--quiet"], capsys,
                   "tap(s) ['enc36'] are in the store's metadata but their arrays are missing")


@pytest.mark.parametrize("flags,text", [(["--batch-size", "12"], "--batch-size 12: batches are 2**batch_base2_exponent"),
                                        (["--batch-size", "8", "--set", "batch_base2_exponent=2"], "disagree")])
def test_batch_size_flag_is_the_researchers_exponent(flags, text, tiny_data, tmp_path, capsys):
    out = tmp_path / "t"
    _fails_cleanly(teacher_main, ["--data", str(tiny_data), "--out", str(out), "--epochs", "1", *flags], capsys, text)
    assert not out.exists()
    assert teacher_main(["--data", str(tiny_data), "--out", str(out), "--print-config", "--batch-size", "16"]) in (0, None)
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["batch_base2_exponent"] == 4
