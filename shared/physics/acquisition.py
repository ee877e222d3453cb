"""The acquisition model as one operator, and its finer-grid twin that makes the synthetic data.

    E[actSino] = c · exp(−A μ) ⊙ A x                     (Acquisition)

A is the projector (``A`` / ``A_adjoint``, shared/physics/projector.py), μ the μ-map in 1/cm, x the
activity in actMap units and c the dataset's count calibration.  Everything that needs the model — the
reconstruction baselines, the data checks, the teacher's target (A μ), the student's attenuation
channel and the simulator — asks an ``Acquisition`` for it, so there is one definition to read or change
(DeepInverse's physics operators are the model: the system as an object, the data as arguments).

FineAcquisition: the synthetic data are made on a finer grid with another projection model, binned down
("no inverse crime").  Data made by the same discrete model that reconstructs them flatter every
model-based method (FBP/MLEM would see an exact system model).  The standard remedy, used here: render
the phantom on a grid ``k`` times finer (image pixels and radial bins), project it with a different
model — astra's Siddon ray tracer (exact intersection lengths), where the reconstruction projector uses
Joseph interpolation — attenuate each fine ray by its own ∫μ, and average the ``k`` fine rays of each
detector bin (a detector of finite width; the nonlinear partial-volume effect of attenuation inside a
bin comes for free).  Images are binned down by averaging ``k × k`` blocks.  Angles are not
oversampled: a sinogram angle is a sample, not an integral, in the scanner model used throughout.
With ``k = 1`` only the model differs (Siddon vs Joseph on the same grid).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from shared.errors import InputError
from shared.physics.projector import ParallelGeometry, Projector


class Acquisition:
    """E[y] = c · exp(−A μ) ⊙ A x for one projector and calibration c; per-sample μ and x are arguments.

    Images are [B, 1, H, W], sinograms [B, 1, R, A] (the projector's conventions); results have the
    inputs' dtype (the projection itself is float32), so a check can work in float64 after it.
    """

    def __init__(self, projector: Projector, calibration: float = 1.0):
        c = float(calibration)
        if not (math.isfinite(c) and c > 0):
            raise InputError(f"Acquisition: the calibration c must be finite and > 0, got {calibration!r}")
        self.projector, self.calibration = projector, c

    @classmethod
    def of(cls, geometry: ParallelGeometry, calibration: float = 1.0, **projector_kw) -> "Acquisition":
        return cls(Projector(geometry, **projector_kw), calibration)

    @property
    def geometry(self) -> ParallelGeometry:
        return self.projector.geometry

    def A(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector.forward(images)

    def A_adjoint(self, sinograms: torch.Tensor) -> torch.Tensor:
        return self.projector.adjoint(sinograms)

    def attenuation_sinogram(self, mu: torch.Tensor) -> torch.Tensor:
        """A μ: the line integrals ∫μ dl (the attenuation network's target, the student's μ channel)."""
        return self.A(mu)

    def attenuation(self, mu: torch.Tensor) -> torch.Tensor:
        """exp(−A μ): the fraction of each line's photon pairs that survive."""
        return torch.exp(-self.A(mu))

    def project(self, x: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A x, A μ) in one projector call (the matmul sees both as columns)."""
        both = self.A(torch.cat([mu, x.to(mu.dtype)]))
        return both[len(mu):], both[:len(mu)]

    def expected_from(self, ax: torch.Tensor, amu: torch.Tensor) -> torch.Tensor:
        """c · exp(−A μ) ⊙ A x from the two projections (the simulator attenuates fine rays before binning)."""
        y = torch.exp(-amu) * ax
        return y if self.calibration == 1.0 else self.calibration * y

    def expected(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """E[y] = c · exp(−A μ) ⊙ A x."""
        return self.expected_from(*self.project(x, mu))

    @staticmethod
    def sample(expected: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """Poisson counts, one generator per sample (so a sample's noise does not depend on its batch)."""
        return np.stack([r.poisson(lam) for r, lam in zip(rngs, expected)])

    def in_activity_units(self, y: torch.Tensor) -> torch.Tensor:
        """y / c: counts in the units of exp(−A μ) ⊙ A x, so reconstructions come out in actMap units."""
        return y if self.calibration == 1.0 else y / self.calibration

    def corrected(self, y: torch.Tensor, mu: torch.Tensor | None) -> torch.Tensor:
        """y / c ⊙ exp(+A μ): the attenuation-corrected sinogram, ≈ A x (what FBP inverts)."""
        y = self.in_activity_units(y)
        return y if mu is None else y * torch.exp(self.A(mu))


class FineAcquisition:
    """``acquire(mu_f, act_f)`` → (λ, ∫μ) on ``geometry``'s sinogram grid from images ``factor``× finer."""

    MODEL = "line"  # astra Siddon; shared.physics.projector reconstructs with "linear" (Joseph)

    def __init__(self, geometry: ParallelGeometry, factor: int = 2, cache_dir=None):
        if int(factor) != factor or factor < 1:
            raise InputError(f"oversampling factor must be an integer ≥ 1, got {factor}")
        self.geometry, self.k = geometry, int(factor)
        g = geometry
        self.fine = dataclasses.replace(g, image_size=g.image_size * self.k, pixel_mm=g.pixel_mm / self.k,
                                        n_radial=g.n_radial * self.k, radial_mm=g.radial_mm / self.k)
        self.model = Acquisition(Projector(self.fine, cache_dir=cache_dir, model=self.MODEL))

    def bin_sinogram(self, s: torch.Tensor) -> torch.Tensor:
        """[B, C, k·R, A] → [B, C, R, A]: mean of the k fine rays of each radial bin."""
        B, C, R, A = s.shape
        return s.reshape(B, C, R // self.k, self.k, A).mean(3)

    def bin_image(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, k·N, k·N] → [B, C, N, N]: mean of k × k blocks (the activity/μ per coarse pixel)."""
        return torch.nn.functional.avg_pool2d(x, self.k) if self.k > 1 else x

    @torch.no_grad()
    def acquire(self, mu: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expected counts per bin (before any scaling) and the bin-averaged ∫μ, both [B, C, R, A].

        λ = mean over the bin's fine rays of exp(−∫μ)·∫act; mu and act are [B, C, k·N, k·N].
        """
        B, C = mu.shape[:2]
        planes = lambda t: t.reshape(B * C, 1, *t.shape[-2:])  # noqa: E731
        emi, att = (t.reshape(B, C, *t.shape[-2:]) for t in self.model.project(planes(act), planes(mu)))
        return self.bin_sinogram(self.model.expected_from(emi, att)), self.bin_sinogram(att)
