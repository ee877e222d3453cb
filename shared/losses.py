"""Training losses by config name (``loss`` key)."""
import torch.nn.functional as F

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"config key 'loss'={name!r}: must be one of {sorted(LOSSES)}")
    return LOSSES[name]
