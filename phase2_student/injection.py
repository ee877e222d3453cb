"""Crosswise feature injection: the student is an SI Generator widened after the receiving taps,
plus a ``FeatureInjector`` holding one trainable per-channel scale per injected tensor.

Routing (DESIGN §6): the teacher's encoder sees μ-maps (image side) and feeds the student's
decoder (image side); the teacher's decoder produces sinograms and feeds the student's encoder
(sinogram side):  enc{L} → dec{L},  dec{L} → enc{L}  for L in the enabled levels.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from shared.generator import LEVELS, Generator

PLAIN_KEYS = ("inject_levels", "inject_enc_to_dec", "inject_dec_to_enc", "feature_scale_init",
              "feature_scale_lr_mult")


def parse_inject(text: str) -> list[int]:
    """``--inject 144,36,9`` / ``--inject none`` → levels."""
    text = str(text).strip().lower()
    if text in ("none", "", "off"):
        return []
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()}, reverse=True)
    except ValueError:
        levels = [-1]
    if any(lv not in LEVELS for lv in levels):
        raise ValueError(f"--inject must be 'none' or a comma list drawn from {list(LEVELS)}, got {text!r}")
    return levels


def injection_plan(config: dict) -> dict[str, str]:
    """student tap → teacher tap, from ``inject_levels``, ``inject_enc_to_dec``, ``inject_dec_to_enc``."""
    levels = config.get("inject_levels") or []
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad:
        raise ValueError(f"config key 'inject_levels'={levels!r}: levels must be drawn from {list(LEVELS)}")
    plan = {}
    for lv in levels:
        if config.get("inject_enc_to_dec", True):
            plan[f"dec{lv}"] = f"enc{lv}"
        if config.get("inject_dec_to_enc", True):
            plan[f"enc{lv}"] = f"dec{lv}"
    return plan


class FeatureInjector(nn.Module):
    """One (C,1,1) scale per injected teacher tensor; returns the scaled tensors keyed by student tap."""

    def __init__(self, plan: dict[str, str], channels: dict[str, int], init: float = 0.1, trainable: bool = True):
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

    With no injection it has exactly the plain Generator's modules, parameters and state-dict keys.
    ``teacher_shapes`` are the stored features' (C, H, W); their spatial size must equal the
    student's receiving tap, else the error names both shapes.
    """

    def __init__(self, config: dict, teacher_shapes: dict[str, tuple[int, int, int]] | None = None,
                 extra_input_channels: int = 0):
        plan = injection_plan(config)
        teacher_shapes = teacher_shapes or {}
        channels = {}
        for s, t in plan.items():
            if t not in teacher_shapes:
                raise ValueError(f"injection {t} → student {s} needs the teacher's {t} features; the feature store "
                                 f"provides {sorted(teacher_shapes) or 'none'}")
            channels[t] = int(teacher_shapes[t][0])
        cfg = dict(config)
        cfg["gen_sino_channels"] = config["gen_sino_channels"] + extra_input_channels
        super().__init__(cfg, "SI", extra_channels={s: channels[t] for s, t in plan.items()})
        own = self.tap_shapes()
        for s, t in plan.items():
            if tuple(teacher_shapes[t][1:]) != tuple(own[s][1:]):
                raise ValueError(f"teacher {t} features have shape (C,H,W)={tuple(teacher_shapes[t])} but the student's "
                                 f"{s} tap is {own[s]}: spatial sizes must match (same gen_sino_size)")
        self.plan = plan
        self.teacher_shapes = {t: tuple(teacher_shapes[t]) for t in plan.values()}
        if plan:
            self.injector = FeatureInjector(plan, channels, config.get("feature_scale_init", 0.1),
                                            trainable=config.get("feature_scale_trainable", True))

    @property
    def teacher_taps(self) -> list[str]:
        return sorted(set(self.plan.values()))

    def feature_scale_parameters(self) -> list[nn.Parameter]:
        return list(self.injector.parameters()) if self.plan else []

    def forward(self, x, features: dict[str, torch.Tensor] | None = None, return_taps: bool = False):
        if self.plan:
            if features is None:
                raise ValueError(f"this student injects {self.teacher_taps}; pass their features")
            for t, shape in self.teacher_shapes.items():
                if t in features and tuple(features[t].shape[1:]) != shape:
                    raise ValueError(f"features[{t!r}] has shape {tuple(features[t].shape[1:])}, the student was "
                                     f"built for {shape}")
            return super().forward(x, return_taps=return_taps, inject=self.injector(features))
        return super().forward(x, return_taps=return_taps)
