"""Train (or with --tune, tune) the student: activity sinogram → activity image, guided by stored
teacher features.  ``python -m phase2_student.train --data DIR --features STORE --out DIR --inject 144,36,9``

Outputs in OUT: student.pt (weights + scales + merged config + teacher sha256 + store fingerprint),
best.pt/last.pt (resumable), metrics.csv, learning_curve.png, val_preview.png; with --tune also the
Ray results (OUT/ray), per-trial runs (OUT/trials), trials.csv and tuning_curve.png.
No teacher is ever built here: features arrive from the store as plain tensors.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from shared import checkpoint as ckpt_io
from shared.cli import add_training_args, common_overrides, parse_overrides, run_main, train_options
from shared.config.construct_dictionaries import load_config, search_space
from shared.data.dataset_io import open_dataset
from shared.training import BEST, LAST, train

from .injection import injection_plan, parse_inject
from .task import store_info, student_datasets, student_task

STUDENT = "student.pt"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_student", description=__doc__.splitlines()[0])
    add_training_args(p)
    p.add_argument("--features", help="feature store (features.zarr) made by scripts/export_features.sh")
    p.add_argument("--inject", help="levels to inject, e.g. 144,36,9, or 'none' for the plain baseline "
                                    "(default: inject_levels of the config)")
    p.add_argument("--freeze-scales", action="store_true", help="control: feature scales fixed at 0")
    p.add_argument("--shuffle-features", action="store_true", help="control: another sample's features")
    p.add_argument("--atten-channel", action="store_true",
                   help="control: plain student with the analytic attenuation sinogram as an extra input channel")
    return p


def _control_overrides(args) -> dict:
    o = {}
    if args.inject is not None:
        o["inject_levels"] = parse_inject(args.inject)
    if args.freeze_scales:
        o.update(feature_scale_init=0.0, feature_scale_trainable=False)
    if args.shuffle_features:
        o["shuffle_features"] = True
    if args.atten_channel:
        o["atten_channel"] = True
    return o


def resolved_config(args) -> dict:
    overrides = common_overrides(args)
    overrides.update(_control_overrides(args))
    return load_config("student", args.config, overrides)


def fit(config: dict, data_dir: str, store_path, out: Path, args, report=None, progress=True) -> dict:
    data = open_dataset(data_dir)
    store = store_info(store_path) if store_path and injection_plan(config) else None
    torch.manual_seed(args.seed)  # the initial weights are part of a reproducible run
    task = student_task(config, data, store)
    train_set, val_set = student_datasets(config, data, store, augment=args.augment, seed=args.seed)
    opts = train_options(args, out, report, progress)
    best = train(task, config, train_set, val_set, opts)
    ckpt_io.save_atomic(ckpt_io.load(out / BEST, kind="student"), out / STUDENT)
    return best


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out).resolve()
    data = open_dataset(args.data)  # validate first: bad input fails before anything is written
    if args.features:
        store_info(args.features)  # a missing/foreign store fails here with its own message
    print(f"[student] {data}")
    if args.tune:
        return tune_main(args, out)
    config = resolved_config(args)
    plan = injection_plan(config)
    print(f"[student] injection: {', '.join(f'teacher {t} -> student {s}' for s, t in plan.items()) or 'none'}")
    if (out / LAST).exists() and not args.resume:
        raise FileExistsError(f"{out / LAST}: a run already exists here; pass --resume to continue it or "
                              f"choose another --out")
    best = fit(config, args.data, args.features, out, args, progress=not args.quiet)
    print(f"[student] best epoch {best['epoch']}: val_ssim={best['val_ssim']:.4f} val_psnr={best['val_psnr']:.2f} dB "
          f"val_nrmse={best['val_nrmse']:.4f} -> {out / STUDENT}")
    return 0


def tune_main(args, out: Path) -> int:
    from shared.tune_runner import tune_from_cli

    space = search_space("student")
    space.update(parse_overrides(args.set))
    space.update(_control_overrides(args))
    if not space["inject_levels"]:  # the plain baseline: directions are meaningless, do not tune them
        space.update(inject_enc_to_dec=False, inject_dec_to_enc=False)
    data_dir = str(Path(args.data).resolve())
    store_path = str(Path(args.features).resolve()) if args.features and "://" not in args.features else args.features

    def fit_trial(config, trial_dir, report):
        if config["inject_levels"] and not (config["inject_enc_to_dec"] or config["inject_dec_to_enc"]):
            config = {**config, "inject_enc_to_dec": True}  # a sampled "no direction" would silently be the baseline
        fit(config, data_dir, store_path, trial_dir, args, report=report, progress=False)

    tune_from_cli(args, out, "student", space, fit_trial)
    ckpt_io.save_atomic(ckpt_io.load(out / BEST, kind="student"), out / STUDENT)
    print(f"[student] -> {out / STUDENT}")
    return 0

if __name__ == "__main__":
    raise SystemExit(run_main(main))
