"""Ablation: one fixed config, one budget, several seeds, many injection settings and controls.

``frozenflow ablate --data DIR --features STORE --out DIR --epochs E --seeds 0,1,2``

Variants: the plain student (``none``), each single level, all levels (both directions and each
direction alone), and three controls that separate information from capacity: injection with
the scales frozen at 0 (same extra channels, no signal), the features of a *shuffled* sample
(another patient's μ-map), and the plain student given the analytic attenuation sinogram as an
extra input channel.  Axes over every injecting variant (each run is one point of the grid):

* ``--features NAME=STORE,NAME=STORE``: several frozen networks (teacher kinds, shared/data/views.py);
* ``--routing auto,swapped``: the routing that pairs with each store's teacher, and the one that does
  not (``IS_coflow`` for an IS teacher, ``SI_crosswise`` for an SI one);
* ``--merge scale,mixer``; ``--dropout off,0.5``: feature dropout from that p (cosine to 0, ``--dropout-mode``).

Each run is resumable; reruns skip finished ones.  Writes OUT/ablation.md (mean ± std over seeds on the
test split; with the plain student in the grid, each variant's NRMSE difference to it, paired over the
test samples (each sample's NRMSE averaged over the seeds), with paired t and Wilcoxon p-values; then FBP,
MLEM and the dataset's own reconstructions) and OUT/ablation.json.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from feature_store import open_store
from shared.files.atomic import atomic_write, atomic_write_json
from shared.cli import new_parser, parse_overrides, run_main
from shared.config.construct_dictionaries import load_config
from shared.config.schema import SWAPPED_ROUTING, RunConfig, check_override_keys
from shared.data.dataset_io import open_dataset
from shared.device import DEVICE_HELP
from shared.models import load_spec
from shared.files.outputs import claim
from shared.evaluation.tables import markdown_table

from .evaluate import baseline_recons, paired, per_sample_metrics, predict
from .task import load_student
from .train import CONTROLS, STUDENT, StudentOptions, fit
from shared.errors import InputError

ALL = [144, 36, 9]
VARIANTS = {  # name → student config overrides
    "none": {"inject_levels": []},
    "144": {"inject_levels": [144]},
    "36": {"inject_levels": [36]},
    "9": {"inject_levels": [9]},
    "all": {"inject_levels": ALL},
    "all_enc_to_dec": {"inject_levels": ALL, "inject_dec_to_enc": False},
    "all_dec_to_enc": {"inject_levels": ALL, "inject_enc_to_dec": False},
    "control_scales_0": {"inject_levels": ALL, **CONTROLS["freeze_scales"]},
    "control_shuffled": {"inject_levels": ALL, **CONTROLS["shuffle_features"]},
    "control_atten_sino": {"inject_levels": [], **CONTROLS["atten_channel"]},
}
ROUTINGS = ("auto", "swapped")
MERGES = ("scale", "mixer")
METRICS = ("psnr", "ssim", "ssim_global", "nrmse")
MASKED = ("masked_nrmse", "masked_ssim")  # inside the body


@dataclasses.dataclass(frozen=True)
class Point:
    """One point of the grid: a variant, and for an injecting one the teacher, routing, merge and dropout."""

    variant: str
    teacher: str | None = None  # a --features name
    routing: str = "auto"
    merge: str = "scale"
    dropout: float = 0.0
    dropout_mode: str = "all_or_none"

    @property
    def _drop(self) -> str:
        return f"{self.dropout:g}" + ("-per_channel" if self.dropout and self.dropout_mode == "per_channel" else "")

    @property
    def injects(self) -> bool:
        return bool(VARIANTS[self.variant]["inject_levels"])

    def folder(self, axes: set[str]) -> Path:
        """runs/<variant>[/<teacher>][/<routing>-<merge>-drop<p>] — the axes that vary in this ablation only,
        so a single-store ablation keeps the layout runs/<variant>/seed<s>."""
        parts = [self.variant]
        if self.injects and "teacher" in axes:
            parts.append(self.teacher)
        if self.injects and axes & {"routing", "merge", "dropout"}:
            parts.append(f"{self.routing}-{self.merge}-drop{self._drop}")
        return Path(*parts)

    def label(self, axes: set[str]) -> str:
        if not self.injects:
            return self.variant
        shown = {"teacher": self.teacher, "routing": self.routing, "merge": self.merge,
                 "dropout": f"drop {self._drop}" if self.dropout else "no drop"}
        return " · ".join([self.variant, *(shown[a] for a in ("teacher", "routing", "merge", "dropout") if a in axes)])

    def overrides(self, stores: dict[str, str]) -> dict:
        o = dict(VARIANTS[self.variant])
        if self.injects:
            if self.routing == "swapped":
                o["inject_routing"] = SWAPPED_ROUTING[open_store(stores[self.teacher]).teacher_kind.direction]
            o["inject_merge"] = self.merge
            if self.dropout:
                o.update(feature_drop_max=self.dropout, feature_drop_min=0.0, feature_drop_mode=self.dropout_mode)
        return o


def grid(variants, stores: dict, routings, merges, dropouts, mode: str = "all_or_none") -> list[Point]:
    points = []
    for v in variants:
        if not VARIANTS[v]["inject_levels"]:
            points.append(Point(v))
            continue
        points += [Point(v, t, r, m, d, mode) for t in stores for r in routings for m in merges for d in dropouts]
    return points


def run_point(point: Point, seed: int, args, out: Path, overrides: dict, stores: dict, axes: set[str]) -> dict:
    """Train (or resume) one point with one seed and score it on ``args.split``; reruns reuse result.json."""
    run = out / "runs" / point.folder(axes) / f"seed{seed}"
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    print(f"[ablate] {point.label(axes)} seed {seed}")
    config = load_config("student", args.config, {**overrides, **point.overrides(stores)},
                         builtin=load_spec(args.model).builtin)
    injects = bool(RunConfig.parse(config, "student").injection.plan)
    if injects and not stores:
        raise InputError(f"--features: variant {point.variant!r} injects teacher features; pass the store")
    features = stores[point.teacher] if injects else None
    options = StudentOptions(epochs=args.epochs, device=args.device, seed=seed, resume=True, model=args.model,
                             val_samples=args.val_samples, progress=False, features=features)
    fit(config, args.data, run, options)
    student = load_student(run / STUDENT)
    data = open_dataset(args.data)
    pred = predict(student, data, args.split, options.features)
    target, body = _truth(data, args.split)
    per = per_sample_metrics(pred, target, body)
    result = {k: float(np.mean(v)) for k, v in per.items()}
    result["per_sample_nrmse"] = [float(x) for x in per["nrmse"]]  # for the paired tests against the plain student
    atomic_write_json(done, result)
    return result


def _truth(data, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The activity target and the body mask (μ > 0) of a split."""
    return np.array(data.split(split).actMap, dtype=np.float32), np.array(data.split(split).attenMap) > 0


def baselines(args, out: Path) -> dict:
    path = out / "baselines.json"
    if path.exists():
        return json.loads(path.read_text())
    data = open_dataset(args.data)
    target, body = _truth(data, args.split)
    recons = baseline_recons(data, args.split, ("fbp", "mlem"), tuned_on="val", out=out)
    for kind, name in data.recons.items():  # the data's own reconstructions, under their display names
        recons[name] = np.array(getattr(data.split(args.split), kind), dtype=np.float32)
    res = {m: {k: float(np.mean(v)) for k, v in per_sample_metrics(r, target, body).items()} for m, r in recons.items()}
    atomic_write_json(path, res)
    return res


def table(results: dict[str, list[dict]], base: dict) -> str:
    """Mean ± std over seeds per row (mean alone for one seed); with the plain student (``none``) among them,
    each row's NRMSE difference to it paired over the test samples; then the baselines."""
    rows, every = [], [r for runs in results.values() for r in runs] + list(base.values())
    metrics = [*METRICS, *(k for k in MASKED if all(k in r for r in every))]  # older runs lack the masked ones
    plain = _per_sample(results.get("none", []))
    for name, runs in results.items():
        cells = []
        for k in metrics:
            v = np.array([r[k] for r in runs])
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}")
        mine = _per_sample(runs)
        if plain is not None and name != "none" and mine is not None and len(mine) == len(plain):
            d = paired(mine, plain)
            cells += [f"{d['mean_diff']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]",
                      f"{d['p_t']:.2g}", f"{d['p_wilcoxon']:.2g}"]
        elif plain is not None:
            cells += ["", "", ""]
        rows.append([f"{name} (n={len(runs)})", *cells])
    extra = ["NRMSE − plain [95 % CI]", "p (paired t)", "p (Wilcoxon)"] if plain is not None else []
    rows += [[f"{m} ({'classical' if m in ('fbp', 'mlem') else 'the data’s own'})", *(r[k] for k in metrics),
              *[""] * len(extra)] for m, r in base.items()]
    return markdown_table(["variant", *metrics, *extra], rows)


def _per_sample(runs: list[dict]) -> np.ndarray | None:
    """Each test sample's NRMSE averaged over the seeds (None when a run predates per-sample results)."""
    if not runs or any("per_sample_nrmse" not in r for r in runs):
        return None
    return np.mean([r["per_sample_nrmse"] for r in runs], axis=0)


def parse_stores(text: str | None) -> dict[str, str]:
    """``STORE`` or ``NAME=STORE,NAME=STORE`` → {name: store}; an unnamed store is named by its teacher kind."""
    if not text:
        return {}
    stores = {}
    for part in [p for p in text.split(",") if p]:
        name, _, path = part.rpartition("=")
        name = name or open_store(path).teacher_kind.name.replace(" ", "_")
        if name in stores:
            raise InputError(f"--features: {name!r} twice; name each store (NAME=STORE)")
        open_store(path)  # a missing or foreign store fails here
        stores[name] = path
    return stores


def parse_dropouts(text: str) -> list[float]:
    out = []
    for part in [p for p in text.split(",") if p]:
        try:
            p = 0.0 if part == "off" else float(part)
        except ValueError:
            p = -1.0
        if not 0 <= p <= 1:
            raise InputError(f"--dropout: {part!r} is neither off nor a probability in [0, 1]")
        out.append(p)
    return out


def parser():
    p = new_parser("frozenflow ablate", __doc__)
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--features", help="feature store, or NAME=STORE,NAME=STORE for several teachers (needed by every "
                                      "injecting variant)")
    p.add_argument("--out", required=True, help="output folder (runs/, ablation.md, ablation.json)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds; every variant runs with each")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants to run")
    p.add_argument("--routing", default="auto", help="comma list of auto (the routing that pairs with the teacher) "
                                                    "and swapped (the one that does not)")
    p.add_argument("--merge", default="scale", help="comma list of scale, mixer")
    p.add_argument("--dropout", default="off", help="comma list of off or p: feature dropout from p (cosine to 0)")
    p.add_argument("--dropout-mode", default="all_or_none", choices=["all_or_none", "per_channel"],
                   help="how --dropout drops: every injected tensor of a batch together, or each channel")
    p.add_argument("--config", help="student config JSON (default: the tuned student.json)")
    p.add_argument("--model", default="builtin", metavar="SPEC",
                   help="the student network: builtin or a model spec file (README 'Your own Generator')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every variant; repeatable")
    p.add_argument("--split", default="test", help="split the variants are scored on")
    p.add_argument("--val-samples", type=int, default=32, help="validation samples evaluated each epoch")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--report-only", action="store_true", help="tabulate finished runs, train nothing")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise InputError(f"--variants: unknown {bad}; choose from {list(VARIANTS)}")
    axes_given = {"routing": [r for r in args.routing.split(",") if r], "merge": [m for m in args.merge.split(",") if m]}
    for axis, allowed in (("routing", ROUTINGS), ("merge", MERGES)):
        wrong = [v for v in axes_given[axis] if v not in allowed]
        if wrong or not axes_given[axis]:
            raise InputError(f"--{axis}: {args.__dict__[axis]!r}; a comma list drawn from {list(allowed)}")
    dropouts = parse_dropouts(args.dropout) or [0.0]
    if args.dropout_mode != "all_or_none" and not any(dropouts):
        raise InputError(f"--dropout-mode {args.dropout_mode}: applies to feature dropout, which --dropout "
                         f"{args.dropout!r} leaves off; add a probability (e.g. --dropout off,0.5)")
    overrides = parse_overrides(args.set)
    check_override_keys(overrides, "student", load_spec(args.model).builtin)  # a bad spec fails here
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise InputError(f"--seeds must be a comma list of integers, got {args.seeds!r}")
    out = Path(args.out)
    open_dataset(args.data)
    stores = parse_stores(args.features)
    points = grid(names, stores or {None: None}, axes_given["routing"], axes_given["merge"], dropouts,
                  args.dropout_mode)
    values = {"routing": axes_given["routing"], "merge": axes_given["merge"], "dropout": dropouts}
    defaults = {"routing": ["auto"], "merge": ["scale"], "dropout": [0.0]}
    # the axes shown in folder names and labels: those that vary, or hold one value other than the default
    axes = {a for a, v in values.items() if v != defaults[a]} | ({"teacher"} if len(stores) > 1 else set())
    if not args.report_only:  # an ablation continues its own folder (finished runs are reused), nothing else
        claim(out, "ablation", continues=True)
    results = {}
    for point in points:
        label = point.label(axes)
        if args.report_only:
            found = [json.loads(f.read_text()) for s in seeds
                     if (f := out / "runs" / point.folder(axes) / f"seed{s}" / "result.json").exists()]
            if found:
                results[label] = found
        else:
            results[label] = [run_point(point, s, args, out, overrides, stores, axes) for s in seeds]
    md = table(results, baselines(args, out))
    atomic_write(out / "ablation.md", f"Test split `{args.split}`, {args.epochs} epochs, seeds {seeds}"
                                      f"{_store_line(stores)}\n\n{md}\n")
    atomic_write_json(out / "ablation.json", {"epochs": args.epochs, "seeds": seeds, "stores": stores,
                                              "results": results}, indent=1)
    print(md)
    return 0


def _store_line(stores: dict) -> str:
    if not stores:
        return ""
    return "; teachers: " + ", ".join(f"{n} = {open_store(p).teacher_kind.name} ({p})" for n, p in stores.items())


if __name__ == "__main__":
    raise SystemExit(run_main(main))
