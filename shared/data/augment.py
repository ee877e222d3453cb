"""Sinogram-consistent augmentation: image flips / rotations and the exactly matching sinogram ops.

Conventions are those of :mod:`shared.physics.projector` (and ``skimage.transform.radon(circle=False)``):
images ``[..., H, W]`` with row = y and column = x, sinograms ``[..., R, A]`` with radial bins
centred on the rotation axis and angles θ_k = k·π/A, k = 0..A-1.  On that grid every operation
below is an exact index permutation (no interpolation), so ``flip_sinogram(P(x), v) ==
P(flip_image(x, v))`` holds to float round-off (checked in tests/test_augment.py).

The discrete facts used:
  * r → −r is ``flip(-2)`` because the radial bins are symmetric about the centre;
  * π − θ_k = θ_{A−k} for k ≥ 1, while for k = 0 it is θ = π, i.e. θ_0 with r → −r
    (p(r, θ+π) = p(−r, θ));
  * angles beyond π wrap the same way, so the sinogram extended by its radially flipped copy
    is 2A-periodic in the angle index.
"""
from __future__ import annotations

import torch
from shared.errors import InputError

# index v -> name; image op  <->  sinogram op
FLIP_VARIANTS = (
    "identity",  # 0: nothing                              <-> nothing
    "flip_x",    # 1: mirror left-right (columns, x → −x)   <-> θ → π−θ
    "flip_y",    # 2: mirror up-down (rows, y → −y)          <-> θ → π−θ and r → −r
    "rot180",    # 3: both mirrors = 180° rotation           <-> r → −r
)


def _variant(v) -> int:
    if isinstance(v, str):
        if v not in FLIP_VARIANTS:
            raise InputError(f"flip variant must be one of {FLIP_VARIANTS}, got {v!r}")
        return FLIP_VARIANTS.index(v)
    if int(v) != v or not 0 <= int(v) < len(FLIP_VARIANTS):
        raise InputError(f"flip variant must be an int in 0..3 or a name in {FLIP_VARIANTS}, got {v!r}")
    return int(v)


def _mirror_angles(sino: torch.Tensor) -> torch.Tensor:
    """θ → π − θ on the grid: column k takes column A−k; column 0 takes itself radially flipped."""
    return torch.cat([sino[..., :1].flip(-2), sino[..., 1:].flip(-1)], dim=-1)


def flip_image(img: torch.Tensor, v) -> torch.Tensor:
    """Image variant ``v`` (index or name from FLIP_VARIANTS) of ``img[..., H, W]``."""
    v = _variant(v)
    if v == 1:
        return img.flip(-1)
    if v == 2:
        return img.flip(-2)
    if v == 3:
        return img.flip(-2, -1)
    return img


def flip_sinogram(sino: torch.Tensor, v) -> torch.Tensor:
    """Sinogram ``[..., R, A]`` of the image ``flip_image(x, v)``, given the sinogram of ``x``."""
    v = _variant(v)
    if v == 1:
        return _mirror_angles(sino)
    if v == 2:
        return _mirror_angles(sino).flip(-2)
    if v == 3:
        return sino.flip(-2)
    return sino
