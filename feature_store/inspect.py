"""Look inside a feature store from a notebook: metadata, dask / xarray views, per-channel statistics, montages.

Everything opens the store read-only and reads lazily; nothing here writes to the store.

```
from feature_store import inspect as fi
fi.metadata(store)                        # curated root attrs + per-split state
fi.open_dask(store, "train")              # {tap: dask.array (N, C, H, W)}
fi.open_xarray(store, "train")            # xarray.Dataset with dims sample, c144, y144, x144, …
fi.channel_stats(store, "train", "enc144")  # per-channel mean/std/min/max (+ stored values, NaN count)
fi.stats_table(store, "train")            # the same for every tap, one table
fi.montage(store, "train", 0, data_dir)   # μ-map next to the first channels of each tap
```

(Imported as ``feature_store.inspect``; it does not shadow the standard library ``inspect``
for absolute imports.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import layout as L
from .manifest import manifest_of

STAT_NAMES = ("mean", "std", "min", "max")


def _root(store):
    return L.open_root(store, mode="r")


def _split_group(store, split: str):
    root = _root(store)
    splits = manifest_of(root, store).splits
    if split not in splits:
        raise L.StoreError(f"{store}: has no split {split!r} (has: {', '.join(splits) or 'none'})")
    return root, root[split]


def _taps(root, taps=None) -> list[str]:
    have = manifest_of(root, "store").taps
    if taps is None:
        return have
    missing = [t for t in taps if t not in have]
    if missing:
        raise L.StoreError(f"store has no tap(s) {missing} (has {have})")
    return list(taps)


# ------------------------------------------------------------------ metadata
def metadata(store) -> dict:
    """The store's root attrs, curated: identity, layout, tap shapes and each split's state.

    Plain JSON types only (``json.dumps(metadata(s), indent=2)`` prints it).  The full teacher
    config is left out (``zarr.open_group(store, mode='r').attrs['teacher_config']`` has it).
    """
    root = _root(store)
    m = manifest_of(root, store)
    out = {
        "store": str(store),
        "format_version": m.format_version,
        "teacher_sha256": m.teacher_sha256,
        "teacher_metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.teacher_metrics.items()},
        "dataset_fingerprint": m.dataset_fingerprint,
        "geometry": m.geometry,
        "levels": m.levels,
        "taps": m.taps,
        "dtype": m.dtype,
        "codec": m.codec,
        "shard_size": m.shard_size,
        "range_size": m.range_size,
        "variants": f"{m.variants} ({m.n_variants} per sample)",
        "created": m.created,
        "tap_shapes": {},
        "splits": {},
    }
    for split, state in m.splits.items():
        info = {"n": state.n, "status": state.status}
        if state.completed:
            info["completed"] = state.completed
        if split in root:
            g = root[split]
            try:
                flags = L.done_flags(root, split)
                info["ranges_done"] = f"{int(flags.sum())}/{flags.size}"
            except KeyError:
                pass
            stored = 0
            for tap in out["taps"] or []:
                if tap in g:
                    arr = g[tap]
                    out["tap_shapes"].setdefault(tap, list(arr.shape[-3:]))
                    stored += arr.nbytes_stored()
            info["bytes_stored"] = stored
            info["MB_stored"] = round(stored / 1e6, 2)
        out["splits"][split] = info
    return out


# ------------------------------------------------------------------ lazy views
def open_dask(store, split: str, taps=None, samples_per_chunk: int | None = None) -> dict:
    """``{tap: dask.array}`` over the split's tap arrays (read-only, lazy).

    By default one dask chunk per stored chunk (one sample); ``samples_per_chunk`` groups
    samples into bigger dask chunks, which keeps the task graph small for full-split reductions.
    """
    import dask.array as da

    root, g = _split_group(store, split)
    out = {}
    for tap in _taps(root, taps):
        arr = g[tap]
        chunks = arr.chunks
        if samples_per_chunk:
            chunks = (min(samples_per_chunk, arr.shape[0]),) + tuple(arr.chunks[1:])
        out[tap] = da.from_zarr(arr, chunks=chunks)
    return out


def open_xarray(store, split: str, drop_done: bool = True):
    """The split as an ``xarray.Dataset`` (dask-backed); one variable per tap.

    The ``_done`` range flags (dimension ``range``) are dropped unless ``drop_done=False``.
    Selected root attrs (teacher hash, levels, dtype, variants, split size) are copied to ``ds.attrs``.
    """
    import xarray as xr

    root, _ = _split_group(store, split)
    ds = xr.open_zarr(str(store), group=split, consolidated=False,
                      drop_variables=[L.DONE] if drop_done else None)
    m = manifest_of(root, store)
    ds.attrs.update({"store": str(store), "split": split, "teacher_sha256": m.teacher_sha256, "levels": m.levels,
                     "dtype": m.dtype, "variants": m.variants, "n": m.splits[split].n})
    return ds


# ------------------------------------------------------------------ statistics
def channel_stats(store, split: str, tap: str, samples_per_chunk: int | None = None, compare: bool = True):
    """Per-channel mean/std/min/max of one tap over all samples (and variants), computed lazily.

    Values are accumulated in float64 with dask in one pass over the data.  ``nan`` counts NaN
    values (NaN = a sample never written).  With ``compare`` the statistics the export stored in
    the array's attrs (``stats``) are added as ``stored_<stat>`` columns, and ``max_rel_diff`` is
    the largest of |computed − stored| / max(|stored std|, 1e-6) over the four statistics.
    Returns a ``pandas.DataFrame`` indexed by channel.
    """
    import dask
    import dask.array as da
    import pandas as pd

    root, g = _split_group(store, split)
    _taps(root, [tap])
    arr = g[tap]
    spc = samples_per_chunk or (manifest_of(root, store).shard_size or 0) or 32
    x = open_dask(store, split, [tap], samples_per_chunk=spc)[tap].astype(np.float64)
    c_axis = x.ndim - 3
    axes = tuple(i for i in range(x.ndim) if i != c_axis)
    count = x.size // x.shape[c_axis]
    s1, s2 = x.sum(axis=axes), (x * x).sum(axis=axes)
    lo, hi = x.min(axis=axes), x.max(axis=axes)
    nan = da.isnan(x).sum(axis=axes)
    s1, s2, lo, hi, nan = dask.compute(s1, s2, lo, hi, nan)
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean ** 2, 0))
    df = pd.DataFrame({"mean": mean, "std": std, "min": lo, "max": hi, "nan": nan.astype(np.int64)})
    df.index.name = "channel"
    if compare:
        stored = arr.attrs.get("stats")
        if stored:
            scale = np.maximum(np.abs(np.asarray(stored["std"], dtype=np.float64)), 1e-6)
            diffs = []
            for k in STAT_NAMES:
                df[f"stored_{k}"] = np.asarray(stored[k], dtype=np.float64)
                diffs.append(np.abs(df[k].to_numpy() - df[f"stored_{k}"].to_numpy()) / scale)
            df["max_rel_diff"] = np.max(diffs, axis=0)
    return df


def stats_table(store, split: str, taps=None, compare: bool = True):
    """``channel_stats`` of every tap in one DataFrame indexed by (level, tap, channel)."""
    import pandas as pd

    root, _ = _split_group(store, split)
    frames = {}
    for tap in _taps(root, taps):
        frames[(L.level_of(tap), tap)] = channel_stats(store, split, tap, compare=compare)
    df = pd.concat(frames, names=["level", "tap"])
    return df


# ------------------------------------------------------------------ pictures
def montage(store, split: str, sample: int, data_dir=None, channels: int = 8, variant: int = 0, taps=None):
    """A figure: the sample's μ-map (from ``data_dir``; flipped like ``variant``) in the left
    column, and the first ``channels`` channels of each tap in rows (each with its own colour scale)."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    root, g = _split_group(store, split)
    taps = _taps(root, taps)
    m = manifest_of(root, store)
    n = m.splits[split].n
    if not 0 <= sample < n:
        raise IndexError(f"{store}: {split} sample {sample} out of range 0..{n - 1}")
    V = m.n_variants
    if not 0 <= variant < V:
        raise IndexError(f"{store}: variant {variant} not stored (store has {V})")
    key = (sample, variant) if V > 1 else sample

    mu = None
    if data_dir is not None:
        from shared.data.dataset_io import open_dataset

        mu = np.array(open_dataset(data_dir, check_finite=False).split(split).attenMap[sample], dtype=np.float32)
        mu = mu.reshape(-1, *mu.shape[-2:])[0]  # [1, H, W] → [H, W]
        if variant:
            import torch

            from shared.data.augment import flip_image

            mu = flip_image(torch.from_numpy(mu), variant).numpy()

    ncol = max(1, channels)
    fig = plt.figure(figsize=(1.5 * (ncol + 2.2), 1.5 * len(taps) + 0.6), layout="constrained")
    gs = GridSpec(len(taps), ncol + 2, figure=fig, width_ratios=[2.2, 0.1] + [1] * ncol)
    ax_mu = fig.add_subplot(gs[:, 0])
    if mu is not None:
        im = ax_mu.imshow(mu, cmap="gray")
        fig.colorbar(im, ax=ax_mu, location="bottom", shrink=0.8, label="μ")
        ax_mu.set_title(f"μ-map {split}[{sample}]" + (f" v{variant}" if variant else ""), fontsize=9)
    else:
        ax_mu.text(0.5, 0.5, "μ-map:\npass data_dir", ha="center", va="center", transform=ax_mu.transAxes)
    ax_mu.set_axis_off()
    for r, tap in enumerate(taps):
        x = np.asarray(g[tap][key], dtype=np.float32)
        for c in range(ncol):
            ax = fig.add_subplot(gs[r, c + 2])
            ax.set_xticks([])
            ax.set_yticks([])
            if c < x.shape[0]:
                ax.imshow(x[c], cmap="viridis", interpolation="nearest")
                ax.set_title(f"{tap} c{c}", fontsize=7)
            else:
                ax.set_axis_off()
    fig.suptitle(f"{Path(str(store)).name} · {split} sample {sample}", fontsize=10)
    return fig
