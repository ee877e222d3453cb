"""The one place a device name becomes a torch.device: refused here, before anything is written."""
from __future__ import annotations

import torch
from shared.errors import InputError

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
        raise InputError(f"--device must be cpu, cuda, cuda:N or auto, got {name!r}")
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InputError(f"--device {name}: this machine has no CUDA device (torch.cuda.is_available() is False)")
        if d.index is not None and d.index >= n:
            raise InputError(f"--device {name}: this machine has {n} CUDA device(s), numbered 0..{n - 1}")
    return d


AMP_CHOICES = ("off", "auto", "bf16", "fp16")
AMP_HELP = ("mixed precision: off; bf16 (autocast, no scaler; CPU or a CUDA GPU that supports it); fp16 (CUDA, "
            "with a gradient scaler); auto = bf16 where the GPU supports it, else fp16, and off on CPU")


def resolve_amp(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` on ``device`` (None: full precision); a combination the device
    cannot run is a ValueError naming it."""
    if name not in AMP_CHOICES:
        raise InputError(f"--amp must be one of {list(AMP_CHOICES)}, got {name!r}")
    cuda = device.type == "cuda"
    bf16_ok = not cuda or torch.cuda.is_bf16_supported()
    if name == "off" or (name == "auto" and not cuda):
        return None
    if name == "auto":
        return torch.bfloat16 if bf16_ok else torch.float16
    if name == "fp16" and not cuda:
        raise InputError("--amp fp16 needs a CUDA device (on CPU use --amp bf16)")
    if name == "bf16" and not bf16_ok:
        raise InputError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; use --amp fp16")
    return torch.bfloat16 if name == "bf16" else torch.float16


def autocast(device: torch.device | str, dtype: torch.dtype | None):
    """Mixed precision for a forward pass in ``dtype`` (from ``resolve_amp``); a no-op with None."""
    kind = device.type if isinstance(device, torch.device) else str(device)
    return torch.autocast(kind, dtype=dtype or torch.float32, enabled=dtype is not None)


WORKERS_HELP = ("DataLoader worker processes; default: 0 on CPU (the cores compute), on CUDA min(8, torch "
                "threads − 1) so loading overlaps the GPU")


def loader_workers(requested: int | None, device: torch.device) -> int:
    """``--workers`` or its default for ``device`` (see WORKERS_HELP)."""
    if requested is not None:
        return requested
    return 0 if device.type != "cuda" else max(1, min(8, torch.get_num_threads() - 1))
