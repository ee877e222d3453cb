"""Sinogram orientation: how a dataset's stored sinograms relate to the projector's convention (docs/DESIGN.md §8).

Scanners and toolkits disagree on the direction of the radial axis, the order of the angles and
where angle 0 lies.  A dataset declares its convention in ``dataset.json`` (``geometry.orientation``,
``geometry.angle_offset``) and the reader turns every stored sinogram into the projector's
convention on read, so the teacher's sinogram-side features and the student's input line up.

``orient(s, o, k)`` maps a projector-convention sinogram to the stored convention:
first the flips named by ``o``, then a roll of the angle axis by ``k`` bins (columns wrapping past
180° come back radially flipped, p(r, θ+π) = p(−r, θ)).  ``to_projector`` is its inverse.
All are index permutations on the last two axes [..., R, A]; numpy arrays and torch tensors both work.
"""
from __future__ import annotations

import numpy as np
from shared.errors import InputError

ORIENTATIONS = ("identity", "radial_flip", "angle_reverse", "radial_flip+angle_reverse")


def _flip(s, axes):
    if isinstance(s, np.ndarray):
        return np.flip(s, axis=axes)
    return s.flip(axes)


def _flips(s, orientation: str):
    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation must be one of {list(ORIENTATIONS)}, got {orientation!r}")
    axes = {"identity": (), "radial_flip": (-2,), "angle_reverse": (-1,), "radial_flip+angle_reverse": (-2, -1)}
    axes = axes[orientation]
    return _flip(s, axes) if axes else s


def roll_angles(s, k: int):
    """Column j takes column j − k of the sinogram extended over [0°, 360°) by its radial flip
    (angle index 0..2A−1 ↔ θ in [0, 2π))."""
    A = s.shape[-1]
    k = int(k) % (2 * A)
    if k == 0:
        return s
    idx = (np.arange(A) - k) % (2 * A)
    if isinstance(s, np.ndarray):
        return np.concatenate([s, np.flip(s, axis=-2)], axis=-1)[..., idx]
    import torch

    ext = torch.cat([s, s.flip(-2)], dim=-1)
    return ext.index_select(-1, torch.as_tensor(idx, device=s.device))


def orient(s, orientation: str = "identity", angle_offset: int = 0):
    """Projector convention → the stored convention."""
    return roll_angles(_flips(s, orientation), angle_offset)


def to_projector(s, orientation: str = "identity", angle_offset: int = 0):
    """The stored convention → projector convention (inverse of :func:`orient`)."""
    return _flips(roll_angles(s, -int(angle_offset)), orientation)


def stored(arr):
    """The array as stored on disk: the memory map behind an :class:`OrientedArray`, else ``arr``."""
    return arr.base if isinstance(arr, OrientedArray) else arr


class OrientedArray:
    """A read-only view of a memory-mapped sinogram array [N, C, R, A] that returns rows in the
    projector's convention.  Index only the leading axes (rows, channels)."""

    def __init__(self, arr: np.ndarray, orientation: str, angle_offset: int):
        if orientation not in ORIENTATIONS:
            raise InputError(f"orientation must be one of {list(ORIENTATIONS)}, got {orientation!r}")
        self.base, self.orientation, self.angle_offset = arr, orientation, int(angle_offset)
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        lead = key if isinstance(key, tuple) else (key,)
        if len(lead) > self.ndim - 2 or any(k is Ellipsis for k in lead):
            raise IndexError("OrientedArray: index the sample and channel axes only")
        return np.ascontiguousarray(to_projector(np.asarray(self.base[key]), self.orientation, self.angle_offset))

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype) if dtype is not None else out
