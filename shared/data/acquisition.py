"""Simulated acquisition on a finer grid with another projection model, binned down ("no inverse crime").

Data made by the same discrete model that reconstructs them flatter every model-based method
(FBP/MLEM with ``shared.projector`` would see an exact system model).  The standard remedy, used
here: render the phantom on a grid ``k`` times finer (image pixels and radial bins), project it
with a different model — astra's Siddon ray tracer (exact intersection lengths), where the
reconstruction projector uses Joseph interpolation — attenuate each fine ray by its own ∫μ, and
average the ``k`` fine rays of each detector bin (a detector of finite width; the nonlinear
partial-volume effect of attenuation inside a bin comes for free).  Images are binned down by
averaging ``k × k`` blocks.  Angles are not oversampled: a sinogram angle is a sample, not an
integral, in the scanner model used throughout.

With ``k = 1`` only the model differs (Siddon vs Joseph on the same grid).
"""
from __future__ import annotations

import dataclasses

import torch

from shared.projector import ParallelGeometry, Projector
from shared.errors import InputError


class FineAcquisition:
    """``acquire(mu_f, act_f)`` → (λ, ∫μ) on ``geometry``'s sinogram grid from images ``factor``× finer."""

    MODEL = "line"  # astra Siddon; shared.projector reconstructs with "linear" (Joseph)

    def __init__(self, geometry: ParallelGeometry, factor: int = 2, cache_dir=None):
        if int(factor) != factor or factor < 1:
            raise InputError(f"oversampling factor must be an integer ≥ 1, got {factor}")
        self.geometry, self.k = geometry, int(factor)
        g = geometry
        self.fine = dataclasses.replace(g, image_size=g.image_size * self.k, pixel_mm=g.pixel_mm / self.k,
                                        n_radial=g.n_radial * self.k, radial_mm=g.radial_mm / self.k)
        self._P = Projector(self.fine, cache_dir=cache_dir, model=self.MODEL)

    def bin_sinogram(self, s: torch.Tensor) -> torch.Tensor:
        """[B, C, k·R, A] → [B, C, R, A]: mean of the k fine rays of each radial bin."""
        B, C, R, A = s.shape
        return s.reshape(B, C, R // self.k, self.k, A).mean(3)

    def bin_image(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, k·N, k·N] → [B, C, N, N]: mean of k × k blocks (the activity/μ per coarse pixel)."""
        return torch.nn.functional.avg_pool2d(x, self.k) if self.k > 1 else x

    def line_integrals(self, images: torch.Tensor) -> torch.Tensor:
        """Fine-grid projections [B, C, k·R, A] of fine images [B, C, k·N, k·N] (cm · image units)."""
        B, C = images.shape[:2]
        y = self._P.forward(images.reshape(B * C, 1, *images.shape[-2:]))
        return y.reshape(B, C, *y.shape[-2:])

    @torch.no_grad()
    def acquire(self, mu: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected counts per bin (before any scaling) and the bin-averaged ∫μ, both [B, C, R, A].

        λ = mean over the bin's fine rays of exp(−∫μ)·∫act; mu and act are [B, C, k·N, k·N].
        """
        both = self.line_integrals(torch.cat([mu, act], 1))
        att, emi = both.chunk(2, dim=1)
        return self.bin_sinogram(torch.exp(-att) * emi), self.bin_sinogram(att)
