"""Training losses by config name (``loss`` key; the choices are validated in shared.config.schema)."""
import torch.nn.functional as F

LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}


def get_loss(name: str):
    return LOSSES[name]
