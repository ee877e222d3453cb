"""Synthetic phantoms: deterministic, physically plausible, and consistent with the projector."""
import numpy as np
import pytest
import torch

from shared.data.dataset_io import open_dataset
from shared.data.synthetic import MU_MAX, fit_radius_px, main, make_synthetic_dataset
from shared.physics.projector import ParallelGeometry, Projector

GEO = dict(image_size=32, pixel_mm=6.0, n_radial=48, n_angles=30)
COUNTS = 2e4


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("projector_cache")


@pytest.fixture(scope="module")
def ds(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("synth") / "ds"
    return make_synthetic_dataset(out, 12, 4, 3, seed=7, counts=COUNTS, attn_sino=True, cache_dir=cache,
                                  progress=False, **GEO)


@pytest.fixture(scope="module")
def ds3(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("synth3") / "ds"
    return make_synthetic_dataset(out, 8, 2, 0, seed=3, counts=COUNTS, channels=3, montage=False,
                                  cache_dir=cache, progress=False, **GEO)


def _lam(ds, split, cache):
    """Expected activity sinogram of the centre plane from the stored maps."""
    P = Projector(ds.geometry, cache_dir=cache)
    sp = ds.split(split)
    mu, act = torch.from_numpy(np.array(sp.attenMap)), torch.from_numpy(np.array(sp.actMap))
    return (torch.exp(-P(mu)) * P(act)).double().numpy()[:, 0], P(mu).numpy()


def test_layout(ds):
    assert ds.splits == ("train", "val", "test") and ds.sino_channels == 1 and ds.has_atten_sino
    assert ds.geometry == ParallelGeometry(**GEO)
    assert ds.split("train").actSino.shape == (12, 1, 48, 30)
    assert ds.split("test").attenMap.shape == (3, 1, 32, 32)
    assert ds.meta["extra"]["seed"] == 7 and ds.meta["extra"]["counts"] == COUNTS
    png = ds.root / "montage.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_deterministic(tmp_path, ds, cache):
    kw = dict(counts=COUNTS, attn_sino=True, montage=False, cache_dir=cache, progress=False, **GEO)
    same = make_synthetic_dataset(tmp_path / "a", 12, 4, 3, seed=7, **kw)
    assert same.fingerprint() == ds.fingerprint()
    for split in ds.splits:
        for kind in ("actSino", "actMap", "attenMap", "attenSino"):
            np.testing.assert_array_equal(getattr(same.split(split), kind), getattr(ds.split(split), kind))
    other = make_synthetic_dataset(tmp_path / "b", 12, 4, 3, seed=8, **kw)
    assert not np.array_equal(other.split("train").attenMap, ds.split("train").attenMap)
    # each split has its own stream: the val set does not depend on how many train samples there are
    fewer = make_synthetic_dataset(tmp_path / "c", 5, 4, 0, seed=7, **kw)
    np.testing.assert_array_equal(fewer.split("val").actSino, ds.split("val").actSino)
    np.testing.assert_array_equal(fewer.split("train").attenMap, ds.split("train").attenMap[:5])
    assert fewer.splits == ("train", "val")


def test_mu_values(ds):
    mu = np.array(ds.split("train").attenMap)[:, 0].astype(np.float64)
    assert mu.min() >= 0 and mu.max() <= MU_MAX + 1e-6
    for m in mu:
        body = m > 0
        assert 0.2 < body.mean() < 0.75  # a torso fills a good part of the FOV, never all of it
        v = m[body]
        tissue = np.abs(v[:, None] - np.array([0.090, 0.096, 0.100, 0.110])).min(1) < 1e-6  # fat soft liver marrow
        lung, bone = (v >= 0.024) & (v <= 0.036), (v >= 0.14) & (v <= 0.16)
        # at 32 px many pixels are partial-volume edges (block-averaged from the 2x finer grid);
        # at 180 px 87-89 % are pure tissue
        assert (tissue | lung | bone).mean() > 0.35
        assert (np.abs(v - 0.096) < 1e-6).mean() > 0.2  # soft tissue
        assert (v > 0.105).any()  # the spine (marrow or cortex) is always there
    lung_frac = ((mu >= 0.024) & (mu <= 0.036)).reshape(len(mu), -1).mean(1)
    assert lung_frac.max() > 0.05 and lung_frac.min() < 0.5 * lung_frac.max()  # thorax and abdomen slices
    assert (np.abs(mu - 0.100) < 1e-6).any()  # liver


def test_body_inside_fov(ds):
    g = ds.geometry
    H = g.image_size
    yy, xx = np.mgrid[:H, :H] - (H - 1) / 2
    outside = np.hypot(yy, xx) > fit_radius_px(g) + 1.5
    for split in ds.splits:
        sp = ds.split(split)
        assert np.abs(np.array(sp.attenMap)[..., outside]).max() == 0
        assert np.abs(np.array(sp.actMap)[..., outside]).max() < 1e-3 * np.array(sp.actMap).max()
        # so the outermost radial bins see nothing at any angle
        assert np.array(sp.attenSino)[:, :, [0, 1, -2, -1], :].max() < 1e-6
        assert np.array(sp.actSino)[:, :, [0, -1], :].max() == 0


def test_counts_level(ds):
    totals = np.array(ds.split("train").actSino).sum(axis=(1, 2, 3))
    assert np.all(np.abs(totals - COUNTS) < 5 * np.sqrt(COUNTS))  # Poisson sd of the total
    assert np.all(np.array(ds.split("train").actSino) == np.round(np.array(ds.split("train").actSino)))


def test_sinogram_consistent_with_projector_but_not_made_by_it(ds, cache):
    """The data follow the documented model to within the acquisition's finer grid and other model."""
    for split in ds.splits:
        lam, pmu = _lam(ds, split, cache)
        y = np.array(ds.split(split).actSino)[:, 0].astype(np.float64)
        np.testing.assert_allclose(lam.sum(axis=(1, 2)), COUNTS, rtol=0.02)
        # attenSino is the bin-averaged fine ∫μ: within a few % of P(attenMap), never equal to it
        diff = np.linalg.norm(np.array(ds.split(split).attenSino) - pmu) / np.linalg.norm(pmu)
        assert 2e-3 < diff < 0.05, diff
        assert y[lam == 0].max(initial=0) == 0
        m = lam > 5  # bins with λ ≪ 1 are almost always 0: unbiased but a poor variance estimate
        z = (y[m] - lam[m]) / np.sqrt(lam[m])
        assert abs(z.mean()) < 0.1, z.mean()            # nearly unbiased Poisson …
        assert abs(z.var() - 1) < 0.15, z.var()         # … with nearly Poisson variance (measured 1.03)
        # a wrong model (e.g. unattenuated) would be far off
        assert abs(y.sum() - lam.sum()) < 0.02 * lam.sum()


def test_scales_make_values_order_one(ds):
    s = ds.scales
    assert s["attenMap"] == 1.0
    for kind in ("actSino", "actMap", "attenSino"):
        x = np.array(getattr(ds.split("train"), kind)) * s[kind]
        q = np.percentile(x[x > 0], 99)
        assert 0.7 < q < 1.3, (kind, q)


def test_three_channels(ds3, cache):
    sp = ds3.split("train")
    assert ds3.sino_channels == 3 and sp.actSino.shape == (8, 3, 48, 30) and sp.attenSino is None
    y = np.array(sp.actSino).astype(np.float64)
    lam, _ = _lam(ds3, "train", cache)
    m = lam > 5
    z = (y[:, 1][m] - lam[m]) / np.sqrt(lam[m])  # the centre channel is the target plane
    assert abs(z.mean()) < 0.1 and abs(z.var() - 1) < 0.15
    # the neighbours are nearby planes: similar, but not the same phantom
    for c in (0, 2):
        zc = (y[:, c][m] - lam[m]) / np.sqrt(lam[m])
        assert zc.var() > z.var() + 0.1
        assert np.corrcoef(y[:, c].ravel(), y[:, 1].ravel())[0, 1] > 0.7
        # same count scale as the centre plane (6 mm planes of a 20 cm torso: lesions come and go;
        # at the default 3 mm / 180 px geometry the neighbours' totals are within ~3%)
        assert np.all(np.abs(y[:, c].sum(axis=(1, 2)) / COUNTS - 1) < 0.3)


def test_cli(tmp_path, cache):
    out = tmp_path / "cli"
    rc = main(["--out", str(out), "--n-train", "2", "--n-val", "1", "--n-test", "1", "--seed", "1",
               "--image-size", "32", "--pixel-mm", "6", "--n-radial", "48", "--n-angles", "30",
               "--counts", "1000", "--no-montage", "--cache-dir", str(cache)])
    assert rc == 0
    d = open_dataset(out)
    assert d.meta["splits"] == {"train": 2, "val": 1, "test": 1} and not d.has_atten_sino
    assert abs(np.array(d.split("train").actSino).sum() - 2000) < 5 * np.sqrt(2000)
