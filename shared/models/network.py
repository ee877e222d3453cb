"""A network as FrozenFlow runs it: any class behind one contract (docs/DESIGN.md §2, §6).

``Network(spec, config, direction, in_channels=…)`` builds the class the spec names, unmodified,
and runs one probe pass to learn every tap's and receiver's shape. Around the class:

* sizing by the task, not inside the network: the input is centre zero-padded to S×S (larger is
  refused), the output centre-cropped to ``out_size`` when given;
* taps by forward hooks: ``forward_taps(x)`` returns the output and ``{tap: tensor}``; with
  ``need_output=False`` the pass stops once the last wanted tap is computed;
* injection (the student): ``plan`` (student tap → teacher tap) and the teacher features' shapes
  add, with ``merge="scale"``, one trainable (C,1,1) scale per injected tensor and a side convolution
  at each receiver (``side.side_conv``); with ``merge="mixer"`` a 1×1 convolution at each receiver's
  input (``side.mixer``); ``forward(x, features)`` takes the features keyed by teacher tap;
* feature dropout in training: ``feature_drop`` (a probability the training loop sets each epoch) with
  ``drop_mode`` ``all_or_none`` (one draw per batch zeroes every injected tensor) or ``per_channel``.

State-dict keys: ``net.*`` (the class's own), ``scales.*`` and ``side.*`` or ``mixers.*`` (injection
only), so a plain network's weights are a subset of an injected one's.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.config.schema import sino_channel_key
from shared.physics.projector import crop_sinogram

from .hooks import Seen, StopForward, capture, module_at, probe
from .side import mixer, side_conv
from .spec import ModelError, ModelSpec
from shared.errors import InputError


class Network(nn.Module):
    def __init__(self, spec: ModelSpec, config: dict, direction: str, *, in_channels: int, size: int,
                 out_size: tuple[int, int] | None = None, plan: dict[str, str] | None = None,
                 feature_shapes: dict[str, tuple] | None = None, scale_init: float = 0.1,
                 scale_trainable: bool = True, teacher_paths: dict[str, str] | None = None,
                 merge: str = "scale", drop_mode: str = "all_or_none"):
        super().__init__()
        self.spec, self.direction, self.size = spec, direction, int(size)
        self.in_channels, self.out_size = int(in_channels), tuple(out_size) if out_size else None
        net, self.keys_read = spec.build(config, direction)
        self.net = net
        # every named module resolved once (a wrong path is refused here); forward_taps hooks these
        self._tap_modules = {t: module_at(net, p, f"{spec.source}: tap {t}") for t, p in spec.taps.items()}
        self._receivers = {t: module_at(net, p, f"{spec.source}: receiver {t}") for t, p in spec.receivers.items()}
        out, seen = self._probe(sorted(set(spec.taps.values()) | set(spec.receivers.values())))
        self.out_shape = out
        if self.out_size and (out[1] < self.out_size[0] or out[2] < self.out_size[1]):
            raise ModelError(f"{spec.factory}: output {out[1]}×{out[2]} at S={self.size} is smaller than the "
                             f"target {self.out_size[0]}×{self.out_size[1]}")
        self.tap_shapes: dict[str, tuple] = {}
        for t, path in spec.taps.items():
            s = _ran_once(seen, path, f"tap {t}")
            if s.out_shape is None:
                raise ModelError(f"{spec.source}: tap {t} ({path}) does not output a [B, C, H, W] tensor")
            self.tap_shapes[t] = s.out_shape
        self.receiver_inputs = {t: _ran_once(seen, p, f"receiver {t}").in_shape for t, p in spec.receivers.items()}
        self.plan = dict(plan or {})
        if merge not in ("scale", "mixer") or drop_mode not in ("all_or_none", "per_channel"):
            raise ModelError(f"merge {merge!r} / drop_mode {drop_mode!r}: expected scale|mixer, all_or_none|per_channel")
        self.merge, self.drop_mode, self.feature_drop = merge, drop_mode, 0.0
        self.feature_shapes: dict[str, tuple] = {}  # teacher tap → (C, H, W) injected (the student's)
        self._inject: dict[str, torch.Tensor] | None = None
        if self.plan:
            self._add_injection(feature_shapes or {}, scale_init, scale_trainable, teacher_paths or {})

    # ------------------------------------------------------------------ build
    def _probe(self, paths):
        x = torch.zeros(1, self.in_channels, self.size, self.size,
                        device=next(self.net.parameters(), torch.zeros(0)).device)
        try:
            return probe(self.net, x, paths)
        except ModelError:
            raise
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ModelError(f"{self.spec.factory}: the {self.direction} model fails on a [1, {self.in_channels}, "
                             f"{self.size}, {self.size}] input: {type(e).__name__}: {first}") from e

    def _add_injection(self, feature_shapes, init, trainable, teacher_paths):
        self.scales = nn.ParameterDict()
        self.side = nn.ModuleDict()
        self.mixers = nn.ModuleDict()
        for s, t in self.plan.items():
            if t not in feature_shapes:
                raise ModelError(f"injection teacher {t} → student {s} needs the teacher's {t} features; "
                                 f"they provide {sorted(feature_shapes) or 'none'}")
            if s not in self.spec.receivers:
                raise ModelError(f"{self.spec.source}: no receiver for student tap {s} (teacher {t} → student {s}); "
                                 f"add receivers.{s}: the first convolution after tap {s}")
            path = self.spec.receivers[s]
            C, H, W = (int(v) for v in feature_shapes[t])
            c_in, h, w = self.receiver_inputs[s]
            if (H, W) != (h, w):
                teacher = f"teacher {t} ({teacher_paths[t]})" if t in teacher_paths else f"teacher {t}"
                raise ModelError(f"{teacher} is {H}×{W} but student receiver {s} ({path}) takes {h}×{w}: "
                                 f"spatial sizes must match (the same working size S)")
            receiver = self._receivers[s]
            where = f"{self.spec.source}: receiver {s} ({path})"
            if self.merge == "mixer":
                self.mixers[s] = mixer(receiver, C, init, where).requires_grad_(trainable)
                receiver.register_forward_pre_hook(self._mixer_hook(s))
            else:
                self.side[s] = side_conv(receiver, C, self.spec.side_init, where)
                self.scales[s] = nn.Parameter(torch.full((C, 1, 1), float(init)), requires_grad=trainable)
                receiver.register_forward_hook(self._side_hook(s))
        self.feature_shapes = {t: tuple(int(v) for v in feature_shapes[t]) for t in self.plan.values()}

    def _side_hook(self, s):
        def add_side(module, args, out):
            if self._inject is None:
                raise RuntimeError(f"receiver {s} ran outside Network.forward (its injected features are missing)")
            side = self.side[s]
            f = self._inject[s].to(side.weight.dtype)
            extra = side(f, output_size=out.shape[-2:]) if isinstance(side, nn.ConvTranspose2d) else side(f)
            return out + extra.to(out.dtype)
        return add_side

    def _mixer_hook(self, s):
        def mix(module, args):
            if self._inject is None:
                raise RuntimeError(f"receiver {s} ran outside Network.forward (its injected features are missing)")
            x, m = args[0], self.mixers[s]
            mixed = m(torch.cat([x.to(m.weight.dtype), self._inject[s].to(m.weight.dtype)], dim=1))
            return (mixed.to(x.dtype), *args[1:])
        return mix

    # ------------------------------------------------------------------ run
    def _sized(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[-1] > self.size or x.shape[-2] > self.size:
            raise InputError(f"{self.direction} network expects [B, {self.in_channels}, ≤{self.size}, ≤{self.size}] "
                             f"(padded to {self.size}×{self.size}), got {list(x.shape)}")
        dh, dw = self.size - x.shape[-2], self.size - x.shape[-1]
        if dh or dw:  # centre the input in the S×S working grid
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        return x

    def _routed(self, features):
        if not self.plan:
            if features:
                raise InputError("this network injects nothing (inject_levels empty); pass no features")
            return None
        if features is None:
            raise InputError(f"this student injects {sorted(set(self.plan.values()))}; pass their features")
        out = {}
        for s, t in self.plan.items():
            if t not in features:
                raise InputError(f"teacher features {t} are needed for injection but were not given")
            if tuple(features[t].shape[1:]) != self.feature_shapes[t]:
                raise InputError(f"features[{t!r}] has shape {tuple(features[t].shape[1:])}, the student was "
                                 f"built for {self.feature_shapes[t]}")
            out[s] = features[t] * self.scales[s] if self.merge == "scale" else features[t]
        return self._dropped(out) if self.training and self.feature_drop > 0 else out

    def _dropped(self, injected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Feature dropout: zeros where dropped, the rest as at evaluation (no 1/(1−p) rescaling: the
        features a receiver sees are either what evaluation gives it or nothing). Draws come from torch's
        CPU generator (seeded per epoch by the loop) for all_or_none, so a GPU run needs no sync."""
        p = float(self.feature_drop)
        if self.drop_mode == "all_or_none":
            if float(torch.rand(())) < p:
                return {s: torch.zeros_like(f) for s, f in injected.items()}
            return injected
        return {s: f * (torch.rand(f.shape[0], f.shape[1], 1, 1, device=f.device) >= p).to(f.dtype)
                for s, f in injected.items()}

    def _run(self, x, features):
        self._inject = self._routed(features)
        try:
            y = self.net(self._sized(x))
        finally:
            self._inject = None
        return crop_sinogram(y, *self.out_size) if self.out_size else y  # the centred block, images alike

    def forward(self, x: torch.Tensor, features: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self._run(x, features)

    def forward_taps(self, x: torch.Tensor, features=None, taps: list[str] | None = None,
                     need_output: bool = True) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The output (None with ``need_output=False``, which stops after the last tap) and the taps."""
        names = list(self.spec.taps) if taps is None else list(taps)
        got: dict[str, torch.Tensor] = {}
        handles = capture({t: self._tap_modules[t] for t in names}, got, stop_when_done=not need_output)
        out = None
        try:
            out = self._run(x, features)
        except StopForward:
            pass
        finally:
            for h in handles:
                h.remove()
        return out, {t: got[t] for t in names}

    # ------------------------------------------------------------------ optimiser groups
    def feature_scale_parameters(self) -> list[nn.Parameter]:
        """The merge's own parameters (the scales, or the mixers), which ``feature_scale_lr_mult`` applies to."""
        if not self.plan:
            return []
        return list(self.scales.parameters()) if self.merge == "scale" else list(self.mixers.parameters())

    def injection_strength(self) -> dict[str, float]:
        """Per receiving tap, how much of the injected features is used: mean |scale|, or the mixer's mean
        |weight| on the injected channels."""
        if self.merge == "scale":
            return {s: float(p.detach().abs().mean()) for s, p in self.scales.items()}
        return {s: float(m.weight.detach()[:, m.passed:].abs().mean()) for s, m in self.mixers.items()}

    def param_groups(self) -> list[dict]:
        """The class's own extra optimiser groups (optional ``net.param_groups()``: params, lr_mult, name)."""
        own = getattr(self.net, "param_groups", None)
        return list(own()) if callable(own) else []

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


def _ran_once(seen: dict[str, Seen], path: str, what: str) -> Seen:
    s = seen.get(path)
    if s is None:
        raise ModelError(f"{what}: module {path!r} did not run in a forward pass; name a module on the data path")
    if s.calls != 1:
        raise ModelError(f"{what}: module {path!r} runs {s.calls}× per forward pass (shared weights?); name a "
                         f"module that runs once")
    return s


def build(spec: ModelSpec, config: dict, direction: str, *, atten_channel: bool = False, **inject) -> Network:
    """The task's Network from FrozenFlow's size keys: S = ``gen_sino_size``; SI takes
    ``gen_sino_channels_SI`` (or the older ``gen_sino_channels``; +1 with the ``atten_channel`` control, which
    the factory is told through that key) and is cropped to ``gen_image_size``²; IS takes ``gen_image_channels`` and returns S×S."""
    S = int(config["gen_sino_size"])
    if direction == "SI":
        key = sino_channel_key(config, "SI")
        c_in = int(config[key]) + int(atten_channel)
        model_config = {**config, key: c_in} if atten_channel else config
        out_size = (int(config["gen_image_size"]),) * 2
    else:
        c_in, model_config, out_size = int(config["gen_image_channels"]), config, None
    return Network(spec, model_config, direction, in_channels=c_in, size=S, out_size=out_size, **inject)


def record(network: Network) -> dict:
    """The checkpoint's ``meta["model"]``: the spec, and the parameter count its factory built."""
    return {**network.spec.record(), "parameters": network.parameter_count()}


def unread_keys(network: Network, config: dict, task: str, unused: dict | None = None) -> list[str]:
    """Config keys neither FrozenFlow nor the class's factory read (listed once, never silently dropped).
    A student's frozen network's keys (``FROZEN_…``, or its unprefixed ``IS_`` keys) and the keys already
    listed as not used (``unused``) are not counted."""
    from shared.config.schema import frozenflow_keys
    from shared.config.vocabulary import FROZEN

    own = frozenflow_keys(task) | set(unused or {})
    own |= {k for k in config if k.startswith(FROZEN) or (task == "student" and k.startswith("IS_"))}
    return sorted(set(config) - network.keys_read - own)


def report_model(network: Network, config: dict, task: str, show: bool = True, unused: dict | None = None) -> None:
    """One line naming the model and its size, and one listing the user's keys this run does not use:
    those the vocabulary knows do not apply (``unused``: key → why) and those nothing read."""
    if not show:
        return
    from shared.config.vocabulary import describe_unused

    spec = network.spec
    extra = sum(p.numel() for p in network.parameters()) - network.parameter_count()
    print(f"[{task}] model {spec.factory} ({spec.source}): {network.parameter_count():,} parameters"
          + (f" (+{extra:,} for injection: scales and side convolutions)" if extra else ""))
    listed = dict(unused or {})
    for key in unread_keys(network, config, task, unused):
        listed[key] = f"not read by {spec.factory} nor by FrozenFlow"
    if listed:
        print(f"[{task}] not used by this run: {describe_unused(listed)}")
