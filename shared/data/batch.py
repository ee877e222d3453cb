"""Collating samples into a batch without copying what was read as one batch.

The feature reader reads a batch of every tap into one array per tap (``FeatureStoreDataset.get_many``)
and hands out each sample as a ``BatchRow``: a read-only mapping tap → that sample's row of the blocks.
torch's ``default_collate`` treats it as any mapping (it stacks the rows into a second copy); ``collate``,
which the training loop and evaluate use, sees that the rows are a whole batch in order and returns the
blocks themselves, so a batch of features costs one copy out of the store's pages, like a raw read.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import default_collate


class BatchRow(Mapping):
    """Sample ``k`` of ``blocks`` ({name: tensor [B, …]}): ``row[name]`` is ``blocks[name][k]`` (a view)."""

    __slots__ = ("blocks", "k")

    def __init__(self, blocks: dict[str, torch.Tensor], k: int):
        self.blocks, self.k = blocks, k

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.blocks[name][self.k]

    def __iter__(self):
        return iter(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def __repr__(self) -> str:
        return f"BatchRow({self.k} of {', '.join(self.blocks)})"


def rows_of(blocks: dict[str, torch.Tensor]) -> list[BatchRow]:
    n = len(next(iter(blocks.values()))) if blocks else 0
    return [BatchRow(blocks, k) for k in range(n)]


def collate(samples: list):
    """``default_collate``, except that the rows of one batch, all of them in order, come back as its blocks."""
    first = samples[0]
    if isinstance(first, BatchRow):
        blocks = first.blocks
        whole = all(isinstance(s, BatchRow) and s.blocks is blocks and s.k == k for k, s in enumerate(samples))
        if whole and all(len(b) == len(samples) for b in blocks.values()):
            return dict(blocks)
        return {name: default_collate([s[name] for s in samples]) for name in first}
    if isinstance(first, dict):
        return {key: collate([s[key] for s in samples]) for key in first}
    return default_collate(samples)
