"""Tests for shared/physics/projector.py: adjointness, analytic and skimage references, autograd, disk cache,
input checks, sinogram padding, and the (optional) parallelproj backend.

Everything runs on small geometries (64×64 images) with the matrix cache in a temporary directory.
"""
from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import shared.physics.projector as projector
from shared.physics.projector import ParallelGeometry, Projector, crop_sinogram, pad_sinogram

N = 64


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("projector_cache")


@pytest.fixture(scope="module")
def geom():
    return ParallelGeometry(image_size=N, pixel_mm=2.0, n_radial=64, n_angles=60)


@pytest.fixture(scope="module")
def proj(geom, cache):
    return Projector(geom, cache_dir=cache)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


# ------------------------------------------------------------------------------------ references
def disc_image(n: int, pixel_mm: float, cx_mm: float, cy_mm: float, rho_mm: float, ss: int = 8) -> np.ndarray:
    """Uniform disc (value 1) as pixel-area fractions (ss×ss supersampling); cy is the row offset (down)."""
    o = ((np.arange(n * ss) + 0.5) / ss - 0.5 - (n - 1) / 2) * pixel_mm
    X, Y = np.meshgrid(o, o)  # X: column offset, Y: row offset
    inside = ((X - cx_mm) ** 2 + (Y - cy_mm) ** 2 <= rho_mm ** 2).astype(np.float64)
    return inside.reshape(n, ss, n, ss).mean(axis=(1, 3))


def disc_chords_cm(g: ParallelGeometry, cx_mm: float, cy_mm: float, rho_mm: float):
    """Analytic chord lengths [R, A] in cm and each ray's distance from the disc centre in mm.

    Convention (= skimage/astra): the ray at angle θ and radial position s is the set of points with
    x·cos θ − y·sin θ = s, x the column offset and y the row offset from the image centre.
    """
    s = (np.arange(g.n_radial) - (g.n_radial - 1) / 2) * g.radial_mm
    th = g.angles_rad
    d = np.abs(s[:, None] - (cx_mm * np.cos(th) - cy_mm * np.sin(th))[None, :])
    return 2 * np.sqrt(np.clip(rho_mm ** 2 - d ** 2, 0, None)) / 10.0, d


def smooth_shepp_logan(n: int, sigma: float = 1.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return gaussian_filter(resize(shepp_logan_phantom(), (n, n), anti_aliasing=True), sigma)


# ------------------------------------------------------------------------------------ linear algebra
def test_adjoint_identity(proj, geom):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, N, N, generator=g)
    y = torch.rand(3, 1, *geom.sino_shape, generator=g)
    lhs = (proj(x).double() * y.double()).sum()
    rhs = (x.double() * proj.adjoint(y).double()).sum()
    assert abs(float(lhs - rhs)) <= 1e-4 * abs(float(lhs))


def test_batch_is_per_image(proj):
    x = torch.rand(5, 1, N, N, generator=torch.Generator().manual_seed(1))
    y = proj(x)
    assert y.shape == (5, 1, 64, 60)
    one = torch.cat([proj(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(y, one)
    assert proj(x[:1]).shape == (1, 1, 64, 60)


def test_float64_in_float64_out(proj, geom):
    x = torch.rand(2, 1, N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = proj(x)
    assert y.dtype == torch.float64 and y.shape == (2, 1, *geom.sino_shape)
    torch.testing.assert_close(y.float(), proj(x.float()), rtol=1e-5, atol=1e-6)
    back = proj.adjoint(y)
    assert back.dtype == torch.float64 and back.shape == x.shape


# ------------------------------------------------------------------------------------ analytic disc
# Metric: relative L2 error over the rays at least 2 pixels inside the disc edge, all angles.
# Rays closer to the edge are excluded on purpose: there the chord length 2·sqrt(ρ² − d²) has an
# infinite slope in d, and the pixelated disc (area-averaged boundary) plus the projector's linear
# interpolation blur the edge by about a pixel, so those bins measure the discretisation of the
# object, not the projector (whole-profile relative L2 is ~0.8 % centred, ~2 % for the smaller
# off-centre discs; it is bounded loosely below).  The interior metric is sensitive: a quarter-bin
# radial shift of the reference raises it to ~1 %, a half-bin shift to ~2 %, a y-flip to ~45 %.
@pytest.mark.parametrize("cx_px, cy_px, rho_px", [(0.0, 0.0, 20.0), (8.0, -5.0, 14.0), (-10.3, 6.7, 12.5)])
def test_disc_matches_analytic_chords(proj, geom, cx_px, cy_px, rho_px):
    p = geom.pixel_mm
    cx, cy, rho = cx_px * p, cy_px * p, rho_px * p
    img = torch.from_numpy(disc_image(N, p, cx, cy, rho))[None, None]
    sino = proj(img)[0, 0].numpy()
    ref, dist = disc_chords_cm(geom, cx, cy, rho)
    interior = dist <= rho - 2 * p
    assert interior.sum() > 0.3 * interior.size
    assert _rel(sino[interior], ref[interior]) < 0.01
    assert _rel(sino, ref) < 0.025
    assert np.abs(sino[dist > rho + 2 * p]).max() < 1e-6  # nothing outside the disc's shadow


def test_values_scale_with_pixel_size(cache):
    img = torch.from_numpy(disc_image(N, 1.0, 3.0, -2.0, 20.0))[None, None]
    a = Projector(ParallelGeometry(N, 2.0, 64, 30), cache_dir=cache)(img)
    b = Projector(ParallelGeometry(N, 4.0, 64, 30), cache_dir=cache)(img)
    torch.testing.assert_close(b, 2 * a, rtol=1e-5, atol=1e-6)
    # and it is cm: a centred disc of radius 20 px at 2 mm/px has a 2·20·0.2 = 8 cm central chord
    c = Projector(ParallelGeometry(N, 2.0, 65, 30), cache_dir=cache)(
        torch.from_numpy(disc_image(N, 2.0, 0.0, 0.0, 40.0))[None, None])
    assert float(c[0, 0, 32].mean()) == pytest.approx(8.0, rel=0.01)


# ------------------------------------------------------------------------------------ skimage
@pytest.mark.parametrize("n_radial, n_angles, radial_mm", [(64, 60, None), (80, 45, 3.0)])
def test_matches_skimage_radon(cache, n_radial, n_angles, radial_mm):
    """Agreement with skimage.transform.radon(circle=False) on a smoothed Shepp–Logan phantom.

    Geometry matching: skimage returns ceil(√2·N) bins of one pixel with bin nsk//2 on the rotation
    axis, and its rotation axis is *pixel N//2*, i.e. half a pixel right and down of the image centre
    (N−1)/2 for even N, whereas ours (astra's) is the centre.  A ray of ours at (s, θ) is therefore
    skimage's ray at s − δ(cos θ − sin θ), δ = N//2 − (N−1)/2; the skimage sinogram is linearly
    interpolated there (without the δ correction the two differ by ~5.4 %, with it by < 1 %).  One
    global least-squares scale is fitted, and it must be the pixel size in cm (skimage works in pixels).
    """
    from skimage.transform import radon

    g = ParallelGeometry(N, 2.0, n_radial, n_angles, radial_mm)
    img = smooth_shepp_logan(N)
    ours = Projector(g, cache_dir=cache)(torch.from_numpy(img)[None, None])[0, 0].double().numpy()

    th = g.angles_rad
    sk = radon(img, theta=np.rad2deg(th), circle=False)
    s_sk = np.arange(sk.shape[0]) - sk.shape[0] // 2
    s_ours = (np.arange(g.n_radial) - (g.n_radial - 1) / 2) * g.radial_mm / g.pixel_mm
    delta = N // 2 - (N - 1) / 2
    ref = np.stack([np.interp(s_ours - delta * (np.cos(t) - np.sin(t)), s_sk, sk[:, k], left=0.0, right=0.0)
                    for k, t in enumerate(th)], axis=1)
    scale = float((ours * ref).sum() / (ref * ref).sum())
    assert scale == pytest.approx(g.pixel_mm / 10.0, rel=0.01)
    assert _rel(ours, scale * ref) < 0.05
    assert _rel(ours, scale * ref) < 0.02  # observed 0.7–0.8 %; 5 % is the requirement, 2 % the guard


# ------------------------------------------------------------------------------------ autograd
def test_gradient_of_forward_is_adjoint(proj, geom):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, N, N, generator=gen, requires_grad=True)
    w = torch.rand(2, 1, *geom.sino_shape, generator=gen)
    (proj(x) * w).sum().backward()
    torch.testing.assert_close(x.grad, proj.adjoint(w), rtol=1e-5, atol=1e-6)


def test_gradient_of_adjoint_is_forward(proj, geom):
    gen = torch.Generator().manual_seed(4)
    y = torch.rand(2, 1, *geom.sino_shape, generator=gen, requires_grad=True)
    v = torch.rand(2, 1, N, N, generator=gen)
    (proj.adjoint(y) * v).sum().backward()
    torch.testing.assert_close(y.grad, proj(v), rtol=1e-5, atol=1e-6)


def test_gradcheck_small(cache):
    # The arithmetic is float32, so finite differences use a large step (exact for a linear map).
    p = Projector(ParallelGeometry(8, 2.0, 12, 6), cache_dir=cache)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(p.forward, (x,), eps=1e-2, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------ disk cache
def _cache_files(d):
    return sorted(p.name for p in d.iterdir())


def test_cache_reused_and_keyed_by_geometry(tmp_path, monkeypatch):
    g = ParallelGeometry(32, 2.0, 40, 20)
    p1 = Projector(g, cache_dir=tmp_path)
    files = _cache_files(tmp_path)
    assert files == [f"astra_linear_{g.key()}.npz"]  # exactly one file, no stray temporaries
    assert (tmp_path / files[0]).stat().st_size > 0

    def no_astra(*a, **k):
        raise AssertionError("matrix rebuilt although it is cached")

    monkeypatch.setattr(projector, "astra_system_matrix", no_astra)
    p2 = Projector(g, cache_dir=tmp_path)
    for a, b in ((p1.system_matrix(), p2.system_matrix()),):
        assert torch.equal(a.crow_indices(), b.crow_indices())
        assert torch.equal(a.col_indices(), b.col_indices())
        assert torch.equal(a.values(), b.values())
    monkeypatch.undo()

    g2 = ParallelGeometry(32, 2.5, 40, 20)
    assert g2.key() != g.key()
    Projector(g2, cache_dir=tmp_path)
    assert _cache_files(tmp_path) == sorted([f"astra_linear_{g.key()}.npz", f"astra_linear_{g2.key()}.npz"])


def test_models_are_cached_apart_and_differ(tmp_path):
    g = ParallelGeometry(32, 2.0, 40, 20)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    joseph, siddon = Projector(g, cache_dir=tmp_path)(x), Projector(g, cache_dir=tmp_path, model="line")(x)
    assert g.key("line") != g.key()
    assert _cache_files(tmp_path) == sorted([f"astra_linear_{g.key()}.npz", f"astra_line_{g.key('line')}.npz"])
    rel = float((joseph - siddon).norm() / joseph.norm())
    assert 1e-3 < rel < 0.1, rel  # two models of the same line integrals
    with pytest.raises(ValueError, match="model must be one of"):
        Projector(g, cache_dir=tmp_path, model="strip")


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated", "wrong_shape"])
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    import scipy.sparse as sp

    g = ParallelGeometry(32, 2.0, 40, 20)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(5))
    expected = Projector(g, cache_dir=tmp_path)(x)
    path = tmp_path / f"astra_linear_{g.key()}.npz"
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not an npz file at all")
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    else:
        sp.save_npz(path, sp.identity(10, format="csr", dtype=np.float32))
    torch.testing.assert_close(Projector(g, cache_dir=tmp_path)(x), expected)
    assert path.read_bytes() == good
    assert _cache_files(tmp_path) == [path.name]


# ------------------------------------------------------------------------------------ input checks
@pytest.mark.parametrize("shape", [(1, 1, N, N + 1), (N, N), (1, N, N), (1, 2, N, N)])
def test_forward_shape_errors(proj, shape):
    with pytest.raises(ValueError, match=r"\[B, 1, 64, 64\]"):
        proj(torch.zeros(shape))


def test_adjoint_shape_error(proj):
    with pytest.raises(ValueError, match=r"\[B, 1, 64, 60\]"):
        proj.adjoint(torch.zeros(1, 1, 60, 64))


def test_bad_backend_name(geom, cache):
    with pytest.raises(ValueError, match="backend"):
        Projector(geom, backend="astra-cuda", cache_dir=cache)


def test_parallelproj_missing_is_a_clear_error(geom, monkeypatch):
    try:
        import parallelproj  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("parallelproj is installed")
    with pytest.raises(ImportError, match="conda-forge"):
        Projector(geom, backend="parallelproj")


def test_no_torch_warnings_when_building():
    # torch warns once per process, so this runs in a fresh interpreter with warnings as errors.
    code = ("import warnings; warnings.simplefilter('error')\n"
            "import numpy as np, scipy.sparse as sp, torch\n"
            "from shared.physics.projector import _torch_csr\n"
            "W = _torch_csr(sp.random(20, 30, density=0.2, format='csr', dtype=np.float32, random_state=0))\n"
            "torch.sparse.mm(W, torch.ones(30, 2))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------ padding
def test_pad_shape_and_crop_roundtrip():
    x = torch.rand(2, 1, 50, 40)
    for mode in ("sino", "zeros"):
        for size in (64, 65, 50, 100):
            p = pad_sinogram(x, size, mode=mode)
            assert p.shape == (2, 1, size, size)
            assert torch.equal(crop_sinogram(p, 50, 40), x)


def test_pad_sino_mode_is_the_theta_plus_pi_symmetry():
    R, A, S = 50, 40, 64
    x = torch.rand(R, A)
    p = pad_sinogram(x, S, mode="sino")
    r0, a0 = (S - R) // 2, (S - A) // 2
    a1 = S - A - a0
    assert torch.all(p[:r0] == 0) and torch.all(p[r0 + R:] == 0)  # radial padding is zeros
    for j in range(a1):  # column A + j is angle θ_j + π:  p(r, θ_j + π) = p(−r, θ_j)
        assert torch.equal(p[r0:r0 + R, a0 + A + j], x.flip(0)[:, j])
    for j in range(a0):  # column −1 − j is angle θ_{A−1−j} − π
        assert torch.equal(p[r0:r0 + R, a0 - 1 - j], x.flip(0)[:, A - 1 - j])


def test_pad_zeros_mode():
    x = torch.rand(1, 1, 50, 40) + 1
    p = pad_sinogram(x, 64, mode="zeros")
    assert float(p.sum()) == pytest.approx(float(x.sum()), rel=1e-6)
    assert torch.all(p[..., :12] == 0) and torch.all(p[..., 52:] == 0)
    assert torch.all(p[..., :7, :] == 0) and torch.all(p[..., 57:, :] == 0)


def test_pad_sino_is_continuous_for_a_real_projection(cache):
    """Wrapping a real sinogram with the flip continues it smoothly across θ = 0 and θ = π."""
    g = ParallelGeometry(N, 2.0, 64, 48)
    img = torch.from_numpy(disc_image(N, 2.0, 24.0, -14.0, 16.0))[None, None]  # off-centre disc
    sino = Projector(g, cache_dir=cache)(img)[0, 0]
    S = 64
    a0 = (S - g.n_angles) // 2
    p = pad_sinogram(sino, S)
    steps = (p[:, 1:] - p[:, :-1]).abs().amax(dim=0)  # largest change between neighbouring columns
    interior = steps[a0:a0 + g.n_angles - 1].max()
    assert steps[a0 - 1] <= 1.5 * interior and steps[a0 + g.n_angles - 1] <= 1.5 * interior
    z = torch.cat([sino[:, -1:], sino[:, :1]], dim=1)  # wrapping *without* the flip jumps
    assert (z[:, 1] - z[:, 0]).abs().max() > 2 * interior  # observed 3.2× (wrap with flip: 0.5×)


def test_pad_errors():
    with pytest.raises(ValueError):
        pad_sinogram(torch.zeros(70, 40), 64)
    with pytest.raises(ValueError):
        pad_sinogram(torch.zeros(50, 20), 64, mode="sino")  # too few angles to wrap
    with pytest.raises(ValueError):
        pad_sinogram(torch.zeros(50, 40), 64, mode="reflect")


# ------------------------------------------------------------------------------------ parallelproj wrapper
class _FakeParallelViewProjector2D:
    """Stand-in with parallelproj's documented ParallelViewProjector2D semantics (≥ 1.x):

    ``(image_shape, radial_positions, view_angles, radius, image_origin, voxel_size)``, mm, image_origin
    = centre of voxel [0, 0]; LOR at view φ and radial position s runs from
    (s·cos φ + R·sin φ, −s·sin φ + R·cos φ) to (s·cos φ − R·sin φ, −s·sin φ − R·cos φ) in the
    (axis 0, axis 1) world coordinates; out_shape (num_rad, num_views); ``op(x)`` / ``op.adjoint(y)``
    on single float32 images.  The line integral is sampled (¼ voxel steps, bilinear), a Joseph-like
    model; the adjoint is its exact transpose (via autograd).
    """

    def __init__(self, image_shape, radial_positions, view_angles, radius, image_origin, voxel_size):
        assert isinstance(radial_positions, torch.Tensor) and isinstance(view_angles, torch.Tensor)
        assert radial_positions.dtype == torch.float32 and view_angles.dtype == torch.float32
        assert len(image_shape) == 2 and len(image_origin) == 2 and len(voxel_size) == 2
        self.in_shape = tuple(image_shape)
        self.out_shape = (radial_positions.shape[0], view_angles.shape[0])
        s, phi = radial_positions[:, None].double(), view_angles[None, :].double()
        start = torch.stack([s * torch.cos(phi) + radius * torch.sin(phi), -s * torch.sin(phi) + radius * torch.cos(phi)], -1)
        end = torch.stack([s * torch.cos(phi) - radius * torch.sin(phi), -s * torch.sin(phi) - radius * torch.cos(phi)], -1)
        h = 0.25 * min(voxel_size)
        n = int(np.ceil(2 * radius / h))
        t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
        pts = start[:, :, None] + (end - start)[:, :, None] * t[:, None]  # [R, A, n, 2]
        idx = (pts - torch.tensor(image_origin, dtype=torch.float64)) / torch.tensor(voxel_size, dtype=torch.float64)
        size = torch.tensor(self.in_shape, dtype=torch.float64)
        norm = 2 * idx / (size - 1) - 1  # align_corners=True
        self._grid = norm.flip(-1).reshape(1, -1, n, 2).float()  # grid_sample wants (axis 1, axis 0)
        self._step = float(2 * radius / n)

    def _project(self, x):
        v = torch.nn.functional.grid_sample(x[None, None], self._grid, mode="bilinear",
                                            padding_mode="zeros", align_corners=True)
        return v.sum(-1).reshape(self.out_shape) * self._step

    def __call__(self, x):
        assert x.shape == self.in_shape and x.dtype == torch.float32 and not x.requires_grad
        return self._project(x)

    def adjoint(self, y):
        assert y.shape == self.out_shape and y.dtype == torch.float32 and not y.requires_grad
        with torch.enable_grad():
            x = torch.zeros(self.in_shape, requires_grad=True)
            (self._project(x) * y).sum().backward()
        return x.grad


@pytest.fixture
def fake_parallelproj(monkeypatch):
    mod = types.ModuleType("parallelproj")
    mod.ParallelViewProjector2D = _FakeParallelViewProjector2D
    monkeypatch.setitem(sys.modules, "parallelproj", mod)
    return mod


def test_parallelproj_backend_conventions(fake_parallelproj, proj, geom):
    """Our wrapper around the documented parallelproj API reproduces the matrix backend."""
    pp = Projector(geom, backend="parallelproj")
    assert pp.backend == "parallelproj"
    img = torch.from_numpy(smooth_shepp_logan(N))[None, None]
    off = torch.from_numpy(disc_image(N, 2.0, 24.0, -14.0, 16.0))[None, None]
    x = torch.cat([img, off]).float()
    a, b = pp(x), proj(x)
    assert a.shape == b.shape == (2, 1, *geom.sino_shape)
    # same geometry, units and orientation (observed 0.3 %; a transposed image or flipped radial axis
    # gives ~80 %); the residual is the different interpolation model
    assert _rel(a, b) < 0.01
    # adjoint, dtype and gradient through the wrapper
    y = torch.rand(2, 1, *geom.sino_shape, generator=torch.Generator().manual_seed(6))
    lhs, rhs = float((pp(x).double() * y.double()).sum()), float((x.double() * pp.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)
    x64 = x.double().requires_grad_(True)
    out = pp(x64)
    assert out.dtype == torch.float64
    (out * y.double()).sum().backward()
    torch.testing.assert_close(x64.grad, pp.adjoint(y.double()), rtol=1e-5, atol=1e-6)
