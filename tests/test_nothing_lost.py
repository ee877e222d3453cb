"""Nothing lost, nothing silently wrong: export never deletes what is not its store, checkpoints never
run code, a damaged chunk is named on read, NaN anywhere in the data is named, bad options are
refused before anything is written."""
import json
import os
import shutil

import numpy as np
import pytest

from shared.errors import TrainingError
import torch
import zarr

from feature_store import FeatureStoreDataset, StoreError
from feature_store.export import main as export_main
from feature_store.verify import main as verify_main
from feature_store.verify import verify
from phase1_teacher.train import main as teacher_main
from phase2_student.evaluate import main as evaluate_main
from phase2_student.train import main as student_main
from shared.files import checkpoint as ckpt_io
from shared.cli import run_main
from shared.data import scan
from shared.data.dataset_io import DataError, open_dataset
from shared.train.loop import EpochSampler

from tests.conftest import tiny_student_config, tiny_teacher_config
from tests.test_bad_inputs import _fails_cleanly


def _export(teacher, data, store, *extra):
    return ["--ckpt", str(teacher), "--data", str(data), "--out", str(store), "--shard-size", "4",
            "--batch-size", "4", "--quiet", *extra]


# ------------------------------------------------------------------ 1. export never deletes a foreign folder
def test_export_refuses_a_folder_that_is_not_a_store(tiny_teacher, tiny_data, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_teacher.parent, runs / "teacher")
    (runs / "notes.txt").write_text("keep me")
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    for extra in ((), ("--overwrite",)):
        _fails_cleanly(export_main, _export(tiny_teacher, tiny_data, runs, *extra), capsys,
               f"{runs}: exists and is not a feature store (holds notes.txt, teacher)")
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before
    a_file = tmp_path / "file.zarr"
    a_file.write_text("x")
    _fails_cleanly(export_main, _export(tiny_teacher, tiny_data, a_file, "--overwrite"), capsys, "(a file)")
    other = tmp_path / "other.zarr"  # someone else's Zarr store
    zarr.open_group(str(other), mode="w", attributes={"owner": "someone"}).create_array("x", shape=(2,), dtype="f4")
    _fails_cleanly(export_main, _export(tiny_teacher, tiny_data, other, "--overwrite"), capsys, "without a teacher identity")
    assert zarr.open_group(str(other), mode="r").attrs["owner"] == "someone"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_main(export_main, _export(tiny_teacher, tiny_data, empty)) == 0


def test_identity_is_written_with_the_root(tiny_teacher, tiny_data, tmp_path, monkeypatch, capsys):
    """A kill right after the root exists (here: an error in the first split) leaves a store the
    same command recognises and completes, without --overwrite."""
    from feature_store import layout

    store = tmp_path / "s.zarr"

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(layout, "create_split", killed)
    assert run_main(export_main, _export(tiny_teacher, tiny_data, store)) == 130
    monkeypatch.undo()
    assert json.loads((store / "zarr.json").read_text())["attributes"]["teacher_sha256"]
    assert run_main(export_main, _export(tiny_teacher, tiny_data, store)) == 0
    assert verify(store, log=lambda *_: None, full=True) == []


@pytest.mark.parametrize("damage", ["corrupt_json", "no_identity"])
def test_damaged_root_is_recovered_only_with_overwrite(damage, tiny_teacher, tiny_data, tiny_store, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    if damage == "corrupt_json":
        (store / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
        text = "unreadable root zarr.json"
    else:  # what a kill between creating the group and writing its attributes used to leave
        (store / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
        text = "root metadata without identity"
    _fails_cleanly(export_main, _export(tiny_teacher, tiny_data, store), capsys, f"damaged feature store ({text})")
    assert run_main(export_main, _export(tiny_teacher, tiny_data, store, "--overwrite")) == 0
    assert verify(store, log=lambda *_: None, full=True) == []


# ------------------------------------------------------------------ 2. checkpoints never run code
class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _evil(tmp_path, good, name):
    marker = tmp_path / f"pwned_{name}"
    ckpt = ckpt_io.load(good)
    ckpt["meta"] = {**ckpt["meta"], "note": _Payload(marker)}
    path = tmp_path / f"{name}.pt"
    torch.save(ckpt, path)
    return path, marker


def test_crafted_checkpoints_are_refused_everywhere(tiny_teacher, tiny_data, tiny_store, tmp_path, capsys):
    refused = "refused: it holds Python objects other than tensors"
    path, marker = _evil(tmp_path, tiny_teacher, "teacher")
    _fails_cleanly(export_main, _export(path, tiny_data, tmp_path / "s.zarr"), capsys, f"{path}: {refused}")
    _fails_cleanly(verify_main, ["--features", str(tiny_store), "--ckpt", str(path)], capsys, f"{path}: {refused}")
    _fails_cleanly(evaluate_main, ["--student", str(path), "--data", str(tiny_data), "--out", str(tmp_path / "e")],
           capsys, f"{path}: {refused}")
    student_argv = ["--data", str(tiny_data), "--features", str(tiny_store), "--inject", "144,36,9",
                    "--epochs", "1", "--set", "gen_sino_size=64", "--set", "gen_image_size=32", "--quiet"]
    # train-student --ckpt only hashes the file (it never loads the teacher): refused as not the store's teacher
    _fails_cleanly(student_main, [*student_argv, "--ckpt", str(path), "--out", str(tmp_path / "st")], capsys, f"not by {path}")
    # --resume reads last.pt: a crafted one is refused the same way
    run = tmp_path / "teacher_run"
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps(tiny_teacher_config()))
    argv = ["--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--config", str(cfg), "--quiet"]
    assert run_main(teacher_main, argv) == 0
    last, marker2 = _evil(tmp_path, run / "last.pt", "last")
    shutil.copy(last, run / "last.pt")
    _fails_cleanly(teacher_main, [*argv[:5], "2", *argv[6:], "--resume"], capsys, f"{run / 'last.pt'}: {refused}")
    assert not marker.exists() and not marker2.exists()
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "e").exists()


def test_every_checkpoint_the_project_writes_loads_weights_only(tiny_teacher):
    state = torch.load(tiny_teacher, weights_only=True)
    assert state["kind"] == "teacher" and isinstance(state["model"], dict)
    last = torch.load(tiny_teacher.parent / "last.pt", weights_only=True)
    assert "optimizer" in last and "history" in last


# ------------------------------------------------------------------ 3. the store proves its bytes
def _chunk(store, split, tap, i):
    return store / split / tap / "c" / str(i) / "0" / "0" / "0"


@pytest.mark.parametrize("damage", ["zeroed", "random", "truncated", "deleted"])
def test_damaged_chunk_is_named_on_read(damage, tiny_teacher, tiny_data, tmp_path, capsys):
    store = tmp_path / "s.zarr"  # one chunk file per sample (damage inside a shard: tests/test_store_engine.py)
    assert run_main(export_main, _export(tiny_teacher, tiny_data, store, "--shard-size", "0", "--splits", "train")) == 0
    chunk = _chunk(store, "train", "dec36", 5)
    raw = chunk.read_bytes()
    if damage == "zeroed":
        chunk.write_bytes(bytes(len(raw)))
    elif damage == "random":
        chunk.write_bytes(np.random.default_rng(0).integers(0, 256, len(raw), dtype=np.uint8).tobytes())
    elif damage == "truncated":
        chunk.write_bytes(raw[: len(raw) // 2])
    else:
        chunk.unlink()
    ds = FeatureStoreDataset(store, "train")
    ds.get(4)  # neighbours are fine
    with pytest.raises(StoreError, match=rf"{store}: train/dec36 sample 5: "
                                         rf"{'not finite' if damage == 'deleted' else 'damaged chunk'}"):
        ds.get(5)
    with pytest.raises(StoreError, match="train/dec36 sample 5"):
        ds.__getitems__([3, 5, 7])  # through the batch path (thread pool) too
    assert run_main(verify_main, ["--features", str(store), "--full"]) == 2
    out = capsys.readouterr().out
    assert "train/dec36: sample(s) 5 " in out and ("damaged chunk" in out or "not finite" in out), out


def test_verify_samples_differently_each_run_and_repeats_a_seed(tiny_store, capsys):
    seeds, picked = set(), set()
    for _ in range(3):
        assert run_main(verify_main, ["--features", str(tiny_store), "--verbose"]) == 0
        out = capsys.readouterr().out
        seeds.add(out.split("(seed ")[1].split(";")[0])
        picked.add(out.split("train/enc144: [")[1].split("]")[0])
    assert len(seeds) == 3 and len(picked) > 1
    s = seeds.pop()
    runs = []
    for _ in range(2):
        run_main(verify_main, ["--features", str(tiny_store), "--verbose", "--seed", s])
        runs.append(capsys.readouterr().out.split("train/enc144: [")[1].split("]")[0])
    assert runs[0] == runs[1]


# ------------------------------------------------------------------ 5. NaN anywhere in the data, once per file
def test_nan_in_any_row_is_named_and_clean_verdicts_are_cached(tiny_data, tmp_path, monkeypatch):
    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    open_dataset(data)  # clean: verdicts cached

    def no_reads(*a, **k):
        raise AssertionError("a file with a clean cached verdict was read again")

    monkeypatch.setattr("shared.data.dataset_io.read_rows", no_reads)
    open_dataset(data)
    monkeypatch.undo()
    a = np.load(data / "train-attenMap.npy")
    a[1, 0, 7, 9] = np.nan  # row 1: a sampled check (first, last, evenly spaced) never read it
    np.save(data / "train-attenMap.npy", a)
    with pytest.raises(DataError, match=r"train-attenMap.npy: sample 1 contains NaN \(attenMap; every row"):
        open_dataset(data)
    assert not scan._verdict_path(data / "train-attenMap.npy", True).exists()  # failures are never cached


def test_training_that_goes_non_finite_names_the_samples(tiny_data, tmp_path, monkeypatch):
    from shared.train import loop as training

    calls = []

    def nan_on_second(pred, target):
        calls.append(1)
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(training, "get_loss", lambda name: nan_on_second)
    cfg = tmp_path / "s.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    argv = ["--data", str(tiny_data), "--out", str(tmp_path / "st"), "--inject", "none", "--epochs", "1",
            "--config", str(cfg), "--quiet"]
    err = pytest.raises(TrainingError, student_main, argv).value
    rows = list(EpochSampler(24, 0))[4:8]  # batch 2 of epoch 1, batch size 4
    assert f"epoch 1, batch 2 (train samples {rows})" in str(err)


# ------------------------------------------------------------------ 6/7. bad options: one line, nothing written
def _pattern(f):
    m = json.loads((f / "dataset.json").read_text())
    m["files"] = {"actMap": "{split}{0}-actMap.npy"}
    (f / "dataset.json").write_text(json.dumps(m))


def _pixel_nan(f):
    (f / "dataset.json").write_text((f / "dataset.json").read_text().replace('"pixel_mm": 12.0', '"pixel_mm": NaN'))


@pytest.mark.parametrize("mutate,text", [(_pattern, "files.actMap: expected a file name whose only placeholder"),
                                         (_pixel_nan, "pixel_mm and radial_mm must be finite and positive")])
def test_bad_dataset_json_is_named(mutate, text, tiny_data, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(tiny_data, data)
    mutate(data)
    with pytest.raises(DataError, match=text.replace("(", r"\(")):
        open_dataset(data)


@pytest.mark.parametrize("flags,text", [(["--epochs", "0"], "--epochs must be an integer ≥ 1, got 0"),
                                        (["--val-samples", "0"], "--val-samples must be an integer ≥ 1, got 0"),
                                        (["--metric", "accuracy"], "--metric must be one of"),
                                        (["--batch-size", "0"], "--batch-size 0"),
                                        (["--inject", ""], "--inject names no level"),
                                        (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto"),
                                        (["--device", "cuda"], "no CUDA device")])
def test_bad_training_options(flags, text, tiny_data, tmp_path, capsys):
    out = tmp_path / "st"
    argv = ["--data", str(tiny_data), "--out", str(out), "--inject", "none", "--quiet", *flags]
    if torch.cuda.is_available() and flags[-1] == "cuda":
        pytest.skip("this machine has CUDA")
    _fails_cleanly(student_main, argv, capsys, text)
    assert not out.exists()


@pytest.mark.parametrize("flags,text", [(["--splits", ","], "--splits names no split"),
                                        (["--device", "tpu"], "--device must be cpu, cuda, cuda:N or auto"),
                                        (["--threads", "-1"], "--threads must be ≥ 1, got -1")])
def test_bad_export_options_write_nothing(flags, text, tiny_teacher, tiny_data, tmp_path, capsys):
    store = tmp_path / "s.zarr"
    _fails_cleanly(export_main, _export(tiny_teacher, tiny_data, store, *flags), capsys, text)
    assert not store.exists()
