"""Classical, attenuation-corrected reconstruction: FBP and MLEM/OSEM, for the acquisition model

    E[actSino] = c · exp(−A μ) ⊙ A x          (``physics``: shared.physics.acquisition.Acquisition)

so a perfect reconstruction of ``actMap`` is possible in its own units, and both methods return images
in actMap's units whatever the counts' calibration c.

    fbp(sino, mu, physics, filter="ramp", cutoff=1.0)         -> image [B, 1, H, W]
    mlem(sino, mu, physics, n_iter=30, subsets=1, x0=None, background=0.0)   (OSEM: subsets > 1)
    poisson_loglik(sino, image, mu, physics, background=0.0)  -> [B] float64

Sinograms are batched torch tensors [B, 1, R, A] (counts; float).  For 3-plane data the caller
passes the centre plane, ``sino[:, 1:2]``.  ``mu`` is the μ-map [B, 1, H, W] in 1/cm (or None: no
attenuation).  Everything runs under ``torch.no_grad`` on the tensors' device.  The function defaults
are the textbook methods (ramp FBP, plain MLEM); the tuned settings the student is compared against,
and their use on a dataset split, are in shared/evaluation/baselines.py.
"""
from __future__ import annotations

import functools
import math
import weakref
from typing import Callable

import numpy as np
import torch
from shared.errors import InputError
from shared.physics.acquisition import Acquisition

FILTERS = ("ramp", "shepp-logan", "hann")


# ------------------------------------------------------------------------------ helpers
def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (or numpy array), got {type(x).__name__}")
    return x if x.is_floating_point() else x.to(torch.float32)


def _check_inputs(sino, mu, physics, fn: str):
    if not isinstance(physics, Acquisition):
        raise InputError(f"{fn}: the third argument is the acquisition model, Acquisition(projector, calibration) "
                         f"(shared.physics.acquisition), got {type(physics).__name__}")
    g = physics.geometry
    sino = _as_tensor(sino, f"{fn}: sino")
    if sino.dim() != 4 or sino.shape[1] != 1 or tuple(sino.shape[-2:]) != g.sino_shape:
        raise InputError(f"{fn}: sino must be [B, 1, {g.n_radial}, {g.n_angles}] (pass the centre plane "
                         f"sino[:, c:c+1] of multi-plane data), got {list(sino.shape)}")
    if mu is not None:
        mu = _as_tensor(mu, f"{fn}: mu").to(sino.device)
        if mu.dim() != 4 or mu.shape[1] != 1 or tuple(mu.shape[-2:]) != g.image_shape \
                or mu.shape[0] not in (1, sino.shape[0]):
            raise InputError(f"{fn}: mu must be [B, 1, {g.image_size}, {g.image_size}] with B = "
                             f"{sino.shape[0]} (or 1), got {list(mu.shape)}")
    return sino.to(torch.float32), (None if mu is None else mu.to(torch.float32))


def _attenuation(mu: torch.Tensor | None, physics: Acquisition, like: torch.Tensor) -> torch.Tensor:
    """a = exp(−A μ), [B, 1, R, A]; all ones (shaped like ``like``) when mu is None."""
    return torch.ones_like(like) if mu is None else physics.attenuation(mu)


def _window(nu: np.ndarray, filter: str, cutoff: float) -> np.ndarray:
    """Apodisation window on |frequency| ν in units of the Nyquist frequency (0..1)."""
    x = nu / cutoff
    if filter == "ramp":
        w = np.ones_like(x)
    elif filter == "shepp-logan":
        w = np.sinc(x / 2)  # sin(πx/2)/(πx/2): the classic Shepp–Logan window at cutoff 1
    elif filter == "hann":
        w = 0.5 * (1 + np.cos(np.pi * x))
    else:
        raise InputError(f"fbp: filter must be one of {FILTERS}, got {filter!r}")
    return np.where(x <= 1, w, 0.0)


@functools.lru_cache(maxsize=32)
def _ramp_response(n_radial: int, spacing_cm: float, filter: str, cutoff: float) -> tuple[int, np.ndarray]:
    """(padded length L, rfft response of length L//2+1) of the discrete ramp filter.

    Spatial-domain band-limited ramp (Kak & Slaney eq. 61): h[0] = 1/(4τ²), h[odd n] = −1/(nπτ)²,
    h[even n] = 0, τ = radial spacing; its DFT has no DC error, unlike sampling |f| directly.
    The convolution sum carries a factor τ, so q = τ·(h ⊛ p) approximates the continuous
    ramp-filtered projection in 1/cm.  Zero padding to L ≥ 2R avoids circular wrap-around.
    """
    L = max(64, 1 << int(math.ceil(math.log2(2 * n_radial))))
    n = np.concatenate([np.arange(0, L // 2 + 1), np.arange(-(L // 2) + 1, 0)]).astype(np.float64)
    h = np.zeros(L)
    h[0] = 1.0 / (4 * spacing_cm ** 2)
    odd = (n.astype(np.int64) % 2) == 1
    h[odd] = -1.0 / (n[odd] * np.pi * spacing_cm) ** 2
    H = np.real(np.fft.rfft(h)) * spacing_cm
    nu = np.arange(L // 2 + 1) / (L // 2)
    return L, H * _window(nu, filter, cutoff)


def ramp_filter(sino: torch.Tensor, spacing_cm: float, filter: str = "ramp", cutoff: float = 1.0) -> torch.Tensor:
    """Ramp-filter [..., R, A] sinograms along the radial axis (dim −2); result in (sinogram units)/cm."""
    if not 0 < cutoff <= 1:
        raise InputError(f"fbp: cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff!r}")
    R = sino.shape[-2]
    L, H = _ramp_response(R, float(spacing_cm), filter, float(cutoff))
    Ht = torch.as_tensor(H, dtype=torch.float32 if sino.dtype != torch.float64 else torch.float64,
                         device=sino.device)
    F = torch.fft.rfft(sino, n=L, dim=-2)
    return torch.fft.irfft(F * Ht[:, None], n=L, dim=-2)[..., :R, :]


# ------------------------------------------------------------------------------ FBP
# FBP as the baselines run it by default (the Hann window at 0.35 Nyquist, clipped at zero; the grid it was
# chosen from: evaluation.baselines.tune_baselines) and as the activity IS teacher sees its input
FBP_DEFAULTS = dict(filter="hann", cutoff=0.35, nonneg=True)


def fbp(sino, mu, physics: Acquisition, filter: str = "ramp", cutoff: float = 1.0, nonneg: bool = False) -> torch.Tensor:
    """Attenuation-corrected filtered back-projection, [B,1,R,A] counts → [B,1,H,W] in actMap units.

    1. attenuation correction: p = sino / c · exp(+A μ) (the ACF; skipped when mu is None);
    2. ramp filter along the radial axis (``filter`` window: "ramp", "shepp-logan" or "hann";
       ``cutoff`` as a fraction of the Nyquist frequency), zero-padded to ≥ 2R;
    3. back-projection x = (π / n_A) · (Δr / Δx²) · Aᵀ q.  The π/n_A is the angular quadrature;
       Δr/Δx² (cm) undoes the weights of the projector's adjoint, whose sum over the radial bins
       of one view is Δx²/Δr for every pixel (astra 'linear' model), so that FBP(A x) ≈ x.

    ``nonneg`` clips the result at zero (FBP itself is not non-negative).
    """
    sino, mu = _check_inputs(sino, mu, physics, "fbp")
    g = physics.geometry
    dr, dx = g.radial_mm / 10.0, g.pixel_mm / 10.0
    with torch.no_grad():
        q = ramp_filter(physics.corrected(sino, mu), dr, filter, cutoff)
        x = physics.A_adjoint(q) * (math.pi / g.n_angles * dr / dx ** 2)
        return x.clamp_min(0) if nonneg else x


# ------------------------------------------------------------------------------ subsets
class _SubsetOperators:
    """Forward/adjoint restricted to the angle columns ``s::S`` of the full operator.

    For the matrix backend the rows of the system matrix are sliced once (cost of one subset
    iteration = 1/S of a full one); for any other backend the full operator is applied and the
    columns are selected / zero-filled (correct, S times more work).
    """

    def __init__(self, projector, subsets: int, allow_slice: bool = True):
        g = projector.geometry
        try:  # no strong reference: the per-projector cache below must not keep its key alive
            self._P = weakref.ref(projector)
        except TypeError:
            self._P = lambda: projector
        self.S, self.g = subsets, g
        self.cols = [torch.arange(s, g.n_angles, subsets) for s in range(subsets)]
        self._mats = None  # per subset: (W_s, W_sᵀ) torch CSR on CPU
        self._dev = {}
        if subsets > 1 and allow_slice:
            self._mats = self._slice(projector)

    def _slice(self, projector):
        mats = projector.angle_subset_matrices(self.cols) if hasattr(projector, "angle_subset_matrices") else None
        g = self.g
        if mats is None or any(tuple(W.shape) != (g.n_radial * len(c), g.image_size ** 2)
                               for (W, _), c in zip(mats, self.cols)):
            return None  # another operator: fall back to masking
        return mats

    @property
    def P(self):
        return self._P()

    def _mat(self, s: int, device: torch.device):
        key = (s, device)
        if key not in self._dev:
            self._dev[key] = tuple(m.to(device) for m in self._mats[s])
        return self._dev[key]

    def take(self, sino: torch.Tensor, s: int) -> torch.Tensor:
        return sino if self.S == 1 else sino[..., self.cols[s].to(sino.device)]

    def forward(self, x: torch.Tensor, s: int) -> torch.Tensor:
        if self.S == 1:
            return self.P.forward(x)
        if self._mats is None:
            return self.take(self.P.forward(x), s)
        W, _ = self._mat(s, x.device)
        B = x.shape[0]
        y = torch.sparse.mm(W, x.reshape(B, -1).t().contiguous())
        return y.t().reshape(B, 1, self.g.n_radial, len(self.cols[s]))

    def adjoint(self, ys: torch.Tensor, s: int) -> torch.Tensor:
        if self.S == 1:
            return self.P.adjoint(ys)
        B = ys.shape[0]
        if self._mats is None:
            full = ys.new_zeros(B, 1, self.g.n_radial, self.g.n_angles)
            full[..., self.cols[s].to(ys.device)] = ys
            return self.P.adjoint(full)
        _, Wt = self._mat(s, ys.device)
        x = torch.sparse.mm(Wt, ys.reshape(B, -1).t().contiguous())
        return x.t().reshape(B, 1, *self.g.image_shape)


_SUBSET_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _subset_operators(projector, subsets: int) -> _SubsetOperators:
    """Cached per projector object (slicing the matrix costs about one full iteration).

    Only the most recently used subset count is kept: the sliced matrices are as large as the
    projector's own (~160 MB at 180×180), so caching every count tried would add up.
    """
    try:
        ops = _SUBSET_CACHE.get(projector)
    except TypeError:  # not weak-referenceable
        return _SubsetOperators(projector, subsets)
    if ops is None or ops.S != subsets:
        ops = _SUBSET_CACHE[projector] = _SubsetOperators(projector, subsets)
    return ops


# ------------------------------------------------------------------------------ MLEM / OSEM
def poisson_loglik(sino, image, mu, physics: Acquisition, background=0.0) -> torch.Tensor:
    """Poisson log-likelihood Σ y·log ȳ − ȳ (without the log y! constant), ȳ = c · a ⊙ A x + bg; [B] float64."""
    sino, mu = _check_inputs(sino, mu, physics, "poisson_loglik")
    with torch.no_grad():
        a = _attenuation(mu, physics, sino)
        ax = physics.A(_as_tensor(image, "image").to(torch.float32))
        ybar = (physics.calibration * a * ax + background).double()
        y = sino.double()
        ylog = torch.where(y > 0, y * torch.log(ybar.clamp_min(0)), torch.zeros_like(y))
        return (ylog - ybar).flatten(1).sum(1)


def gaussian_smooth(x: torch.Tensor, fwhm_px: float) -> torch.Tensor:
    """Separable Gaussian smoothing of [B, 1, H, W] images (zero padding); identity for fwhm ≤ 0."""
    if fwhm_px <= 0:
        return x
    sigma = fwhm_px / (2 * math.sqrt(2 * math.log(2)))
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    k = k / k.sum()
    y = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return torch.nn.functional.conv2d(y, k.view(1, 1, -1, 1), padding=(r, 0))


def mlem(sino, mu, physics: Acquisition, n_iter: int = 30, subsets: int = 1, x0=None, background=0.0,
         post_fwhm_mm: float = 0.0, callback: Callable | None = None) -> torch.Tensor:
    """Attenuation-weighted MLEM (``subsets=1``) or OSEM (``subsets > 1``); [B,1,H,W] in actMap units.

    Model: y ~ Poisson(c · a ⊙ A x + background) with a = exp(−A μ); the update runs on y / c (MLEM is
    equivariant to the scale).  One iteration visits every subset s (angle columns s::subsets) once with
    the multiplicative update

        x ← x / (Aₛᵀ aₛ) ⊙ Aₛᵀ(aₛ ⊙ yₛ / (aₛ ⊙ Aₛ x + bgₛ))

    ``x0`` defaults to a uniform image scaled so that the expected total counts equal the measured
    ones, zero where the sensitivity Pᵀa is zero (such pixels stay zero).  Pixels a subset does not
    see keep their value for that subset.  ``background`` is a scalar or a tensor broadcastable to
    the sinogram (e.g. randoms + scatter, in counts like ``sino``).  ``post_fwhm_mm`` > 0 applies a Gaussian
    post-filter to the result.  ``callback(iteration, x)`` is called after each full iteration
    (iteration = 1..n_iter).  The result is non-negative (given non-negative data and x0).
    """
    sino, mu = _check_inputs(sino, mu, physics, "mlem")
    if int(n_iter) < 0 or int(subsets) < 1 or int(subsets) > physics.geometry.n_angles:
        raise InputError(f"mlem: need n_iter >= 0 and 1 <= subsets <= n_angles, got {n_iter}, {subsets}")
    if (sino < 0).any():
        raise InputError("mlem: the sinogram must be non-negative counts")
    n_iter, subsets = int(n_iter), int(subsets)
    g = physics.geometry
    ops = _subset_operators(physics.projector, subsets)
    with torch.no_grad():
        y = physics.in_activity_units(sino)
        a = _attenuation(mu, physics, y).expand_as(y)
        bg = physics.in_activity_units(torch.as_tensor(background, dtype=torch.float32, device=y.device))
        if bg.dim() > 0:
            bg = bg.expand_as(y)
        sens_full = physics.A_adjoint(a)
        support = sens_full > 0
        if x0 is None:
            counts = (y - bg).clamp_min(0).flatten(1).sum(1)
            total = sens_full.flatten(1).sum(1).clamp_min(1e-30)
            x = (counts / total).view(-1, 1, 1, 1) * support.to(torch.float32)
        else:
            x = _as_tensor(x0, "mlem: x0").to(device=y.device, dtype=torch.float32)
            if x.shape != sens_full.shape:
                raise InputError(f"mlem: x0 must be {list(sens_full.shape)}, got {list(x.shape)}")
            if (x < 0).any():
                raise InputError("mlem: x0 must be non-negative")
            x = x * support
        if subsets == 1:
            sens = [sens_full]
        else:
            sens = [ops.adjoint(ops.take(a, s), s) for s in range(subsets)]
        inv_sens = [torch.where(sv > 0, 1.0 / sv.clamp_min(1e-30), torch.zeros_like(sv)) for sv in sens]
        seen = [sv > 0 for sv in sens]
        for it in range(n_iter):
            for s in range(subsets):
                a_s, y_s = ops.take(a, s), ops.take(y, s)
                bg_s = ops.take(bg, s) if bg.dim() else bg
                ybar = a_s * ops.forward(x, s) + bg_s
                ratio = torch.where(ybar > 0, y_s / ybar.clamp_min(1e-30), torch.zeros_like(ybar))
                upd = x * ops.adjoint(a_s * ratio, s) * inv_sens[s]
                x = torch.where(seen[s], upd, x)
            if callback is not None:
                callback(it + 1, x)
        if post_fwhm_mm > 0:
            x = gaussian_smooth(x, post_fwhm_mm / g.pixel_mm)
        return x
