"""Every entry point, fed bad input: exit code 1, one line naming the file (and index/key), no
traceback, existing outputs untouched."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

from feature_store.export import main as export_main
from feature_store.verify import main as verify_main
from phase1_teacher.train import main as teacher_main
from phase2_student.evaluate import main as evaluate_main
from phase2_student.train import main as student_main
from shared.files import checkpoint as ckpt_io
from shared.cli import run_main
from shared.data.dataset_io import DataError, open_dataset


def _npy(folder, name):
    return np.load(folder / name)


def _save(folder, name, arr):
    np.save(folder / name, arr)


def _meta(folder, fn):
    meta = json.loads((folder / "dataset.json").read_text())
    fn(meta)
    (folder / "dataset.json").write_text(json.dumps(meta))


def _nan(f):
    a = _npy(f, "val-actMap.npy"); a[0, 0, 5, 5] = np.nan; _save(f, "val-actMap.npy", a)


def _inf(f):
    a = _npy(f, "train-actSino.npy"); a[-1, 0, 3, 3] = np.inf; _save(f, "train-actSino.npy", a)


def _shape(f):
    _save(f, "train-attenMap.npy", _npy(f, "train-attenMap.npy")[..., :31, :31].copy())


def _count(f):
    _save(f, "val-actSino.npy", _npy(f, "val-actSino.npy")[:-1].copy())


def _missing(f):
    (f / "test-attenMap.npy").unlink()


def _dtype(f):  # other real dtypes are read as float32 (tests/test_their_files.py); complex numbers are not data
    _save(f, "train-actMap.npy", _npy(f, "train-actMap.npy").astype(np.complex64))


def _neg_mu(f):
    a = _npy(f, "val-attenMap.npy"); a[0, 0, 16, 16] = -0.1; _save(f, "val-attenMap.npy", a)


def _neg_act(f):
    a = _npy(f, "test-actMap.npy"); a[0, 0, 16, 16] = -1.0; _save(f, "test-actMap.npy", a)


def _empty(f):
    for k in ("actSino", "actMap", "attenMap"):
        a = _npy(f, f"val-{k}.npy"); _save(f, f"val-{k}.npy", a[:0].copy())
    _meta(f, lambda m: m["splits"].__setitem__("val", 0))


def _truncated(f):
    raw = (f / "train-actSino.npy").read_bytes(); (f / "train-actSino.npy").write_bytes(raw[: len(raw) // 3])


def _unknown_key(f):
    _meta(f, lambda m: m.__setitem__("colour", "blue"))


BAD_DATA = {  # name → (mutation, text the message must contain)
    "nan": (_nan, "val-actMap.npy: sample 0 contains NaN"),
    "inf": (_inf, "train-actSino.npy: sample 23 contains Inf"),
    "shape": (_shape, "train-attenMap.npy: expected shape (24, 1, 32, 32)"),
    "count": (_count, "val-actSino.npy: expected shape (8, 1, 48, 40)"),
    "missing": (_missing, "test-attenMap.npy: missing"),
    "dtype": (_dtype, "train-actMap.npy: dtype complex64: expected real floats or integers"),
    "neg_mu": (_neg_mu, "val-attenMap.npy: sample 0: expected values >= 0"),
    "neg_act": (_neg_act, "test-actMap.npy: sample 0: expected values >= 0"),
    "empty": (_empty, "dataset.json"),
    "truncated": (_truncated, "train-actSino.npy: cannot open as .npy"),
    "unknown_key": (_unknown_key, "'colour'"),
}


@pytest.fixture(scope="module")
def bad_data(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    out = {}
    for name, (mutate, _) in BAD_DATA.items():
        folder = root / name
        shutil.copytree(tiny_data, folder)
        mutate(folder)
        out[name] = folder
    return out


def _fails_cleanly(main, argv, capsys, must_contain):
    rc = run_main(main, argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and must_contain in err, err
    return err


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_reader_names_the_file(bad_data, name):
    with pytest.raises(DataError) as e:
        open_dataset(bad_data[name])
    assert BAD_DATA[name][1] in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_every_entry_point_refuses_bad_data(bad_data, name, tiny_teacher, tiny_store, tmp_path, capsys):
    folder, text = bad_data[name], BAD_DATA[name][1]
    sentinel = tmp_path / "out" / "keep.txt"
    sentinel.parent.mkdir()
    sentinel.write_text("previous results")
    out = str(sentinel.parent)
    _fails_cleanly(teacher_main, ["--data", str(folder), "--out", out, "--epochs", "1"], capsys, text)
    _fails_cleanly(student_main, ["--data", str(folder), "--out", out, "--inject", "none"], capsys, text)
    _fails_cleanly(export_main, ["--ckpt", str(tiny_teacher), "--data", str(folder), "--out", str(tiny_store)],
                   capsys, text)
    _fails_cleanly(evaluate_main, ["--student", str(tiny_teacher), "--data", str(folder), "--out", out], capsys, text)
    assert sorted(p.name for p in sentinel.parent.iterdir()) == ["keep.txt"]
    assert sentinel.read_text() == "previous results"
    assert zarr.open_group(str(tiny_store), mode="r").attrs["splits"]["train"]["status"] == "complete"


@pytest.fixture(scope="module")
def bad_checkpoints(tiny_teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_ckpt")
    raw = tiny_teacher.read_bytes()
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    ckpt = ckpt_io.load(tiny_teacher)
    ckpt_io.save_atomic({**ckpt, "format_version": 7}, d / "version7.pt")
    ckpt_io.save_atomic({**ckpt, "meta": {**ckpt["meta"], "direction": "SI"}}, d / "direction.pt")
    ckpt_io.save_atomic({**ckpt, "kind": "student"}, d / "kind.pt")
    return d


@pytest.mark.parametrize("name,text", [("truncated.pt", "truncated or corrupted"),
                                       ("version7.pt", "format_version 7"),
                                       ("direction.pt", "direction 'SI', expected 'IS'"),
                                       ("kind.pt", "expected a teacher checkpoint")])
def test_bad_teacher_checkpoints(bad_checkpoints, name, text, tiny_data, tiny_store, tmp_path, capsys):
    path = bad_checkpoints / name
    _fails_cleanly(export_main, ["--ckpt", str(path), "--data", str(tiny_data), "--out", str(tmp_path / "s.zarr")],
                   capsys, f"{name}: ")
    assert not (tmp_path / "s.zarr").exists()
    _fails_cleanly(verify_main, ["--features", str(tiny_store), "--ckpt", str(path)], capsys, f"{name}: ")
    if name != "kind.pt":
        _fails_cleanly(evaluate_main, ["--student", str(path), "--data", str(tiny_data), "--out", str(tmp_path / "e")],
                       capsys, name)


def _store_copy(tiny_store, tmp_path, mutate):
    store = tmp_path / "store.zarr"
    shutil.copytree(tiny_store, store)
    root = zarr.open_group(str(store), mode="r+")
    mutate(root, store)
    return store


def _incomplete(root, store):
    state = dict(root.attrs["splits"]); state["val"] = {**state["val"], "status": "writing"}
    root.attrs["splits"] = state


def _other_teacher(root, store):
    root.attrs["teacher_sha256"] = "ab" * 32


def _missing_level(root, store):
    root.attrs["taps"] = ["enc144", "dec144", "enc9", "dec9"]
    root.attrs["levels"] = [144, 9]


def _other_data(root, store):
    root.attrs["dataset_fingerprint"] = "cd" * 32


@pytest.mark.parametrize("mutate,text", [(_incomplete, "split 'val' is incomplete"),
                                         (_other_teacher, "made by teacher abababababab"),
                                         (_missing_level, "missing tap(s)"),
                                         (_other_data, "exported from another dataset")])
def test_bad_stores(mutate, text, tiny_store, tiny_data, tmp_path, capsys):
    store = _store_copy(tiny_store, tmp_path, mutate)
    out = tmp_path / "student"
    argv = ["--data", str(tiny_data), "--features", str(store), "--out", str(out), "--inject", "144,36,9",
            "--epochs", "1", "--set", "gen_sino_size=64", "--set", "gen_image_size=32", "--quiet"]
    if mutate is _other_teacher:
        # a student trained on the real store refuses, at evaluation, features of another teacher
        assert run_main(student_main, [*argv[:3], str(tiny_store), *argv[4:]]) == 0
        capsys.readouterr()
        _fails_cleanly(evaluate_main, ["--student", str(out / "student.pt"), "--features", str(store), "--data",
                                       str(tiny_data), "--out", str(tmp_path / "e")], capsys,
                       f"{store}: made by teacher abababababab…, but {out / 'student.pt'} was trained with")
        assert not (tmp_path / "e").exists()
        return
    _fails_cleanly(student_main, argv, capsys, text)
    assert not (out / "last.pt").exists()


def test_cli_tracebacks_only_with_debug(tiny_data, tmp_path):
    bad = tmp_path / "nowhere"
    cmd = [sys.executable, "-m", "phase1_teacher.train", "--data", str(bad), "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {bad}/dataset.json: missing (not a dataset folder?)"
    r = subprocess.run(cmd + ["--debug"], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_a_bug_is_a_traceback_exit_1_and_bad_input_one_line_exit_2(tiny_data, tmp_path, capsys, monkeypatch):
    """The two never look alike: FrozenFlowError (bad input, a refused state) → one line, exit 2; anything
    else escaping a command — here a KeyError planted in training — is a bug: traceback, exit 1."""
    import json

    import shared.train.loop
    from phase1_teacher.train import main as teacher_main
    from shared.cli import BUG_HEADER
    from tests.conftest import tiny_teacher_config

    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps(tiny_teacher_config()))
    argv = ["--data", str(tiny_data), "--out", str(tmp_path / "t"), "--epochs", "1", "--config", str(cfg), "--quiet"]

    def planted(*a, **k):
        raise KeyError("gen_lr_typo")

    monkeypatch.setattr(shared.train.loop, "build_optimizer", planted)
    assert run_main(teacher_main, argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(BUG_HEADER) and "Traceback" in err and "KeyError: 'gen_lr_typo'" in err
    monkeypatch.undo()
    assert run_main(teacher_main, [*argv[:5], "0", *argv[6:]]) == 2  # --epochs 0: bad input
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --epochs must be") and len(err.splitlines()) == 1
