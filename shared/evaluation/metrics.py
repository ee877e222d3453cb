"""Image-quality metrics on batches [B, C, H, W]; every function returns one value per sample.

The data range is explicit (PSNR/SSIM depend on it); by default it is each target's max − min.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from shared.errors import InputError

SSIM_K1, SSIM_K2 = 0.01, 0.03


def _per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def data_range_of(target: torch.Tensor) -> torch.Tensor:
    t = _per_sample(target)
    return (t.max(1).values - t.min(1).values).clamp_min(1e-12)


def mse(pred, target) -> torch.Tensor:
    return _per_sample((pred - target) ** 2).mean(1)


def nrmse(pred, target) -> torch.Tensor:
    """Relative L2 error ‖pred − target‖ / ‖target‖."""
    return _per_sample(pred - target).norm(dim=1) / _per_sample(target).norm(dim=1).clamp_min(1e-12)


def psnr(pred, target, data_range=None) -> torch.Tensor:
    r = data_range_of(target) if data_range is None else torch.as_tensor(data_range, dtype=pred.dtype).expand(pred.shape[0])
    return 10 * torch.log10(r ** 2 / mse(pred, target).clamp_min(1e-20))


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(pred, target, data_range=None, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Standard SSIM (Wang et al. 2004): Gaussian 11×11 window, σ = 1.5, valid region only."""
    return _per_sample(ssim_map(pred, target, data_range, window, sigma)).mean(1)


def ssim_map(pred, target, data_range=None, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Local SSIM values [B, C, H − window + 1, W − window + 1] (the valid region)."""
    B, C = pred.shape[:2]
    r = data_range_of(target) if data_range is None else torch.as_tensor(data_range, dtype=pred.dtype).expand(B)
    r = r.view(B, 1, 1, 1).to(pred)
    c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
    w = _gaussian_window(window, sigma, pred.dtype, pred.device).expand(C, 1, window, window)

    def filt(z):
        return F.conv2d(z, w, groups=C)

    mu_x, mu_y = filt(pred), filt(target)
    sxx = filt(pred * pred) - mu_x ** 2
    syy = filt(target * target) - mu_y ** 2
    sxy = filt(pred * target) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim_global(pred, target, data_range=None) -> torch.Tensor:
    """The "global window" SSIM variant: one window covering the whole image."""
    r = data_range_of(target) if data_range is None else torch.as_tensor(data_range, dtype=pred.dtype).expand(pred.shape[0])
    c1, c2 = (SSIM_K1 * r) ** 2, (SSIM_K2 * r) ** 2
    x, y = _per_sample(pred), _per_sample(target)
    mx, my = x.mean(1), y.mean(1)
    vx, vy = x.var(1, unbiased=False), y.var(1, unbiased=False)
    cxy = ((x - mx[:, None]) * (y - my[:, None])).mean(1)
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))


METRICS = {"mse": mse, "nrmse": nrmse, "psnr": psnr, "ssim": ssim, "ssim_global": ssim_global}
HIGHER_IS_BETTER = {"mse": False, "nrmse": False, "psnr": True, "ssim": True, "ssim_global": True, "loss": False}


def masked_metrics(pred, target, mask, window: int = 11) -> dict[str, torch.Tensor]:
    """The metrics where the patient is (``mask`` true, e.g. μ > 0), as ``masked_<name>``.

    MSE and NRMSE over the masked pixels; PSNR and SSIM with the data range of the target inside
    the mask; SSIM as the mean of the local SSIM map over masked window centres.  The background,
    which a blank image reproduces perfectly, does not count.
    """
    m = mask.to(pred.dtype).expand_as(pred)
    n = _per_sample(m).sum(1).clamp_min(1)
    d = (pred - target) * m
    out = {"masked_mse": _per_sample(d * d).sum(1) / n,
           "masked_nrmse": _per_sample(d).norm(dim=1) / _per_sample(target * m).norm(dim=1).clamp_min(1e-12)}
    inside = _per_sample(torch.where(m > 0, target, torch.nan))
    r = (inside.nan_to_num(-torch.inf).max(1).values - inside.nan_to_num(torch.inf).min(1).values).clamp_min(1e-12)
    out["masked_psnr"] = 10 * torch.log10(r ** 2 / out["masked_mse"].clamp_min(1e-20))
    h = window // 2
    mc = m[..., h:m.shape[-2] - h, h:m.shape[-1] - h]
    smap = ssim_map(pred, target, r, window)
    out["masked_ssim"] = _per_sample(smap * mc).sum(1) / _per_sample(mc).sum(1).clamp_min(1)
    return out


def all_metrics(pred, target) -> dict[str, torch.Tensor]:
    pred, target = pred.detach().float(), target.detach().float()
    return {name: fn(pred, target) for name, fn in METRICS.items()}


def metric_and_mode(metric: str, mode: str | None) -> tuple[str, str]:
    """A validation metric name (``nrmse`` or ``val_nrmse``) → (``val_nrmse``, its direction)."""
    name = metric[4:] if metric.startswith("val_") else metric
    if name not in HIGHER_IS_BETTER:
        raise InputError(f"--metric must be one of {sorted(HIGHER_IS_BETTER)}, got {metric!r}")
    if mode not in (None, "max", "min"):
        raise InputError(f"--mode must be 'max' or 'min', got {mode!r}")
    return f"val_{name}", mode or ("max" if HIGHER_IS_BETTER[name] else "min")
