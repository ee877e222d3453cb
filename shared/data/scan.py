"""Every row of a dataset file checked once: NaN/Inf anywhere, negative μ or activity — and hashed.

A sampled check misses a NaN in row 1 of 50,000; reading everything on every command would cost
minutes.  So each file is streamed once (blocks of ~64 MB, bounded memory) and a clean verdict is
cached outside the data folder, keyed by the file's absolute path, size and modification time —
rewriting or editing the file invalidates it.  A failure names the file and the row.  The same
pass hashes every row (``row_digest``, cached the same way), so the dataset fingerprint that binds
stores and checkpoints to their data covers every value, not a sample of rows.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from shared.files.atomic import atomic_write_json
from shared.files.cache import cache_dir

BLOCK_BYTES = 64 << 20
SCAN_VERSION = 1  # bump when what a clean verdict means changes


def _cache_path(path: Path, *what) -> Path:
    st = path.stat()
    key = json.dumps([SCAN_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns, *what])
    return cache_dir("scans") / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _verdict_path(path: Path, nonnegative: bool) -> Path:
    return _cache_path(path, nonnegative)


def _blocks(arr: np.ndarray, path: Path, what: str):
    """``(start, rows)`` blocks of ~64 MB, with a progress bar on a terminal when the file is large."""
    from .dataset_io import read_rows

    n = arr.shape[0]
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.itemsize)
    step = max(1, BLOCK_BYTES // row_bytes)
    bar = None
    if n * row_bytes > 1 << 30 and sys.stderr.isatty():  # a minute or so: show it
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=f"{what} {path.name}", unit="row", leave=False)
    try:
        for s in range(0, n, step):
            block = read_rows(arr, s, s + step)
            yield s, block
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()


def _hasher(arr: np.ndarray):
    return hashlib.sha256(f"{arr.shape}:{arr.dtype.str}|".encode())


def row_digest(path: Path, arr: np.ndarray) -> str:
    """sha256 over the shape, dtype and every row's bytes (cached per file version)."""
    cached = _cache_path(path, "digest")
    try:
        return json.loads(cached.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = _hasher(arr)
    for _, block in _blocks(arr, path, "hash"):
        h.update(np.ascontiguousarray(block).tobytes())
    atomic_write_json(cached, {"file": str(path.resolve()), "sha256": h.hexdigest()})
    return h.hexdigest()


def float32_limit(dtype) -> float | None:
    """The largest |value| of ``dtype`` that reads exactly (integers) or finitely (floats) as float32; None
    when every value does (float32 itself, float16, integers of at most 16 bits)."""
    dtype = np.dtype(dtype)
    if dtype == np.float32 or dtype == np.float16 or (dtype.kind in "iu" and dtype.itemsize <= 2):
        return None
    return float(2 ** 24) if dtype.kind in "iu" else float(np.finfo(np.float32).max)


def scan_rows(path: Path, arr: np.ndarray, nonnegative: bool, what: str, error=ValueError) -> None:
    """Raise ``error`` naming ``path`` and the first bad row; cache the verdict (and the rows' digest)
    when clean."""
    verdict = _verdict_path(path, nonnegative)
    if verdict.exists():
        return
    h = _hasher(arr)
    limit = float32_limit(arr.dtype)
    for s, block in _blocks(arr, path, "scan"):
        if limit is not None and len(block):
            big = np.abs(block.reshape(len(block), -1).astype(np.float64)).max(1) > limit
            if big.any():
                i = int(np.argmax(big))
                what_fits = "integers beyond ±2^24 are not exact" if arr.dtype.kind in "iu" else "it would be ±inf"
                raise error(f"{path}: sample {s + i}: |value| {np.abs(block[i].astype(np.float64)).max():g} does not "
                            f"fit float32, which FrozenFlow reads {arr.dtype} as ({what_fits}); rescale the file")
        finite = np.isfinite(block).reshape(len(block), -1).all(1)
        if not finite.all():
            i = int(np.argmin(finite))
            bad = "NaN" if np.isnan(block[i]).any() else "Inf"
            raise error(f"{path}: sample {s + i} contains {bad} ({what}; every row is checked)")
        if nonnegative:
            low = block.reshape(len(block), -1).min(1)
            if (low < 0).any():
                i = int(np.argmax(low < 0))
                raise error(f"{path}: sample {s + i}: expected values >= 0 ({what}), found min {low[i]:g}")
        h.update(np.ascontiguousarray(block).tobytes())
    atomic_write_json(_cache_path(path, "digest"), {"file": str(path.resolve()), "sha256": h.hexdigest()})
    atomic_write_json(verdict, {"file": str(path.resolve()), "rows": arr.shape[0], "clean": True})
