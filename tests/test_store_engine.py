"""The store at the I/O limit: shards by default, one engine call per tap per batch (plain shards
read straight from their files, tensorstore, zarr-python when it is missing), every path writing and
reading the same Zarr, damage named on every path, block shuffle."""
import math

import numpy as np
import torch
import pytest
import zarr

from feature_store import FeatureStoreDataset, StoreError, open_store
from feature_store import engine as E
from feature_store.export import main as export_main
from feature_store.verify import main as verify_main
from phase2_student.train import main as student_main
from shared.cli import run_main
from shared.train.loop import EpochSampler

from tests.test_bad_inputs import _fails_cleanly


def _export(teacher, data, store, *extra):
    return ["--ckpt", str(teacher), "--data", str(data), "--out", str(store), "--batch-size", "4", "--quiet", *extra]


def _arrays(store, split):
    g = zarr.open_group(str(store), mode="r")[split]
    return {t: np.asarray(g[t][:]) for t in g.array_keys() if t != "_done"}


def test_default_export_writes_one_file_per_tap_per_64_samples(tiny_teacher, tiny_data, tmp_path):
    store = tmp_path / "s.zarr"
    assert run_main(export_main, _export(tiny_teacher, tiny_data, store)) == 0
    m = open_store(store)
    assert m.shard_size == 64 and m.range_size == 64
    for split, state in m.splits.items():
        files = [p for t in m.taps for p in (store / split / t / "c").rglob("*") if p.is_file()]
        assert len(files) == len(m.taps) * math.ceil(state.n / 64)  # 6 data files per 64 samples per split


def test_every_engine_writes_and_reads_the_same_store(tiny_teacher, tiny_data, tmp_path):
    stores = {}
    for engine in ("zarr", "tensorstore", "auto"):  # auto: whole plain shards written straight to their files
        stores[engine] = tmp_path / f"{engine}.zarr"
        assert run_main(export_main, _export(tiny_teacher, tiny_data, stores[engine], "--engine", engine,
                                             "--shard-size", "8", "--splits", "train")) == 0
    ref = _arrays(stores["zarr"], "train")
    for engine in ("tensorstore", "auto"):
        got = _arrays(stores[engine], "train")
        assert all(np.array_equal(ref[t], got[t]) for t in ref), engine  # zarr-python reads their shards
    idx = [7, 2, 2, 19, 0]  # unsorted, repeated, across shards: rows come back in the order asked
    for store in stores.values():
        for engine in ("zarr", "tensorstore", "auto"):
            ds = FeatureStoreDataset(store, "train", engine=engine)
            assert ds.engine == {"auto": "shard files"}.get(engine, engine)  # auto: plain shards read directly
            batch = ds.__getitems__(idx)
            for tap in ds.taps:
                assert np.array_equal(np.stack([b[tap].numpy() for b in batch]), ref[tap][idx].astype(np.float32))


def test_without_tensorstore_everything_falls_back_to_zarr_python(tiny_store, monkeypatch):
    monkeypatch.setattr(E, "_tensorstore", lambda: None)
    assert E.resolve_engine("auto", tiny_store) == "zarr"
    assert FeatureStoreDataset(tiny_store, "train", engine="zarr").engine == "zarr"
    with pytest.raises(StoreError, match="tensorstore package is not installed"):
        E.resolve_engine("tensorstore", tiny_store)
    ds = FeatureStoreDataset(tiny_store, "train")
    assert ds.engine == "shard files" and set(ds.get(3)) == set(ds.taps)  # plain shards need no engine
    monkeypatch.undo()
    assert E.resolve_engine("auto", "memory://s.zarr") == "zarr"  # URLs: zarr-python (fsspec)
    with pytest.raises(StoreError, match="must be one of"):
        E.resolve_engine("fast", tiny_store)


def _inner_chunk(store, split, tap, i, shard):
    """(shard file, offset, nbytes) of sample i's chunk: the shard index (uint64 offset/nbytes pairs
    and a crc32c) ends the file."""
    path = store / split / tap / "c" / str(i // shard) / "0" / "0" / "0"
    raw = path.read_bytes()
    index = np.frombuffer(raw[-(16 * shard + 4):-4], dtype="<u8").reshape(shard, 2)
    off, n = index[i % shard]
    return path, int(off), int(n)


@pytest.mark.parametrize("engine", ["auto", "tensorstore", "zarr"])
def test_a_damaged_chunk_inside_a_shard_is_named(engine, tiny_store, tmp_path, capsys):
    import shutil

    store = tmp_path / "s.zarr"
    shutil.copytree(tiny_store, store)
    path, off, n = _inner_chunk(store, "train", "dec36", 5, open_store(store).shard_size)
    raw = bytearray(path.read_bytes())
    raw[off:off + n] = bytes(n)
    path.write_bytes(bytes(raw))
    ds = FeatureStoreDataset(store, "train", engine=engine)
    ds.get(4)  # its neighbour in the same shard is fine
    with pytest.raises(StoreError, match=rf"{store}: train/dec36 sample 5: damaged chunk"):
        ds.__getitems__([3, 5, 7])
    assert run_main(verify_main, ["--features", str(store), "--full"]) == 2
    assert "train/dec36: sample(s) 5 damaged chunk" in capsys.readouterr().out


def test_range_size_only_without_shards(tiny_teacher, tiny_data, tmp_path, capsys):
    _fails_cleanly(export_main, _export(tiny_teacher, tiny_data, tmp_path / "s", "--range-size", "8"), capsys,
                   "--range-size applies only with --shard-size 0")
    assert not (tmp_path / "s").exists()


def test_block_shuffle_reads_few_shards_per_stretch_and_is_seeded():
    n, block = 200, 16
    s = EpochSampler(n, seed=3, block=block, window=4)
    s.epoch = 2
    order = list(s)
    assert sorted(order) == list(range(n)) and order == list(s)  # a permutation, repeatable
    s.epoch = 3
    assert list(s) != order
    blocks = np.array(order) // block
    plain = np.array(list(EpochSampler(n, seed=3))) // block
    # any 32 consecutive samples come from at most two windows of 4 shards; a plain shuffle touches most shards
    assert max(len(set(blocks[k:k + 32])) for k in range(n - 32)) <= 8
    assert min(len(set(plain[k:k + 32])) for k in range(n - 32)) >= 9


def test_student_block_shuffle_needs_a_sharded_store(tiny_data, tiny_store, tiny_teacher, tmp_path, capsys):
    import json

    from tests.conftest import tiny_student_config

    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_student_config()))
    flat = tmp_path / "flat.zarr"
    assert run_main(export_main, _export(tiny_teacher, tiny_data, flat, "--shard-size", "0")) == 0
    args = ["--data", str(tiny_data), "--config", str(cfg), "--epochs", "1", "--inject", "144", "--quiet",
            "--block-shuffle"]
    _fails_cleanly(student_main, args + ["--features", str(flat), "--out", str(tmp_path / "a")], capsys, "is not sharded")
    assert run_main(student_main, args + ["--features", str(tiny_store), "--out", str(tmp_path / "b")]) == 0


def test_a_batch_of_features_is_one_copy_of_the_stored_bytes(tiny_store):
    """The reader's rows of one batch are views of one block; collate hands out that block (what
    default_collate would have copied), equal to default_collate's result; rows of different blocks
    are stacked as usual."""
    from torch.utils.data import default_collate

    from shared.data.batch import collate

    ds = FeatureStoreDataset(tiny_store, "train")
    items = ds.__getitems__([5, 0, 3, 3])
    batch = collate(items)
    for tap in ds.taps:
        assert batch[tap].data_ptr() == items[0][tap].data_ptr()  # no copy
        assert torch.equal(batch[tap], default_collate(items)[tap])
    mixed = [ds[1], ds[2]]  # two reads: two blocks
    got = collate(mixed)
    assert all(torch.equal(got[t], default_collate(mixed)[t]) for t in ds.taps)
    assert got[ds.taps[0]].data_ptr() != mixed[0][ds.taps[0]].data_ptr()
    assert torch.equal(collate([torch.arange(3), torch.arange(3)]), torch.stack([torch.arange(3)] * 2))


def test_a_shard_written_batch_by_batch_is_the_shard_written_at_once(tiny_store, tmp_path):
    import shutil

    src = tiny_store / "train" / "enc36"
    files = E.ShardFiles.open(src)
    rows = files.read(np.arange(files.shard[0]))  # the first shard's samples, as exported
    folders = {k: tmp_path / k for k in ("whole", "parts", "short")}
    for d in folders.values():
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("c"))  # the array's metadata, no chunks
    E.ShardFiles.open(folders["whole"]).write(0, rows)
    with E.ShardFiles.open(folders["parts"]).writer(0, len(rows)) as w:
        w.append(rows[:1])
        w.append(rows[1:])
    shard = "c/0/0/0/0"
    assert (folders["parts"] / shard).read_bytes() == (folders["whole"] / shard).read_bytes() \
        == (src / shard).read_bytes()
    w = E.ShardFiles.open(folders["short"]).writer(0, len(rows))
    w.append(rows[:1])
    with pytest.raises(ValueError, match="1 of the shard's"):
        w.commit()  # a shard missing samples never appears, and no temp file stays
    assert not [p for p in folders["short"].rglob("*") if p.is_file() and p.name != "zarr.json"]
