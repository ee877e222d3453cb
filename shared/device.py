"""The one place a device name becomes a torch.device: refused here, before anything is written."""
from __future__ import annotations

import torch

DEVICE_HELP = "torch device: cpu, cuda, cuda:N or auto (CUDA when available)"


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a device this machine lacks is a ValueError naming it."""
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(text)
    except RuntimeError:
        d = None
    if d is None or d.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA device (torch.cuda.is_available() is False)")
        if d.index is not None and d.index >= n:
            raise ValueError(f"--device {name}: this machine has {n} CUDA device(s), numbered 0..{n - 1}")
    return d
