"""Store engines against the bytes: zarr-python, zarr-python with the zarrs (Rust) codec pipeline, and
tensorstore, writing and reading the feature store's layout, each as a ratio to raw files of the
same bytes measured in the same round.

    python -m benchmarks.bench_engines [--n 256] [--rounds 3] [--batch 16]

Layout: the six default taps (enc/dec at 144, 36, 9; 0.80 MB per sample in float16), one chunk
per sample with a crc32c checksum, codec none, in shards of 64 samples or unsharded.  The values
are a real teacher's scale of random numbers (incompressible: the codec-none case).

* write — a whole shard per call (what the export does), for every tap, the arrays created
  beforehand (the export creates them once per split); baseline: ``np.save`` of the same arrays
  (one file per tap per 64 samples); no engine and no baseline calls ``fsync``;
* read — random batches (``--batch`` samples drawn without replacement) of all taps; per engine
  ``per sample`` (one call per sample and tap, through a thread pool of 2, what the reader did) and
  ``batched`` (one call per tap per batch; for tensorstore ``SplitArrays.read_taps``, all taps in
  flight at once), and ``shard files`` — the shipped reader of uncompressed shards, which maps the
  shard files and checks each chunk's crc32c itself; baseline: a ``.npy`` memmap per tap, ``m[sorted idx]``.

The page cache is warm for reads (the stores were just written): this is the CPU cost of the
engines, not of the disk.  Results: ``benchmarks/results/engines.json``.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks.common import environment, print_table, write_results

TAPS = {"enc144": (8, 144, 144), "dec144": (8, 144, 144), "enc36": (24, 36, 36), "dec36": (24, 36, 36),
        "enc9": (49, 9, 9), "dec9": (49, 9, 9)}
SHARD = 64


def _data(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {t: rng.standard_normal((n, *s), dtype=np.float32).astype(np.float16) for t, s in TAPS.items()}


def _zarr_arrays(path: Path, n: int, shard: int):
    import zarr

    from feature_store.layout import compressors

    g = zarr.open_group(str(path), mode="w").require_group("train")
    return {t: g.create_array(t, shape=(n, *s), chunks=(1, *s), shards=(shard, *s) if shard else None,
                              dtype="float16", fill_value=np.nan, compressors=compressors("none"))
            for t, s in TAPS.items()}


def _available(engine: str) -> bool:
    import importlib.util

    return engine == "zarr" or importlib.util.find_spec(engine) is not None


def _zarr_pipeline(engine: str):
    import zarr

    path = "zarrs.ZarrsCodecPipeline" if engine == "zarrs" else "zarr.core.codec_pipeline.BatchedCodecPipeline"
    zarr.config.set({"codec_pipeline.path": path})


def write_zarr(path: Path, data, shard: int, engine: str) -> float:
    """Seconds to write every tap (the arrays are created first, untimed: the export does it once)."""
    _zarr_pipeline(engine)
    n = len(next(iter(data.values())))
    arrays = _zarr_arrays(path, n, shard)
    step = shard or 1
    t0 = time.perf_counter()
    for t, a in arrays.items():
        for s in range(0, n, step):
            a[s:s + step] = data[t][s:s + step]
    return time.perf_counter() - t0


def write_engine(path: Path, data, shard: int, engine: str = "tensorstore") -> float:
    """Arrays created by zarr-python (untimed), a shard of every tap per call through
    ``feature_store.engine``: ``tensorstore``, or ``auto`` (the shipped path: whole plain shards
    written straight to their files)."""
    from feature_store.engine import SplitArrays

    n = len(next(iter(data.values())))
    _zarr_pipeline("zarr")
    _zarr_arrays(path, n, shard)
    arrays = SplitArrays(path, "train", list(TAPS), engine, write=True)
    step = shard or 1
    t0 = time.perf_counter()
    for s in range(0, n, step):
        arrays.write(s, {t: a[s:s + step] for t, a in data.items()})
    return time.perf_counter() - t0


def write_raw(path: Path, data, shard: int) -> float:
    path.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(data.values())))
    step = shard or SHARD
    t0 = time.perf_counter()
    for t, a in data.items():
        for s in range(0, n, step):
            np.save(path / f"{t}_{s}.npy", a[s:s + step])
    return time.perf_counter() - t0


def readers(path: Path, raw: Path, engine: str, pool: ThreadPoolExecutor):
    """{label: read(indices) -> {tap: array}} for one store."""
    import zarr

    out = {}
    if engine == "tensorstore":
        from feature_store.engine import SplitArrays

        shipped = SplitArrays(path, "train", list(TAPS), "tensorstore")
        out["tensorstore batched"] = shipped.read_taps
        direct = SplitArrays(path, "train", list(TAPS))  # auto: what FeatureStoreDataset.__getitems__ calls
        if direct.engine == "shard files":
            out["shard files batched (shipped)"] = direct.read_taps
        out["tensorstore per sample"] = lambda idx: {t: np.stack(list(pool.map(
            lambda i, t=t: shipped.read(t, [i])[0], idx))) for t in TAPS}
    else:
        _zarr_pipeline(engine)
        g = zarr.open_group(str(path), mode="r")["train"]
        arrays = {t: g[t] for t in TAPS}
        out[f"{engine} batched"] = lambda idx: {t: a.get_orthogonal_selection((np.sort(idx),))
                                                for t, a in arrays.items()}
        out[f"{engine} per sample"] = lambda idx: {t: np.stack(list(pool.map(lambda i, a=a: a[int(i)], idx)))
                                                   for t, a in arrays.items()}
    return out


def raw_memmap(raw_one: Path):
    maps = {t: np.load(raw_one / f"{t}.npy", mmap_mode="r") for t in TAPS}
    return lambda idx: {t: np.asarray(m[np.sort(idx)]) for t, m in maps.items()}


def rate(read, n: int, batch: int, batches: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    plans = [rng.choice(n, batch, replace=False) for _ in range(batches)]
    read(plans[0])  # warm
    t0 = time.perf_counter()
    for idx in plans:
        read(idx)
    return batch * batches / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=256, help="samples per store")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    p.add_argument("--batch", type=int, default=16, help="samples per random read batch")
    p.add_argument("--batches", type=int, default=16, help="random batches per read measurement")
    p.add_argument("--name", default="engines", help="results file name")
    args = p.parse_args(argv)
    missing = [e for e in ("zarrs", "tensorstore") if not _available(e)]
    if missing:
        print(f"[bench_engines] not installed, left out: {', '.join(missing)} (pip install -e '.[bench]')")
    data = _data(args.n)
    nbytes = sum(a.nbytes for a in data.values())
    work = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    writes, reads = {}, {}
    pool = ThreadPoolExecutor(2)
    try:
        raw_one = work / "raw_one"
        raw_one.mkdir()
        for t, a in data.items():
            np.save(raw_one / f"{t}.npy", a)
        for r in range(args.rounds):
            for shard in (SHARD, 0):
                layout = f"shard {shard}" if shard else "unsharded"
                jobs = {"raw files": lambda d, s=shard: write_raw(d, data, s),
                        "zarr-python": lambda d, s=shard: write_zarr(d, data, s, "zarr"),
                        "zarrs": lambda d, s=shard: write_zarr(d, data, s, "zarrs"),
                        "tensorstore": lambda d, s=shard: write_engine(d, data, s)}
                if shard:
                    jobs["shard files (shipped)"] = lambda d, s=shard: write_engine(d, data, s, "auto")
                for name, job in jobs.items():
                    if not _available({"zarr-python": "zarr", "raw files": "zarr", "shard files (shipped)": "zarr"}.get(name, name)):
                        continue
                    d = work / f"{name.replace(' ', '_')}_{shard}"
                    shutil.rmtree(d, ignore_errors=True)
                    writes.setdefault((layout, name), []).append(args.n / job(d))
                base = raw_memmap(raw_one)
                reads.setdefault((layout, "raw memmap"), []).append(rate(base, args.n, args.batch, args.batches, r))
                for engine in [e for e in ("zarr", "zarrs", "tensorstore") if _available(e)]:
                    d = work / f"{'zarr-python' if engine == 'zarr' else engine}_{shard}"
                    for label, fn in readers(d, raw_one, engine, pool).items():
                        label = label.replace("zarr ", "zarr-python ")
                        reads.setdefault((layout, label), []).append(rate(fn, args.n, args.batch, args.batches, r))
                _zarr_pipeline("zarr")
        rows = []
        for kind, table, base in (("write", writes, "raw files"), ("read", reads, "raw memmap")):
            for (layout, name), vals in table.items():
                med = statistics.median(vals)
                ref = statistics.median(table[(layout, base)])
                rows.append({"op": kind, "layout": layout, "engine": name, "samples_per_s": round(med, 1),
                             "MB_per_s": round(med * nbytes / args.n / 1e6, 1), "vs_raw": round(med / ref, 3)})
        print_table(rows, title=f"store engines, {args.n} samples × {nbytes / args.n / 1e6:.2f} MB, "
                                f"median of {args.rounds} rounds")
        write_results(args.name, {"rows": rows, "n": args.n, "batch": args.batch, "rounds": args.rounds,
                                  "bytes_per_sample": nbytes // args.n}, environment())
    finally:
        pool.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
