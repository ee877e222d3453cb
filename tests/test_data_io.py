"""Dataset folder reader/writer: every validation failure is a one-line DataError naming the file."""
import json
import pickle

import numpy as np
import pytest

from shared.data.dataset_io import DataError, open_dataset, write_dataset
from shared.physics.projector import ParallelGeometry

G = ParallelGeometry(image_size=12, pixel_mm=4.0, n_radial=14, n_angles=10)
SIZES = {"train": 5, "val": 3, "test": 2}
UNITS = {"actSino": "counts", "actMap": "a.u.", "attenMap": "1/cm", "attenSino": "1"}
SCALES = {"actSino": 0.1, "actMap": 0.5, "attenMap": 1.0, "attenSino": 0.3}


def _arrays(seed=0, channels=1, atten_sino=True):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SIZES.items():
        out[split] = {
            "actSino": rng.poisson(5.0, (n, channels, 14, 10)).astype(np.float32),
            "actMap": rng.uniform(0, 2, (n, 1, 12, 12)).astype(np.float32),
            "attenMap": rng.uniform(0, 0.15, (n, 1, 12, 12)).astype(np.float32),
        }
        if atten_sino:
            out[split]["attenSino"] = rng.uniform(0, 3, (n, 1, 14, 10)).astype(np.float32)
    return out


@pytest.fixture
def folder(tmp_path):
    write_dataset(tmp_path / "ds", G, _arrays(), UNITS, SCALES, extra={"note": "test"})
    return tmp_path / "ds"


def _raises(folder, *names):
    with pytest.raises(DataError) as ei:
        open_dataset(folder)
    msg = str(ei.value)
    assert "\n" not in msg
    for name in names:
        assert name in msg, msg
    return msg


def test_roundtrip(folder):
    ds = open_dataset(folder)
    ref = _arrays()
    assert ds.splits == ("train", "val", "test")
    assert ds.geometry == G and ds.scales == SCALES and ds.sino_channels == 1 and ds.has_atten_sino
    assert ds.meta["extra"] == {"note": "test"}
    for split, n in SIZES.items():
        sp = ds.split(split)
        assert sp.n == n
        for kind, arr in ref[split].items():
            got = getattr(sp, kind)
            assert isinstance(got, np.memmap) and got.dtype == np.float32
            np.testing.assert_array_equal(got, arr)
    with pytest.raises(DataError, match="'bogus' not in splits"):
        ds.split("bogus")
    # pickling reopens the maps instead of copying the data
    blob = pickle.dumps(ds)
    assert len(blob) < 4000
    ds2 = pickle.loads(blob)
    np.testing.assert_array_equal(ds2.split("val").actMap, ref["val"]["actMap"])
    assert ds2.fingerprint() == ds.fingerprint()


def test_optional_atten_sino_and_three_channels(tmp_path):
    ds = write_dataset(tmp_path, G, _arrays(channels=3, atten_sino=False), UNITS, SCALES)
    assert ds.sino_channels == 3 and not ds.has_atten_sino
    assert ds.split("train").attenSino is None and ds.split("train").actSino.shape == (5, 3, 14, 10)


def test_wrong_shape(folder):
    np.save(folder / "val-actMap.npy", np.zeros((3, 1, 12, 11), np.float32))
    msg = _raises(folder, "val-actMap.npy", "(3, 1, 12, 12)", "(3, 1, 12, 11)", "geometry.image_size")
    assert msg.index("(3, 1, 12, 12)") < msg.index("(3, 1, 12, 11)")  # expected before found


def test_wrong_sino_shape_names_channels(folder):
    np.save(folder / "train-actSino.npy", np.zeros((5, 3, 14, 10), np.float32))
    _raises(folder, "train-actSino.npy", "sino_channels", "(5, 1, 14, 10)", "(5, 3, 14, 10)")


def test_n_mismatch_between_files(folder):
    np.save(folder / "val-attenMap.npy", np.zeros((2, 1, 12, 12), np.float32))
    _raises(folder, "val-attenMap.npy", "splits.val", "(3, 1, 12, 12)", "(2, 1, 12, 12)")


def test_missing_file(folder):
    (folder / "test-actSino.npy").unlink()
    _raises(folder, "test-actSino.npy", "missing")


def test_atten_sino_in_some_splits_only(folder):
    (folder / "val-attenSino.npy").unlink()
    _raises(folder, "val-attenSino.npy", "all splits or none")


def test_wrong_dtype(folder):
    np.save(folder / "train-attenMap.npy", np.full((5, 1, 12, 12), 0.1, np.float64))  # another real dtype: cast
    assert open_dataset(folder).split("train").attenMap[2].dtype == np.float32
    np.save(folder / "train-attenMap.npy", np.zeros((5, 1, 12, 12), np.complex64))
    _raises(folder, "train-attenMap.npy", "complex64", "expected real floats or integers")
    np.save(folder / "train-attenMap.npy", np.zeros((5, 1, 12, 12), bool))
    _raises(folder, "train-attenMap.npy", "bool")


def test_nan_names_sample(folder):
    a = np.load(folder / "train-actSino.npy")
    a[4, 0, 3, 2] = np.nan  # last row is always among the sampled rows
    np.save(folder / "train-actSino.npy", a)
    _raises(folder, "train-actSino.npy", "sample 4", "NaN")
    assert open_dataset(folder, check_finite=False).split("train").n == 5


def test_inf(folder):
    a = np.load(folder / "test-attenSino.npy")
    a[0, 0, 0, 0] = np.inf
    np.save(folder / "test-attenSino.npy", a)
    _raises(folder, "test-attenSino.npy", "sample 0", "Inf")


def test_negative_mu(folder):
    a = np.load(folder / "val-attenMap.npy")
    a[2, 0, 5, 5] = -0.01
    np.save(folder / "val-attenMap.npy", a)
    _raises(folder, "val-attenMap.npy", "sample 2", ">= 0", "-0.01")


def test_negative_activity(folder):
    a = np.load(folder / "train-actMap.npy")
    a[0, 0, 1, 1] = -1.0
    np.save(folder / "train-actMap.npy", a)
    _raises(folder, "train-actMap.npy", "sample 0")


def _edit_meta(folder, fn):
    meta = json.loads((folder / "dataset.json").read_text())
    fn(meta)
    (folder / "dataset.json").write_text(json.dumps(meta))


def test_unknown_key(folder):
    _edit_meta(folder, lambda m: m.update(scale={"actSino": 1.0}))
    _raises(folder, "dataset.json", "unknown key 'scale'")


def test_missing_key(folder):
    _edit_meta(folder, lambda m: m.pop("units"))
    _raises(folder, "dataset.json", "missing required key 'units'")


def test_bad_scale_and_geometry(folder):
    _edit_meta(folder, lambda m: m["scales"].update(actMap=-1))
    _raises(folder, "dataset.json", "scales.actMap")
    _edit_meta(folder, lambda m: (m["scales"].update(actMap=1.0), m["geometry"].pop("n_angles")))
    _raises(folder, "dataset.json", "geometry")


def test_missing_meta_and_bad_json(tmp_path, folder):
    _raises(tmp_path, "dataset.json", "missing")
    (folder / "dataset.json").write_text("{not json")
    _raises(folder, "dataset.json", "not valid JSON")


def test_truncated_npy(folder):
    path = folder / "train-actMap.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    _raises(folder, "train-actMap.npy", "truncated")


def test_empty_split(folder):
    _edit_meta(folder, lambda m: m["splits"].update(test=0))
    _raises(folder, "dataset.json", "splits.test", "0 samples")


def test_files_override(folder):
    (folder / "train-actMap.npy").rename(folder / "act_train.npy")
    _raises(folder, "train-actMap.npy", "missing")
    _edit_meta(folder, lambda m: m.update(files={"actMap": "act_{split}.npy"}))
    for s in ("val", "test"):
        (folder / f"{s}-actMap.npy").rename(folder / f"act_{s}.npy")
    ds = open_dataset(folder)
    np.testing.assert_array_equal(ds.split("train").actMap, _arrays()["train"]["actMap"])


def test_fingerprint(tmp_path, folder):
    fp = open_dataset(folder).fingerprint()
    assert len(fp) == 64 and fp == open_dataset(folder).fingerprint()
    # same data written elsewhere → same fingerprint (no paths or times in it)
    assert write_dataset(tmp_path / "copy", G, _arrays(), UNITS, SCALES, extra={"note": "test"}).fingerprint() == fp
    # one value in a sampled row
    a = np.load(folder / "val-actSino.npy")
    a[1, 0, 7, 3] += 1
    np.save(folder / "val-actSino.npy", a)
    fp2 = open_dataset(folder).fingerprint()
    assert fp2 != fp
    # metadata only
    _edit_meta(folder, lambda m: m["scales"].update(actSino=0.2))
    assert open_dataset(folder).fingerprint() not in (fp, fp2)


def test_write_replaces_stale_files(folder):
    ds = write_dataset(folder, G, _arrays(seed=1, atten_sino=False), UNITS, SCALES)
    assert not ds.has_atten_sino and not list(folder.glob("*attenSino*")) and not list(folder.glob("*.partial"))
    np.testing.assert_array_equal(ds.split("test").actSino, _arrays(seed=1, atten_sino=False)["test"]["actSino"])


def test_write_refuses_bad_shapes_before_touching_folder(folder):
    fp = open_dataset(folder).fingerprint()
    bad = _arrays(seed=2)
    bad["val"]["attenMap"] = bad["val"]["attenMap"][:2]
    with pytest.raises(DataError, match=r"arrays\['val'\]\['attenMap'\].*\(3, 1, 12, 12\).*\(2, 1, 12, 12\)"):
        write_dataset(folder, G, bad, UNITS, SCALES)
    assert open_dataset(folder).fingerprint() == fp  # old dataset intact
    with pytest.raises(DataError, match="sino_channels"):
        write_dataset(folder, G, _arrays(channels=2), UNITS, SCALES)


def test_read_rows_equals_slicing_the_memory_map(tmp_path):
    from shared.data.dataset_io import read_rows

    a = np.random.default_rng(0).random((7, 1, 5, 4), dtype=np.float32)
    np.save(tmp_path / "a.npy", a)
    m = np.load(tmp_path / "a.npy", mmap_mode="r")
    for s0, s1 in ((0, 7), (2, 5), (6, 7), (5, 9), (3, 3)):
        got = read_rows(m, s0, s1)
        assert got.shape == a[s0:s1].shape and np.array_equal(got, a[s0:s1])
    assert np.array_equal(read_rows(a, 1, 3), a[1:3])  # plain arrays work too
