"""Rebuild the frozen teacher from ``best.pt`` alone."""
from __future__ import annotations

from pathlib import Path

import torch

from shared import checkpoint as ckpt_io
from shared.generator import ConfigError, Generator


def load_teacher(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Frozen teacher (eval mode, requires_grad=False) with ``.sha256``, ``.config``, ``.meta``, ``.metrics``."""
    ckpt = ckpt_io.load(path, kind="teacher")
    if ckpt.get("meta", {}).get("direction", "IS") != "IS":
        raise ckpt_io.CheckpointError(f"{path}: teacher checkpoint has direction "
                                      f"{ckpt['meta']['direction']!r}, expected 'IS' (image → sinogram)")
    try:
        model = Generator(ckpt["config"], "IS")
        model.load_state_dict(ckpt["model"])
    except (ConfigError, RuntimeError, KeyError) as e:
        raise ckpt_io.CheckpointError(f"{path}: weights/config do not rebuild an IS Generator: "
                                      f"{str(e).splitlines()[0]}") from None
    model.eval().requires_grad_(False).to(device)
    model.sha256 = ckpt_io.sha256_file(path)
    model.config, model.meta, model.metrics = ckpt["config"], ckpt.get("meta", {}), ckpt.get("metrics", {})
    return model
