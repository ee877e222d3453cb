"""``frozenflow inspect-model``: every module path of a class with its output shape at S.

    frozenflow inspect-model --model my_spec.yaml --config my_dict.json --direction IS

Like torchvision's ``get_graph_node_names``, but with shapes from one probe pass: enough to write a
spec's ``taps`` (a stage's output at S/2, S/8, S/32 on the encoder and decoder side) and ``receivers``
(the first convolution after each tap, whose input has the tap's size). The spec's own maps are
checked and marked; a spec may name only a factory while its maps are being written.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from shared.cli import new_parser, parse_overrides
from shared.config.schema import sino_channels

from .hooks import probe
from .spec import ModelSpec, load_spec
from shared.errors import InputError


def describe(spec: ModelSpec, config: dict, direction: str, depth: int | None = None) -> list[str]:
    """The report as lines (also what the command prints)."""
    net, _ = spec.build(config, direction)
    S = int(config["gen_sino_size"])
    c_in = int(sino_channels(config, "SI") if direction == "SI" else config["gen_image_channels"])
    out, seen = probe(net, torch.zeros(1, c_in, S, S))
    n_params = sum(p.numel() for p in net.parameters())
    lines = [f"model {spec.factory} ({spec.source}), {direction} at S={S}: {n_params:,} parameters, "
             f"input (1, {c_in}, {S}, {S}) -> output {out}"]
    marks = {}
    for t, p in spec.taps.items():
        marks.setdefault(p, []).append(f"tap {t}")
    for t, p in spec.receivers.items():
        marks.setdefault(p, []).append(f"receiver {t}")
    rows = [("module", "type", "input", "output", "params", "spec")]
    for path, m in net.named_modules():
        if not path or (depth is not None and path.count(".") >= depth and path not in marks):
            continue
        s = seen.get(path)
        own = sum(p.numel() for p in m.parameters())
        rows.append((path, type(m).__name__, _shape(s.in_shape if s else None), _shape(s.out_shape if s else None)
                     + ("" if s is None or s.calls == 1 else f" ×{s.calls}"), f"{own:,}", ", ".join(marks.get(path, []))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    sizes = {f"{side}{lv}": S * lv // 288 for side in ("enc", "dec") for lv in (144, 36, 9)}
    lines.append(f"tap sizes at S={S}: " + ", ".join(f"{t} {n}×{n}" for t, n in sizes.items()))
    for t, p in spec.taps.items():
        s = seen.get(p)
        got = s.out_shape if s else None
        ok = "ok" if got and got[1:] == (sizes[t], sizes[t]) else f"expected {sizes[t]}×{sizes[t]}"
        lines.append(f"tap {t}: {p} -> {_shape(got)} ({ok if p in seen else 'did not run'})")
    for t, p in spec.receivers.items():
        s = seen.get(p)
        got = s.in_shape if s else None
        ok = "ok" if got and got[1:] == (sizes[t], sizes[t]) else f"its input should be {sizes[t]}×{sizes[t]}"
        lines.append(f"receiver {t}: {p} takes {_shape(got)} ({ok if p in seen else 'did not run'})")
    return lines


def _shape(s) -> str:
    return "-" if s is None else "(" + ", ".join(map(str, s)) + ")"


def parser():
    p = new_parser("frozenflow inspect-model", __doc__)
    p.add_argument("--model", default="builtin", help="builtin or a JSON/YAML spec (a factory alone is enough)")
    p.add_argument("--config", help="the config dict (JSON/YAML) the factory reads (default: the tuned "
                                    "student/teacher dict)")
    p.add_argument("--direction", choices=["SI", "IS"], default="SI", help="SI: sinogram → image, IS: image → sinogram")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--depth", type=int, help="list modules down to this many dots (spec paths always shown)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    spec = load_spec(args.model)
    task = "student" if args.direction == "SI" else "teacher"
    from shared.config.construct_dictionaries import load_config
    from shared.config.vocabulary import to_stored

    config = load_config(task, builtin=spec.builtin)
    if args.config:
        config.update(_read_dict(Path(args.config)))
    config.update(parse_overrides(args.set))
    print("\n".join(describe(spec, to_stored(config), args.direction, args.depth)))
    return 0


def _read_dict(path: Path) -> dict:
    import yaml

    try:
        raw = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot read the config ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of config keys")
    return raw
