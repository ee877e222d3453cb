"""Run the frozen teacher once over a dataset and write its taps into a Zarr feature store.

``frozenflow export --ckpt best.pt --data DIR --out STORE`` (scripts/export_features.sh).

Protocol (docs/DESIGN.md §5): preallocate → status "writing" → each worker takes disjoint, shard-aligned
sample ranges, skips ranges already flagged done, writes them whole, then flags them → on restart
orphaned ``*.partial`` files are deleted → finalise: every flag set, per-channel statistics,
status "complete".  Killing it at any moment and rerunning the same command yields the same arrays.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from shared.cli import new_parser, run_main
from shared.data.dataset_io import open_dataset
from shared.data.views import TeacherKind, TeacherRows, TeacherView
from shared.data.forward_check import quick_check
from shared.device import DEVICE_HELP, resolve_device
from shared.models.frozen import load_frozen

from . import layout as L
from .engine import ENGINE_HELP, ENGINES, SplitArrays, resolve_engine
from .manifest import IDENTITY_KEYS, open_store
from .reader import nonfinite_rows
from shared.errors import InputError


DEFAULT_SHARD = 64  # one file per tap per 64 samples: a 50,000-slice split is ~4,700 files, not 300,000
DEFAULT_RANGE = 32  # unsharded stores: samples per resumable unit
QUEUED_BATCHES = 3  # batches of taps computed ahead of the writer thread (float32: twice their stored bytes)


@dataclasses.dataclass
class ExportSpec:
    ckpt: str
    data: str
    store: str
    levels: list[int] = dataclasses.field(default_factory=lambda: list(L.LEVELS))
    splits: list[str] = dataclasses.field(default_factory=lambda: ["train", "val", "test"])
    dtype: str = "float16"
    codec: str = "none"
    shard_size: int | None = DEFAULT_SHARD  # samples per shard file; None/0: one chunk file per sample
    range_size: int | None = None  # unsharded only: samples per resumable unit (default 32)
    variants: str = "none"
    batch_size: int = 16
    device: str = "auto"
    threads: int | None = None  # torch threads per worker; float results depend on it (last bits)
    engine: str = "auto"  # how chunks are written (feature_store.engine)

    def __post_init__(self):
        if self.dtype not in L.DTYPES:
            raise L.StoreError(f"--dtype must be one of {list(L.DTYPES)} (bfloat16 is not readable by "
                               f"zarr-python/dask/xarray), got {self.dtype!r}")
        if self.variants not in L.VARIANTS:
            raise L.StoreError(f"--variants must be one of {list(L.VARIANTS)}, got {self.variants!r}")
        L.compressors(self.codec)
        if self.shard_size is not None and (isinstance(self.shard_size, bool) or self.shard_size < 0):
            raise L.StoreError(f"--shard-size must be ≥ 0 (0: a file per sample), got {self.shard_size}")
        if self.shard_size:
            if self.range_size not in (None, self.shard_size):
                raise L.StoreError("--range-size applies only with --shard-size 0: a sharded store's resumable "
                                   "unit is its shard")
            self.range_size = self.shard_size  # one writer owns whole shards
        else:
            self.shard_size, self.range_size = None, self.range_size or DEFAULT_RANGE
        if self.range_size < 1 or self.batch_size < 1:
            raise L.StoreError("--range-size and --batch-size must be positive")
        if not self.splits:
            raise L.StoreError("--splits names no split (expected e.g. train,val,test)")
        if self.threads is not None and self.threads < 1:
            raise L.StoreError(f"--threads must be ≥ 1, got {self.threads}")
        resolve_device(self.device)  # a bad device fails here, before the store is created
        resolve_engine(self.engine, self.store)

    @property
    def taps(self) -> list[str]:
        return L.taps_for(self.levels)


# ------------------------------------------------------------------ preparation
def _identity(spec: ExportSpec, teacher, data) -> dict:
    """What makes two exports interchangeable (manifest.IDENTITY_KEYS); a store differing in any is refused."""
    identity = {"format_version": L.FORMAT_VERSION, "teacher_sha256": teacher.sha256,
            "dataset_fingerprint": data.fingerprint(), "levels": list(spec.levels), "taps": spec.taps,
            "dtype": spec.dtype, "codec": spec.codec, "shard_size": spec.shard_size, "range_size": spec.range_size,
            "variants": spec.variants}
    assert tuple(identity) == IDENTITY_KEYS
    return identity


def prepare(spec: ExportSpec, overwrite: bool = False, log=print) -> list[tuple[str, int]]:
    """Create or reopen the store; returns the (split, range) pairs still to write."""
    teacher = load_frozen(spec.ckpt, kind="teacher")
    data = open_dataset(spec.data)
    teacher_kind = TeacherKind.of_checkpoint(teacher.meta)
    for split in spec.splits:
        TeacherRows(data, split, teacher_kind)  # unknown split, or an array the teacher reads missing → DataError naming it
    missing = [t for t in spec.taps if t not in teacher.tap_shapes]
    if missing:
        raise L.StoreError(f"--levels {','.join(map(str, spec.levels))} needs tap(s) {missing}, which the teacher's "
                           f"model spec ({teacher.spec.source}) does not declare; it has {sorted(teacher.tap_shapes)}")
    want = _identity(spec, teacher, data)
    kind, detail = L.existing_kind(spec.store)
    if kind == "foreign":
        raise L.StoreError(f"{spec.store}: exists and is not a feature store ({detail}); export writes only to a "
                           f"new or empty folder or its own store, even with --overwrite; choose another --out")
    if kind == "damaged" and not overwrite:
        raise L.StoreError(f"{spec.store}: damaged feature store ({detail}); pass --overwrite to replace it")
    if kind == "store":
        have = open_store(spec.store).identity()
        if have != want and overwrite:  # replace only a store made differently; an identical one is resumed
            kind, detail = "damaged", "made by another teacher, dataset or settings"
        elif have != want:
            diff = ", ".join(f"{k}: store has {have[k]!r}, this export {want[k]!r}" for k in want
                             if have[k] != want[k])
            raise L.StoreError(f"{spec.store}: existing store was made differently ({diff}); "
                               f"pass --overwrite to replace it")
    if kind == "store":
        root = L.open_root(spec.store, mode="r+")
        removed = L.remove_orphans(spec.store)
        if removed:
            log(f"[export] removed {removed} orphaned *.partial file(s) of an interrupted run")
    else:
        if kind == "damaged":
            log(f"[export] --overwrite: replacing {spec.store} ({detail})")
        root = L.create_root(spec.store, {**want, "teacher_config": teacher.config, "teacher_metrics": teacher.metrics,
                                          "teacher_model": teacher.meta.get("model"), "teacher_kind": teacher_kind.record(),
                                          "geometry": data.geometry.to_dict(), "created": _now(), "splits": {}})
    shapes = teacher.tap_shapes
    splits_state = dict(root.attrs.get("splits", {}))  # raw attrs: this is the writer's own record
    todo = []
    for split in spec.splits:
        n = data.split(split).n
        if split not in splits_state:
            L.create_split(root, split, n, {t: shapes[t] for t in spec.taps}, dtype=spec.dtype, codec=spec.codec,
                           shard_size=spec.shard_size, range_size=spec.range_size, variants=spec.variants)
            splits_state[split] = {"n": n, "status": "writing"}
            root.attrs["splits"] = splits_state
        if splits_state[split]["status"] == "complete":
            continue
        flags = L.done_flags(root, split)
        todo += [(split, r) for r in range(L.n_ranges(n, spec.range_size)) if not flags[r]]
    return todo


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------ the work
def _keep_freed_memory() -> None:
    """Have glibc's malloc keep what the process frees for reuse (large blocks from the heap, never trimmed).
    A batch's taps outlive its forward here (the writer thread converts them later), and with glibc's
    default thresholds freed blocks went back to the kernel and the next batch faulted them in again: 500–800
    page faults per sample, the teacher's forward alone included, against none kept
    (benchmarks/results/export_malloc.json).  Peak memory is unchanged: it only stops shrinking."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 1 << 30)
    mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1)


class RangeWriter:
    """Computes and writes whole ranges in a pipeline of three threads: one reads the next batch, the
    caller's runs the teacher, one converts each batch to the stored dtype, checks it and appends it to
    its shard's files (a shard appears whole, on commit), so the teacher's thread does nothing but the
    teacher.  All writing stays on that one thread (no tap-per-thread pool: a third busy thread takes turns
    with the teacher's on two cores), and what it calls lets go of the GIL while it works (numpy, torch,
    writev, the ``crc32c`` checksum)."""

    def __init__(self, spec: ExportSpec):
        _keep_freed_memory()
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.teacher = load_frozen(spec.ckpt, kind="teacher", device=self.device)
        self.data = open_dataset(spec.data, check_finite=False)  # checked in prepare()
        self.view = TeacherView.of_teacher(self.teacher, self.data)  # what it sees of a sample, as in training
        self._rows = {}  # split → TeacherRows
        self.root = L.open_root(spec.store, mode="r+")  # metadata and done flags: zarr-python
        self._arrays = {}  # split → engine.SplitArrays (chunk bytes)
        self.V = L.VARIANTS[spec.variants]
        self.dtype = np.dtype(spec.dtype)
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="export-read")
        # FIFO: a shard's conversions, then its write, then its flag. One torch thread for the conversion: a
        # two-thread elementwise op stalls whenever another process holds a core (set per thread in torch)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="export-write",
                                          initializer=torch.set_num_threads, initargs=(1,))
        self._pending, self._queued = [], []  # all work queued for the writer; the part holding taps
        self._shards = {}  # (split, start) → engine.ShardSink of the shard being written (writer thread only)
        self._batch = None  # the batch buffers (_batch_buffers)
        self.bytes_written = 0

    def _read(self, split, s0, s1) -> dict[str, torch.Tensor]:
        """The raw rows the teacher's input is made of (each sample's flips after it, sample-major)."""
        if split not in self._rows:
            self._rows[split] = TeacherRows(self.data, split, self.view.kind)
        return self._rows[split].read(s0, s1, self.V)

    @torch.inference_mode()
    def _forward(self, rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The taps of a batch as the teacher computes them (on its device)."""
        # the output is not stored: the pass stops once the last tap is computed
        _, taps = self.teacher.forward_taps(self.view.input(rows, self.device), taps=self.spec.taps,
                                            need_output=False)
        return taps

    @torch.inference_mode()
    def _store(self, taps: dict[str, torch.Tensor], split: str, s0: int, into: dict[str, np.ndarray] | None = None
               ) -> dict[str, np.ndarray]:
        """``taps`` in the stored dtype, written into ``into`` (the batch buffers) when given: the
        conversion is then the one copy.  Refuses values the stored dtype cannot hold."""
        out = {}
        for name in self.spec.taps:
            t = taps[name].float()
            # float16: convert first (|x| ≥ 65520 becomes ±inf) and check the stored bits once
            if into is not None:
                h = into[name].reshape(t.shape)
                torch.from_numpy(h).copy_(t)  # converts (and leaves a GPU) on the way in
            else:
                h = (t.half() if self.dtype == np.float16 else t).cpu().numpy()
            bad = nonfinite_rows(h)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                i = s0 + row // self.V
                if not bool(torch.isfinite(t[row]).all()):  # the data scan makes this rare: a teacher that overflows
                    raise L.StoreError(f"{self.spec.store}: teacher output {name} for {split} sample {i} is not finite "
                                       f"(its input rows are finite: the teacher itself overflows); nothing of "
                                       f"it was stored")
                raise L.StoreError(f"{self.spec.store}: {split} tap {name} sample {i} has |x| = "
                                   f"{float(t[row].abs().max()):g}, outside float16 range (65504); rerun with "
                                   f"--dtype float32")
            out[name] = h.reshape(-1, self.V, *h.shape[1:]) if self.V > 1 else h
        return out

    def _split_arrays(self, split) -> SplitArrays:
        if split not in self._arrays:
            self._arrays[split] = SplitArrays(self.spec.store, split, self.spec.taps, self.spec.engine, write=True,
                                              threads=1)  # on this (the writer's) thread: see the class
        return self._arrays[split]

    def _store_and_write(self, taps, split, s0) -> None:  # unsharded: each batch's chunk files as they come
        out = self._store(taps, split, s0)
        self._split_arrays(split).write(s0, out)
        self.bytes_written += sum(a.nbytes for a in out.values())  # this thread alone adds to it

    def _open_shard(self, split, start, rows) -> None:
        self._shards[(split, start)] = self._split_arrays(split).shard_sink(start, rows)

    def _store_batch(self, taps, split, start, s0, s1) -> None:
        """Convert a batch into the reused batch buffers and append it to its shard's files: the bytes go
        out while they are still in the cache, and only the last batch's write follows the last forward."""
        sink = self._shards.get((split, start))
        if sink is None:  # an earlier batch of this shard was refused: nothing more of it is written
            return
        try:
            out = self._store(taps, split, s0, self._batch_buffers(s1 - s0))
            sink.append(out)
        except BaseException:
            self._shards.pop((split, start)).abort()
            raise
        self.bytes_written += sum(a.nbytes for a in out.values())

    def _commit_shard(self, split, start, stores) -> None:
        for f in stores:  # the shard's batches (finished: FIFO); a refused one re-raises here, its shard dropped
            f.result()
        self._shards.pop((split, start)).commit()

    def _flag(self, split, r, writes):
        for f in writes:  # all already finished (one FIFO writer thread); re-raises a failed write
            f.result()
        self.root[split][L.DONE][r] = 1  # only after every sample of the range is on disk

    def _submit(self, fn, *args, holds_taps: bool = False):
        """Queue work for the writer thread.  At most ``QUEUED_BATCHES`` batches of taps wait for it (so
        memory stays bounded); opening, committing and flagging a shard never hold the teacher back."""
        f = self._writer.submit(fn, *args)
        self._pending.append(f)
        while self._pending and self._pending[0].done():  # finished: a failure surfaces now
            self._pending.pop(0).result()
        if holds_taps:
            self._queued.append(f)
            while len(self._queued) > QUEUED_BATCHES:
                self._queued.pop(0).result()
        return f

    def drain(self):
        while self._pending:
            self._pending.pop(0).result()
        self._queued.clear()

    def write_range(self, split: str, r: int, on_batch=None) -> None:
        """Compute a range and queue its conversions, its writes and then its done flag; the next range's
        compute overlaps with this range's writing."""
        n = self.data.split(split).n
        start, stop = L.range_bounds(r, n, self.spec.range_size)
        per_batch = max(1, self.spec.batch_size // self.V)
        bounds = [(s, min(stop, s + per_batch)) for s in range(start, stop, per_batch)]
        sharded = bool(self.spec.shard_size)
        writes, stores = [], []
        if sharded:  # a shard is written in one piece, never read-modified-written
            self._submit(self._open_shard, split, start, stop - start)
        nxt = self._reader.submit(self._read, split, *bounds[0])
        for k, (s0, s1) in enumerate(bounds):
            rows = nxt.result()
            if k + 1 < len(bounds):
                nxt = self._reader.submit(self._read, split, *bounds[k + 1])
            taps = self._forward(rows)
            if sharded:
                stores.append(self._submit(self._store_batch, taps, split, start, s0, s1, holds_taps=True))
            else:
                writes.append(self._submit(self._store_and_write, taps, split, s0, holds_taps=True))
            if on_batch:
                on_batch(s1 - s0)
        if sharded:
            writes.append(self._submit(self._commit_shard, split, start, stores))
        self._submit(self._flag, split, r, writes)

    def _batch_buffers(self, rows: int) -> dict[str, np.ndarray]:
        """Arrays for ``rows`` samples of every tap, shaped as stored ([rows, V, C, H, W] with flips),
        reused from batch to batch (the writer thread is their only user)."""
        if self._batch is None or len(next(iter(self._batch.values()))) < rows:
            shapes, lead = self.teacher.tap_shapes, (rows, self.V) if self.V > 1 else (rows,)
            self._batch = {t: np.empty(lead + tuple(shapes[t]), self.dtype) for t in self.spec.taps}
        return {t: b[:rows] for t, b in self._batch.items()}

    def close(self):
        self._reader.shutdown()
        self._writer.shutdown()
        for sink in self._shards.values():  # shards left half-written by a failure: no temp file stays
            sink.abort()
        self._shards.clear()
        for a in self._arrays.values():
            a.close()


def export_ranges(spec: ExportSpec, items: list[tuple[str, int]], progress: bool = True) -> int:
    """Write the given (split, range) items in this process; returns bytes written."""
    if not items:
        return 0
    if spec.threads:
        torch.set_num_threads(spec.threads)
    w = RangeWriter(spec)
    sizes = {s: w.data.split(s).n for s in {s for s, _ in items}}
    total = sum(len(range(*L.range_bounds(r, sizes[s], spec.range_size))) for s, r in items)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="export", unit="sample", dynamic_ncols=True)
    t0 = time.time()

    def tick(k):
        if bar is not None:
            bar.update(k)
            dt = max(time.time() - t0, 1e-9)
            bar.set_postfix(MBps=f"{w.bytes_written / dt / 1e6:.1f}")

    try:
        for split, r in items:
            w.write_range(split, r, on_batch=tick)
        w.drain()
    finally:
        w.close()
        if bar is not None:
            bar.close()
    return w.bytes_written


def export_with_ray(spec: ExportSpec, items, workers: int, address: str | None,
                    gpus_per_worker: float | None = None) -> int:
    """Spread the ranges over Ray workers (round-robin); each loads the teacher once on the device it
    resolves itself (``auto``: the GPU Ray assigned it, if any)."""
    import ray

    from shared.train.tune import ray_gpu_share

    n_gpu = ray_gpu_share(gpus_per_worker, "--gpus-per-worker", spec.device, address, "worker")
    print(f"[export] {workers} Ray worker(s), {spec.threads or 1} CPU(s) and {n_gpu:g} GPU(s) each")
    task = ray.remote(num_cpus=spec.threads or 1, num_gpus=n_gpu)(export_ranges)
    groups = [items[k::workers] for k in range(workers) if items[k::workers]]
    return sum(ray.get([task.remote(spec, g, False) for g in groups]))


# ------------------------------------------------------------------ finalisation
def finalise(spec: ExportSpec, log=print) -> None:
    """Check every range flag, write per-channel fp32 statistics, mark the splits complete."""
    root = L.open_root(spec.store, mode="r+")
    state = dict(root.attrs["splits"])  # raw attrs: this is the writer's own record
    for split in spec.splits:
        if state[split]["status"] == "complete":
            continue
        flags = L.done_flags(root, split)
        n = state[split]["n"]
        missing = [r for r in range(L.n_ranges(n, spec.range_size)) if not flags[r]]
        if missing:
            raise L.StoreError(f"{spec.store}: split {split} has unwritten ranges {missing[:5]}… ; rerun the export")
        for tap in spec.taps:
            _write_statistics(root[split][tap], n)
        state[split] = {"n": n, "status": "complete", "completed": _now()}
        root.attrs["splits"] = state
        log(f"[export] {split}: {n} samples complete")


def _write_statistics(arr, n, step: int = 8):
    """Per-channel mean/std/min/max (fp32 values, fp64 accumulation) over samples and variants,
    a few samples at a time so memory does not depend on the shard size or the variants."""
    c_axis = arr.ndim - 3
    s1 = s2 = None
    lo = hi = None
    count = 0
    for s in range(0, n, step):
        a = np.asarray(arr[s:min(n, s + step)], dtype=np.float64)
        axes = tuple(i for i in range(a.ndim) if i != c_axis)
        part1, part2 = a.sum(axis=axes), (a * a).sum(axis=axes)
        mn, mx = a.min(axis=axes), a.max(axis=axes)
        s1 = part1 if s1 is None else s1 + part1
        s2 = part2 if s2 is None else s2 + part2
        lo = mn if lo is None else np.minimum(lo, mn)
        hi = mx if hi is None else np.maximum(hi, mx)
        count += a.size // a.shape[c_axis]
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean ** 2, 0))
    arr.attrs["stats"] = {k: [float(np.float32(x)) for x in v] for k, v in
                          (("mean", mean), ("std", std), ("min", lo), ("max", hi))}


# ------------------------------------------------------------------ CLI
def parser() -> argparse.ArgumentParser:
    p = new_parser("frozenflow export", __doc__)
    p.add_argument("--ckpt", required=True, help="teacher checkpoint (best.pt)")
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="store to write (features.zarr path or fsspec URL)")
    p.add_argument("--levels", default="144,36,9", help="tap levels to store (enc and dec of each)")
    p.add_argument("--splits", default="train,val,test", help="comma list of splits to export")
    p.add_argument("--dtype", default="float16", choices=list(L.DTYPES), help="stored dtype")
    p.add_argument("--codec", default="none", choices=list(L.CODECS), help="none/lz4 for local disks, zstd for network")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD,
                   help="samples per shard: one file per tap per shard, the resumable unit (0 = one chunk file per sample)")
    p.add_argument("--range-size", type=int,
                   help=f"only with --shard-size 0: samples per resumable unit (default {DEFAULT_RANGE})")
    p.add_argument("--engine", default="auto", choices=list(ENGINES), help=ENGINE_HELP)
    p.add_argument("--flips", action="store_true",
                   help="also store the teacher's features of the 3 Radon-symmetric flips (for --augment)")
    p.add_argument("--batch-size", type=int, default=16, help="samples per teacher forward pass")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true",
                   help="replace a store made differently (other teacher, dataset or settings); an identical "
                        "store is kept and completed")
    p.add_argument("--ray-workers", type=int, default=0, help="Ray export workers (0 = this process)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: all for this process, 1 per "
                                                "Ray worker); exports with equal --threads and --batch-size are "
                                                "bit-identical")
    p.add_argument("--ray-address", help="Ray cluster address (e.g. auto); implies Ray workers")
    p.add_argument("--gpus-per-worker", type=float,
                   help="GPUs per Ray export worker, fractional allowed; default 1 when the cluster has a GPU, else 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.gpus_per_worker is not None and not (args.ray_workers or args.ray_address):
        raise InputError("--gpus-per-worker applies only to Ray workers (--ray-workers N or --ray-address)")
    spec = ExportSpec(ckpt=args.ckpt, data=args.data, store=args.out, levels=L.parse_levels(args.levels),
                      splits=[s for s in args.splits.split(",") if s], dtype=args.dtype, codec=args.codec,
                      shard_size=args.shard_size, range_size=args.range_size, engine=args.engine, variants="flips" if args.flips else "none",
                      batch_size=args.batch_size, device=args.device.strip().lower(), threads=args.threads)
    t0 = time.time()
    quick_check(open_dataset(spec.data))  # mirrored or mis-scaled data would give misaligned features
    todo = prepare(spec, overwrite=args.overwrite)
    manifest = open_store(spec.store)
    if not todo and all(manifest.splits[s].status == "complete" for s in spec.splits):
        print(f"[export] {spec.store} is already complete for {','.join(spec.splits)}; nothing to do")
        return 0
    print(f"[export] {len(todo)} range(s) of up to {spec.range_size} samples to write -> {spec.store}")
    if args.ray_workers or args.ray_address:
        spec.threads = spec.threads or 1
        nbytes = export_with_ray(spec, todo, max(1, args.ray_workers or 2), args.ray_address, args.gpus_per_worker)
    else:
        nbytes = export_ranges(spec, todo, progress=not args.quiet)
    finalise(spec)
    dt = time.time() - t0
    print(f"[export] done in {dt:.1f} s, {nbytes / 1e6:.1f} MB written ({nbytes / 1e6 / max(dt, 1e-9):.1f} MB/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
