"""Train (or tune) the teacher: ``python -m phase1_teacher.train --data DIR --out DIR``.

Outputs in OUT: best.pt, last.pt, metrics.csv, learning_curve.png, val_preview.png; with --tune
also the Ray results (OUT/ray), per-trial runs (OUT/trials), trials.csv and tuning_curve.png.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from shared.cli import add_training_args, common_overrides, parse_overrides, run_main, train_options
from shared.config.construct_dictionaries import load_config, search_space
from shared.data.dataset_io import open_dataset
from shared.training import LAST, train

from .data import MuMapDataset
from .task import teacher_task


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_teacher", description=__doc__.splitlines()[0])
    add_training_args(p)
    p.add_argument("--neck", choices=["narrow", "medium", "wide"], help="IS_gen_neck (default medium)")
    p.add_argument("--use-stored-sino", action="store_true", help="use <split>-attenSino.npy, not the projector")
    return p


def resolved_config(args) -> dict:
    overrides = common_overrides(args)
    if args.neck:
        overrides["IS_gen_neck"] = args.neck
    return load_config("teacher", args.config, overrides)


def fit(config: dict, data_dir: str, out: Path, args, report=None, progress=True) -> dict:
    data = open_dataset(data_dir)
    torch.manual_seed(args.seed)  # the initial weights are part of a reproducible run
    task = teacher_task(config, data, use_stored_sino=args.use_stored_sino)
    train_set = MuMapDataset(data, "train", args.use_stored_sino, augment=args.augment)
    val_set = MuMapDataset(data, "val", args.use_stored_sino)
    opts = train_options(args, out, report, progress)
    return train(task, config, train_set, val_set, opts)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out).resolve()
    data = open_dataset(args.data)  # validate up front: a bad dataset fails before anything is written
    print(f"[teacher] {data}")
    if args.tune:
        return tune_main(args, out)
    config = resolved_config(args)
    if (out / LAST).exists() and not args.resume:
        raise FileExistsError(f"{out / LAST}: a run already exists here; pass --resume to continue it or "
                              f"choose another --out")
    best = fit(config, args.data, out, args, progress=not args.quiet)
    print(f"[teacher] best epoch {best['epoch']}: val_ssim={best['val_ssim']:.4f} val_psnr={best['val_psnr']:.2f} dB "
          f"val_nrmse={best['val_nrmse']:.4f} -> {out / 'best.pt'}")
    return 0


def tune_main(args, out: Path) -> int:
    from shared.tune_runner import tune_from_cli

    space = search_space("teacher")
    space.update(parse_overrides(args.set))  # fixed keys the user pins
    if args.neck:
        space["IS_gen_neck"] = args.neck
    data_dir = str(Path(args.data).resolve())
    tune_from_cli(args, out, "teacher", space,
                  lambda config, trial_dir, report: fit(config, data_dir, trial_dir, args, report, progress=False))
    return 0

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(run_main(main))
