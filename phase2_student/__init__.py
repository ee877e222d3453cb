"""Phase 2: the student (activity sinogram → image) with crosswise teacher-feature injection (docs/DESIGN.md §6).

``fit(config, data, out, StudentOptions(features=STORE, ...))`` trains one; ``load_student(path)``
rebuilds it; ``CONTROLS`` are the ablation controls as config overrides.
"""
import importlib

_EXPORTS = {"fit": ".train", "StudentOptions": ".train", "CONTROLS": ".train", "load_student": ".task",
            "build_student": ".injection", "student_network": ".task"}
__all__ = list(_EXPORTS)


def __getattr__(name):  # lazy, so `python -m phase2_student.train` does not import itself twice
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
