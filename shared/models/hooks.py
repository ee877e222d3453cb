"""Modules by name, and one probe forward pass that finds every shape (docs/DESIGN.md §2).

As torchvision's ``create_feature_extractor`` and timm's ``FeatureHooks``: a feature is a module's
output, found by its dotted path in ``named_modules()``; nothing in the class is edited.
"""
from __future__ import annotations

import dataclasses
import difflib

import torch
import torch.nn as nn

from .spec import ModelError


def module_at(net: nn.Module, path: str, what: str) -> nn.Module:
    """The submodule at ``path``; a wrong path is refused with the nearest existing names."""
    modules = dict(net.named_modules())
    if path in modules and path:
        return modules[path]
    near = difflib.get_close_matches(path, [n for n in modules if n], n=3, cutoff=0.4)
    hint = f"; nearest: {', '.join(near)}" if near else ""
    raise ModelError(f"{what}: no module {path!r} in {type(net).__name__}{hint} (frozenflow inspect-model lists them)")


@dataclasses.dataclass
class Seen:
    """What one module did in the probe pass."""

    kind: str
    in_shape: tuple | None  # (C, H, W) of its first tensor input
    out_shape: tuple | None  # (C, H, W) of its output, when a tensor
    calls: int = 0


def probe(net: nn.Module, x: torch.Tensor, paths: list[str] | None = None) -> tuple[tuple, dict[str, Seen]]:
    """Run ``net`` once on ``x`` (eval mode, no gradients) and record each module's shapes.

    ``paths`` limits the record to those modules (None: every module). Returns the output's
    (C, H, W) and ``{path: Seen}``. Each module's own training flag is restored afterwards.
    """
    modules = dict(net.named_modules())
    chosen = modules if paths is None else {p: modules[p] for p in paths}
    seen: dict[str, Seen] = {}
    handles = []

    def hook(path):
        def record(module, args, output):
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            s = seen.setdefault(path, Seen(type(module).__name__, _chw(first), _chw(output)))
            s.calls += 1
        return record

    for path, m in chosen.items():
        handles.append(m.register_forward_hook(hook(path)))
    flags = {m: m.training for m in modules.values()}
    try:
        net.eval()
        with torch.no_grad():
            out = net(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{type(net).__name__} returned {type(out).__name__}; FrozenFlow needs one tensor [B, C, H, W]")
    return _chw(out), seen


def _chw(t) -> tuple | None:
    return tuple(int(d) for d in t.shape[1:]) if isinstance(t, torch.Tensor) and t.dim() == 4 else None


class StopForward(BaseException):
    """Raised by a tap hook once every wanted tap is computed (the rest of the network is skipped).

    A BaseException so that a model's own ``except Exception`` cannot swallow it.
    """


def capture(taps: dict[str, nn.Module], store: dict, stop_when_done: bool = False) -> list:
    """Forward hooks that put each tap module's output into ``store``; returns the handles to remove."""
    handles = []

    def hook(name):
        def record(module, args, output):
            store[name] = output
            if stop_when_done and len(store) == len(taps):
                raise StopForward
        return record

    for name, module in taps.items():
        handles.append(module.register_forward_hook(hook(name)))
    return handles
