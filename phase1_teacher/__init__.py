"""Phase 1: the attenuation (teacher) network, μ-map → attenuation sinogram."""
from .load import load_teacher

__all__ = ["load_teacher"]
