import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from feature_store import layout as L
from feature_store.export import main as export_main
from feature_store.reader import FeatureStoreDataset
from feature_store.verify import verify
from phase1_teacher import load_teacher
from shared.cli import run_main
from shared.data.augment import flip_image
from shared.data.dataset_io import open_dataset

TAPS = ["enc144", "dec144", "enc36", "dec36", "enc9", "dec9"]


def _export(teacher, data, store, *extra):
    return run_main(export_main, ["--ckpt", str(teacher), "--data", str(data), "--out", str(store),
                                  "--shard-size", "4", "--batch-size", "4", "--quiet", *extra])


def _arrays(store, split="train"):
    g = zarr.open_group(str(store), mode="r")[split]
    return {t: np.asarray(g[t][:]) for t in TAPS if t in g}


def test_layout_and_metadata(tiny_store, tiny_teacher, tiny_data):
    root = zarr.open_group(str(tiny_store), mode="r")
    a = root.attrs
    teacher = load_teacher(tiny_teacher)
    assert a["format_version"] == 2 and a["teacher_sha256"] == teacher.sha256
    assert a["dataset_fingerprint"] == open_dataset(tiny_data).fingerprint()
    assert a["levels"] == [144, 36, 9] and a["dtype"] == "float16" and a["variants"] == "none"
    assert a["teacher_config"] == teacher.config
    assert {s: v["status"] for s, v in a["splits"].items()} == {"train": "complete", "val": "complete",
                                                                "test": "complete"}
    arr = root["train"]["enc144"]
    C, H, W = teacher.tap_shapes["enc144"]
    assert arr.shape == (24, C, H, W) and arr.chunks == (1, C, H, W) and str(arr.dtype) == "float16"
    assert np.isnan(arr.fill_value)
    assert arr.shards == (4, C, H, W)  # tiny_store: --shard-size 4
    sharding = arr.metadata.codecs[0].to_dict()
    assert sharding["name"] == "sharding_indexed"
    assert [c["name"] for c in sharding["configuration"]["codecs"]][-1] == "crc32c"  # every chunk carries a checksum
    assert arr.metadata.dimension_names == ("sample", "c144", "y144", "x144")
    stats = arr.attrs["stats"]
    data = np.asarray(arr[:], dtype=np.float64)
    np.testing.assert_allclose(stats["mean"], data.mean(axis=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["max"], data.max(axis=(0, 2, 3)), rtol=1e-6)


def test_values_equal_live_teacher(tiny_store, tiny_teacher, tiny_data):
    teacher = load_teacher(tiny_teacher)
    mu = torch.from_numpy(np.array(open_dataset(tiny_data).split("val").attenMap[:]))
    with torch.no_grad():
        _, live = teacher.forward_taps(mu * teacher.input_scale)
    stored = _arrays(tiny_store, "val")
    for t in TAPS:
        ref = live[t].numpy()
        err = np.abs(stored[t].astype(np.float32) - ref).max() / np.abs(ref).max()
        assert err < 1e-3, (t, err)  # float16 rounding only


def test_xarray_opens_each_split(tiny_store):
    import xarray as xr

    ds = xr.open_zarr(str(tiny_store), group="val", consolidated=False)
    assert ds["enc144"].dims == ("sample", "c144", "y144", "x144") and ds.sizes["sample"] == 8


def test_rerun_is_idempotent_and_other_teacher_needs_overwrite(tiny_store, tiny_data, tmp_path, capsys):
    from tests.test_teacher import _fit

    before = {f: os.stat(f).st_mtime_ns for f in map(str, tiny_store.rglob("*")) if os.path.isfile(f)}
    ckpt = zarr.open_group(str(tiny_store), mode="r").attrs["teacher_sha256"]
    teacher_path = next(p for p in tiny_store.parent.parent.glob("tiny_teacher*/best.pt"))
    assert _export(teacher_path, tiny_data, tiny_store) == 0
    assert "nothing to do" in capsys.readouterr().out
    after = {f: os.stat(f).st_mtime_ns for f in map(str, tiny_store.rglob("*")) if os.path.isfile(f)}
    assert before == after and ckpt

    _fit(tiny_data, tmp_path / "other", epochs=1, seed=5)  # another teacher
    store = tmp_path / "copy.zarr"
    assert _export(teacher_path, tiny_data, store, "--splits", "val") == 0
    assert _export(tmp_path / "other" / "best.pt", tiny_data, store, "--splits", "val") == 2
    err = capsys.readouterr().err
    assert "teacher_sha256" in err and "--overwrite" in err
    assert _export(tmp_path / "other" / "best.pt", tiny_data, store, "--splits", "val", "--overwrite") == 0
    assert zarr.open_group(str(store), mode="r").attrs["teacher_sha256"] == load_teacher(
        tmp_path / "other" / "best.pt").sha256


def test_kill_and_resume_gives_identical_arrays(tiny_store, tiny_data, tmp_path):
    teacher_path = next(p for p in tiny_store.parent.parent.glob("tiny_teacher*/best.pt"))
    store = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "feature_store.export", "--ckpt", str(teacher_path), "--data", str(tiny_data),
           "--out", str(store), "--shard-size", "2", "--batch-size", "1", "--splits", "train", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    flags = None
    while time.time() < deadline:  # kill as soon as some, but not all, ranges are done
        try:
            flags = L.done_flags(zarr.open_group(str(store), mode="r"), "train")
            if flags.any():
                break
        except Exception:
            pass
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    flags = L.done_flags(zarr.open_group(str(store), mode="r"), "train")
    assert flags.any() and not flags.all(), flags  # really interrupted mid-export
    assert zarr.open_group(str(store), mode="r").attrs["splits"]["train"]["status"] == "writing"
    with pytest.raises(L.StoreError, match="incomplete"):
        FeatureStoreDataset(store, "train")
    subprocess.run(cmd, check=True)
    # reference: the same command, uninterrupted (float results depend on the batch composition)
    subprocess.run([*cmd[:cmd.index("--out") + 1], str(tmp_path / "ref.zarr"), *cmd[cmd.index("--out") + 2:]],
                   check=True)
    resumed, reference = _arrays(store), _arrays(tmp_path / "ref.zarr")
    for t in TAPS:
        np.testing.assert_array_equal(resumed[t], reference[t])
    assert not list(store.rglob("*.partial"))


def test_reader_returns_the_stored_values_and_refuses_mismatches(tiny_store, tiny_teacher, tiny_data):
    teacher = load_teacher(tiny_teacher)
    ds = FeatureStoreDataset(tiny_store, "val", ["enc36", "dec144"], teacher_sha256=teacher.sha256,
                             dataset_fingerprint=open_dataset(tiny_data).fingerprint(), n=8,
                             tap_shapes={"enc36": teacher.tap_shapes["enc36"]})
    item = ds[3]
    assert set(item) == {"enc36", "dec144"} and item["enc36"].dtype == torch.float16  # as stored: the side conv casts
    assert torch.equal(item["dec144"], torch.from_numpy(_arrays(tiny_store, "val")["dec144"][3]))
    with pytest.raises(L.StoreError, match="made by teacher"):
        FeatureStoreDataset(tiny_store, "val", teacher_sha256="0" * 64)
    with pytest.raises(L.StoreError, match="another dataset"):
        FeatureStoreDataset(tiny_store, "val", dataset_fingerprint="f" * 64)
    with pytest.raises(L.StoreError, match="has 8 samples, the dataset has 9"):
        FeatureStoreDataset(tiny_store, "val", n=9)
    with pytest.raises(L.StoreError, match="no split 'extra'"):
        FeatureStoreDataset(tiny_store, "extra")
    with pytest.raises(L.StoreError, match="not a feature store"):
        FeatureStoreDataset(tiny_store.parent / "nowhere.zarr", "val")


def test_missing_level_is_refused(tiny_teacher, tiny_data, tmp_path):
    store = tmp_path / "only9.zarr"
    assert _export(tiny_teacher, tiny_data, store, "--levels", "9", "--splits", "val") == 0
    assert sorted(zarr.open_group(str(store), mode="r")["val"].array_keys()) == ["_done", "dec9", "enc9"]
    with pytest.raises(L.StoreError, match=r"missing tap\(s\) \['enc144'\]"):
        FeatureStoreDataset(store, "val", ["enc144", "enc9"])


def test_concurrent_readers_in_worker_processes(tiny_store):
    ds = FeatureStoreDataset(tiny_store, "train", TAPS)
    expected = _arrays(tiny_store)
    for ctx in ("fork", "spawn"):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context=ctx)
        got = {t: [] for t in TAPS}
        for batch in loader:
            for t in TAPS:
                got[t].append(batch[t])
        for t in TAPS:
            np.testing.assert_array_equal(torch.cat(got[t]).numpy(), expected[t].astype(np.float32))


def test_sharded_and_flip_variants(tiny_teacher, tiny_data, tmp_path):
    store = tmp_path / "flips.zarr"
    assert _export(tiny_teacher, tiny_data, store, "--flips", "--shard-size", "4", "--splits", "val",
                   "--codec", "lz4") == 0
    arr = zarr.open_group(str(store), mode="r")["val"]["enc36"]
    assert arr.shape[:2] == (8, 4) and arr.shards[:2] == (4, 4) and arr.chunks[:2] == (1, 1)
    teacher = load_teacher(tiny_teacher)
    mu = torch.from_numpy(np.array(open_dataset(tiny_data).split("val").attenMap[2:3]))
    ds = FeatureStoreDataset(store, "val", ["enc36"])
    for v in range(4):
        with torch.no_grad():
            _, live = teacher.forward_taps(flip_image(mu, v) * teacher.input_scale)
        got = ds.get(2, v)["enc36"].float()
        assert torch.allclose(got, live["enc36"][0], rtol=2e-3, atol=2e-3 * live["enc36"].abs().max())
    assert verify(store, tiny_teacher, tiny_data, log=lambda *_: None) == []


def test_verify_detects_tampering(tiny_teacher, tiny_data, tmp_path):
    store = tmp_path / "v.zarr"
    assert _export(tiny_teacher, tiny_data, store, "--splits", "val") == 0
    assert verify(store, tiny_teacher, tiny_data, log=lambda *_: None) == []
    g = zarr.open_group(str(store), mode="r+")
    g["val"]["dec36"][5] = g["val"]["dec36"][5] * 1.5
    # rewritten through Zarr, so its checksum is valid: only recomputing with the teacher finds it
    assert verify(store, log=lambda *_: None, full=True) == []
    problems = verify(store, tiny_teacher, tiny_data, n_check=8, log=lambda *_: None, full=True)
    assert any("live teacher recomputation" in p for p in problems)
    g["val"]["enc9"][0] = np.nan
    assert any("val/enc9" in p for p in verify(store, log=lambda *_: None))


def test_float16_overflow_asks_for_float32(tiny_teacher, tiny_data, tmp_path, capsys):
    from shared.files import checkpoint as ckpt_io

    ckpt = ckpt_io.load(tiny_teacher)
    scales = {**ckpt["meta"]["scales"], "attenMap": 1e7}  # the μ-maps' scale as trained: absurd input → beyond 65504
    ckpt["meta"] = {**ckpt["meta"], "scales": scales}
    ckpt_io.save_atomic(ckpt, tmp_path / "loud.pt")
    assert _export(tmp_path / "loud.pt", tiny_data, tmp_path / "s.zarr", "--splits", "val") == 2
    assert "--dtype float32" in capsys.readouterr().err
    # refused on the writer thread: the shard it belonged to was never written, nor its range flagged
    assert not [p for p in (tmp_path / "s.zarr" / "val").rglob("c/*") if p.is_file()]
    assert not zarr.open_group(tmp_path / "s.zarr", mode="r")["val"][L.DONE][:].any()
    assert _export(tmp_path / "loud.pt", tiny_data, tmp_path / "s32.zarr", "--splits", "val", "--dtype",
                   "float32") == 0


def test_reader_used_in_the_main_process_then_in_forked_workers(tiny_store):
    ds = FeatureStoreDataset(tiny_store, "train", ["enc9"])
    first = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))  # opens the pool in this process
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, timeout=30, multiprocessing_context="fork")
    again = next(iter(loader))  # used to hang: the forked pool had no threads
    assert torch.equal(first["enc9"], again["enc9"])


_REUSE_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from feature_store.export import _keep_freed_memory
    _keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(40_000_000, np.uint8); del a   # 40 MB: above glibc's largest dynamic mmap threshold (32 MB)
f0 = faults()
a = np.ones(40_000_000, np.uint8); del a
print(faults() - f0)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_export_keeps_freed_memory_for_reuse():
    # the export's taps outlive the teacher's forward; freed memory must be reused, not faulted in again
    got = {mode: int(subprocess.run([sys.executable, "-c", _REUSE_PROBE, mode], capture_output=True, text=True,
                                    check=True, cwd=os.path.dirname(os.path.dirname(__file__))).stdout)
           for mode in ("default", "keep")}
    # glibc's default maps 40 MB afresh each time: faulted in again (4 KiB pages, or 2 MiB ones where numpy
    # asks for transparent huge pages: ≥ 20 faults either way); kept, it comes back from the heap
    assert got["default"] >= 20 and got["keep"] * 10 < got["default"], got
