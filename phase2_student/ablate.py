"""Ablation: one fixed config, one budget, several seeds, many injection settings and controls.

``python -m phase2_student.ablate --data DIR --features STORE --out DIR --epochs E --seeds 0,1,2``

Variants: the plain student (``none``), each single level, all levels (both directions and each
direction alone), and three controls that separate information from capacity: injection with
the scales frozen at 0 (same extra channels, no signal), the features of a *shuffled* sample
(another patient's μ-map), and the plain student given the analytic attenuation sinogram as an
extra input channel.  Each run is resumable; reruns skip finished ones.  Writes OUT/ablation.md
(mean ± std over seeds on the test split, with FBP and MLEM) and OUT/ablation.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shared.cli import run_main
from shared.data.dataset_io import open_dataset
from shared.tables import markdown_table

from .evaluate import baseline_recons, per_sample_metrics, predict
from .task import load_student
from .train import STUDENT
from .train import main as train_main

ALL = "144,36,9"
VARIANTS = {  # name → student CLI flags
    "none": ["--inject", "none"],
    "144": ["--inject", "144"],
    "36": ["--inject", "36"],
    "9": ["--inject", "9"],
    "all": ["--inject", ALL],
    "all_enc_to_dec": ["--inject", ALL, "--set", "inject_dec_to_enc=false"],
    "all_dec_to_enc": ["--inject", ALL, "--set", "inject_enc_to_dec=false"],
    "control_scales_0": ["--inject", ALL, "--freeze-scales"],
    "control_shuffled": ["--inject", ALL, "--shuffle-features"],
    "control_atten_sino": ["--inject", "none", "--atten-channel"],
}
METRICS = ("psnr", "ssim", "ssim_global", "nrmse")


def run_variant(name, seed, args, out: Path) -> dict:
    run = out / "runs" / name / f"seed{seed}"
    argv = ["--data", args.data, "--out", str(run), "--epochs", str(args.epochs), "--seed", str(seed),
            "--val-samples", str(args.val_samples), "--resume", "--quiet", *VARIANTS[name]]
    if args.features:
        argv += ["--features", args.features]
    if args.config:
        argv += ["--config", args.config]
    for s in args.set:
        argv += ["--set", s]
    done = run / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    print(f"[ablate] {name} seed {seed}")
    train_main(argv)
    student = load_student(run / STUDENT)
    data = open_dataset(args.data)
    pred = predict(student, data, args.split, args.features)
    target = np.array(data.split(args.split).actMap, dtype=np.float32)
    result = {k: float(np.mean(v)) for k, v in per_sample_metrics(pred, target).items()}
    done.write_text(json.dumps(result))
    return result


def baselines(args, out: Path) -> dict:
    path = out / "baselines.json"
    if path.exists():
        return json.loads(path.read_text())
    data = open_dataset(args.data)
    target = np.array(data.split(args.split).actMap, dtype=np.float32)
    recons = baseline_recons(data, args.split, ("fbp", "mlem"), tuned_on="val", out=out)
    res = {m: {k: float(np.mean(v)) for k, v in per_sample_metrics(r, target).items()} for m, r in recons.items()}
    path.write_text(json.dumps(res))
    return res


def table(results: dict[str, list[dict]], base: dict) -> str:
    """Mean ± std over seeds per variant (mean alone for one seed), then the classical baselines."""
    rows = []
    for name, runs in results.items():
        cells = []
        for k in METRICS:
            v = np.array([r[k] for r in runs])
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else f"{v.mean():.4f}")
        rows.append([f"{name} (n={len(runs)})", *cells])
    rows += [[f"{m} (classical)", *(r[k] for k in METRICS)] for m, r in base.items()]
    return markdown_table(["variant", *METRICS], rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ablate", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--features", help="feature store (needed by every injecting variant)")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    p.add_argument("--config", help="student config JSON (default: the tuned student.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--split", default="test")
    p.add_argument("--val-samples", type=int, default=32)
    p.add_argument("--report-only", action="store_true", help="tabulate finished runs, train nothing")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise ValueError(f"--variants: unknown {bad}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    out = Path(args.out)
    open_dataset(args.data)
    if args.report_only:
        results = {n: [json.loads(f.read_text()) for s in seeds
                       if (f := out / "runs" / n / f"seed{s}" / "result.json").exists()] for n in names}
        results = {n: r for n, r in results.items() if r}
    else:
        results = {n: [run_variant(n, s, args, out) for s in seeds] for n in names}
    md = table(results, baselines(args, out))
    (out / "ablation.md").write_text(f"Test split `{args.split}`, {args.epochs} epochs, seeds {seeds}\n\n{md}\n")
    (out / "ablation.json").write_text(json.dumps({"epochs": args.epochs, "seeds": seeds, "results": results},
                                                  indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
