"""Classical reconstruction (shared/physics/recon.py) and the baselines on a split (shared/evaluation/baselines.py):
FBP scaling, MLEM/OSEM behaviour, the calibration c of the acquisition model, the split helpers."""
import numpy as np
import pytest
import torch

from shared.data.dataset_io import open_dataset
from shared.errors import InputError
from shared.evaluation.baselines import BASELINES, reconstruct_split, relative_l2, tune_baselines
from shared.physics.acquisition import Acquisition
from shared.physics.projector import ParallelGeometry, Projector
from shared.physics.recon import FILTERS, _SubsetOperators, fbp, mlem, poisson_loglik, ramp_filter

SMOOTH_GEOMETRY = dict(image_size=64, pixel_mm=4.0, n_radial=96, n_angles=72)


def _soft_ellipse(c, a, b, x0=0.0, y0=0.0, edge=1.5):
    rho = torch.sqrt(((c[None, :] - x0) / a) ** 2 + ((c[:, None] - y0) / b) ** 2)
    return torch.sigmoid((1 - rho) * min(a, b) / edge)


@pytest.fixture(scope="module")
def smooth(projector_cache):
    """A smooth attenuating phantom on a 64×64 grid: (projector, activity, μ, body mask)."""
    P = Acquisition.of(ParallelGeometry(**SMOOTH_GEOMETRY))
    c = torch.arange(64, dtype=torch.float32) - 31.5
    body = _soft_ellipse(c, 24, 17, edge=2.0)
    blob = lambda x0, y0, s: torch.exp(-((c[None, :] - x0) ** 2 + (c[:, None] - y0) ** 2) / (2 * s * s))  # noqa: E731
    act = 10 * body + 30 * blob(8, -4, 3) + 15 * blob(-10, 5, 5) - 6 * blob(0, 8, 3) * body
    mu = 0.096 * body + 0.05 * blob(-9, -3, 4)
    return P, act[None, None], mu[None, None], (body > 0.5)[None, None]


@pytest.fixture(scope="module")
def tiny(tiny_data):
    ds = open_dataset(tiny_data)
    sp = ds.split("test")
    P = Acquisition.of(ds.geometry)
    x = torch.tensor(np.asarray(sp.actMap))
    mu = torch.tensor(np.asarray(sp.attenMap))
    noisy = torch.tensor(np.asarray(sp.actSino[:, :1]))
    clean = P.expected(x, mu)
    return ds, P, x, mu, noisy, clean


# ------------------------------------------------------------------------------ FBP
def test_ramp_filter_is_linear_convolution_without_wraparound():
    """Frequency-domain filtering equals the direct (non-circular) convolution with the ramp kernel."""
    R, tau = 21, 0.4
    p = torch.rand(3, 1, R, 5, dtype=torch.float64)
    n = np.arange(-(R - 1), R)
    h = np.zeros(n.shape)
    h[n == 0] = 1 / (4 * tau ** 2)
    h[n % 2 == 1] = -1 / (n[n % 2 == 1] * np.pi * tau) ** 2
    ref = np.stack([np.convolve(h, col)[R - 1:2 * R - 1] * tau for col in
                    p.numpy().transpose(0, 1, 3, 2).reshape(-1, R)])
    got = ramp_filter(p, tau).numpy().transpose(0, 1, 3, 2).reshape(-1, R)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_fbp_recovers_noiseless_smooth_phantom(smooth):
    P, act, mu, body = smooth
    sino = P.expected(act, mu)  # the synthetic data model, noiseless
    for f in FILTERS:
        rec = fbp(sino, mu, P, filter=f)
        assert rec.shape == act.shape and rec.dtype == torch.float32
        mean_ratio = float(rec[body].mean() / act[body].mean())
        assert abs(mean_ratio - 1) < 0.02, (f, mean_ratio)
    rec = fbp(sino, mu, P, filter="ramp")
    err = relative_l2(rec.numpy(), act.numpy(), body.numpy())[0]
    assert err < 0.10, err
    # without the attenuation correction the image is far too low: the ACF matters
    assert float(fbp(sino, None, P)[body].mean() / act[body].mean()) < 0.7


def test_fbp_options(smooth):
    P, act, mu, _ = smooth
    sino = P.expected(act, mu)
    assert (fbp(sino + 5 * torch.randn_like(sino), mu, P, nonneg=True) >= 0).all()
    smooth_rec = fbp(sino, mu, P, filter="hann", cutoff=0.5)
    sharp_rec = fbp(sino, mu, P, filter="ramp")
    assert smooth_rec.diff(dim=-1).abs().sum() < sharp_rec.diff(dim=-1).abs().sum()
    with pytest.raises(ValueError, match="filter"):
        fbp(sino, mu, P, filter="cosine")
    with pytest.raises(ValueError, match="cutoff"):
        fbp(sino, mu, P, cutoff=1.5)
    with pytest.raises(ValueError, match="centre plane"):
        fbp(sino.expand(-1, 3, -1, -1), mu, P)
    with pytest.raises(ValueError, match="mu must be"):
        fbp(sino, mu[..., :10], P)


# ------------------------------------------------------------------------------ MLEM / OSEM
def test_mlem_noiseless_monotone_likelihood_and_convergence(tiny):
    _, P, x, mu, _, clean = tiny
    ll, err = [poisson_loglik(clean, mlem(clean, mu, P, n_iter=0), mu, P)], []
    cb = lambda it, im: (ll.append(poisson_loglik(clean, im, mu, P)), err.append(relative_l2(im, x)))  # noqa: E731
    rec = mlem(clean, mu, P, n_iter=30, callback=cb)
    ll, err = torch.stack(ll).numpy(), np.stack(err)
    assert len(err) == 30
    assert (np.diff(ll, axis=0) >= -1e-6 * np.abs(ll[1:])).all()   # EM never decreases the likelihood
    assert (np.diff(err.mean(1)) < 0).all()                         # and walks towards the truth
    assert err.mean(1)[-1] < 0.5 * err.mean(1)[4]
    assert (rec >= 0).all() and torch.isfinite(rec).all()
    # the truth attains the maximum of the noiseless likelihood
    assert (poisson_loglik(clean, x, mu, P).numpy() >= ll[-1] - 1e-6 * np.abs(ll[-1])).all()


def test_osem_reaches_likelihood_in_fewer_iterations(tiny):
    _, P, _, mu, _, clean = tiny
    ll = lambda im: poisson_loglik(clean, im, mu, P)  # noqa: E731
    ll_mlem = ll(mlem(clean, mu, P, n_iter=6))
    ll_osem = ll(mlem(clean, mu, P, n_iter=2, subsets=4))
    assert (ll_osem >= ll_mlem).all()  # 2 OSEM-4 iterations ≳ 8 MLEM iterations, same cost as 2


def test_mlem_beats_fbp_on_noisy_data(tiny):
    _, P, x, mu, noisy, _ = tiny
    e_mlem = relative_l2(mlem(noisy, mu, P, n_iter=20), x).mean()
    e_osem = relative_l2(mlem(noisy, mu, P, n_iter=5, subsets=4), x).mean()
    e_fbp = min(relative_l2(fbp(noisy, mu, P, filter=f, cutoff=c, nonneg=True), x).mean()
                for f in FILTERS for c in (1.0, 0.7, 0.5))
    assert e_mlem < 0.9 * e_fbp, (e_mlem, e_fbp)
    assert e_osem < 0.9 * e_fbp, (e_osem, e_fbp)


def test_subset_slicing_matches_masking(tiny):
    _, P, x, mu, noisy, _ = tiny
    sliced, masked = _SubsetOperators(P.projector, 3), _SubsetOperators(P.projector, 3, allow_slice=False)
    assert sliced._mats is not None and masked._mats is None
    y = torch.rand(2, 1, *P.geometry.sino_shape)
    for s in range(3):
        ys = sliced.take(y, s)
        assert ys.shape[-1] == len(range(s, P.geometry.n_angles, 3))
        torch.testing.assert_close(sliced.forward(x[:2], s), masked.forward(x[:2], s), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(sliced.adjoint(ys, s), masked.adjoint(ys, s), rtol=1e-4, atol=1e-4)


class _MaskedProjector:
    """P(m ⊙ x): a projector (without a system matrix) whose sensitivity is zero outside the mask m."""

    def __init__(self, P, m):
        self.P, self.m, self.geometry = P, m, P.geometry

    def forward(self, x):
        return self.P.forward(x * self.m)

    def adjoint(self, y):
        return self.P.adjoint(y) * self.m


def test_mlem_support_background_and_validation(projector_cache):
    P0 = Projector(ParallelGeometry(24, 10.0, 36, 16))
    c = torch.arange(24, dtype=torch.float32) - 11.5
    x = (10 * _soft_ellipse(c, 8, 6))[None, None]
    mu = (0.1 * _soft_ellipse(c, 8, 6))[None, None]
    m = (_soft_ellipse(c, 10, 9) > 0.5).float()[None, None]
    masked = _MaskedProjector(P0, m)  # also exercises the masked-columns subset path (no matrix to slice)
    assert _SubsetOperators(masked, 2)._mats is None
    P = Acquisition(masked)
    y = P.expected(x, mu) + 2.0
    sens = P.A_adjoint(P.attenuation(mu))
    assert (sens == 0).any()
    rec = mlem(y, mu, P, n_iter=30, background=2.0)
    assert (rec >= 0).all() and (rec[sens == 0] == 0).all()
    assert relative_l2(rec, x)[0] < relative_l2(mlem(y, mu, P, n_iter=30), x)[0]  # modelling bg helps
    x0 = torch.ones_like(x)
    rec = mlem(y, mu, P, n_iter=3, subsets=2, x0=x0, background=torch.full_like(y, 2.0))
    assert (rec[sens == 0] == 0).all() and (rec >= 0).all() and torch.isfinite(rec).all()
    # OSEM through the sliced system matrix == OSEM through the full operator with masked columns
    unsliced = Acquisition(_MaskedProjector(P0, torch.ones_like(m)))
    torch.testing.assert_close(mlem(y, mu, Acquisition(P0), n_iter=3, subsets=4, background=2.0),
                               mlem(y, mu, unsliced, n_iter=3, subsets=4, background=2.0), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="non-negative"):
        mlem(y - 5, mu, P, n_iter=1)
    with pytest.raises(ValueError, match="subsets"):
        mlem(y, mu, P, n_iter=1, subsets=0)
    with pytest.raises(ValueError, match="x0"):
        mlem(y, mu, P, n_iter=1, x0=torch.ones(1, 1, 5, 5))
    with pytest.raises(InputError, match="Acquisition"):  # a bare projector has no calibration: refused
        mlem(y, mu, P0, n_iter=1)


def test_the_calibration_lives_in_the_acquisition_model(tiny):
    """Counts c times larger with c in the model give the same images in actMap units, and the model's
    expected counts and likelihood are those of c · exp(−Aμ) · A x."""
    _, P, x, mu, noisy, clean = tiny
    c = 37.5
    Pc = Acquisition(P.projector, c)
    torch.testing.assert_close(Pc.expected(x, mu), c * clean, rtol=1e-6, atol=0)
    torch.testing.assert_close(fbp(c * noisy, mu, Pc, filter="hann"), fbp(noisy, mu, P, filter="hann"), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(mlem(c * noisy, mu, Pc, n_iter=5, subsets=2, background=c * 0.5),
                               mlem(noisy, mu, P, n_iter=5, subsets=2, background=0.5), rtol=1e-4, atol=1e-5)
    # the likelihood peaks at the truth in the calibrated model and not in the uncalibrated one
    assert (poisson_loglik(c * clean, x, mu, Pc) > poisson_loglik(c * clean, 1.1 * x, mu, Pc)).all()
    assert (poisson_loglik(c * clean, x, mu, P) < poisson_loglik(c * clean, c * x, mu, P)).all()
    with pytest.raises(InputError, match="calibration"):
        Acquisition(P.projector, 0.0)


# ------------------------------------------------------------------------------ split helper
def test_reconstruct_split(tiny, tiny_data):
    ds, P, x, mu, noisy, _ = tiny
    out = reconstruct_split(ds, "test", "fbp", projector=P.projector, batch_size=3)
    assert out.shape == (ds.split("test").n, 1, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, BASELINES["fbp"](noisy, mu, P).numpy(), rtol=1e-5, atol=1e-4)
    # by path, own projector, progress bar, keyword overrides of the baseline defaults
    got = reconstruct_split(str(tiny_data), "test", "mlem", n_iter=3, post_fwhm_mm=0.0, progress=True,
                            indices=[1, 4])
    np.testing.assert_allclose(got, mlem(noisy[[1, 4]], mu[[1, 4]], P, n_iter=3).numpy(), rtol=1e-4, atol=1e-4)
    custom = reconstruct_split(ds, "test", lambda s, m, p: fbp(s, m, p, filter="ramp"), projector=P.projector, batch_size=8)
    np.testing.assert_allclose(custom, fbp(noisy, mu, P).numpy(), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="method"):
        reconstruct_split(ds, "test", "art", projector=P.projector)
    assert set(BASELINES) >= {"fbp", "mlem"}


def test_reconstruct_split_uses_centre_plane(tmp_path, projector_cache):
    from shared.data.synthetic import make_synthetic_dataset

    ds = make_synthetic_dataset(tmp_path / "d3", 0, 0, 2, seed=3, channels=3, counts=5e4, montage=False,
                                progress=False, image_size=24, pixel_mm=12.0, n_radial=36, n_angles=24)
    sp = ds.split("test")
    P = Acquisition.of(ds.geometry)
    got = reconstruct_split(ds, "test", "fbp", projector=P.projector)
    want = BASELINES["fbp"](torch.tensor(np.asarray(sp.actSino[:, 1:2])), torch.tensor(np.asarray(sp.attenMap)), P)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-4)


def test_tune_baselines_small_grid(tiny_data):
    r = tune_baselines(tiny_data, "val", fbp_filters=("ramp", "hann"), fbp_cutoffs=(1.0, 0.5),
                       subsets=(1, 4), max_iter={1: 12, 4: 3}, post_fwhm_mm=(0.0, 12.0))
    assert len(r["fbp"]) == 2 * 2 * 2 and len(r["em"]) == (12 + 3) * 2
    assert set(r["best"]) == {"fbp", "mlem", "osem"} and r["best"]["osem"]["subsets"] == 4
    assert r["em"][(1, 12, 0.0)] < r["em"][(1, 1, 0.0)]
    best = r["best"]["mlem"]
    assert r["em"][(1, best["n_iter"], best["post_fwhm_mm"])] == min(v for k, v in r["em"].items() if k[0] == 1)
