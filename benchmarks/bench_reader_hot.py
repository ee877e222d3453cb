"""The reader's hot path in-process, against a raw per-sample memmap read of the same bytes.

    python -m benchmarks.bench_reader_hot [--n 64] [--rounds 5] [--workdir DIR]

The training process with 0 DataLoader workers calls ``FeatureStoreDataset.__getitems__`` for each batch
(16 random samples): one read per tap, each chunk's crc32c, the stored float16 values as tensors (the
receiving side convolution casts them on the device). Compared, in the same round and order-interleaved,
on the default store (sharded, uncompressed):

* ``raw``: ``np.load(mmap_mode='r')[i]`` per sample per tap of the same float16 bytes, stacked, as torch
  tensors — the same values with no check (the practical limit);
* ``engine``: ``SplitArrays.read_taps`` — the shard files' batch read, one array per tap (each chunk's
  crc32c was checked on its first read in the process);
* ``engine, first read``: the same with every chunk's crc32c checked (the first epoch's reads);
* ``reader``: ``__getitems__`` as shipped (the engine read, finiteness proven by the checksums and the
  export's guarantee, one dict of tensors per sample) and the training loop's ``collate`` into the batch;
* ``reader + bit check``: plus ``reader.nonfinite_rows`` on every block — what the tensorstore and
  zarr-python engines pay (they read a missing chunk as NaN).

Each is timed with torch's default threads and with 1 thread, quiet and with a second process spinning
on one core (on a shared 2-core machine a two-thread torch op then stalls). ``vs_raw`` is raw's time over
the source's (> 1: faster than raw). Results: benchmarks/results/reader_hot.json.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_export import bench_dataset, bench_teacher, export_cli
from benchmarks.bench_reader import write_raw
from benchmarks.common import environment, print_table, write_results
from shared.data.batch import collate

BATCH = 16
BATCHES = 12  # per timing


def _spin(stop):
    while not stop.is_set():
        pass


def _raw_batch(maps, idx):
    return {t: torch.from_numpy(np.stack([m[i] for i in idx])) for t, m in maps.items()}


def _time(fn, batches) -> float:
    fn(batches[0])  # warm: handles open, pages cached
    t0 = time.perf_counter()
    for idx in batches:
        fn(idx)
    return (time.perf_counter() - t0) / len(batches)


def main(argv=None) -> int:
    import feature_store.reader as R

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_reader_hot_"))
    ckpt, data = bench_teacher(work), bench_dataset(work, a.n)
    store = work / "default.zarr"
    if not (store / "zarr.json").exists():
        export_cli(ckpt, data, store)
    raw_dir = work / "raw"
    if not raw_dir.exists():
        write_raw(store, raw_dir)
    ds = R.FeatureStoreDataset(store, "train")
    maps = {t: np.load(raw_dir / f"{t}.npy", mmap_mode="r") for t in ds.taps}
    rng = np.random.default_rng(0)
    default_threads = torch.get_num_threads()
    def reader_checked(idx):  # the same reads, with the check the reader makes when the engine proves nothing
        arrays = ds._open()
        arrays.engine = "shard files, checked"
        try:
            return collate(ds.__getitems__(idx))
        finally:
            arrays.engine = "shard files"

    def first_read(idx):  # forget which chunks were checked: every crc32c is computed again
        for files in ds._open()._direct.values():
            for checked in files._checked.values():
                checked[:] = bytes(len(checked))
            for got in files._maps.values():
                if got is not None:
                    got[3][:] = [None] * len(got[3])
        return ds._open().read_taps(idx)

    sources = {"raw": lambda idx: _raw_batch(maps, idx), "engine": lambda idx: ds._open().read_taps(idx),
               "engine, first read": first_read,
               "reader": lambda idx: collate(ds.__getitems__(idx)), "reader + bit check": reader_checked}
    assert ds.engine == "shard files"
    times = {}
    for load in ("quiet", "one core busy"):
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,), daemon=True) if load != "quiet" else None
        if spinner:
            spinner.start()
        try:
            for threads in (default_threads, 1):
                torch.set_num_threads(threads)
                for r in range(a.rounds):
                    batches = [rng.choice(ds.n, BATCH, replace=False).tolist() for _ in range(BATCHES)]
                    order = list(sources) if r % 2 == 0 else list(sources)[::-1]
                    for name in order:
                        times.setdefault((load, threads, name), []).append(_time(sources[name], batches))
        finally:
            if spinner:
                stop.set()
                spinner.join()
            torch.set_num_threads(default_threads)
    rows, results = [], {}
    nbytes = sum(int(np.prod(m.shape[1:])) * m.dtype.itemsize for m in maps.values())
    for (load, threads, name), ts in times.items():
        t = statistics.median(ts)
        t_raw = statistics.median(times[(load, threads, "raw")])
        key = f"{load}, {threads} thread{'s' if threads > 1 else ''}"
        results.setdefault(key, {})[name] = {"ms_per_batch": t * 1e3, "MB_s": BATCH * nbytes / t / 1e6,
                                             "vs_raw": t_raw / t}
        rows.append({"load": load, "torch threads": threads, "source": name, "ms/batch": f"{t * 1e3:.2f}",
                     "MB/s": f"{BATCH * nbytes / t / 1e6:.0f}", "vs_raw": f"{t_raw / t:.2f}"})
    print_table(rows, title=f"Reader hot path, in-process, batch {BATCH} of {a.n} samples ({nbytes / 1e6:.2f} MB "
                            f"float16 per sample), median of {a.rounds} rounds")
    write_results("reader_hot", {"n": a.n, "batch": BATCH, "rounds": a.rounds, "bytes_per_sample": nbytes,
                                 "default_threads": default_threads, "results": results}, environment())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
