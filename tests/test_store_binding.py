"""The store bound to every row of its data: rows edited after export, and shard or chunk files swapped
inside a store, are caught (the adversarial pass found all three accepted)."""
import shutil

import numpy as np

from feature_store.export import main as export_main
from feature_store.verify import verify
from phase2_student.train import main as student_main
from shared.cli import run_main
from shared.data.dataset_io import open_dataset
from tests.conftest import tiny_student_config
from tests.test_bad_inputs import _fails_cleanly


def _swap(a, b):
    tmp = a.with_name(a.name + ".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def test_swapping_two_rows_changes_the_fingerprint_and_the_old_store_is_refused(tiny_data, tiny_store, tmp_path,
                                                                               capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = open_dataset(data).fingerprint()
    for kind in ("actSino", "actMap", "attenMap", "lesionMap"):  # rows 13↔15 of every file: still valid data
        path = data / f"train-{kind}.npy"
        if path.exists():
            rows = np.load(path)
            rows[[13, 15]] = rows[[15, 13]]  # the rows the adversarial pass swapped; the sampled hash missed them
            np.save(path, rows)
    assert open_dataset(data).fingerprint() != before
    cfg = tmp_path / "s.json"
    cfg.write_text(__import__("json").dumps(tiny_student_config()))
    _fails_cleanly(student_main, ["--data", str(data), "--features", str(tiny_store), "--out", str(tmp_path / "s"),
                                  "--epochs", "1", "--config", str(cfg), "--inject", "144", "--quiet"], capsys,
                   "fingerprint")


def test_swapped_shard_files_fail_verify_full(tiny_teacher, tiny_data, tiny_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    shards = store / "train" / "enc144" / "c"
    _swap(shards / "0" / "0" / "0" / "0", shards / "3" / "0" / "0" / "0")  # valid shards, wrong places
    assert verify(store, log=lambda *_: None, full=True) == []  # every checksum is fine …
    problems = verify(store, tiny_teacher, tiny_data, log=lambda *_: None, full=True, seed=0)
    assert any("train: live teacher recomputation" in p and "enc144 sample" in p for p in problems), problems


def test_swapped_chunk_files_of_an_unsharded_store_fail_verify_full(tiny_teacher, tiny_data, tmp_path):
    store = tmp_path / "u.zarr"
    assert run_main(export_main, ["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--out", str(store),
                                  "--shard-size", "0", "--splits", "val", "--quiet"]) == 0
    chunks = store / "val" / "dec36" / "c"
    _swap(chunks / "2" / "0" / "0" / "0", chunks / "5" / "0" / "0" / "0")
    problems = verify(store, tiny_teacher, tiny_data, log=lambda *_: None, full=True, seed=0)
    assert any("val: live teacher recomputation" in p and "dec36 sample" in p for p in problems), problems
