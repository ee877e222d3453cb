"""Feature injection: the student is an SI Generator widened after the receiving taps, plus a
``FeatureInjector`` holding one trainable per-channel scale per injected tensor.

Crosswise routing (the default; docs/DESIGN.md §6): the teacher's encoder sees μ-maps (image side)
and feeds the student's decoder (image side); the teacher's decoder produces sinograms and feeds the
student's encoder (sinogram side):  enc{L} → dec{L},  dec{L} → enc{L}.  Co-flow (``inject_routing``
= ``coflow``): enc{L} → enc{L}, dec{L} → dec{L}.  The plan (``InjectionConfig.plan``) and every
default live in ``shared.config.schema``; this module only follows the plan.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from shared.config.schema import InjectionConfig
from shared.generator import Generator, GeneratorConfig


class FeatureInjector(nn.Module):
    """One (C,1,1) scale per injected teacher tensor; returns the scaled tensors keyed by student tap."""

    def __init__(self, plan: dict[str, str], channels: dict[str, int], init: float, trainable: bool = True):
        super().__init__()
        self.plan = dict(plan)
        self.scales = nn.ParameterDict({
            s: nn.Parameter(torch.full((channels[t], 1, 1), float(init)), requires_grad=trainable)
            for s, t in self.plan.items()})

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [t for t in self.plan.values() if t not in features]
        if missing:
            raise ValueError(f"teacher features {missing} are needed for injection but were not given")
        return {s: features[t] * self.scales[s] for s, t in self.plan.items()}


class InjectedGenerator(Generator):
    """The student: an SI Generator (+ injector when any tap is injected).

    ``forward(x, features)`` / ``forward_taps(x, features)`` take the *teacher's* features keyed by
    teacher tap (``enc144`` …); the injector scales and routes them to the student's taps.
    With no injection it has exactly the plain Generator's modules, parameters and state-dict keys.
    ``teacher_shapes`` are the stored features' (C, H, W); their spatial size must equal the
    student's receiving tap, else the error names both shapes.
    """

    def __init__(self, config: dict, teacher_shapes: dict[str, tuple[int, int, int]] | None = None):
        inj = InjectionConfig.from_flat(config)
        plan = inj.plan
        teacher_shapes = teacher_shapes or {}
        for s, t in plan.items():
            if t not in teacher_shapes:
                raise ValueError(f"injection {t} → student {s} needs the teacher's {t} features; the feature store "
                                 f"provides {sorted(teacher_shapes) or 'none'}")
        channels = {t: int(teacher_shapes[t][0]) for t in plan.values()}
        gen = GeneratorConfig.from_flat(config, "SI")
        if inj.atten_channel:  # control: ∫μ dl rides along as one more input channel
            gen = GeneratorConfig.from_flat({**gen.to_flat(), "gen_sino_channels": gen.gen_sino_channels + 1}, "SI")
        super().__init__(gen, "SI", extra_channels={s: channels[t] for s, t in plan.items()})
        own = self.tap_shapes()
        for s, t in plan.items():
            if tuple(teacher_shapes[t][1:]) != tuple(own[s][1:]):
                raise ValueError(f"teacher {t} features have shape (C,H,W)={tuple(teacher_shapes[t])} but the student's "
                                 f"{s} tap is {own[s]}: spatial sizes must match (same gen_sino_size)")
        self.injection, self.plan = inj, plan
        self.teacher_shapes = {t: tuple(teacher_shapes[t]) for t in plan.values()}
        if plan:
            self.injector = FeatureInjector(plan, channels, inj.feature_scale_init, inj.feature_scale_trainable)

    @property
    def teacher_taps(self) -> list[str]:
        return sorted(set(self.plan.values()))

    def feature_scale_parameters(self) -> list[nn.Parameter]:
        return list(self.injector.parameters()) if self.plan else []

    def _routed(self, features):
        if not self.plan:
            if features:
                raise ValueError("this student injects nothing (inject_levels empty); pass no features")
            return None
        if features is None:
            raise ValueError(f"this student injects {self.teacher_taps}; pass their features")
        for t, shape in self.teacher_shapes.items():
            if t in features and tuple(features[t].shape[1:]) != shape:
                raise ValueError(f"features[{t!r}] has shape {tuple(features[t].shape[1:])}, the student was "
                                 f"built for {shape}")
        return self.injector(features)

    def forward(self, x, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return super().forward(x, self._routed(features))

    def forward_taps(self, x, features: dict[str, torch.Tensor] | None = None):
        return super().forward_taps(x, self._routed(features))
