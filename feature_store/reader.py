"""Stream stored teacher features into PyTorch.

``FeatureStoreDataset(store, split, taps)[i]`` → ``{tap: float32 tensor}``.  The store is opened
read-only and lazily in each process (handles are dropped when the dataset is pickled into
DataLoader workers or Ray trials), each sample is read with ``a[i]`` (never fancy indexing: on
sharded arrays that is 10–25× slower), and ``__getitems__`` reads a whole batch with a thread
pool, which is what makes per-sample zarr reads fast enough for training.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import Dataset

from . import layout as L
from .manifest import open_store


def reader_threads(requested: int | None = None) -> int:
    """Read threads per process: ``requested``, or the cores this process may use divided by the
    DataLoader's worker processes (at most 8), so workers × threads never oversubscribe the cores."""
    if requested:
        return requested
    info = torch.utils.data.get_worker_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // (info.num_workers if info is not None else 1)))


class FeatureStoreDataset(Dataset):
    """Features of one split: item i (optionally with variant v via ``get(i, v)``) as float32 tensors."""

    def __init__(self, store, split: str, taps=None, *, threads: int | None = None, **expect):
        self.store, self.split, self.threads = str(store), split, threads
        self.manifest = open_store(self.store)
        self.n = self.manifest.require(split, taps=taps, **expect).n
        self.taps = list(taps) if taps is not None else self.manifest.taps
        self.n_variants = self.manifest.n_variants
        self._arrays, self._pid = None, None  # opened lazily, per process

    def __len__(self):
        return self.n

    def _open(self):
        # a forked DataLoader worker inherits the handles but not the pool's threads: reopen per process
        if self._arrays is None or self._pid != os.getpid():
            g = L.open_root(self.store, mode="r")[self.split]
            self._arrays = {t: g[t] for t in self.taps}
            self._pool = ThreadPoolExecutor(reader_threads(self.threads), thread_name_prefix="features")
            self._pid = os.getpid()
        return self._arrays

    def get(self, i: int, variant: int = 0) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(f"{self.store}: {self.split} sample {i} out of range 0..{self.n - 1}")
        if variant and not 0 <= variant < self.n_variants:
            raise IndexError(f"{self.store}: variant {variant} not stored (store has {self.n_variants})")
        arrays = self._open()
        key = (i, variant) if self.n_variants > 1 else i
        return {t: self._read(t, a, key) for t, a in arrays.items()}

    def _read(self, tap, arr, key) -> torch.Tensor:
        where = f"{self.store}: {self.split}/{tap} sample {key}"
        try:
            x = torch.from_numpy(np.asarray(arr[key], dtype=np.float32))
        except ValueError as e:  # the chunk's crc32c does not match, or it does not decode at all
            raise L.StoreError(f"{where}: damaged chunk ({e}); re-export (the export resumes only missing "
                               f"ranges, so pass --overwrite or delete the store first)") from None
        if not torch.isfinite(x).all():  # export refuses non-finite features: NaN here is a missing chunk
            raise L.StoreError(f"{where}: not finite (a deleted chunk reads as NaN); re-export the store")
        return x

    def __getitem__(self, i):
        return self.get(int(i))

    def get_many(self, pairs) -> list[dict[str, torch.Tensor]]:
        """Several (sample, variant) pairs, read concurrently (zarr releases the GIL in I/O and decoding)."""
        self._open()
        return list(self._pool.map(lambda iv: self.get(int(iv[0]), int(iv[1])), pairs))

    def __getitems__(self, indices):
        return self.get_many([(i, 0) for i in indices])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"], state["_pid"] = None, None
        state.pop("_pool", None)
        return state
