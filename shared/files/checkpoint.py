"""Checkpoint files: atomic writes (temp file + fsync + rename) and loads that fail clearly."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch

from shared.files.atomic import atomic_write
from shared.errors import InputError

FORMAT_VERSION = 2  # 2: meta['model'] records the model spec (shared.models)


class CheckpointError(InputError):
    """An unreadable, truncated or incompatible checkpoint; the message names the file."""


def save_atomic(obj, path: str | Path) -> Path:
    """torch.save through :func:`shared.files.atomic.atomic_write`: a crash leaves the old file."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load(path: str | Path, kind: str | None = None) -> dict:
    """Load a FrozenFlow checkpoint dict; ``kind`` (e.g. "teacher") must match when given."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        # weights_only: tensors and plain containers only, so a crafted file cannot run code here;
        # every checkpoint FrozenFlow writes loads this way
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):
            raise CheckpointError(f"{path}: refused: it holds Python objects other than tensors and plain "
                                  f"containers (FrozenFlow never unpickles code; nothing in it was run)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted? {type(e).__name__})") from None
    except Exception as e:  # truncated zip, random bytes …
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted? {type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise CheckpointError(f"{path}: not a FrozenFlow checkpoint (no format_version)")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {ckpt['format_version']} is not supported "
                              f"(this FrozenFlow reads version {FORMAT_VERSION}; "
                              f"version 1 predates model specs: retrain)")
    if kind is not None and ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: expected a {kind} checkpoint, found kind={ckpt.get('kind')!r}")
    return ckpt


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
