"""Arrays as FrozenFlow reads them, whatever their files hold (docs/DESIGN.md §8).

* ``AsFloat32``: a real float or integer array read as float32 (the row scan has checked that every value is
  representable: finite in float32, integers within ±2^24), times an optional factor (``atten_calibration``:
  attenuation sinograms stored in other units become line integrals of μ in 1/cm).
* ``Resampled``: sinograms stored at another size than the working geometry (``geometry.resize``:
  ``{"from": [R, A], "method": "bilinear" | "area"}``), resampled on read to ``n_radial × n_angles``.

Resampling is linear and exact about the sampling: radial bins are centred on the axis in both grids, so
output bin i sits at input position (i + ½)·R_in/R − ½; angles start at 0 in both (θ_j = jπ/A), so output
angle j sits at input position j·A_in/A. ``bilinear`` interpolates at those positions, ``area`` averages the
input bins over each output bin's extent (overlap-weighted: a coarser detector). The angle axis is periodic
with p(r, θ + π) = p(−r, θ), so an output bin reaching past 180° takes the radially flipped first columns.
"""
from __future__ import annotations

import math

import numpy as np

METHODS = ("bilinear", "area")


def axis_weights(n_out: int, n_in: int, method: str, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """(W, W_flipped), each [n_out, n_in]: out = W·x (+ W_flipped·flip(x) on the periodic angle axis)."""
    W, Wf = np.zeros((n_out, n_in)), np.zeros((n_out, n_in))
    r = n_in / n_out

    def add(i, k, w):
        if periodic:
            turns = math.floor(k / n_in)
            (Wf if turns % 2 else W)[i, k - turns * n_in] += w
        elif 0 <= k < n_in:  # outside the detector: nothing
            W[i, k] += w

    for i in range(n_out):
        x = i * r if periodic else (i + 0.5) * r - 0.5
        if method == "bilinear":
            k = math.floor(x)
            add(i, k, 1 - (x - k))
            add(i, k + 1, x - k)
        else:
            lo, hi = x - r / 2, x + r / 2  # this output bin's extent, in input bins (bin k covers k ± ½)
            for k in range(math.floor(lo + 0.5), math.ceil(hi - 0.5) + 1):
                overlap = min(hi, k + 0.5) - max(lo, k - 0.5)
                if overlap > 0:
                    add(i, k, overlap / r)
    return W, Wf


class AsFloat32:
    """A read-only view returning float32 rows (times ``factor``) of a memory-mapped array of another dtype."""

    def __init__(self, base: np.ndarray, factor: float = 1.0):
        self.base, self.factor = base, float(factor)
        self.shape, self.ndim, self.dtype = base.shape, base.ndim, np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        rows = np.asarray(self.base[key], dtype=np.float32)
        return rows * np.float32(self.factor) if self.factor != 1.0 else rows

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class Resampled:
    """A read-only view of sinograms [N, C, R_in, A_in] returning [.., R, A] float32 rows; index the leading axes."""

    def __init__(self, base, n_radial: int, n_angles: int, method: str):
        if method not in METHODS:
            raise ValueError(f"resize method must be one of {list(METHODS)}, got {method!r}")
        self.base, self.method = base, method
        r_in, a_in = base.shape[-2:]
        self.Wr, _ = axis_weights(n_radial, r_in, method, periodic=False)
        self.Wa, self.Wa_flipped = axis_weights(n_angles, a_in, method, periodic=True)
        self.shape = (*base.shape[:-2], n_radial, n_angles)
        self.ndim, self.dtype = len(self.shape), np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, tuple) and len(key) > self.ndim - 2:
            raise IndexError("index only the leading axes (rows, channels) of a resampled sinogram array")
        p = np.asarray(self.base[key], dtype=np.float64)
        out = np.einsum("ri,...ij,aj->...ra", self.Wr, p, self.Wa)
        if self.Wa_flipped.any():
            out += np.einsum("ri,...ij,aj->...ra", self.Wr, p[..., ::-1, :], self.Wa_flipped)
        return out.astype(np.float32)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)
