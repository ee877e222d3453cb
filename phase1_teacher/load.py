"""Rebuild the frozen teacher from ``best.pt`` alone."""
from __future__ import annotations

from pathlib import Path

import torch

from shared.models.frozen import load_frozen
from shared.models.network import Network


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> Network:
    """Frozen teacher network (the class its recorded spec names; eval mode, requires_grad=False) with
    ``.sha256``, ``.config``, ``.meta``, ``.input_scale``."""
    return load_frozen(path, kind="teacher", direction="IS", device=device)
