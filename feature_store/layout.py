"""The feature-store format (docs/DESIGN.md §5): one Zarr v3 group, a subgroup per split, an array per tap.

```
features.zarr/            attrs: format_version, teacher_sha256, teacher_config, dataset_fingerprint,
  train/ enc144 … dec9           levels, taps, dtype, codec, shard_size, range_size, variants,
         _done                   created, splits {name: {n, status}}
  val/ …  test/ …
```
Each tap array is (N, C, H, W), or (N, V, C, H, W) with flip variants; one chunk per sample
(and variant), optional shards of ``shard_size`` samples, ``fill_value=NaN`` so unwritten samples
are visible.  ``_done`` (one uint8 chunk per export range) marks finished ranges: a range is
flagged only after all its samples are written, so a crashed export redoes exactly the unflagged
ranges.  Ranges are shard-aligned, so no two writers ever touch one shard.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import zarr

from shared.config.schema import LEVELS

FORMAT_VERSION = 1
DONE = "_done"
DTYPES = ("float16", "float32")
CODECS = ("none", "lz4", "zstd")
VARIANTS = {"none": 1, "flips": 4}
FLOAT16_MAX = 65504.0


class StoreError(ValueError):
    """A store that is missing, incomplete or does not match what the caller expects."""


def taps_for(levels) -> list[str]:
    return [f"{side}{lvl}" for lvl in levels for side in ("enc", "dec")]


def parse_levels(text: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in str(text).split(",") if x.strip()}, reverse=True)
    except ValueError:
        raise StoreError(f"--levels must be a comma list drawn from {list(LEVELS)}, got {text!r}") from None
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise StoreError(f"--levels must be a comma list drawn from {list(LEVELS)}, got {text!r}")
    return levels


def level_of(tap: str) -> int:
    return int(tap[3:])


def dimension_names(tap: str, variants: str) -> list[str]:
    lv = level_of(tap)
    names = ["sample"] + (["variant"] if VARIANTS[variants] > 1 else []) + [f"c{lv}", f"y{lv}", f"x{lv}"]
    return names


def compressors(codec: str):
    if codec == "none":
        return None
    if codec == "lz4":
        return zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")
    if codec == "zstd":
        return zarr.codecs.ZstdCodec(level=3)
    raise StoreError(f"codec must be one of {list(CODECS)}, got {codec!r}")


def is_url(store: str | Path) -> bool:
    return "://" in str(store)


def local_path(store: str | Path) -> Path | None:
    """The filesystem path of a local store (plain path or file:// URL), else None."""
    s = str(store)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    return None if is_url(s) else Path(s)


def open_root(store: str | Path, mode: str = "r") -> zarr.Group:
    """Open the store's root group; read-only for mode 'r'.  Paths and fsspec URLs both work."""
    path = local_path(store)
    if mode == "r" and path is not None and not (path / "zarr.json").exists():
        raise StoreError(f"{store}: not a feature store (no zarr.json); run scripts/export_features.sh first")
    try:
        return zarr.open_group(str(path) if path is not None else str(store), mode=mode)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreError(f"{store}: cannot open feature store ({type(e).__name__}: {e})") from None


def n_ranges(n: int, range_size: int) -> int:
    return math.ceil(n / range_size) if n else 0


def range_bounds(r: int, n: int, range_size: int) -> tuple[int, int]:
    return r * range_size, min(n, (r + 1) * range_size)


def create_split(root: zarr.Group, split: str, n: int, tap_shapes: dict[str, tuple[int, int, int]], *,
                 dtype: str, codec: str, shard_size: int | None, range_size: int, variants: str) -> zarr.Group:
    """Preallocate (metadata only) every tap array of a split plus its range-done flags."""
    g = root.require_group(split)
    V = VARIANTS[variants]
    for tap, (C, H, W) in tap_shapes.items():
        lead = (n, V) if V > 1 else (n,)
        chunk_lead = (1, 1) if V > 1 else (1,)
        shards = None
        if shard_size:
            shards = ((shard_size, V) if V > 1 else (shard_size,)) + (C, H, W)
        g.create_array(tap, shape=lead + (C, H, W), chunks=chunk_lead + (C, H, W), shards=shards, dtype=dtype,
                       fill_value=np.nan, compressors=compressors(codec), dimension_names=dimension_names(tap, variants),
                       overwrite=True)
    g.create_array(DONE, shape=(max(n_ranges(n, range_size), 1),), chunks=(1,), dtype="uint8", fill_value=0,
                   compressors=None, dimension_names=["range"], overwrite=True)
    return g


def done_flags(root: zarr.Group, split: str) -> np.ndarray:
    return np.asarray(root[split][DONE][:]).astype(bool)


def remove_orphans(store: str | Path) -> int:
    """Delete ``*.partial`` temp files a killed writer left behind (local stores only)."""
    path = local_path(store)
    if path is None or not path.exists():
        return 0
    n = 0
    for p in path.rglob("*.partial"):
        p.unlink(missing_ok=True)
        n += 1
    return n
