"""Simulated acquisition: finer grid, another model, binned down — nearer the continuous object
than the reconstruction projector, and never identical to it."""
import numpy as np
import pytest
import torch

from shared.physics.acquisition import FineAcquisition
from shared.physics.projector import ParallelGeometry, Projector

G = ParallelGeometry(32, 6.0, 48, 30)
R_MM, MU0, ACT = 60.0, 0.1, 1.0  # a uniform disc of water-like μ and unit activity


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("projector_cache")


def _disc(g: ParallelGeometry, ss: int = 8) -> torch.Tensor:
    """Exact-ish pixel coverage of the disc (ss × ss sub-samples per pixel), [1, 1, N, N]."""
    c = ((np.arange(g.image_size * ss) + 0.5) / ss - g.image_size / 2) * g.pixel_mm
    inside = (c[None, :] ** 2 + c[:, None] ** 2 <= R_MM ** 2).astype(np.float64)
    return torch.from_numpy(inside.reshape(g.image_size, ss, g.image_size, ss).mean((1, 3))).float()[None, None]


def _analytic(g: ParallelGeometry):
    """Bin-averaged λ = exp(−μ0 L)·L and ∫μ = μ0 L of the continuous disc (L = chord length, cm)."""
    s = (np.arange(g.n_radial) - (g.n_radial - 1) / 2) * g.radial_mm
    u = ((np.arange(64) + 0.5) / 64 - 0.5) * g.radial_mm
    L = 2 * np.sqrt(np.clip(R_MM ** 2 - (s[:, None] + u) ** 2, 0, None)) / 10
    return (np.exp(-MU0 * L) * ACT * L).mean(1)[:, None], (MU0 * L).mean(1)[:, None]


def _rel(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), b)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_binning_by_hand(cache):
    acq = FineAcquisition(G, 2, cache_dir=cache)
    s = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(1, 1, 8, 3)  # 8 fine radial rows, 3 angles
    np.testing.assert_array_equal(acq.bin_sinogram(s)[0, 0, 1], (s[0, 0, 2] + s[0, 0, 3]) / 2)
    img = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    assert acq.bin_image(img)[0, 0].tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_fine_grid_geometry(cache):
    acq = FineAcquisition(G, 2, cache_dir=cache)
    f = acq.fine
    assert (f.image_size, f.pixel_mm, f.n_radial, f.radial_mm, f.n_angles) == (64, 3.0, 96, 3.0, 30)
    with pytest.raises(ValueError, match="integer ≥ 1"):
        FineAcquisition(G, 0, cache_dir=cache)


def test_nearer_the_continuous_disc_than_the_reconstruction_model(cache):
    lam_true, att_true = _analytic(G)
    acq = FineAcquisition(G, 2, cache_dir=cache)
    d = _disc(acq.fine)
    lam, att = acq.acquire(MU0 * d, ACT * d)
    err_fine = _rel(lam[0, 0], lam_true), _rel(att[0, 0], att_true)
    # the inverse-crime alternative: the reconstruction projector on the binned (dataset) maps
    P = Projector(G, cache_dir=cache)
    mu_c, act_c = acq.bin_image(MU0 * d), acq.bin_image(ACT * d)
    err_recon = _rel((torch.exp(-P(mu_c)) * P(act_c))[0, 0], lam_true), _rel(P(mu_c)[0, 0], att_true)
    assert err_fine[0] < 0.015 and err_fine[1] < 0.01, err_fine   # measured 0.7 %, 0.4 %
    assert err_fine[0] < 0.5 * err_recon[0] and err_fine[1] < 0.5 * err_recon[1], (err_fine, err_recon)
    # close to the reconstruction model, but not it: FBP/MLEM do not meet their own system model
    diff = _rel((torch.exp(-P(mu_c)) * P(act_c))[0, 0], lam[0, 0].numpy())
    assert 0.005 < diff < 0.05, diff


def test_mass_is_conserved_at_every_angle(cache):
    acq = FineAcquisition(G, 2, cache_dir=cache)
    d = _disc(acq.fine)
    _, att = acq.acquire(MU0 * d, torch.zeros_like(d))
    per_angle = att[0, 0].sum(0).numpy() * G.radial_mm / 10       # Σ_r ∫μ · Δr = ∫∫ μ dA (cm)
    total = float(MU0 * d.sum()) * (acq.fine.pixel_mm / 10) ** 2
    np.testing.assert_allclose(per_angle, total, rtol=2e-3)


def test_attenuation_per_fine_ray_then_averaged(cache):
    """λ is the bin mean of exp(−∫μ)·∫act over fine rays, not exp(−mean ∫μ)·mean ∫act."""
    acq = FineAcquisition(G, 2, cache_dir=cache)
    d = _disc(acq.fine)
    lam, _ = acq.acquire(MU0 * d, ACT * d)
    emi, att = acq.model.project(ACT * d, MU0 * d)
    expect = acq.bin_sinogram(torch.exp(-att) * emi)
    torch.testing.assert_close(lam, expect)
    naive = torch.exp(-acq.bin_sinogram(att)) * acq.bin_sinogram(emi)
    assert not torch.allclose(lam, naive, rtol=1e-4)
