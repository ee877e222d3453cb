"""How the chunk bytes of a feature store move: tensorstore (C++, threaded, one call per tap for a
whole batch or shard) for local stores when it is installed, else zarr-python.

The metadata (groups, array definitions, attributes, done flags) is always written by zarr-python,
and both engines read and write the same Zarr v3 chunks — a store written by one is read by the
other, by dask and by xarray unchanged.  Measured against raw bytes in
``benchmarks/bench_engines.py`` (docs/DESIGN.md §5): zarr-python's sharded writes and reads are
an order of magnitude slower than tensorstore's on this layout.
"""
from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import layout as L

ENGINES = ("auto", "tensorstore", "zarr")
READ_CACHE_BYTES = 32 << 20  # per reading process (see SplitArrays)
ENGINE_HELP = ("how chunks are read and written: tensorstore (C++, for local stores), zarr (zarr-python), "
               "auto = tensorstore when installed and the store is a local folder")


def _tensorstore():
    try:
        import tensorstore
    except ImportError:
        return None
    return tensorstore


_TS_PID = None  # the process whose tensorstore runtime is live (the first to open an array)


def _tensorstore_usable_here() -> bool:
    """tensorstore aborts when used in a process forked from one that had used it (its threads do
    not survive fork), e.g. DataLoader workers started with the "fork" context."""
    return _TS_PID in (None, os.getpid())


def resolve_engine(name: str, store) -> str:
    """``auto`` / ``tensorstore`` / ``zarr`` → the engine that will run; refusals name the reason."""
    if name not in ENGINES:
        raise L.StoreError(f"--engine must be one of {list(ENGINES)}, got {name!r}")
    local = L.local_path(store) is not None
    if name == "tensorstore":
        if _tensorstore() is None:
            raise L.StoreError("--engine tensorstore: the tensorstore package is not installed (pip install tensorstore)")
        if not local:
            raise L.StoreError(f"--engine tensorstore: {store} is a URL; tensorstore is used for local folders only")
        return "tensorstore"
    if name == "zarr" or not local:
        return "zarr"
    return "tensorstore" if _tensorstore() is not None else "zarr"


class SplitArrays:
    """The tap arrays of one split, opened with one engine: ``write(tap, start, values)`` and
    ``read(tap, samples, variants)`` (a batch; rows in the order asked)."""

    def __init__(self, store, split: str, taps, engine: str = "auto", write: bool = False, threads: int = 2):
        self.store, self.split, self.taps = str(store), split, list(taps)
        self.engine = resolve_engine(engine, store)
        if self.engine == "tensorstore" and not _tensorstore_usable_here():
            warnings.warn("this process was forked from one that used tensorstore, which cannot run here; reading "
                          "with zarr-python (slower). Start DataLoader workers with multiprocessing_context="
                          "'forkserver' or 'spawn' to keep tensorstore", RuntimeWarning, stacklevel=3)
            self.engine = "zarr"
        self._zarr = _zarr_arrays(store, split, taps, write)
        self._pool = None
        if self.engine == "tensorstore":
            global _TS_PID
            _TS_PID = os.getpid()
            ts = _tensorstore()
            # a small cache keeps the shard indices (else every batch re-reads and re-checks them); a
            # reader opens a complete split, which never changes, so cached entries need no re-check
            # no fsync per file: like zarr-python and the raw baseline (a killed process loses nothing
            # written; after a machine crash `frozenflow verify --full` finds what the disk lost)
            ctx = ts.Context({"cache_pool": {"total_bytes_limit": 0 if write else READ_CACHE_BYTES},
                              "data_copy_concurrency": {"limit": max(1, threads)}, "file_io_sync": False})
            root = L.local_path(store)
            fixed = {} if write else {"recheck_cached_data": False, "recheck_cached_metadata": False}
            self._ts = {t: ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root / split / t)},
                                    **fixed}, open=True, read=True, write=write, context=ctx).result() for t in taps}
        else:
            self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="features")

    def write(self, start: int, values: dict[str, np.ndarray]) -> None:
        """Rows ``start …`` of every tap in ``values`` (tensorstore: all taps at once)."""
        if self.engine == "tensorstore":
            pending = [self._ts[t][start:start + len(v)].write(v) for t, v in values.items()]
            for f in pending:
                f.result()
        else:
            for t, v in values.items():
                self._zarr[t][start:start + len(v)] = v

    def read_taps(self, samples, variants=None) -> dict[str, np.ndarray]:
        """``read`` for every tap (tensorstore: all taps' reads in flight at once)."""
        if self.engine != "tensorstore":
            return {t: self.read(t, samples, variants) for t in self.taps}
        pending = {t: self._ts_read(t, samples, variants) for t in self.taps}
        return {t: finish() for t, finish in pending.items()}

    def read(self, tap: str, samples, variants=None) -> np.ndarray:
        """Rows ``samples`` (with ``variants`` for a flips store) of ``tap`` as one array.

        Raises ValueError when a chunk's checksum does not match or it does not decode."""
        samples = np.asarray(samples, dtype=np.int64)
        if self.engine == "tensorstore":
            return self._ts_read(tap, samples, variants)()
        arr = self._zarr[tap]
        keys = [int(i) for i in samples] if variants is None else [(int(i), int(v)) for i, v in zip(samples, variants)]
        # one call per sample: zarr-python's fancy indexing on sharded arrays is 10-25x slower
        return np.stack(list(self._pool.map(lambda k: np.asarray(arr[k]), keys)))

    def _ts_read(self, tap: str, samples, variants):
        """Start a tensorstore read; returns the function that waits for it."""
        a, samples = self._ts[tap], np.asarray(samples, dtype=np.int64)
        if variants is None:
            # sorted unique rows: sequential within shards; then back to the order asked
            rows, inverse = np.unique(samples, return_inverse=True)
            future = a[rows].read()
            return lambda: np.asarray(future.result())[inverse]
        future = a.vindex[samples, np.asarray(variants, dtype=np.int64)].read()
        return lambda: np.asarray(future.result())

    def read_one(self, tap: str, key) -> np.ndarray:
        """One sample through zarr-python (the reference path used to name a damaged chunk)."""
        return np.asarray(self._zarr[tap][key])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


def _zarr_arrays(store, split, taps, write: bool) -> dict:
    root = L.open_root(store, mode="r+" if write else "r")
    return {t: root[split][t] for t in taps}
