"""Figures people would rather look at: learning curves and image grids (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: list[dict], path: str | Path) -> Path:
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
