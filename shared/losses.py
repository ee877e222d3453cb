"""Training losses by config name (``loss`` key; the choices are validated in shared.config.schema)."""
import torch
import torch.nn.functional as F

VAR_FLOOR = 0.05  # expected-count floor, as a fraction of the batch's mean |target|


def var_weighted_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Poisson-variance-weighted MSE (the user's ``VarWeightedMSE``).

    For counts, Var[y] = E[y]: each squared residual is divided by the expected value at that
    element, taken as the target, floored at ``VAR_FLOOR`` × the mean |target| of the batch so
    empty background neither divides by zero nor dominates:

        L = mean( (pred − target)² / max(|target|, VAR_FLOOR · mean|target|) )

    The floor is a constant of the batch (no gradient flows through the weights).
    """
    t = target.detach().abs()
    var = torch.clamp(t, min=float(VAR_FLOOR * t.mean()) + 1e-12)
    return ((pred - target) ** 2 / var).mean()


LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss, "var_weighted_mse": var_weighted_mse}


def get_loss(name: str):
    return LOSSES[name]
