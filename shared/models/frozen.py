"""A frozen network (eval mode, no gradients, identified by sha256) from its checkpoint alone.

Lives in shared/ because both the teacher phase and the feature-store export load the teacher,
and the feature store must not depend on phase1_teacher.
"""
from __future__ import annotations

from pathlib import Path

import torch

from shared.files import checkpoint as ckpt_io
from shared.models.network import Network
from shared.models.restore import rebuild


def load_frozen(path: str | Path, kind: str, direction: str | None = None, device: str | torch.device = "cpu") -> Network:
    """Frozen network with ``.sha256``, ``.config``, ``.meta``, ``.metrics`` and ``.input_scale``; ``direction``
    None: the one its checkpoint records (a teacher's IS or SI, shared.data.views)."""
    ckpt = ckpt_io.load(path, kind=kind)
    found = ckpt.get("meta", {}).get("direction", direction or "IS")
    direction = direction or found
    if found != direction:
        raise ckpt_io.CheckpointError(f"{path}: {kind} checkpoint has direction {found!r}, expected {direction!r}")
    model = rebuild(ckpt, path, direction)
    model.eval().requires_grad_(False).to(device)
    model.sha256 = ckpt_io.sha256_file(path)
    model.config, model.meta, model.metrics = ckpt["config"], ckpt.get("meta", {}), ckpt.get("metrics", {})
    # the factor the network's input was multiplied by in training (μ-map scale for the teacher)
    model.input_scale = float(model.meta.get("input_scale", 1.0))
    return model
