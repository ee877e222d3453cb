"""Classical, attenuation-corrected reconstruction baselines: FBP and MLEM/OSEM.

The student network (sinogram → activity image) is compared against these.  Both use the
project's projector P (shared/projector.py, line integrals in cm) and the data model of the
synthetic data (shared/data/synthetic.py)::

    E[actSino] = exp(−P·attenMap) ⊙ P·actMap        (no other factor)

so a perfect reconstruction of ``actMap`` (expected counts per cm of ray path) is possible in the
same units, and both methods return images in actMap's units.

    fbp(sino, mu, projector, filter="ramp", cutoff=1.0)         -> image [B, 1, H, W]
    mlem(sino, mu, projector, n_iter=30, subsets=1, x0=None, background=0.0)   (OSEM: subsets > 1)
    poisson_loglik(sino, image, mu, projector, background=0.0)  -> [B] float64
    reconstruct_split(dataset, "test", "mlem", **overrides)      -> np.ndarray (N, 1, H, W)
    BASELINES = {"fbp": ..., "mlem": ..., "osem": ...}           (callables with tuned defaults)

Sinograms are batched torch tensors [B, 1, R, A] (counts; float).  For 3-plane data the caller
passes the centre plane, ``sino[:, 1:2]`` (``reconstruct_split`` does this).  ``mu`` is the
μ-map [B, 1, H, W] in 1/cm (or None: no attenuation).  Everything runs under ``torch.no_grad``
on the tensors' device.

The function defaults are the textbook methods (ramp FBP, plain MLEM); the tuned settings the
student is compared against are in :data:`BASELINES` (see the notes there and ``tune_baselines``).
"""
from __future__ import annotations

import functools
import math
import weakref
from typing import Callable

import numpy as np
import torch
from shared.errors import InputError

FILTERS = ("ramp", "shepp-logan", "hann")


# ------------------------------------------------------------------------------ helpers
def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (or numpy array), got {type(x).__name__}")
    return x if x.is_floating_point() else x.to(torch.float32)


def _check_inputs(sino, mu, projector, fn: str):
    g = projector.geometry
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


def attenuation_factors(mu: torch.Tensor | None, projector, like: torch.Tensor | None = None) -> torch.Tensor:
    """a = exp(−P μ), [B, 1, R, A]; all ones (shaped like ``like``) when mu is None."""
    if mu is None:
        return torch.ones_like(like)
    with torch.no_grad():
        return torch.exp(-projector.forward(mu.to(torch.float32)))


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
def fbp(sino, mu, projector, filter: str = "ramp", cutoff: float = 1.0, nonneg: bool = False) -> torch.Tensor:
    """Attenuation-corrected filtered back-projection, [B,1,R,A] counts → [B,1,H,W] in actMap units.

    1. attenuation correction: p = sino · exp(+P μ) (the ACF; skipped when mu is None);
    2. ramp filter along the radial axis (``filter`` window: "ramp", "shepp-logan" or "hann";
       ``cutoff`` as a fraction of the Nyquist frequency), zero-padded to ≥ 2R;
    3. back-projection x = (π / A) · (Δr / Δx²) · Pᵀ q.  The π/A is the angular quadrature;
       Δr/Δx² (cm) undoes the weights of the projector's adjoint, whose sum over the radial bins
       of one view is Δx²/Δr for every pixel (astra 'linear' model), so that FBP(P x) ≈ x.

    ``nonneg`` clips the result at zero (FBP itself is not non-negative).
    """
    sino, mu = _check_inputs(sino, mu, projector, "fbp")
    g = projector.geometry
    dr, dx = g.radial_mm / 10.0, g.pixel_mm / 10.0
    with torch.no_grad():
        p = sino if mu is None else sino * torch.exp(projector.forward(mu))
        q = ramp_filter(p, dr, filter, cutoff)
        x = projector.adjoint(q) * (math.pi / g.n_angles * dr / dx ** 2)
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
def poisson_loglik(sino, image, mu, projector, background=0.0) -> torch.Tensor:
    """Poisson log-likelihood Σ y·log ȳ − ȳ (without the log y! constant), ȳ = a ⊙ P x + bg; [B] float64."""
    sino, mu = _check_inputs(sino, mu, projector, "poisson_loglik")
    with torch.no_grad():
        a = attenuation_factors(mu, projector, sino)
        ybar = (a * projector.forward(_as_tensor(image, "image").to(torch.float32)) + background).double()
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


def mlem(sino, mu, projector, n_iter: int = 30, subsets: int = 1, x0=None, background=0.0,
         post_fwhm_mm: float = 0.0, callback: Callable | None = None) -> torch.Tensor:
    """Attenuation-weighted MLEM (``subsets=1``) or OSEM (``subsets > 1``); [B,1,H,W] in actMap units.

    Model: y ~ Poisson(a ⊙ P x + background) with a = exp(−P μ).  One iteration visits every
    subset s (angle columns s::subsets) once with the multiplicative update

        x ← x / (Pₛᵀ aₛ) ⊙ Pₛᵀ(aₛ ⊙ yₛ / (aₛ ⊙ Pₛ x + bgₛ))

    ``x0`` defaults to a uniform image scaled so that the expected total counts equal the measured
    ones, zero where the sensitivity Pᵀa is zero (such pixels stay zero).  Pixels a subset does not
    see keep their value for that subset.  ``background`` is a scalar or a tensor broadcastable to
    the sinogram (e.g. randoms + scatter, in counts).  ``post_fwhm_mm`` > 0 applies a Gaussian
    post-filter to the result.  ``callback(iteration, x)`` is called after each full iteration
    (iteration = 1..n_iter).  The result is non-negative (given non-negative data and x0).
    """
    sino, mu = _check_inputs(sino, mu, projector, "mlem")
    if int(n_iter) < 0 or int(subsets) < 1 or int(subsets) > projector.geometry.n_angles:
        raise InputError(f"mlem: need n_iter >= 0 and 1 <= subsets <= n_angles, got {n_iter}, {subsets}")
    if (sino < 0).any():
        raise InputError("mlem: the sinogram must be non-negative counts")
    n_iter, subsets = int(n_iter), int(subsets)
    g = projector.geometry
    ops = _subset_operators(projector, subsets)
    with torch.no_grad():
        y = sino
        a = attenuation_factors(mu, projector, y).expand_as(y)
        bg = torch.as_tensor(background, dtype=torch.float32, device=y.device)
        if bg.dim() > 0:
            bg = bg.expand_as(y)
        sens_full = projector.adjoint(a)
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


# ------------------------------------------------------------------------------ baselines
# Each entry is a functools.partial, so ``BASELINES["mlem"].keywords`` shows its settings and
# keyword arguments given at call time override them. The settings were chosen with
# ``tune_baselines`` (mean relative L2 against actMap) on validation phantoms of the default synthetic
# data: FBP with a Hann window at 0.35 × Nyquist, clipped at 0 (the textbook ramp filter amplifies the
# Poisson noise many times over); MLEM 30 iterations and OSEM 4 subsets × 8 iterations, each with a
# 10 mm FWHM Gaussian post-filter (the optimum is flat around these). ``evaluate`` re-tunes them on
# the user's validation split unless ``--baseline-defaults``; its summary.json records what it used.
BASELINES: dict[str, functools.partial] = {
    "fbp": functools.partial(fbp, filter="hann", cutoff=0.35, nonneg=True),
    "mlem": functools.partial(mlem, n_iter=30, subsets=1, post_fwhm_mm=10.0),
    "osem": functools.partial(mlem, n_iter=8, subsets=4, post_fwhm_mm=10.0),
}


def _resolve(method) -> Callable:
    if callable(method):
        return method
    if method not in BASELINES:
        raise InputError(f"reconstruct_split: method must be one of {sorted(BASELINES)} or a callable, got {method!r}")
    return BASELINES[method]


def reconstruct_split(dataset, split: str, method="mlem", *, batch_size: int = 16, projector=None,
                      device=None, progress: bool = False, indices=None, calibration: float = 1.0,
                      **kw) -> np.ndarray:
    """Reconstruct every sample of ``split`` → float32 array (N, 1, H, W) in actMap units.

    ``calibration`` is the dataset's count scale c (E[actSino] = c · exp(−Pμ) · P actMap): the
    sinograms are divided by it, so the images come out in actMap units whatever the data's units.

    ``dataset``: a :class:`shared.data.dataset_io.Dataset` or a dataset folder.  ``method``: a key
    of :data:`BASELINES` ("fbp", "mlem", "osem") or a callable ``f(sino, mu, projector, **kw)``;
    ``kw`` overrides the baseline's defaults.  Uses the centre sinogram plane and the split's
    μ-map; one Projector is built (or pass ``projector``) and reused for all batches.
    ``indices`` restricts the work to some samples (the output then has len(indices) rows).
    """
    from shared.data.dataset_io import as_dataset
    from shared.projector import Projector

    ds = as_dataset(dataset)
    arrays = ds.split(split)
    fn = _resolve(method)
    P = projector if projector is not None else Projector(ds.geometry)
    if P.geometry != ds.geometry:
        raise InputError(f"reconstruct_split: projector geometry {P.geometry} != dataset geometry {ds.geometry}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    idx = np.arange(arrays.n) if indices is None else np.asarray(indices, dtype=np.int64)
    c = ds.sino_channels // 2
    out = np.empty((len(idx), 1, *ds.geometry.image_shape), np.float32)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm
        name = method if isinstance(method, str) else getattr(method, "__name__", "recon")
        bar = tqdm(total=len(idx), unit="img", desc=f"{name} {split}", file=sys.stderr)
    try:
        for s in range(0, len(idx), batch_size):
            b = idx[s:s + batch_size]
            sino = torch.from_numpy(np.asarray(arrays.actSino[b, c:c + 1], dtype=np.float32) / np.float32(calibration)).to(device)
            mu = torch.from_numpy(np.asarray(arrays.attenMap[b], dtype=np.float32)).to(device)
            out[s:s + len(b)] = fn(sino, mu, P, **kw).cpu().numpy()
            if bar is not None:
                bar.update(len(b))
    finally:
        if bar is not None:
            bar.close()
    return out


def relative_l2(pred, target, mask=None) -> np.ndarray:
    """Per-sample ‖pred − target‖ / ‖target‖ (optionally inside a boolean mask); numpy [N]."""
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    if mask is not None:
        m = np.asarray(mask, bool)
        p, t = p * m, t * m
    d = (p - t).reshape(len(p), -1)
    return np.linalg.norm(d, axis=1) / np.maximum(np.linalg.norm(t.reshape(len(t), -1), axis=1), 1e-30)


def tune_baselines(dataset, split: str = "val", *, fbp_filters=FILTERS,
                   fbp_cutoffs=(1.0, 0.8, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25),
                   subsets=(1, 2, 4, 6, 10, 15), max_iter=None, post_fwhm_mm=(0.0, 4.0, 6.0, 8.0, 10.0),
                   batch_size: int = 16, projector=None, progress: bool = False, calibration: float = 1.0,
                   device=None) -> dict:
    """Grid search of the baselines' settings by mean relative L2 against actMap on one split
    (sinograms divided by the dataset's ``calibration``, as in :func:`reconstruct_split`).

    FBP: every filter × cutoff, with and without clipping at zero.  MLEM/OSEM: every subset count,
    every iteration up to ``max_iter[subsets]`` (default: 60 sub-iteration sweeps ≈ 60/S iterations,
    at least 4), every post-filter FWHM.  Returns ``{"fbp": {(filter, cutoff, nonneg): err},
    "em": {(subsets, n_iter, post_fwhm_mm): err}, "best": {"fbp": kw, "mlem": kw, "osem": kw}}``
    where the best OSEM is the best setting with subsets > 1.
    """
    from shared.data.dataset_io import as_dataset
    from shared.projector import Projector

    ds = as_dataset(dataset)
    arrays = ds.split(split)
    P = projector if projector is not None else Projector(ds.geometry)
    c = ds.sino_channels // 2
    max_iter = dict(max_iter or {})
    for S in subsets:
        max_iter.setdefault(S, max(4, math.ceil(60 / S)))
    fbp_err, em_err, n = {}, {}, arrays.n
    batches = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]

    device = torch.device(device) if device is not None else torch.device("cpu")

    def load(sl):
        return (torch.from_numpy(np.array(arrays.actSino[sl, c:c + 1], dtype=np.float32) / np.float32(calibration)).to(device),
                torch.from_numpy(np.array(arrays.attenMap[sl], dtype=np.float32)).to(device),
                np.asarray(arrays.actMap[sl], dtype=np.float32))

    def add(table, key, img, truth):
        table[key] = table.get(key, 0.0) + float(relative_l2(img, truth).sum()) / n

    bar = None
    if progress:
        import sys

        from tqdm import tqdm
        bar = tqdm(total=n * (1 + len(subsets)), unit="img", desc=f"tune {split}", file=sys.stderr)
    try:
        for sl in batches:
            sino, mu, truth = load(sl)
            for f in fbp_filters:
                for cut in fbp_cutoffs:
                    img = fbp(sino, mu, P, filter=f, cutoff=cut).cpu().numpy()
                    add(fbp_err, (f, cut, False), img, truth)
                    add(fbp_err, (f, cut, True), np.maximum(img, 0), truth)
            if bar is not None:
                bar.update(sino.shape[0])
        for S in subsets:  # subsets outermost: the sliced matrices are built once per count
            for sl in batches:
                sino, mu, truth = load(sl)

                def cb(it, x, S=S, truth=truth):
                    for fw in post_fwhm_mm:
                        add(em_err, (S, it, float(fw)), gaussian_smooth(x, fw / ds.geometry.pixel_mm).cpu().numpy(), truth)
                mlem(sino, mu, P, n_iter=max_iter[S], subsets=S, callback=cb)
                if bar is not None:
                    bar.update(sino.shape[0])
    finally:
        if bar is not None:
            bar.close()
    bf = min(fbp_err, key=fbp_err.get)
    best = {"fbp": dict(filter=bf[0], cutoff=bf[1], nonneg=bf[2])}
    for name, keep in (("mlem", lambda k: k[0] == 1), ("osem", lambda k: k[0] > 1)):
        keys = [k for k in em_err if keep(k)]
        if keys:
            k = min(keys, key=em_err.get)
            best[name] = dict(n_iter=k[1], subsets=k[0], post_fwhm_mm=k[2])
    return {"fbp": fbp_err, "em": em_err, "best": best}
