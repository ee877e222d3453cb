"""Collating samples into a batch without copying what is already one block.

The feature reader reads a batch of every tap into one array (``FeatureStoreDataset.get_many``) and hands
out per-sample rows that are views of it; torch's ``default_collate`` would stack them into a second
copy.  ``collate`` returns such rows as the block they came from and stacks everything else as
``default_collate`` does, so a batch of features costs one copy from the store's pages, like a raw read.
"""
from __future__ import annotations

import torch
from torch.utils.data import default_collate


def _block_of(rows: list) -> torch.Tensor | None:
    """The [B, …] tensor whose consecutive rows ``rows`` are, else None: every row contiguous, of one shape
    and dtype, at consecutive addresses inside the first row's storage (so the block's memory is theirs)."""
    first = rows[0]
    if not all(isinstance(r, torch.Tensor) for r in rows) or not first.is_contiguous():
        return None
    shape, dtype, start = first.shape, first.dtype, first.data_ptr()
    step = first.numel() * first.element_size()
    storage = first.untyped_storage()
    if storage.data_ptr() + storage.nbytes() < start + len(rows) * step:
        return None
    for k, r in enumerate(rows):
        if r.data_ptr() != start + k * step or r.shape != shape or r.dtype != dtype or not r.is_contiguous():
            return None
    return first.as_strided((len(rows), *shape), (first.numel(), *first.stride()), first.storage_offset())


def collate(samples: list):
    """``default_collate``, with rows of one block returned as the block (no copy)."""
    first = samples[0]
    if isinstance(first, dict):
        return {k: collate([s[k] for s in samples]) for k in first}
    if isinstance(first, torch.Tensor):
        block = _block_of(samples)
        if block is not None:
            return block
    return default_collate(samples)
