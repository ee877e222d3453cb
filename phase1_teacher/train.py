"""Train (or with --tune, tune) the teacher: by default μ-map → attenuation sinogram, the target projected on
the fly; ``--kind attenuation|activity --direction IS|SI`` chooses another frozen network (shared/data/views.py).

    frozenflow train-teacher --data DIR --out DIR [--kind K --direction D] [--epochs N] [--tune --num-samples K]

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

from shared.data.views import DIRECTIONS, KINDS, RECONS, TeacherKind, TeacherRows

from .task import teacher_task


@dataclasses.dataclass
class TeacherOptions(FitOptions):
    kind: TeacherKind = dataclasses.field(default_factory=TeacherKind)  # which network (shared.data.views)


def fit(config: dict, data, out: str | Path, options: TeacherOptions | None = None) -> dict:
    """Train the teacher on ``data`` (folder or opened dataset) into ``out``; returns the best epoch's metrics."""
    options = options or TeacherOptions()
    data = as_dataset(data)
    config = to_stored(config)  # the researcher's words; FrozenFlow's older batch_size / loss become theirs
    spec, kind = load_spec(options.model), options.kind
    run, unused = check_task_config(config, "teacher", builtin=spec.builtin, direction=kind.direction,
                                    teacher_kind=kind.kind)  # parsed once: everything below takes run
    torch.manual_seed(options.seed)  # the initial weights are part of a reproducible run
    train_set = TeacherRows(data, "train", kind, augment=options.augment)  # a missing array is refused first
    val_set = TeacherRows(data, "val", kind)
    task = teacher_task(run, data, spec=spec, kind=kind)
    if options.progress:
        print(f"[teacher] {kind.name}: {kind.describe()}")
    report_model(task.model, run.flat, "teacher", options.progress, unused)
    return train(task, run, train_set, val_set, out, options)


def parser():
    p = new_parser("frozenflow train-teacher", __doc__)
    add_training_args(p)
    p.add_argument("--neck", choices=["narrow", "medium", "wide"], help="shorthand for --set IS_gen_neck=… (SI_gen_neck with --direction SI)")
    p.add_argument("--kind", choices=KINDS, default="attenuation",
                   help="what the frozen network learns: attenuation (μ-maps, A μ) or activity (the activity data)")
    p.add_argument("--direction", choices=DIRECTIONS, default="IS",
                   help="IS: image → sinogram (attenuation: μ-map → A μ; activity: FBP image → sinogram); SI: sinogram "
                        "→ image (attenuation: A μ → μ-map; activity: sinogram → image). The student's routing "
                        "defaults to the one that pairs: crosswise for IS, coflow for SI")
    p.add_argument("--recon", choices=RECONS, default="fbp",
                   help="the activity IS teacher's input image: fbp (computed here, attenuation-corrected) or the "
                        "dataset's own <split>-recon1.npy / recon2.npy")
    p.add_argument("--use-stored-sino", action="store_true",
                   help="attenuation kinds: A μ from <split>-attenSino.npy instead of projecting the μ-maps")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    data = open_dataset(args.data)  # validate up front: a bad dataset fails before anything is written
    print(f"[teacher] {data}")
    quick_check(data)
    kind = TeacherKind(args.kind, args.direction, args.use_stored_sino, args.recon)
    overrides = common_overrides(args)
    if args.neck:
        overrides[f"{kind.direction}_gen_neck"] = args.neck
    options = fit_options(args, TeacherOptions, kind=kind)
    run_training(args, "teacher", fit, options, overrides)  # None with --print-config
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(run_main(main))
