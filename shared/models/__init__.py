"""The model contract: any config-driven class as teacher or student (docs/DESIGN.md §2).

``load_spec("builtin" | "spec.yaml")`` names a class and where its features are; ``Network`` runs it
with task sizing, taps by hooks and injection by side convolutions.
"""
from .network import Network
from .spec import BUILTIN, TAP_NAMES, ModelError, ModelSpec, load_spec

__all__ = ["Network", "BUILTIN", "TAP_NAMES", "ModelError", "ModelSpec", "load_spec"]
