"""The feature-store format (docs/DESIGN.md §5): one Zarr v3 group, a subgroup per split, an array per tap.

```
features.zarr/            attrs: format_version, teacher_sha256, teacher_config, dataset_fingerprint,
  train/ enc144 … dec9           levels, taps, dtype, codec, shard_size, range_size, variants,
         _done                   created, splits {name: {n, status}}
  val/ …  test/ …
```
Each tap array is (N, C, H, W), or (N, V, C, H, W) with flip variants; one chunk per sample
(and variant), optional shards of ``shard_size`` samples, ``fill_value=NaN`` so unwritten (or
deleted) samples are visible, and a crc32c checksum at the end of every chunk.  ``_done`` (one uint8 chunk per export range) marks finished ranges: a range is
flagged only after all its samples are written, so a crashed export redoes exactly the unflagged
ranges.  Ranges are shard-aligned, so no two writers ever touch one shard.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import zarr

from shared.config.schema import LEVELS
from shared.errors import InputError

FORMAT_VERSION = 2  # 2: a crc32c checksum ends every chunk
DONE = "_done"
DTYPES = ("float16", "float32")
CODECS = ("none", "lz4", "zstd")
VARIANTS = {"none": 1, "flips": 4}


class StoreError(InputError):
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


def compressors(codec: str) -> list:
    """The bytes codecs of every chunk: the compressor, then a crc32c checksum, so a damaged,
    truncated or zeroed chunk fails to decode instead of reading as wrong numbers."""
    if codec not in CODECS:
        raise StoreError(f"codec must be one of {list(CODECS)}, got {codec!r}")
    first = {"none": [], "lz4": [zarr.codecs.BloscCodec(cname="lz4", clevel=1, shuffle="shuffle")],
             "zstd": [zarr.codecs.ZstdCodec(level=3)]}[codec]
    return first + [zarr.codecs.Crc32cCodec()]


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


IDENTITY_MARKERS = ("format_version", "teacher_sha256")  # root attributes every feature store has


def existing_kind(store: str | Path) -> tuple[str, str]:
    """What is at ``store`` before an export writes there, as (kind, detail).

    ``absent`` (nothing, or an empty folder), ``store`` (a feature store: its root metadata names a
    teacher), ``damaged`` (a feature store — a split holds FrozenFlow's ``_done`` flags — whose root
    metadata is unreadable or has lost its identity) or ``foreign`` (anything else: a file, a folder
    of other things, another Zarr store, with or without root attributes).  Only the first three may
    be written; nothing foreign is replaced, even with ``--overwrite``.
    """
    path = local_path(store)
    if path is None:  # remote: ask Zarr
        try:
            attrs = open_root(store, mode="r").attrs.asdict()
        except StoreError:
            return "absent", ""
        return ("store", "") if all(k in attrs for k in IDENTITY_MARKERS) else ("foreign", "a Zarr group without a teacher")
    if not path.exists():
        return "absent", ""
    if not path.is_dir():
        return "foreign", "a file"
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return "absent", ""
    zarr_like = all(e == "zarr.json" or e.endswith(".partial") or (path / e / "zarr.json").exists() for e in entries)
    if "zarr.json" not in entries:
        return "foreign", "holds " + ", ".join(entries[:4]) + (", …" if len(entries) > 4 else "")
    ours = zarr_like and any((path / e / DONE / "zarr.json").is_file() for e in entries)  # export's done flags
    try:
        meta = json.loads((path / "zarr.json").read_text())
        attrs = meta.get("attributes") or {}
    except (OSError, ValueError, AttributeError):
        return ("damaged", "unreadable root zarr.json") if ours else ("foreign", "unreadable zarr.json")
    if all(k in attrs for k in IDENTITY_MARKERS):
        return "store", ""
    if ours:
        return "damaged", "root metadata without identity"
    return "foreign", "a Zarr store without a teacher identity"


def create_root(store: str | Path, attrs: dict) -> zarr.Group:
    """A new, empty store whose root metadata carries its identity from the first write.

    Zarr writes zarr.json through a temporary file and a rename, so a kill leaves either no
    store or a store with its identity — never a root the next run cannot recognise.
    """
    path = local_path(store)
    try:
        return zarr.open_group(str(path) if path is not None else str(store), mode="w", attributes=attrs)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise StoreError(f"{store}: cannot create feature store ({type(e).__name__}: {e})") from None


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
                   compressors=compressors("none"), dimension_names=["range"], overwrite=True)
    return g


def done_flags(root: zarr.Group, split: str) -> np.ndarray:
    return np.asarray(root[split][DONE][:]).astype(bool)


def remove_orphans(store: str | Path) -> int:
    """Delete the temp files a killed writer left behind: zarr-python's ``*.partial`` and
    tensorstore's ``*.__lock`` (local stores only)."""
    path = local_path(store)
    if path is None or not path.exists():
        return 0
    n = 0
    for pattern in ("*.partial", "*.__lock"):
        for p in path.rglob(pattern):
            p.unlink(missing_ok=True)
            n += 1
    return n
