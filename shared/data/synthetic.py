"""Synthetic torso-like PET data: μ-maps at 511 keV, activity maps and Poisson activity sinograms.

    python -m shared.data.synthetic --out DIR --n-train 256 --n-val 64 --n-test 64 --seed 0

Each phantom is a 2D transverse slice: an elliptical body (fat shell, soft tissue) with lungs,
heart, liver, aorta, ribs, a vertebra and a few hot/cold lesions.  A per-sample "slice level"
t ∈ [0, 1] moves the slice from upper thorax (big lungs, heart) to upper abdomen (liver), which
gives variety in anatomy, not just in ellipse sizes.  Shapes are rendered with anti-aliased
edges (analytic coverage from the distance to the ellipse), the activity is smoothed by a small
Gaussian PSF, and everything is placed inside the circle that the projector sees completely.

Data model, so that a reconstruction target is well defined:
    E[actSino] ≈ exp(−P·attenMap) ⊙ P·actMap            (the model of shared.physics.acquisition.Acquisition)
with actMap scaled per sample so that the centre plane's expected total is ``counts``; actMap is
therefore in "expected counts per cm of ray path".  The sinograms are *not* made with P: the
phantom is rendered on a 2× finer grid, projected with another model (Siddon), attenuated per
fine ray and binned down (``shared.physics.acquisition``), so model-based baselines do not meet
their own system model ("inverse crime"); actMap and attenMap are the fine maps block-averaged.  With ``channels=3`` the two extra planes are
the neighbouring slices (slice level ± one plane, spherical lesions shrink or vanish, the body
outline tapers slightly), attenuated by their own μ and scaled by the centre plane's factor.
Randomness is numpy-seeded per split and per sample: sample i of a split depends only on (seed, split, i).
"""
from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

from shared.physics.acquisition import Acquisition, FineAcquisition
from shared.data.dataset_io import write_dataset
from shared.physics.projector import ParallelGeometry
from shared.errors import InputError

# Linear attenuation coefficients at 511 keV, 1/cm (ranges are sampled per phantom).
MU = {"air": 0.0, "lung": (0.024, 0.036), "fat": 0.090, "soft": 0.096, "liver": 0.100,
      "marrow": 0.110, "bone": (0.14, 0.16)}
MU_MAX = 0.16
UNITS = {"actSino": "counts",
         "actMap": "expected counts per cm of ray path (E[actSino] = exp(-P attenMap) * P actMap)",
         "attenMap": "1/cm (linear attenuation at 511 keV)",
         "attenSino": "1 (line integral of mu, P attenMap)",
         "lesionMap": "label: 0 = no lesion, j = lesion slot j (1-4 hot, 5-6 cold); pixels at least half lesion"}
SPLITS = ("train", "val", "test")
CHUNK = 64  # phantoms rendered and projected per batch


# ------------------------------------------------------------------------------ parameters
def _sample_params(rng: np.random.Generator, n: int, r_fit: float, pixel_mm: float) -> dict:
    """Random numbers for n phantoms as arrays with a leading sample axis; lengths in pixels."""
    U = lambda lo, hi, *shape: rng.uniform(lo, hi, size=(n, *shape))  # noqa: E731
    a = U(0.74, 0.94) * r_fit                       # body semi-axis (left-right)
    b = a * U(0.58, 0.80)                            # anterior-posterior
    off_r = U(0.0, 1.0) * (r_fit - 1.02 * a)        # centre offset keeps the body (± taper) inside r_fit
    off_a = U(0, 2 * np.pi)
    p = {
        "a": a, "b": b, "cx": off_r * np.cos(off_a), "cy": off_r * np.sin(off_a),
        "phi": U(-0.25, 0.25), "taper": U(-0.01, 0.01),   # body scale change per neighbouring plane
        "t": U(0.0, 1.0), "fat": U(0.86, 0.95),          # slice level, inner/outer fat boundary ratio
        "mu_lung": U(*MU["lung"]), "mu_bone": U(*MU["bone"]),
        "act_soft": U(0.8, 1.2), "act_fat": U(0.2, 0.4), "act_lung": U(0.08, 0.2),
        "act_liver": U(1.6, 2.6), "act_blood": U(1.2, 1.8), "act_myo": U(1.5, 8.0),
        "act_marrow": U(0.9, 1.6),
        "lung_dx": U(-0.05, 0.05, 2), "lung_rot": U(-0.2, 0.2, 2), "lung_w": U(0.26, 0.34, 2),
        "heart_rot": U(0.3, 0.8), "liver_dx": U(-0.05, 0.05),
        "rib_jit": U(-0.05, 0.05, 8),
        # lesions: fixed slots, each present with some probability; radius/offset in mm (spheres)
        "les_on": rng.uniform(size=(n, 6)) < np.array([0.8, 0.6, 0.5, 0.4, 0.45, 0.3]),
        "les_hot": np.broadcast_to(np.array([1, 1, 1, 1, 0, 0], bool), (n, 6)),
        "les_rho": 0.78 * np.sqrt(U(0, 1, 6)), "les_ang": U(0, 2 * np.pi, 6),
        "les_r_mm": U(5.0, 16.0, 6), "les_z_mm": U(-0.4, 0.4, 6),  # fraction of radius, × r below
        "les_val": np.where(np.arange(6) < 4, U(3.0, 8.0, 6), U(0.02, 0.3, 6)),
    }
    p["les_z_mm"] = p["les_z_mm"] * p["les_r_mm"]
    p["les_r_mm"] = np.minimum(p["les_r_mm"], 0.2 * b[:, None] * pixel_mm)  # small bodies: keep lesions small
    return p


# ------------------------------------------------------------------------------ rendering
class _Canvas:
    """Painter's-algorithm compositing of anti-aliased ellipses into [B, H, W] μ and activity."""

    def __init__(self, size: int, p: dict, plane: int):
        B = p["a"].shape[0]
        c = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        self.Y, self.X = c[:, None], c[None, :]  # row = y, column = x, pixels from the centre
        self.mu = torch.zeros(B, size, size)
        self.act = torch.zeros(B, size, size)
        self.p, self.plane = p, plane
        s = 1 + p["taper"] * plane
        self.a, self.b = p["a"] * s, p["b"] * s

    def _t(self, x):
        return torch.as_tensor(np.asarray(x, dtype=np.float32))

    def cover(self, u0, v0, su, sv, rot=0.0, on=True):
        """Coverage in [0, 1] of an ellipse given in the body frame, as ``(cov, r0, c0, on)``.

        Centre (u0, v0) as a fraction of the body semi-axes, semi-axes (su, sv) in pixels, rotation
        relative to the body.  The anti-aliased edge uses ρ−1 divided by |∇ρ| ≈ the signed distance
        in pixels, ρ being the ellipse's normalised radius.  Small shapes (most of them: lesions,
        ribs, spine) are evaluated on a per-sample patch [B, P, P] at rows r0.., columns c0..
        instead of the whole image, which makes rendering several times cheaper.
        """
        p, size = self.p, self.mu.shape[-1]
        B = p["a"].shape[0]
        bc = lambda x: np.broadcast_to(np.asarray(x, dtype=np.float64), (B,))  # noqa: E731
        u0, v0, su, sv, rot = map(bc, (u0, v0, su, sv, rot))
        on = np.broadcast_to(np.asarray(on, dtype=bool), (B,))
        cphi, sphi = np.cos(p["phi"]), np.sin(p["phi"])
        qx, qy = u0 * self.a, v0 * self.b                     # body frame, pixels
        x0, y0 = p["cx"] + cphi * qx - sphi * qy, p["cy"] + sphi * qx + cphi * qy
        th = p["phi"] + rot
        su, sv = np.maximum(su, 1e-3), np.maximum(sv, 1e-3)
        # M maps world offsets to unit-circle coordinates: diag(1/su, 1/sv) · R(−th)
        m = [self._t(v)[:, None, None] for v in (np.cos(th) / su, np.sin(th) / su,
                                                 -np.sin(th) / sv, np.cos(th) / sv)]
        P = 2 * math.ceil(max(su.max(), sv.max()) + 2) + 1
        if 2 * P < size:  # shapes lie inside the image, so a clamped patch still holds all of it
            r0 = np.clip(np.round(y0 + (size - 1) / 2).astype(int) - P // 2, 0, size - P)
            c0 = np.clip(np.round(x0 + (size - 1) / 2).astype(int) - P // 2, 0, size - P)
            ar = torch.arange(P, dtype=torch.float32) - (size - 1) / 2
            X = self._t(c0)[:, None, None] + ar[None, None, :]
            Y = self._t(r0)[:, None, None] + ar[None, :, None]
        else:
            r0 = c0 = None
            X, Y = self.X, self.Y
        dx, dy = X - self._t(x0)[:, None, None], Y - self._t(y0)[:, None, None]
        n1, n2 = m[0] * dx + m[1] * dy, m[2] * dx + m[3] * dy
        rho = torch.sqrt(n1 * n1 + n2 * n2).clamp_min(1e-6)
        grad = torch.sqrt((m[0] * n1 + m[2] * n2) ** 2 + (m[1] * n1 + m[3] * n2) ** 2) / rho
        cov = (0.5 - (rho - 1) / grad.clamp_min(1e-6)).clamp(0, 1)
        return cov * self._t(on)[:, None, None], r0, c0, on

    def full(self, cover) -> torch.Tensor:
        """The coverage of ``cover`` as a whole image [B, size, size] (patches placed)."""
        cov, r0, c0, on = cover
        if r0 is None:
            return cov
        out, P = torch.zeros_like(self.mu), cov.shape[-1]
        for i in np.flatnonzero(on):
            out[i, r0[i]:r0[i] + P, c0[i]:c0[i] + P] = cov[i]
        return out

    def paint(self, cover, mu=None, act=None, act_factor=None):
        """Blend the values (scalar or per sample) in with the coverage; act_factor scales instead."""
        cov, r0, c0, on = cover
        B = cov.shape[0]
        jobs = [(img, self._t(np.broadcast_to(v, (B,))), mul) for img, v, mul in
                ((self.mu, mu, False), (self.act, act, False), (self.act, act_factor, True)) if v is not None]
        for img, val, mul in jobs:
            if r0 is None:
                self._blend(img, cov, val[:, None, None], mul)
            else:
                for i in np.flatnonzero(on):
                    P = cov.shape[-1]
                    self._blend(img[i, r0[i]:r0[i] + P, c0[i]:c0[i] + P], cov[i], val[i], mul)

    @staticmethod
    def _blend(img, cov, val, mul):
        if mul:
            img.mul_(1 - cov * (1 - val))
        else:
            img.mul_(1 - cov).add_(cov * val)


def _render(p: dict, size: int, pixel_mm: float, plane: int, psf_sigma_px: float, slice_mm: float,
            lesion_bin=None):
    """μ-map and (PSF-smoothed, relative) activity of one plane for all phantoms in p, and with
    ``lesion_bin`` (fine coverage → coarse coverage) the lesion label map [B, n, n] of the plane.

    Lengths in p are in pixels of this grid; planes are ``slice_mm`` apart.
    """
    cv = _Canvas(size, p, plane)
    a, b = cv.a, cv.b
    t = p["t"] + plane * slice_mm / 300.0  # ~30 cm from upper thorax to upper abdomen
    lung_s = np.sqrt(np.clip(1 - t / 0.9, 0, 1))
    liver_s = np.sqrt(np.clip((t - 0.3) / 0.7, 0, 1))
    heart_s = np.sqrt(np.clip(1 - np.abs(t - 0.35) / 0.35, 0, 1))

    cv.paint(cv.cover(0, 0, a, b), MU["fat"], p["act_fat"])
    cv.paint(cv.cover(0, 0, a * p["fat"], b * p["fat"]), MU["soft"], p["act_soft"])
    for i, side in enumerate((-1, 1)):  # lungs, left and right of the mediastinum, slightly anterior
        cv.paint(cv.cover(side * (0.45 + p["lung_dx"][:, i]), -0.08, p["lung_w"][:, i] * a * lung_s,
                          0.62 * b * lung_s, side * p["lung_rot"][:, i], on=lung_s > 0.05),
                 p["mu_lung"], p["act_lung"])
    # heart: myocardium with a blood pool, anterior and to the patient's left (image right)
    cv.paint(cv.cover(0.15, -0.25, 0.30 * a * heart_s, 0.42 * b * heart_s, p["heart_rot"], on=heart_s > 0.05),
             MU["soft"], p["act_myo"])
    cv.paint(cv.cover(0.15, -0.25, 0.17 * a * heart_s, 0.24 * b * heart_s, p["heart_rot"], on=heart_s > 0.05),
             MU["soft"], p["act_blood"])
    cv.paint(cv.cover(-0.35 + p["liver_dx"], 0.0, 0.52 * a * liver_s, 0.72 * b * liver_s, 0.3, on=liver_s > 0.05),
             MU["liver"], p["act_liver"])
    r_v = 0.19 * b  # vertebral body radius; everything spinal scales with it
    cv.paint(cv.cover(0.16, 0.33, 0.45 * r_v, 0.45 * r_v), MU["soft"], p["act_blood"])  # aorta
    for k, ang in enumerate(np.linspace(0.35, np.pi - 0.35, 8)):  # ribs along the chest wall
        ang = ang + p["rib_jit"][:, k] + (np.pi if k % 2 else 0.0)
        cv.paint(cv.cover(0.83 * np.cos(ang), 0.83 * np.sin(ang), 0.06 * b, 0.035 * b, ang, on=lung_s > 0.3),
                 p["mu_bone"], 0.3)
    cv.paint(cv.cover(0, 0.55, r_v, 0.9 * r_v), p["mu_bone"], 0.3)          # vertebral body: cortex …
    cv.paint(cv.cover(0, 0.55, 0.75 * r_v, 0.65 * r_v), MU["marrow"], p["act_marrow"])  # … and marrow
    cv.paint(cv.cover(0, 0.55 + 1.45 * r_v / b, 0.45 * r_v, 0.45 * r_v), p["mu_bone"], 0.3)  # neural arch
    cv.paint(cv.cover(0, 0.55 + 1.45 * r_v / b, 0.28 * r_v, 0.28 * r_v), MU["soft"], 0.25)    # spinal canal
    # lesions: spheres, so their cross-section depends on the plane; hot ones set the activity,
    # cold ones scale the local activity down (necrosis/cyst); μ is unchanged
    dz = plane * slice_mm - p["les_z_mm"]
    r_px = np.sqrt(np.clip(p["les_r_mm"] ** 2 - dz ** 2, 0, None)) / pixel_mm
    labels = None
    for j in range(r_px.shape[1]):
        on = p["les_on"][:, j] & (r_px[:, j] > 0.5)
        cov = cv.cover(p["les_rho"][:, j] * np.cos(p["les_ang"][:, j]), p["les_rho"][:, j] * np.sin(p["les_ang"][:, j]),
                       r_px[:, j], r_px[:, j], on=on)
        if p["les_hot"][0, j]:
            cv.paint(cov, act=p["les_val"][:, j])
        else:
            cv.paint(cov, act_factor=p["les_val"][:, j])
        if lesion_bin is not None:  # a later lesion is painted over an earlier one: so is its label
            inside = lesion_bin(cv.full(cov)[:, None])[:, 0] >= LESION_COVERAGE
            labels = torch.where(inside, float(j + 1), 0.0 if labels is None else labels)
    blurred = _gaussian_blur(cv.act, psf_sigma_px)
    return (cv.mu, blurred) if lesion_bin is None else (cv.mu, blurred, labels)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian over the last two dims, zero outside (a sum of shifted copies: with a
    single channel and a 5-tap kernel this is ~10x faster than conv2d on CPU)."""
    if sigma <= 0:
        return x
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).tolist()
    for dim in (-1, -2):
        n = x.shape[dim]
        xp = torch.nn.functional.pad(x, (r, r) if dim == -1 else (0, 0, r, r))
        x = sum(w * xp.narrow(dim, j, n) for j, w in enumerate(k))
    return x


def fit_radius_px(g: ParallelGeometry) -> float:
    """Radius (pixels) inside which every ray hits both the image grid and the radial bins."""
    radial_half_px = g.n_radial * g.radial_mm / (2 * g.pixel_mm)
    return min(g.image_size / 2, radial_half_px) - 2.0  # margin for the PSF and the edge ramps


# ------------------------------------------------------------------------------ one split
PROJECTION_THREADS = torch.get_num_threads()  # as torch starts (the cores it may use)


@contextlib.contextmanager
def _torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


LESION_COVERAGE = 0.5  # a dataset pixel belongs to a lesion when at least this fraction of it is lesion
PIXEL_KEYS = ("a", "b", "cx", "cy")  # parameters in pixels; everything else is relative or in mm


def _make_split(seq: np.random.SeedSequence, n, g, acq, counts, channels, psf_fwhm_mm, bar):
    # one generator per sample (parameters first, then its noise): sample i does not depend on n
    # or on the chunking, so a small dataset is a prefix of a large one with the same seed
    rngs = [np.random.default_rng(s) for s in seq.spawn(n)]
    per_sample = [_sample_params(r, 1, fit_radius_px(g), g.pixel_mm) for r in rngs]
    p_all = {k: np.concatenate([p[k] for p in per_sample]) for k in per_sample[0]}
    fine = acq.fine  # rendered on the acquisition's finer grid, binned down to g below
    p_all.update({k: p_all[k] * acq.k for k in PIXEL_KEYS})
    psf_sigma_px = psf_fwhm_mm / (2 * math.sqrt(2 * math.log(2))) / fine.pixel_mm
    planes = (0,) if channels == 1 else (-1, 0, 1)
    c = planes.index(0)
    out = {"actSino": np.empty((n, channels, *g.sino_shape), np.float32),
           "actMap": np.empty((n, 1, *g.image_shape), np.float32),
           "attenMap": np.empty((n, 1, *g.image_shape), np.float32),
           "attenSino": np.empty((n, 1, *g.sino_shape), np.float32),
           "lesionMap": np.empty((n, 1, *g.image_shape), np.float32)}
    for s in range(0, n, CHUNK):
        p = {k: v[s:s + CHUNK] for k, v in p_all.items()}
        B = p["a"].shape[0]
        rendered = [_render(p, fine.image_size, fine.pixel_mm, pl, psf_sigma_px, g.pixel_mm,
                            acq.bin_image if pl == 0 else None) for pl in planes]
        mus, acts = [r[0] for r in rendered], [r[1] for r in rendered]
        out["lesionMap"][s:s + B, 0] = rendered[c][2].numpy()
        mu, act = torch.stack(mus, 1), torch.stack(acts, 1)  # [B, planes, kN, kN]
        with _torch_threads(PROJECTION_THREADS):
            lam, att_sino = acq.acquire(mu, act)
        lam = lam.double()
        factor = counts / lam[:, c].sum(dim=(-2, -1))  # centre plane's expected total = counts
        lam = (lam * factor[:, None, None, None]).numpy()
        out["actSino"][s:s + B] = Acquisition.sample(lam, rngs[s:s + B])
        out["actMap"][s:s + B, 0] = (acq.bin_image(act[:, c:c + 1])[:, 0].double() * factor[:, None, None]).numpy()
        out["attenMap"][s:s + B] = acq.bin_image(mu[:, c:c + 1]).numpy()
        out["attenSino"][s:s + B] = att_sino[:, c:c + 1].numpy()
        bar.update(B)
    return out


def _scale(x: np.ndarray) -> float:
    """1/99th percentile of the nonzero values of (up to 64 samples of) x, 4 significant digits."""
    v = x[: min(len(x), 64)]
    v = v[v > 0]
    q = float(np.percentile(v, 99)) if v.size else 1.0
    return float(f"{1.0 / q:.4g}") if q > 0 else 1.0


def make_synthetic_dataset(out, n_train: int, n_val: int, n_test: int, seed: int = 0, *,
                           counts: float = 2e5, channels: int = 1, image_size: int = 180,
                           pixel_mm: float = 3.0, n_radial: int = 180, n_angles: int = 180,
                           attn_sino: bool = False, psf_fwhm_mm: float = 5.0, oversample: int = 2,
                           montage: bool = True, cache_dir=None, progress: bool = True):
    """Generate and write a dataset folder (see module docstring); returns the opened Dataset.

    Splits with 0 samples are left out of dataset.json.  ``oversample``: the acquisition grid is
    this many times finer than the dataset's (``shared.physics.acquisition``).  ``cache_dir`` is the
    projectors' system-matrix cache (default: the user cache).
    """
    from tqdm import tqdm

    if channels not in (1, 3):
        raise InputError(f"channels must be 1 or 3, got {channels}")
    if counts <= 0:
        raise InputError(f"counts must be > 0, got {counts}")
    g = ParallelGeometry(image_size, pixel_mm, n_radial, n_angles)
    if fit_radius_px(g) < 4:
        raise InputError(f"geometry too small for a phantom: {g}")
    acq = FineAcquisition(g, oversample, cache_dir=cache_dir)
    sizes = dict(zip(SPLITS, (n_train, n_val, n_test)))
    seqs = dict(zip(SPLITS, np.random.SeedSequence(seed).spawn(len(SPLITS))))
    arrays = {}
    # Rendering is many small elementwise ops: one torch thread (on 2 shared cores OpenMP
    # spin-waiting made 2 threads up to 10x slower under load); the sparse projection gets them all.
    with _torch_threads(1), tqdm(total=sum(sizes.values()), unit="phantom", desc="synthetic",
                                 disable=not progress, file=sys.stderr) as bar:
        for name, n in sizes.items():
            if n > 0:
                arrays[name] = _make_split(seqs[name], n, g, acq, counts, channels, psf_fwhm_mm, bar)
    if not arrays:
        raise InputError("make_synthetic_dataset: all splits are empty")
    ref = arrays.get("train") or next(iter(arrays.values()))
    scales = {"actSino": _scale(ref["actSino"]), "actMap": _scale(ref["actMap"]), "attenMap": 1.0,
              "attenSino": _scale(ref["attenSino"])}
    if not attn_sino:
        for a in arrays.values():
            del a["attenSino"]
    extra = {"generator": "shared.data.synthetic", "seed": seed, "counts": counts, "channels": channels,
             "psf_fwhm_mm": psf_fwhm_mm, "mu_511kev": MU,
             "acquisition": {"oversample": acq.k, "model": f"astra {acq.MODEL} (Siddon) on the finer grid, binned down"}}
    ds = write_dataset(out, g, arrays, UNITS, scales, extra=extra)
    if montage:
        write_montage(ds, Path(out) / "montage.png", Acquisition.of(g, cache_dir=cache_dir))
    return ds


def write_montage(ds, path, physics: Acquisition | None = None, n: int = 4) -> None:
    """PNG: a few samples × (μ-map, activity, activity sinogram (centre plane), attenuation sinogram)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "train" if "train" in ds.splits else ds.splits[0]
    sp = ds.split(name)
    idx = np.unique(np.linspace(0, sp.n - 1, min(n, sp.n)).round().astype(int))
    c = ds.sino_channels // 2
    if sp.attenSino is not None:
        att = np.asarray(sp.attenSino[idx, 0])
    else:
        physics = physics or Acquisition.of(ds.geometry)
        att = physics.attenuation_sinogram(torch.from_numpy(np.asarray(sp.attenMap[idx]))).numpy()[:, 0]
    cols = (("μ-map [1/cm]", np.asarray(sp.attenMap[idx, 0])), ("activity", np.asarray(sp.actMap[idx, 0])),
            ("activity sinogram [counts]", np.asarray(sp.actSino[idx, c])), ("∫μ (attenuation sinogram)", att))
    fig, axes = plt.subplots(len(idx), 4, figsize=(12, 3 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        for k, (title, data) in enumerate(cols):
            ax = axes[r, k]
            im = ax.imshow(data[r], cmap="gray" if k != 1 else "hot", aspect="auto" if k >= 2 else "equal")
            fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(f"{name}[{i}] {title}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parser():
    from shared.cli import new_parser

    ap = new_parser("frozenflow make-data", __doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output dataset folder: new or empty, or a dataset make-data wrote "
                                                 "(replaced only with --overwrite)")
    ap.add_argument("--overwrite", action="store_true", help="replace a dataset make-data wrote in --out")
    ap.add_argument("--n-train", type=int, default=256, help="training samples")
    ap.add_argument("--n-val", type=int, default=64, help="validation samples")
    ap.add_argument("--n-test", type=int, default=64, help="test samples")
    ap.add_argument("--seed", type=int, default=0, help="phantom and noise seed")
    ap.add_argument("--counts", type=float, default=2e5, help="expected total counts per sinogram plane")
    ap.add_argument("--channels", type=int, choices=(1, 3), default=1, help="sinogram planes (3 = adjacent)")
    ap.add_argument("--image-size", type=int, default=180, help="image side in pixels")
    ap.add_argument("--pixel-mm", type=float, default=3.0, help="pixel size in mm")
    ap.add_argument("--n-radial", type=int, default=180, help="radial bins")
    ap.add_argument("--n-angles", type=int, default=180, help="angles over [0°, 180°)")
    ap.add_argument("--psf-fwhm-mm", type=float, default=5.0, help="Gaussian smoothing of the activity")
    ap.add_argument("--oversample", type=int, default=2, help="acquisition grid this many times finer (1: same grid, other model)")
    ap.add_argument("--attn-sino", action="store_true", help="also write {split}-attenSino.npy (bin-averaged ∫μ)")
    ap.add_argument("--no-montage", action="store_true", help="skip montage.png")
    ap.add_argument("--cache-dir", default=None, help="projector system-matrix cache (default: $FROZENFLOW_CACHE or ~/.cache/frozenflow/projector)")
    return ap


def _check_flags(a) -> None:
    """Every number make-data takes: counts of samples ≥ 0, sizes ≥ 1, physical quantities finite and > 0."""
    import math

    for flag, value, low in (("--n-train", a.n_train, 0), ("--n-val", a.n_val, 0), ("--n-test", a.n_test, 0),
                             ("--image-size", a.image_size, 1), ("--n-radial", a.n_radial, 1),
                             ("--n-angles", a.n_angles, 1), ("--oversample", a.oversample, 1)):
        if value < low:
            raise InputError(f"{flag} must be an integer ≥ {low}, got {value}")
    for flag, value, zero_ok in (("--counts", a.counts, False), ("--pixel-mm", a.pixel_mm, False),
                                 ("--psf-fwhm-mm", a.psf_fwhm_mm, True)):
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise InputError(f"{flag} must be a finite number {'≥' if zero_ok else '>'} 0, got {value}")
    if a.n_train + a.n_val + a.n_test == 0:
        raise InputError("--n-train, --n-val and --n-test are all 0: nothing to make")


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    from shared.files.outputs import claim

    _check_flags(a)  # before the folder is touched
    claim(a.out, "dataset", overwrite=a.overwrite)  # never into a folder of the user's own files
    ds = make_synthetic_dataset(a.out, a.n_train, a.n_val, a.n_test, a.seed, counts=a.counts,
                                channels=a.channels, image_size=a.image_size, pixel_mm=a.pixel_mm,
                                n_radial=a.n_radial, n_angles=a.n_angles, attn_sino=a.attn_sino,
                                psf_fwhm_mm=a.psf_fwhm_mm, oversample=a.oversample, montage=not a.no_montage,
                                cache_dir=a.cache_dir)
    print(f"wrote {ds!r}\nfingerprint {ds.fingerprint()}")
    return 0


if __name__ == "__main__":
    from shared.cli import run_main

    sys.exit(run_main(main))
