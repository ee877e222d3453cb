"""The reconstruction baselines the student is compared against, with tuned settings, on a dataset split.

    BASELINES = {"fbp": ..., "mlem": ..., "osem": ...}            (callables with tuned defaults)
    reconstruct_split(dataset, "test", "mlem", **overrides)       -> np.ndarray (N, 1, H, W), actMap units
    tune_baselines(dataset, "val")                                -> the grid's errors and best settings
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch

from shared.data.dataset_io import as_dataset
from shared.errors import InputError
from shared.physics.acquisition import Acquisition
from shared.physics.projector import Projector
from shared.physics.recon import FBP_DEFAULTS, FILTERS, fbp, gaussian_smooth, mlem

# Each entry is a functools.partial, so ``BASELINES["mlem"].keywords`` shows its settings and
# keyword arguments given at call time override them. The settings were chosen with
# ``tune_baselines`` (mean relative L2 against actMap) on validation phantoms of the default synthetic
# data: FBP with a Hann window at 0.35 × Nyquist, clipped at 0 (the textbook ramp filter amplifies the
# Poisson noise many times over); MLEM 30 iterations and OSEM 4 subsets × 8 iterations, each with a
# 10 mm FWHM Gaussian post-filter (the optimum is flat around these). ``evaluate`` re-tunes them on
# the user's validation split unless ``--baseline-defaults``; its summary.json records what it used.
BASELINES: dict[str, functools.partial] = {
    "fbp": functools.partial(fbp, **FBP_DEFAULTS),
    "mlem": functools.partial(mlem, n_iter=30, subsets=1, post_fwhm_mm=10.0),
    "osem": functools.partial(mlem, n_iter=8, subsets=4, post_fwhm_mm=10.0),
}


def _resolve(method) -> Callable:
    if callable(method):
        return method
    if method not in BASELINES:
        raise InputError(f"reconstruct_split: method must be one of {sorted(BASELINES)} or a callable, got {method!r}")
    return BASELINES[method]


def _physics(ds, projector, calibration: float, fn: str) -> Acquisition:
    P = projector if projector is not None else Projector(ds.geometry)
    if P.geometry != ds.geometry:
        raise InputError(f"{fn}: projector geometry {P.geometry} != dataset geometry {ds.geometry}")
    return Acquisition(P, calibration)


def reconstruct_split(dataset, split: str, method="mlem", *, batch_size: int = 16, projector=None,
                      device=None, progress: bool = False, indices=None, calibration: float = 1.0,
                      **kw) -> np.ndarray:
    """Reconstruct every sample of ``split`` → float32 array (N, 1, H, W) in actMap units.

    ``calibration`` is the dataset's count scale c (E[actSino] = c · exp(−A μ) · A actMap, the
    acquisition model's c), so the images come out in actMap units whatever the data's units.

    ``dataset``: a :class:`shared.data.dataset_io.Dataset` or a dataset folder.  ``method``: a key
    of :data:`BASELINES` ("fbp", "mlem", "osem") or a callable ``f(sino, mu, physics, **kw)``;
    ``kw`` overrides the baseline's defaults.  Uses the centre sinogram plane and the split's
    μ-map; one Projector is built (or pass ``projector``) and reused for all batches.
    ``indices`` restricts the work to some samples (the output then has len(indices) rows).
    """
    ds = as_dataset(dataset)
    arrays = ds.split(split)
    fn = _resolve(method)
    physics = _physics(ds, projector, calibration, "reconstruct_split")
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
            sino = torch.from_numpy(np.asarray(arrays.actSino[b, c:c + 1], dtype=np.float32)).to(device)
            mu = torch.from_numpy(np.asarray(arrays.attenMap[b], dtype=np.float32)).to(device)
            out[s:s + len(b)] = fn(sino, mu, physics, **kw).cpu().numpy()
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
    (the acquisition model with the dataset's ``calibration``, as in :func:`reconstruct_split`).

    FBP: every filter × cutoff, with and without clipping at zero.  MLEM/OSEM: every subset count,
    every iteration up to ``max_iter[subsets]`` (default: 60 sub-iteration sweeps ≈ 60/S iterations,
    at least 4), every post-filter FWHM.  Returns ``{"fbp": {(filter, cutoff, nonneg): err},
    "em": {(subsets, n_iter, post_fwhm_mm): err}, "best": {"fbp": kw, "mlem": kw, "osem": kw}}``
    where the best OSEM is the best setting with subsets > 1.
    """
    ds = as_dataset(dataset)
    arrays = ds.split(split)
    physics = _physics(ds, projector, calibration, "tune_baselines")
    c = ds.sino_channels // 2
    max_iter = dict(max_iter or {})
    for S in subsets:
        max_iter.setdefault(S, max(4, math.ceil(60 / S)))
    fbp_err, em_err, n = {}, {}, arrays.n
    batches = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]

    device = torch.device(device) if device is not None else torch.device("cpu")

    def load(sl):
        return (torch.from_numpy(np.array(arrays.actSino[sl, c:c + 1], dtype=np.float32)).to(device),
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
                    img = fbp(sino, mu, physics, filter=f, cutoff=cut).cpu().numpy()
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
                mlem(sino, mu, physics, n_iter=max_iter[S], subsets=S, callback=cb)
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
