"""Ablation: one fixed config, one budget, several seeds, many injection settings and controls.

``frozenflow ablate --data DIR --features STORE --out DIR --epochs E --seeds 0,1,2``

Variants: the plain student (``none``), each single level, all levels (both directions and each
direction alone, and the routing that does not pair with the teacher: ``IS_coflow`` for an IS teacher,
``SI_crosswise`` for an SI one), and three controls that separate information from capacity: injection with
the scales frozen at 0 (same extra channels, no signal), the features of a *shuffled* sample
(another patient's μ-map), and the plain student given the analytic attenuation sinogram as an
extra input channel.  Each run is resumable; reruns skip finished ones.  Writes OUT/ablation.md
(mean ± std over seeds on the test split, with FBP and MLEM) and OUT/ablation.json.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from feature_store import open_store
from shared.files.atomic import atomic_write, atomic_write_json
from shared.cli import new_parser, parse_overrides, run_main
from shared.config.construct_dictionaries import load_config
from shared.config.schema import RunConfig, check_override_keys
from shared.data.dataset_io import open_dataset
from shared.device import DEVICE_HELP
from shared.models import load_spec
from shared.files.outputs import claim
from shared.evaluation.tables import markdown_table

from .evaluate import baseline_recons, per_sample_metrics, predict
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
    # the routing that does not pair with the store's teacher: IS_coflow (enc→enc) or SI_crosswise (enc→dec)
    "all_swapped_routing": {"inject_levels": ALL, "inject_routing": "swapped"},
    "control_scales_0": {"inject_levels": ALL, **CONTROLS["freeze_scales"]},
    "control_shuffled": {"inject_levels": ALL, **CONTROLS["shuffle_features"]},
    "control_atten_sino": {"inject_levels": [], **CONTROLS["atten_channel"]},
}
METRICS = ("psnr", "ssim", "ssim_global", "nrmse")
MASKED = ("masked_nrmse", "masked_ssim")  # inside the body


def run_variant(name: str, seed: int, args, out: Path, overrides: dict) -> dict:
    """Train (or resume) one variant with one seed and score it on ``args.split``; reruns reuse result.json."""
    run = out / "runs" / name / f"seed{seed}"
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    print(f"[ablate] {name} seed {seed}")
    variant = dict(VARIANTS[name])
    if variant.get("inject_routing") == "swapped":
        d = open_store(args.features).teacher_kind.direction if args.features else "IS"
        variant["inject_routing"] = {"IS": "IS_coflow", "SI": "SI_crosswise"}[d]
    config = load_config("student", args.config, {**overrides, **variant}, builtin=load_spec(args.model).builtin)
    injects = bool(RunConfig.parse(config, "student").injection.plan)
    if injects and not args.features:
        raise InputError(f"--features: variant {name!r} injects teacher features; pass the store")
    options = StudentOptions(epochs=args.epochs, device=args.device, seed=seed, resume=True, model=args.model,
                             val_samples=args.val_samples, progress=False, features=args.features if injects else None)
    fit(config, args.data, run, options)
    student = load_student(run / STUDENT)
    data = open_dataset(args.data)
    pred = predict(student, data, args.split, options.features)
    target, body = _truth(data, args.split)
    result = {k: float(np.mean(v)) for k, v in per_sample_metrics(pred, target, body).items()}
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
    res = {m: {k: float(np.mean(v)) for k, v in per_sample_metrics(r, target, body).items()} for m, r in recons.items()}
    atomic_write_json(path, res)
    return res


def table(results: dict[str, list[dict]], base: dict) -> str:
    """Mean ± std over seeds per variant (mean alone for one seed), then the classical baselines."""
    rows, every = [], [r for runs in results.values() for r in runs] + list(base.values())
    metrics = [*METRICS, *(k for k in MASKED if all(k in r for r in every))]  # older runs lack the masked ones
    for name, runs in results.items():
        cells = []
        for k in metrics:
            v = np.array([r[k] for r in runs])
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}")
        rows.append([f"{name} (n={len(runs)})", *cells])
    rows += [[f"{m} (classical)", *(r[k] for k in metrics)] for m, r in base.items()]
    return markdown_table(["variant", *metrics], rows)


def parser():
    p = new_parser("frozenflow ablate", __doc__)
    p.add_argument("--data", required=True, help="dataset folder")
    p.add_argument("--features", help="feature store (needed by every injecting variant)")
    p.add_argument("--out", required=True, help="output folder (runs/, ablation.md, ablation.json)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds; every variant runs with each")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants to run")
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
    if not args.report_only:  # an ablation continues its own folder (finished runs are reused), nothing else
        claim(out, "ablation", continues=True)
    if args.report_only:
        results = {n: [json.loads(f.read_text()) for s in seeds
                       if (f := out / "runs" / n / f"seed{s}" / "result.json").exists()] for n in names}
        results = {n: r for n, r in results.items() if r}
    else:
        results = {n: [run_variant(n, s, args, out, overrides) for s in seeds] for n in names}
    md = table(results, baselines(args, out))
    atomic_write(out / "ablation.md", f"Test split `{args.split}`, {args.epochs} epochs, seeds {seeds}\n\n{md}\n")
    atomic_write_json(out / "ablation.json", {"epochs": args.epochs, "seeds": seeds, "results": results}, indent=1)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
