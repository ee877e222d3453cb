"""Augmentations and the angle roll (the declared angle offset) commute with the projector:
op_sino(P(x)) == P(op_image(x)) on the discrete grid."""
import numpy as np
import pytest
import torch

from shared.data.augment import FLIP_VARIANTS, flip_image, flip_sinogram
from shared.data.orientation import roll_angles as roll_sinogram
from shared.physics.projector import ParallelGeometry, Projector

# The astra 'linear' model is symmetric under these permutations up to float32 round-off
# (measured ~2e-6 relative L2); a wrong mapping gives ~0.13.
TOL = 1e-5


@pytest.fixture(scope="module", params=[(32, 48, 30), (33, 47, 31)], ids=["even", "odd"])
def setup(request, tmp_path_factory):
    H, R, A = request.param
    P = Projector(ParallelGeometry(H, 3.0, R, A), cache_dir=tmp_path_factory.mktemp("proj"))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, H, H, generator=g)
    x[..., : H // 3, :] *= 3  # make sure the image has no symmetry at all
    return P, x


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("v", range(4))
def test_flip_commutes_with_projector(setup, v):
    P, x = setup
    assert rel(flip_sinogram(P(x), v), P(flip_image(x, v))) < TOL
    assert torch.equal(flip_sinogram(P(x), FLIP_VARIANTS[v]), flip_sinogram(P(x), v))


def test_variants_are_distinct_involutions(setup):
    P, x = setup
    s = P(x)
    outs = [flip_sinogram(s, v) for v in range(4)]
    for v in range(4):
        assert torch.equal(flip_sinogram(outs[v], v), s)
        assert torch.equal(flip_image(flip_image(x, v), v), x)
    for i in range(4):
        for j in range(i + 1, 4):
            assert rel(outs[i], outs[j]) > 0.05


def test_any_leading_dims():
    s = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    out = flip_sinogram(s, 1)
    assert out.shape == s.shape
    assert torch.equal(out[..., 0], s[..., 0].flip(-1))       # θ=0 ↔ θ=π: radially flipped
    assert torch.equal(out[..., 1:], s[..., 1:].flip(-1))     # θ_k ↔ θ_{A−k}
    assert torch.equal(flip_sinogram(s[0, 0], 3), s[0, 0].flip(0))
    with pytest.raises(ValueError):
        flip_sinogram(s, 4)


def test_roll_half_turn_is_rot90(setup):
    P, x = setup
    A = P.geometry.n_angles
    if A % 2:
        return
    k = A // 2
    assert rel(roll_sinogram(P(x), k), P(torch.rot90(x, 1, dims=(-2, -1)))) < TOL
    assert rel(roll_sinogram(P(x), -k), P(torch.rot90(x, -1, dims=(-2, -1)))) < TOL
    assert rel(roll_sinogram(P(x), k), P(torch.rot90(x, -1, dims=(-2, -1)))) > 0.05  # direction matters


def test_roll_algebra(setup):
    P, x = setup
    s = P(x)
    A = s.shape[-1]
    assert torch.equal(roll_sinogram(s, A), s.flip(-2))                    # π = radial flip
    assert torch.equal(roll_sinogram(s, 2 * A), s)
    assert torch.equal(roll_sinogram(roll_sinogram(s, 7), -7), s)
    assert torch.equal(roll_sinogram(roll_sinogram(s, 4), 5), roll_sinogram(s, 9))
    # the columns that did not wrap are a plain shift
    assert torch.equal(roll_sinogram(s, 3)[..., 3:], s[..., :-3])
    assert torch.equal(roll_sinogram(s, 3)[..., :3], s[..., -3:].flip(-2))


def test_roll_general_angle_matches_interpolated_rotation(setup):
    """For k not a multiple of A/2 the image rotation is not pixel-exact, but the sinogram roll still
    matches an interpolated counter-clockwise rotation (and clearly not the clockwise one)."""
    from skimage.transform import rotate

    P, x = setup
    H, A = x.shape[-1], P.geometry.n_angles
    yy, xx = np.mgrid[:H, :H] - (H - 1) / 2
    disk = torch.from_numpy(((yy ** 2 + xx ** 2) < (0.3 * H) ** 2).astype(np.float32))
    img = torch.nn.functional.avg_pool2d(x, 5, 1, 2) * disk  # smooth, inside the FOV: rotation is benign
    k = 3
    deg = k * 180 / A
    ccw = torch.from_numpy(rotate(img[0, 0].numpy(), deg, order=3))[None, None]
    cw = torch.from_numpy(rotate(img[0, 0].numpy(), -deg, order=3))[None, None]
    rolled = roll_sinogram(P(img[:1]), k)
    # interpolation alone leaves ~2.5% here; the wrong direction gives ~20%
    assert rel(rolled, P(ccw.float())) < 0.05 and rel(rolled, P(cw.float())) > 0.15
