"""Phase 1: the attenuation (teacher) network, μ-map → attenuation sinogram (docs/DESIGN.md §3).

``fit(config, data, out, TeacherOptions(...))`` trains one; ``load_teacher(path)`` rebuilds it frozen.
"""
import importlib

_EXPORTS = {"fit": ".train", "TeacherOptions": ".train", "load_teacher": ".load"}
__all__ = list(_EXPORTS)


def __getattr__(name):  # lazy, so `python -m phase1_teacher.train` does not import itself twice
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
