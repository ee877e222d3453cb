"""Figures people would rather look at: learning curves and image grids (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: list[dict], path: str | Path, best_epoch: int | None = None, metric: str = "") -> Path:
    """Loss, PSNR and SSIM per epoch; the epoch best.pt was taken from is marked."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].semilogy(epochs, [r["train_loss"] for r in history], "o-", label="train")
    axes[0].semilogy(epochs, [r["val_loss"] for r in history], "s-", label="val")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(epochs, [r["val_psnr"] for r in history], "o-")
    axes[1].set_title("val PSNR (dB)")
    axes[2].plot(epochs, [r["val_ssim"] for r in history], "o-", label="SSIM")
    axes[2].plot(epochs, [r["val_ssim_global"] for r in history], "s-", label="global SSIM")
    axes[2].set_title("val SSIM")
    axes[2].legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="k", ls="--", lw=0.8)
    if best_epoch is not None:
        fig.suptitle(f"best epoch {best_epoch}" + (f" (by {metric})" if metric else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def feature_scale_curve(history: list[dict], path: str | Path, plan: dict | None = None) -> Path:
    """Mean |learned feature scale| of every receiving tap per epoch (init 0.1), or with the mixer merge its
    mean |weight| on the injected channels (``mix_…``); final values labelled."""
    plt = _plt()
    epochs = [r["epoch"] for r in history]
    prefix = "mix_" if any(k.startswith("mix_") for k in history[-1]) else "scale_"
    keys = sorted((k for k in history[-1] if k.startswith(prefix)),
                  key=lambda k: (k[len(prefix):len(prefix) + 3], -int(k[len(prefix) + 3:])))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for k in keys:
        tap = k[len(prefix):]
        label = f"student {tap}" + (f" ← teacher {plan[tap]}" if plan and tap in plan else "")
        line, = ax.plot(epochs, [r[k] for r in history], "o-", ms=3, label=label)
        ax.annotate(f"{history[-1][k]:.3g}", (epochs[-1], history[-1][k]), fontsize=7, color=line.get_color(),
                    xytext=(3, 0), textcoords="offset points", va="center")
    ax.margins(x=0.15)  # room for the final-value labels
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean |scale|" if prefix == "scale_" else "mean |mixer weight| on the features")
    ax.set_title("learned feature scales per receiving tap" if prefix == "scale_"
                 else "1×1 mixers: weight on the injected features per receiving tap", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def image_grid(rows: list[list[np.ndarray]], columns: list[str], path: str | Path, shared_columns=None,
               row_labels: list[str] | None = None, cmap="gray") -> Path:
    """rows × columns of 2D images.  Columns listed together in ``shared_columns`` (lists of
    indices) share one colour scale per row, so prediction and truth are comparable."""
    plt = _plt()
    n_r, n_c = len(rows), len(columns)
    fig, axes = plt.subplots(n_r, n_c, figsize=(2.6 * n_c, 2.5 * n_r), squeeze=False)
    groups = shared_columns or [[c] for c in range(n_c)]
    for r, images in enumerate(rows):
        for group in groups:
            lo = min(float(np.min(images[c])) for c in group)
            hi = max(float(np.max(images[c])) for c in group)
            for c in group:
                ax = axes[r][c]
                im = ax.imshow(np.asarray(images[c]), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(columns[c], fontsize=9)
                if c == group[-1]:
                    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        if row_labels:
            axes[r][0].set_ylabel(row_labels[r], fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def comparison_figure(target: np.ndarray, recons: dict, path: str | Path, metric: dict | None = None,
                      samples=None, units: str = "actMap units", lesions: np.ndarray | None = None) -> Path:
    """Per sample: target and every method on one colour scale, their errors on a zero-centred scale,
    and a horizontal line profile through the centre of the largest lesion (``lesions``: label maps
    [N, 1, H, W]) or, without one, through the hottest pixel of the target.

    ``recons`` maps method → [N, 1, H, W]; ``metric`` maps method → per-sample NRMSE (in titles).
    """
    plt = _plt()
    names = list(recons)
    idx = list(samples) if samples is not None else list(range(min(3, len(target))))
    n_c = 1 + 2 * len(names) + 1
    fig, axes = plt.subplots(len(idx), n_c, figsize=(2.3 * n_c, 2.4 * len(idx)), squeeze=False)
    for r, i in enumerate(idx):
        t = target[i, 0]
        hi = max(float(t.max()), *(float(recons[m][i, 0].max()) for m in names))
        err = max(float(np.abs(recons[m][i, 0] - t).max()) for m in names) or 1.0
        y = _profile_row(t, None if lesions is None else lesions[i, 0])
        panels = [("target", t, "hot", 0, hi)] + [
            (f"{m}" + (f"\nNRMSE {metric[m][i]:.3f}" if metric else ""), recons[m][i, 0], "hot", 0, hi) for m in names] + [
            (f"{m} − target", recons[m][i, 0] - t, "RdBu_r", -err, err) for m in names]
        for c, (title, img, cmap, lo, up) in enumerate(panels):
            ax = axes[r][c]
            im = ax.imshow(img, cmap=cmap, vmin=lo, vmax=up)
            if c == 0:
                ax.axhline(y, color="c", lw=0.6, ls=":")
                ax.set_ylabel(f"sample {i}", fontsize=8)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c in (0, len(names) + 1) or c == len(panels) - 1:
                cb = fig.colorbar(im, ax=ax, fraction=0.046)
                cb.ax.tick_params(labelsize=6)
                cb.set_label(units if c == 0 else f"error [{units}]", fontsize=6)
        ax = axes[r][-1]
        ax.plot(t[y], "k-", lw=1.5, label="target")
        for m in names:
            ax.plot(recons[m][i, 0][y], lw=0.9, label=m)
        ax.set_title(f"profile, row {y}", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_ylabel(units, fontsize=6)
        if r == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def _profile_row(target: np.ndarray, labels: np.ndarray | None) -> int:
    """The row through the centroid of the largest lesion, else through the hottest pixel."""
    if labels is not None and (labels > 0).any():
        values, counts = np.unique(labels[labels > 0], return_counts=True)
        return int(round(np.nonzero(labels == values[np.argmax(counts)])[0].mean()))
    return int(np.unravel_index(int(np.argmax(target)), target.shape)[0])


def box_plots(per_sample: list[dict], metrics: list[str], path: str | Path) -> Path:
    """One box per method for each metric, from per_sample.csv rows."""
    plt = _plt()
    methods = list(dict.fromkeys(r["method"] for r in per_sample))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        ax.boxplot([[float(r[k]) for r in per_sample if r["method"] == m] for m in methods], showmeans=True)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, fontsize=7)
        ax.set_title(k, fontsize=9)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)


def crc_figure(rows: list[dict], methods: list[str], path: str | Path) -> Path:
    """Contrast recovery per lesion against lesion radius (hot, cold; per-method means in radius
    bins as lines) and each method's mean hot CRC against its mean BV (the trade-off point)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    radius = np.array([r["radius_mm"] for r in rows])
    edges = np.quantile(radius, np.linspace(0, 1, 6)) if len(rows) else np.array([0, 1])
    for ax, kind in zip(axes[:2], ("hot", "cold")):
        sel = [i for i, r in enumerate(rows) if r["kind"] == kind]
        for m in methods:
            crc = np.array([rows[i][f"crc_{m}"] for i in sel])
            rad = radius[sel]
            pts = ax.scatter(rad, crc, s=6, alpha=0.35)
            which = np.clip(np.digitize(rad, edges[1:-1]), 0, len(edges) - 2)
            centres = [rad[which == b].mean() for b in range(len(edges) - 1) if np.any(which == b)]
            means = [crc[which == b].mean() for b in range(len(edges) - 1) if np.any(which == b)]
            ax.plot(centres, means, "-o", ms=3, color=pts.get_facecolor()[0][:3], label=m)
        ax.axhline(1, color="k", lw=0.6, ls=":")
        ax.set_xlabel("lesion radius [mm]")
        ax.set_ylabel("CRC (1 = true contrast)")
        ax.set_title(f"{kind} lesions (n={len(sel)})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    for m in methods:
        hot = [r[f"crc_{m}"] for r in rows if r["kind"] == "hot"]
        bv = [r[f"bv_{m}"] for r in rows]
        ax.scatter(np.mean(bv), np.mean(hot) if hot else np.nan, s=30)
        ax.annotate(m, (np.mean(bv), np.mean(hot) if hot else np.nan), fontsize=8, xytext=(4, 2),
                    textcoords="offset points")
    ax.set_xlabel("BV (error std / background mean)")
    ax.set_ylabel("mean hot CRC")
    ax.set_title("contrast recovery vs background variability", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
