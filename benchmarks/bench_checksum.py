"""What the per-chunk crc32c checksum costs: the store's layout with and without it, and raw files.

    python -m benchmarks.bench_checksum [--samples N] [--rounds R]

Six float16 taps of the default geometry (0.80 MB per sample), one chunk per sample per tap, the
way ``feature_store.layout.create_split`` makes them, written once with the shipped codecs
(``compressors("none")`` = crc32c only) and once without any bytes codec.  Timed, interleaved
over ``--rounds`` rounds (median): writing all samples, and reading all taps of every sample in
random order through the shipped reader's per-sample path (``FeatureStoreDataset.get``-style
``a[i]`` per tap).  The physical baseline is a plain file per sample and tap holding the same
bytes (write: ``open().write``; read: ``np.fromfile``).  Results: benchmarks/results/checksum.json.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from benchmarks.common import environment, print_table, write_results
from feature_store.layout import compressors

TAPS = {"enc144": (8, 144, 144), "enc36": (24, 36, 36), "enc9": (49, 9, 9),
        "dec9": (49, 9, 9), "dec36": (24, 36, 36), "dec144": (8, 144, 144)}


def _make(root: Path, n: int, checksum: bool):
    g = zarr.open_group(str(root), mode="w")
    return {t: g.create_array(t, shape=(n, *s), chunks=(1, *s), dtype="float16", fill_value=np.nan,
                              compressors=compressors("none") if checksum else None) for t, s in TAPS.items()}


def _write_zarr(arrays, data):
    for t, a in arrays.items():
        for i in range(len(data[t])):
            a[i] = data[t][i]


def _read_zarr(arrays, order):
    for i in order:
        for a in arrays.values():
            np.asarray(a[i], dtype=np.float32)


def _write_raw(folder: Path, data):
    for t, x in data.items():
        (folder / t).mkdir(parents=True, exist_ok=True)
        for i in range(len(x)):
            with open(folder / t / str(i), "wb") as f:
                f.write(x[i].tobytes())


def _read_raw(folder: Path, order):
    for i in order:
        for t, s in TAPS.items():
            np.fromfile(folder / t / str(i), dtype=np.float16).reshape(s).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--name", default="checksum")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    data = {t: rng.standard_normal((a.samples, *s)).astype(np.float16) for t, s in TAPS.items()}
    mb = sum(x.nbytes for x in data.values()) / 1e6
    times = {k: [] for k in ("write_crc", "write_plain", "write_raw", "read_crc", "read_plain", "read_raw")}
    work = Path(tempfile.mkdtemp(prefix="bench_checksum_"))
    try:
        for r in range(a.rounds):
            order = rng.permutation(a.samples).tolist()
            for kind in ("crc", "plain", "raw"):  # write then read each, same order within a round
                folder = work / f"{kind}{r}"
                t0 = time.perf_counter()
                if kind == "raw":
                    _write_raw(folder, data)
                else:
                    arrays = _make(folder, a.samples, kind == "crc")
                    _write_zarr(arrays, data)
                times[f"write_{kind}"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _read_raw(folder, order) if kind == "raw" else _read_zarr(arrays, order)
                times[f"read_{kind}"].append(time.perf_counter() - t0)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for op in ("write", "read"):
        for kind in ("crc", "plain", "raw"):
            rows.append({"op": op, "source": {"crc": "zarr + crc32c (shipped)", "plain": "zarr, no bytes codec",
                                              "raw": "plain files (limit)"}[kind],
                         "samples_per_s": a.samples / med[f"{op}_{kind}"], "MB_per_s": mb / med[f"{op}_{kind}"],
                         "vs_raw": med[f"{op}_raw"] / med[f"{op}_{kind}"],
                         "vs_no_checksum": med[f"{op}_plain"] / med[f"{op}_{kind}"]})
    print_table(rows, title=f"checksum cost, {a.samples} samples x 6 taps float16 ({mb / a.samples:.2f} MB/sample), "
                            f"median of {a.rounds} rounds")
    path = write_results(a.name, {"samples": a.samples, "rounds": a.rounds, "mb_per_sample": mb / a.samples,
                                  "rows": rows, "seconds": times}, environment())
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
