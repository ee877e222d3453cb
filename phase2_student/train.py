"""Train (or with --tune, tune) the student: activity sinogram → activity image, guided by stored teacher features.

    frozenflow train-student --data DIR --features STORE --out DIR --inject 144,36,9
    frozenflow tune-student  --data DIR --features STORE --out DIR --inject 144,36,9 --num-samples K

Outputs in OUT: student.pt (weights + scales + merged config + teacher sha256 + store fingerprint),
best.pt/last.pt (resumable), config.json, metrics.csv, learning_curve.png, val_preview.png; with --tune
also the Ray results (OUT/ray), per-trial runs (OUT/trials), trials.csv and tuning_curve.png.
No teacher is ever built here: features arrive from the store as plain tensors.
From Python: ``phase2_student.fit(config, data, out, StudentOptions(features=STORE, epochs=…))``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from feature_store import open_store
from shared.files import checkpoint as ckpt_io
from shared.cli import new_parser, run_main
from shared.train.flags import add_training_args, common_overrides, fit_options
from shared.config.construct_dictionaries import merge_frozen
from shared.config.schema import check_task_config, parse_inject
from shared.config.vocabulary import FROZEN, to_stored
from shared.data.dataset_io import as_dataset, open_dataset
from shared.data.forward_check import quick_check
from shared.train.entry import run_training
from shared.models import load_spec
from shared.models.network import report_model
from shared.train.loop import BEST, FitOptions, train

from .task import student_datasets, student_task
from shared.errors import InputError

STUDENT = "student.pt"
# The ablation controls as config overrides (the flags below and phase2_student.ablate use these).
CONTROLS = {
    "freeze_scales": {"feature_scale_init": 0.0, "feature_scale_trainable": False},  # same channels, no signal
    "shuffle_features": {"shuffle_features": True},  # another sample's features
    "atten_channel": {"atten_channel": True},  # the analytic ∫μ dl as an extra input channel
}


@dataclasses.dataclass
class StudentOptions(FitOptions):
    features: str | None = None  # the feature store (path or fsspec URL); needed when the config injects


def fit(config: dict, data, out: str | Path, options: StudentOptions | None = None) -> dict:
    """Train a student on ``data`` into ``out`` (student.pt = the best epoch); returns its metrics."""
    options = options or StudentOptions()
    data = as_dataset(data)
    config = to_stored(config)  # the researcher's words; FrozenFlow's older batch_size / loss become theirs
    manifest = open_store(options.features) if options.features else None
    if manifest is not None:  # the experiment's one dict: the frozen network's whole dict under FROZEN_
        config = merge_frozen(config, manifest.teacher_config, manifest.path)
    spec = load_spec(options.model)
    run, unused = check_task_config(config, "student", builtin=spec.builtin)  # parsed once: everything below takes run
    if manifest is None:
        unused.update({k: "no frozen network in this run" for k in config if k.startswith(FROZEN)})
    else:  # auto routing becomes the one that pairs with the store's teacher; a mismatched pairing is refused
        run = run.routed(manifest.teacher_kind.direction)
    plan = run.injection.plan
    store = manifest if plan else None
    if options.progress:
        via = (f"{manifest.teacher_kind.name} teacher, {run.injection.inject_routing}, {run.injection.inject_merge}: "
               if plan else "")
        print(f"[student] injection: {via}{', '.join(f'teacher {t} -> student {s}' for s, t in plan.items()) or 'none'}")
    torch.manual_seed(options.seed)  # the initial weights are part of a reproducible run
    task = student_task(run, data, store, spec)
    report_model(task.model, run.flat, "student", options.progress, unused)
    train_set, val_set = student_datasets(run, data, store, augment=options.augment, seed=options.seed)
    best = train(task, run, train_set, val_set, out, options)
    ckpt_io.save_atomic(ckpt_io.load(Path(out) / BEST, kind="student"), Path(out) / STUDENT)
    return best


def parser():
    p = new_parser("frozenflow train-student", __doc__)
    add_training_args(p)
    p.add_argument("--features", help="feature store written by `frozenflow export` (path or fsspec URL)")
    p.add_argument("--ckpt", help="teacher checkpoint (best.pt): refuse a store not made by this teacher")
    p.add_argument("--inject", help="levels to inject, e.g. 144,36,9, or 'none' for the plain baseline "
                                    "(default: inject_levels of the config)")
    p.add_argument("--block-shuffle", action="store_true",
                   help="shuffle the store's shards, then the samples within windows of 4 shards, so a batch reads "
                        "from few shard files (large stores on slow disks); needs a sharded store")
    p.add_argument("--freeze-scales", action="store_true", help="control: feature scales fixed at 0")
    p.add_argument("--shuffle-features", action="store_true", help="control: another sample's features")
    p.add_argument("--atten-channel", action="store_true",
                   help="control: the analytic attenuation sinogram as an extra input channel")
    return p


def _one_direction_at_least(config: dict) -> dict:
    """A sampled trial with levels but neither direction would silently be the plain baseline: route enc→dec."""
    if config["inject_levels"] and not (config["inject_enc_to_dec"] or config["inject_dec_to_enc"]):
        return {**config, "inject_enc_to_dec": True}
    return config


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    data = open_dataset(args.data)  # validate first: bad input fails before anything is written
    if args.ckpt and not args.features:
        raise InputError("--ckpt: checks the store's teacher, so it needs --features STORE")
    if args.block_shuffle and not args.features:
        raise InputError("--block-shuffle: shuffles a feature store's shards, so it needs --features STORE")
    shuffle_block = 0
    if args.features:
        store = open_store(args.features)  # a missing/foreign store fails here with its own message
        if args.block_shuffle:
            if not store.shard_size:
                raise InputError(f"--block-shuffle: {args.features} is not sharded (exported with --shard-size 0)")
            shuffle_block = int(store.shard_size)
        if args.ckpt:
            sha = ckpt_io.sha256_file(args.ckpt) if Path(args.ckpt).is_file() else None
            if sha is None:
                raise InputError(f"{args.ckpt}: teacher checkpoint not found")
            if store.teacher_sha256 != sha:
                raise InputError(f"{args.features}: made by teacher {str(store.teacher_sha256)[:12]}…, not by "
                                 f"{args.ckpt} ({sha[:12]}…); re-export with --ckpt {args.ckpt}")
    print(f"[student] {data}")
    quick_check(data)
    overrides = common_overrides(args)
    if args.inject is not None:
        overrides["inject_levels"] = parse_inject(args.inject)
    for flag, control in CONTROLS.items():
        if getattr(args, flag):
            overrides.update(control)
    if args.tune and overrides.get("inject_levels") == []:  # the plain baseline: no directions to tune
        overrides.update(inject_enc_to_dec=False, inject_dec_to_enc=False)
    features = args.features if args.features is None or "://" in args.features else str(Path(args.features).resolve())
    options = fit_options(args, StudentOptions, features=features, shuffle_block=shuffle_block)
    if run_training(args, "student", fit, options, overrides, trial_config=_one_direction_at_least) is None:
        return 0  # --print-config
    out = Path(args.out).resolve()
    if args.tune:
        ckpt_io.save_atomic(ckpt_io.load(out / BEST, kind="student"), out / STUDENT)
    print(f"[student] -> {out / STUDENT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
