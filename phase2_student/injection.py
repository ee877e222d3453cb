"""The student: an SI network (any class behind the model contract) with the teacher's features
injected at its receivers (docs/DESIGN.md §6).

Crosswise routing (the default): the teacher's encoder sees μ-maps (image side) and feeds the
student's decoder (image side); the teacher's decoder produces sinograms and feeds the student's
encoder (sinogram side):  enc{L} → dec{L},  dec{L} → enc{L}.  Co-flow (``inject_routing`` =
``coflow``): enc{L} → enc{L}, dec{L} → dec{L}.  The plan (``InjectionConfig.plan``) and every default
live in ``shared.config.schema``; each injected tensor gets a trainable (C,1,1) scale and a side
convolution at the student's receiving layer — or, with ``inject_merge: mixer``, a 1×1 mixer at its
input (``shared.models``) — so the class itself is never edited. Feature dropout is set per epoch by the
task (``phase2_student.task``).
"""
from __future__ import annotations

from shared.config.schema import RunConfig
from shared.models import ModelSpec
from shared.models.network import Network, build


def build_student(run: RunConfig, spec: ModelSpec, feature_shapes: dict[str, tuple] | None = None,
                  teacher_paths: dict[str, str] | None = None) -> Network:
    """The student network for ``run``; ``feature_shapes`` are the stored teacher taps' (C, H, W)
    (``teacher_paths`` their module paths in the teacher, to name both sides of a mismatch)."""
    inj = run.injection
    return build(spec, run.flat, "SI", atten_channel=inj.atten_channel, plan=inj.plan,
                 feature_shapes=feature_shapes or {}, scale_init=inj.feature_scale_init,
                 scale_trainable=inj.feature_scale_trainable, teacher_paths=teacher_paths, merge=inj.inject_merge,
                 drop_mode=inj.feature_drop_mode)
