"""Feature-store size: bytes per sample and compression ratio for each dtype × codec.

    python -m benchmarks.bench_store_size [--small] [--workdir DIR] [--ckpt best.pt --data DIR]

Exports the train split of N samples (128, or 32 with ``--small``) with the export CLI for
dtype float16 / float32 × codec none / lz4 / zstd (the default shards of 64 samples, plus float16
unsharded, ``--shard-size 0``, for the none and lz4 codecs) and reports, per sample:

* ``payload_kb``: decoded size (values × itemsize);
* ``stored_kb``: bytes of the tap arrays' chunk/shard files (apparent size; metadata excluded);
* ``on_disk_kb``: allocated blocks of those files (``st_blocks``; small chunk files round up to the block);
* ``ratio``: payload / stored (compression ratio); ``vs_f16_none``: stored / stored of float16+none;
* ``files_per_64``: data files of the split per 64 samples (all taps).

By default the teacher is the benchmark's 1-epoch teacher (tuned default config, default
geometry).  Untrained features compress differently from trained ones: pass ``--ckpt`` and
``--data`` of a real run for the numbers that matter.  Results go to
benchmarks/results/<--name>.json (default ``store_size``, or ``store_size_small``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench_export import bench_dataset, bench_teacher, export_cli
from benchmarks.common import environment, print_table, write_results

CONFIGS = [(dtype, codec, 64) for dtype in ("float16", "float32") for codec in ("none", "lz4", "zstd")] + \
          [("float16", "none", 0), ("float16", "lz4", 0)]


def tap_file_bytes(store: Path, split: str, taps) -> tuple[int, int, int]:
    """(apparent bytes, allocated bytes, number of files) of the data files of the given tap arrays."""
    apparent = allocated = count = 0
    for tap in taps:
        for dirpath, _, files in os.walk(Path(store) / split / tap):
            for f in files:
                if f == "zarr.json":
                    continue
                st = os.stat(os.path.join(dirpath, f))
                apparent += st.st_size
                allocated += st.st_blocks * 512
                count += 1
    return apparent, allocated, count


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="quick run: N=32")
    ap.add_argument("--n", type=int, help="samples (default 128, 32 small); ignored with --data")
    ap.add_argument("--ckpt", help="teacher checkpoint (default: a 1-epoch benchmark teacher)")
    ap.add_argument("--data", help="dataset folder (its train split is exported; default: synthetic N samples)")
    ap.add_argument("--workdir", help="keep data/teacher/stores here (default: a temp dir, removed)")
    ap.add_argument("--keep-stores", action="store_true", help="do not delete each store after measuring it")
    ap.add_argument("--name", help="results file benchmarks/results/<name>.json (default store_size[_small])")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.ckpt and not args.data:
        ap.error("--ckpt needs --data (a dataset of the teacher's geometry)")
    n = args.n or (32 if args.small else 128)
    tmp = None
    workdir = Path(args.workdir) if args.workdir else Path(tmp := tempfile.mkdtemp(prefix="bench_store_size_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        import zarr

        ckpt = Path(args.ckpt) if args.ckpt else bench_teacher(workdir)
        data = Path(args.data) if args.data else bench_dataset(workdir, n)
        rows = []
        for dtype, codec, shard in CONFIGS:
            store = workdir / f"size_{dtype}_{codec}_{shard}.zarr"
            t0 = time.perf_counter()
            export_cli(ckpt, data, store, "--dtype", dtype, "--codec", codec, "--shard-size", str(shard))
            wall = time.perf_counter() - t0
            root = zarr.open_group(str(store), mode="r")
            taps, N = root.attrs["taps"], root.attrs["splits"]["train"]["n"]
            payload = sum(root["train"][t].nbytes for t in taps)
            apparent, allocated, files = tap_file_bytes(store, "train", taps)
            rows.append({"dtype": dtype, "codec": codec, "shard": shard or "-", "samples": N,
                         "payload_kb": payload / N / 1024, "stored_kb": apparent / N / 1024,
                         "on_disk_kb": allocated / N / 1024, "ratio": payload / apparent,
                         "files_per_64": files / N * 64,
                         "export_wall_s": wall})
            print(f"[bench_store_size] {dtype} {codec} shard {shard or '-'}: {apparent / N / 1024:.0f} KiB/sample",
                  flush=True)
            if not args.keep_stores:
                shutil.rmtree(store, ignore_errors=True)
        base = next(r["stored_kb"] for r in rows if (r["dtype"], r["codec"], r["shard"]) == ("float16", "none", 64))
        for r in rows:
            r["vs_f16_none"] = r["stored_kb"] / base
        print_table(rows, title=f"Store size per sample ({rows[0]['samples']} samples; KiB)", floatfmt=".4g")
        results = {"ckpt": str(ckpt) if args.ckpt else "benchmark 1-epoch teacher", "rows": rows}
        if not args.no_write:
            name = args.name or ("store_size_small" if args.small else "store_size")
            print(f"wrote {write_results(name, results, environment())}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
