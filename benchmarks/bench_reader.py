"""Feature-store reader throughput through a PyTorch DataLoader, against a raw .npy memmap and a live teacher.

    python -m benchmarks.bench_reader [--small] [--workdir DIR] [--rounds R] [--epochs E]

Default geometry (taps enc144 8×144×144, enc36 24×36×36, enc9 49×9×9 and the dec… twins; 0.80 MB
per sample in float16).  One split of N samples (256, or 64 with ``--small``) is exported with the
export CLI four times: codec none / lz4 × unsharded / ``--shard-size 64``.  Every source yields
``{tap: float32 tensor}`` per sample; DataLoader with batch size 16, ``shuffle=True`` (random
order), 0, 1 and 2 workers (persistent; one untimed warm-up epoch, then ``--epochs`` timed ones):

* raw npy memmap — the same decoded float16 bytes in one ``.npy`` per tap, ``np.load(mmap_mode='r')``,
  ``m[i]`` per sample: the practical limit;
* zarr-python engine — ``FeatureStoreDataset(engine="zarr")``, the fallback without tensorstore;
* FeatureStoreDataset — the reader as shipped (``__getitems__``: one tensorstore read per tap per
  batch), on each of the four stores;
* live teacher — computing the same taps from the μ-maps on the CPU (batch 16, this process), with
  torch's default threads and with 1 thread (2 threads stall badly when another process holds a core).

MB/s counts decoded float16 payload (0.80 MB per sample).  ``vs_raw`` is the ratio to the raw
memmap with the same number of workers in the same round (median over ``--rounds`` interleaved
rounds).  Target: FeatureStoreDataset ≥ 0.5× raw, default (sharded) and lz4 stores, 0 and 2 workers.  The page
cache is warm for every source (the stores were just written), i.e. this measures the CPU cost of
reading, not the disk.  While loaders are timed this process runs torch with ``--loader-threads``
(1): on a shared 2-core machine a 2-thread ``torch.stack`` in the 0-worker collate stalls whenever
another process takes a core, which would measure the machine's load, not the reader.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks.bench_export import bench_dataset, bench_teacher, export_cli
from benchmarks.common import environment, print_table, write_results
from feature_store.reader import FeatureStoreDataset

TARGET_VS_RAW = 0.5
BATCH = 16
STORES = [("none", 0), ("lz4", 0), ("none", 64), ("lz4", 64)]


class RawNpyDataset(Dataset):
    """The same decoded bytes from one .npy memmap per tap (opened lazily per process)."""

    def __init__(self, folder: Path, taps: list[str]):
        self.folder, self.taps = Path(folder), list(taps)
        self.n = np.load(self.folder / f"{self.taps[0]}.npy", mmap_mode="r").shape[0]
        self._maps = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self._maps is None:
            self._maps = {t: np.load(self.folder / f"{t}.npy", mmap_mode="r") for t in self.taps}
        return {t: torch.from_numpy(np.asarray(m[i], dtype=np.float32)) for t, m in self._maps.items()}

    def __getstate__(self):
        return {**self.__dict__, "_maps": None}


class MuMaps(Dataset):
    def __init__(self, data_dir):
        from shared.data.dataset_io import open_dataset

        self.data = open_dataset(data_dir, check_finite=False)
        self.n = self.data.split("train").n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.data.split("train").attenMap[i], dtype=np.float32))


def write_raw(store: Path, out: Path) -> Path:
    """Decode every tap of the store's train split into ``out/<tap>.npy``."""
    import zarr

    out.mkdir(parents=True, exist_ok=True)
    g = zarr.open_group(str(store), mode="r")["train"]
    for tap in zarr.open_group(str(store), mode="r").attrs["taps"]:
        np.save(out / f"{tap}.npy", np.asarray(g[tap][:]))
    return out


def loader_rate(make_ds, workers: int, epochs: int) -> float:
    """samples/s over ``epochs`` timed epochs after one warm-up epoch (a fresh dataset object each call,
    so no reader state opened in this process is inherited by forked workers)."""
    ds = make_ds()
    dl = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                    generator=torch.Generator().manual_seed(0),  # forkserver, as training: tensorstore and fork
                    multiprocessing_context="forkserver" if workers else None)
    for _ in dl:  # warm-up: start workers, open stores
        pass
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for b in dl:
            n += next(iter(b.values())).shape[0] if isinstance(b, dict) else b.shape[0]
    dt = time.perf_counter() - t0
    del dl
    return n / dt


def teacher_rate(ckpt: Path, data: Path, epochs: int, threads: int) -> float:
    from shared.models.frozen import load_frozen

    torch.set_num_threads(threads)
    teacher = load_frozen(ckpt, kind="teacher", direction="IS")

    ds = MuMaps(data)
    dl = DataLoader(ds, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0))

    @torch.inference_mode()
    def epoch():
        k = 0
        for mu in dl:
            _, taps = teacher.forward_taps(mu * teacher.input_scale)
            k += mu.shape[0]
        return k

    epoch()
    t0 = time.perf_counter()
    n = sum(epoch() for _ in range(epochs))
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="quick run: N=64, 1 round, 2 epochs")
    ap.add_argument("--n", type=int, help="samples in the split (default 256, 64 small)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds over all sources (default 2, 1 small)")
    ap.add_argument("--epochs", type=int, help="timed epochs per measurement (default 3, 2 small)")
    ap.add_argument("--workers", default="0,1,2", help="DataLoader worker counts")
    ap.add_argument("--loader-threads", type=int, default=1,
                    help="torch threads of this process while timing loaders (collation of 0-worker runs; "
                         "workers always use 1); the live teacher is timed with torch's default and with 1")
    ap.add_argument("--workdir", help="keep data/teacher/stores here (default: a temp dir, removed)")
    ap.add_argument("--name", help="results file benchmarks/results/<name>.json (default reader[_small])")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    n = args.n or (64 if args.small else 256)
    rounds = args.rounds or (1 if args.small else 2)
    epochs = args.epochs or (2 if args.small else 3)
    worker_counts = [int(w) for w in args.workers.split(",")]
    tmp = None
    workdir = Path(args.workdir) if args.workdir else Path(tmp := tempfile.mkdtemp(prefix="bench_reader_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        ckpt = bench_teacher(workdir)
        data = bench_dataset(workdir, n)
        stores = {}
        for codec, shard in STORES:
            label = f"{codec}, " + (f"shard {shard}" if shard else "unsharded")
            path = workdir / f"reader_{codec}_{shard}_n{n}.zarr"
            if not (path / "zarr.json").exists():
                export_cli(ckpt, data, path, "--codec", codec, "--shard-size", str(shard))
            stores[label] = path
        default = stores["none, shard 64"]
        raw_dir = workdir / f"raw_n{n}"
        if not raw_dir.exists():
            write_raw(default, raw_dir)
        taps = list(FeatureStoreDataset(default, "train").taps)
        nbytes = sum(int(np.prod(np.load(raw_dir / f"{t}.npy", mmap_mode="r").shape[1:])) * 2 for t in taps)
        print(f"[bench_reader] {len(stores)} stores of {n} samples ready in {time.perf_counter() - t0:.0f} s "
              f"({workdir}); {nbytes / 1e6:.2f} MB/sample float16", flush=True)

        sources = {"raw npy memmap": lambda: RawNpyDataset(raw_dir, taps),
                   "zarr-python engine (none, shard 64)": lambda: FeatureStoreDataset(default, "train", engine="zarr")}
        for label, path in stores.items():
            sources[f"FeatureStoreDataset ({label})"] = (lambda p=path: FeatureStoreDataset(p, "train"))
        rates = {(s, w): [] for s in sources for w in worker_counts}
        ratios = {(s, w): [] for s in sources for w in worker_counts}
        default_threads = torch.get_num_threads()
        teacher = {default_threads: [], 1: []}
        for r in range(rounds):
            torch.set_num_threads(args.loader_threads)
            for w in worker_counts:
                got = {s: loader_rate(make, w, epochs) for s, make in sources.items()}
                for s, v in got.items():
                    rates[(s, w)].append(v)
                    ratios[(s, w)].append(v / got["raw npy memmap"])
            for th in teacher:
                teacher[th].append(teacher_rate(ckpt, data, epochs, th))
            torch.set_num_threads(default_threads)
            print(f"[bench_reader] round {r + 1}/{rounds} done", flush=True)

        rows = []
        for s in sources:
            for w in worker_counts:
                v = statistics.median(rates[(s, w)])
                rows.append({"source": s, "workers": w, "samples_s": v, "MB_s": v * nbytes / 1e6,
                             "vs_raw": statistics.median(ratios[(s, w)])})
        for th, vals in teacher.items():
            tv = statistics.median(vals)
            rows.append({"source": f"live teacher (CPU, this process, {th} torch thread{'s' if th > 1 else ''})",
                         "workers": 0, "samples_s": tv, "MB_s": tv * nbytes / 1e6,
                         "vs_raw": tv / statistics.median(rates[("raw npy memmap", 0)])})
        print_table(rows, title=f"Reader throughput, {n} samples, batch {BATCH}, shuffled "
                                f"(median of {rounds} round(s) × {epochs} epochs)", floatfmt=".3g")
        verdict = {"target_vs_raw": TARGET_VS_RAW}
        for w in (0, 2):
            if ("FeatureStoreDataset (none, shard 64)", w) in ratios:
                verdict[f"default_{w}_workers_vs_raw"] = statistics.median(ratios[("FeatureStoreDataset (none, shard 64)", w)])
                verdict[f"lz4_{w}_workers_vs_raw"] = statistics.median(ratios[("FeatureStoreDataset (lz4, shard 64)", w)])
        verdict["meets_target"] = all(v >= TARGET_VS_RAW for k, v in verdict.items() if k.endswith("_vs_raw") and k != "target_vs_raw")
        print_table([verdict], title="Target: FeatureStoreDataset (default and lz4 stores) vs raw memmap, 0 and 2 workers")
        results = {"n": n, "batch_size": BATCH, "rounds": rounds, "epochs": epochs, "bytes_per_sample": nbytes,
                   "rows": rows, "target": verdict}
        if not args.no_write:
            name = args.name or ("reader_small" if args.small else "reader")
            print(f"wrote {write_results(name, results, environment())}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
