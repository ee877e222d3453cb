"""Train (or with --tune, tune) the teacher: μ-map → attenuation sinogram, the target projected on the fly.

    frozenflow train-teacher --data DIR --out DIR [--epochs N] [--tune --num-samples K]

Outputs in OUT: best.pt, last.pt, config.json, metrics.csv, learning_curve.png, val_preview.png; with
--tune also the Ray results (OUT/ray), per-trial runs (OUT/trials), trials.csv and tuning_curve.png.
From Python: ``phase1_teacher.fit(config, data, out, TeacherOptions(epochs=…))``.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from shared.cli import new_parser, run_main
from shared.train.flags import add_training_args, common_overrides, fit_options
from shared.config.schema import check_task_config
from shared.config.vocabulary import to_stored
from shared.data.dataset_io import as_dataset, open_dataset
from shared.data.forward_check import quick_check
from shared.train.entry import run_training
from shared.models import load_spec
from shared.models.network import report_model
from shared.train.loop import FitOptions, train

from .data import MuMapDataset
from .task import teacher_task


@dataclasses.dataclass
class TeacherOptions(FitOptions):
    use_stored_sino: bool = False  # train on <split>-attenSino.npy instead of projecting μ-maps


def fit(config: dict, data, out: str | Path, options: TeacherOptions | None = None) -> dict:
    """Train the teacher on ``data`` (folder or opened dataset) into ``out``; returns the best epoch's metrics."""
    options = options or TeacherOptions()
    data = as_dataset(data)
    config = to_stored(config)  # the researcher's words; FrozenFlow's older batch_size / loss become theirs
    spec = load_spec(options.model)
    run, unused = check_task_config(config, "teacher", builtin=spec.builtin)  # parsed once: everything below takes run
    torch.manual_seed(options.seed)  # the initial weights are part of a reproducible run
    task = teacher_task(run, data, spec=spec, use_stored_sino=options.use_stored_sino)
    report_model(task.model, run.flat, "teacher", options.progress, unused)
    train_set = MuMapDataset(data, "train", options.use_stored_sino, augment=options.augment)
    val_set = MuMapDataset(data, "val", options.use_stored_sino)
    return train(task, run, train_set, val_set, out, options)


def parser():
    p = new_parser("frozenflow train-teacher", __doc__)
    add_training_args(p)
    p.add_argument("--neck", choices=["narrow", "medium", "wide"], help="shorthand for --set IS_gen_neck=…")
    p.add_argument("--use-stored-sino", action="store_true",
                   help="train on <split>-attenSino.npy instead of projecting the μ-maps")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    data = open_dataset(args.data)  # validate up front: a bad dataset fails before anything is written
    print(f"[teacher] {data}")
    quick_check(data)
    overrides = common_overrides(args)
    if args.neck:
        overrides["IS_gen_neck"] = args.neck
    options = fit_options(args, TeacherOptions, use_stored_sino=args.use_stored_sino)
    run_training(args, "teacher", fit, options, overrides)  # None with --print-config
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(run_main(main))
