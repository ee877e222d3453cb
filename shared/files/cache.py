"""Where FrozenFlow keeps derived, re-creatable files: $FROZENFLOW_CACHE, else $XDG_CACHE_HOME, else ~/.cache."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(name: str) -> Path:
    """``<base>/frozenflow/<name>``; never inside a dataset or run folder."""
    base = os.environ.get("FROZENFLOW_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "frozenflow" / name
