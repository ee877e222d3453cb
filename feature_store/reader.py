"""Stream stored teacher features into PyTorch.

``FeatureStoreDataset(store, split, taps)[i]`` → ``{tap: tensor}`` in the stored dtype (float16 by default:
half the bytes to collate and to copy to a GPU; the receiving side convolution casts them to its own dtype on
the device, shared/models/side.py); ``__getitems__(indices)``
reads a whole batch with one call per tap (``feature_store.engine``: uncompressed shards straight from
their files, else tensorstore with all taps in flight, else zarr-python one sample at a time).  The store is
opened read-only and lazily in each process (handles are dropped when the dataset is pickled into
DataLoader workers or Ray trials).  Every read is checked: a chunk whose checksum fails or that
does not decode, and a missing chunk, is an error naming the store, split, tap and sample.  Finiteness:
the shard-file engine proves it — every chunk it returns was present and matched the crc32c of what the
export wrote, and the export refuses non-finite features — so it reads no value twice; the other engines
read a missing chunk as the fill value NaN, so their batches are checked on the stored bits.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from . import layout as L
from .engine import SplitArrays, resolve_engine
from .manifest import open_store
from shared.data.batch import rows_of


EXPONENT_BITS = {np.dtype(np.float16): (np.uint16, 0x7C00), np.dtype(np.float32): (np.uint32, 0x7F800000)}


def nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Which rows hold a NaN or ±inf, from the stored bits (exponent all ones): one single-threaded numpy
    pass, for the engines that read a missing chunk as NaN (torch's two-threaded ``isfinite`` on half
    stalled when another process held a core)."""
    utype, mask = EXPONENT_BITS[block.dtype]
    bits = block.reshape(len(block), -1).view(utype)
    return (bits & mask).max(axis=1) == mask


def reader_threads(requested: int | None = None) -> int:
    """Read threads per process: ``requested``, or the cores this process may use divided by the
    DataLoader's worker processes (at most 8), so workers × threads never oversubscribe the cores."""
    if requested:
        return requested
    info = torch.utils.data.get_worker_info()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores // (info.num_workers if info is not None else 1)))


class FeatureStoreDataset(Dataset):
    """Features of one split: item i (variant v via ``get(i, v)``), a mapping tap → tensor in the stored dtype
    (``shared.data.batch.BatchRow``)."""

    def __init__(self, store, split: str, taps=None, *, threads: int | None = None, engine: str = "auto", **expect):
        self.store, self.split, self.threads = str(store), split, threads
        self.manifest = open_store(self.store)
        self.n = self.manifest.require(split, taps=taps, **expect).n
        self.taps = list(taps) if taps is not None else self.manifest.taps
        self.n_variants = self.manifest.n_variants
        resolve_engine(engine, self.store)  # an engine that cannot run here is refused now, not in a worker
        self.engine_request = engine
        self._arrays, self._pid = None, None  # opened lazily, per process

    def __len__(self):
        return self.n

    @property
    def engine(self) -> str:
        """What reads this process's samples: ``shard files``, ``tensorstore`` or ``zarr``."""
        return self._open().engine

    def _open(self) -> SplitArrays:
        # a forked DataLoader worker inherits the handles but not their threads: reopen per process
        if self._arrays is None or self._pid != os.getpid():
            self._arrays = SplitArrays(self.store, self.split, self.taps, self.engine_request,
                                       threads=reader_threads(self.threads))
            self._pid = os.getpid()
        return self._arrays

    def get(self, i: int, variant: int = 0):
        return self.get_many([(i, variant)])[0]

    def __getitem__(self, i):
        return self.get(int(i))

    def get_many(self, pairs) -> list:
        """Several (sample, variant) pairs: one read per tap for all of them; each sample a mapping tap → tensor
        (``shared.data.batch.BatchRow``, a row of the batch's blocks)."""
        pairs = [(int(i), int(v)) for i, v in pairs]
        for i, v in pairs:
            if not 0 <= i < self.n:
                raise IndexError(f"{self.store}: {self.split} sample {i} out of range 0..{self.n - 1}")
            if v and not 0 <= v < self.n_variants:
                raise IndexError(f"{self.store}: variant {v} not stored (store has {self.n_variants})")
        arrays = self._open()
        samples = [i for i, _ in pairs]
        variants = [v for _, v in pairs] if self.n_variants > 1 else None
        keys = pairs if self.n_variants > 1 else samples
        proven = arrays.engine == "shard files"  # present and crc-checked chunks of finite values (see above)
        try:
            blocks = arrays.read_taps(samples, variants)
        except ValueError:  # a checksum, decoding or missing-chunk failure in the batch: find and name it
            blocks, proven = {tap: np.stack([self._read_one(arrays, tap, k) for k in keys]) for tap in self.taps}, False
        for tap in self.taps:
            block = blocks[tap] = np.ascontiguousarray(blocks[tap])
            if not proven:
                bad = nonfinite_rows(block)
                if bad.any():  # export refuses non-finite features: NaN here is a missing chunk
                    k = keys[int(np.flatnonzero(bad)[0])]
                    raise L.StoreError(f"{self._where(tap, k)}: not finite (a deleted chunk reads as NaN); re-export "
                                       f"the store")
        return rows_of({tap: torch.from_numpy(blocks[tap]) for tap in self.taps})  # collate returns the blocks

    def __getitems__(self, indices):
        return self.get_many([(i, 0) for i in indices])

    def _where(self, tap, key) -> str:
        return f"{self.store}: {self.split}/{tap} sample {key}"

    def _read_one(self, arrays: SplitArrays, tap: str, key) -> np.ndarray:
        try:
            return arrays.read_one(tap, key)
        except ValueError as e:  # the chunk's crc32c does not match, or it does not decode at all
            raise L.StoreError(f"{self._where(tap, key)}: damaged chunk ({e}); re-export (the export resumes only "
                               f"missing ranges, so pass --overwrite or delete the store first)") from None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arrays"], state["_pid"] = None, None
        return state
