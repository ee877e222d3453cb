"""Training losses by the researcher's ``sup_base_criterion`` names (validated in shared.config.schema)."""
import torch
import torch.nn.functional as F

VAR_K = 1.0  # their VarWeightedMSE's k: target units → counts (1: the target is in counts)
VAR_EPS = 1e-8  # their epsilon


def var_weighted_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Their ``VarWeightedMSE``: for Poisson data Var[y] = E[y], so each squared residual is divided by the
    expected value, taken as the target:

        L = mean( (pred − target)² / (k · target + ε) ),  k = 1, ε = 1e-8

    As in their code the weights follow the target (no gradient through them) and an element whose target
    is 0 weighs 1/ε: such a loss pins empty background to exactly zero.
    """
    return ((pred - target) ** 2 / (VAR_K * target.detach() + VAR_EPS)).mean()


LOSSES = {"MSELoss": F.mse_loss, "L1Loss": F.l1_loss, "SmoothL1Loss": F.smooth_l1_loss, "VarWeightedMSE": var_weighted_mse}


def get_loss(name: str):
    return LOSSES[name]
