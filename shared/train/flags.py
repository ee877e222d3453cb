"""The flags both phases' train commands take, and what they become: config overrides and FitOptions."""
from __future__ import annotations

import argparse

from shared.cli import parse_overrides
from shared.config.vocabulary import to_stored
from shared.device import AMP_CHOICES, AMP_HELP, DEVICE_HELP, WORKERS_HELP
from shared.errors import InputError
from shared.train.loop import FitOptions


def add_training_args(p: argparse.ArgumentParser, default_metric: str = "nrmse") -> None:
    """Options shared by the teacher's and the student's train/tune entry points."""
    p.add_argument("--data", required=True, help="dataset folder (dataset.json + .npy files)")
    p.add_argument("--out", required=True, help="output folder of the run (or of the tune experiment)")
    p.add_argument("--epochs", type=int, default=10, help="epochs (per trial when tuning)")
    p.add_argument("--config", help="resolved config JSON to train (default: shared/config/tuned/<task>.json); "
                                    "not with --tune, which samples the search space")
    p.add_argument("--model", default="builtin", metavar="SPEC",
                   help="the network: builtin (FrozenFlow's Generator) or a JSON/YAML spec naming your class, its "
                        "taps and receivers (README 'Your own Generator'; frozenflow inspect-model helps write one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (with --tune: pin it in the search space); repeatable")
    p.add_argument("--batch-size", type=int, help="batch size, a power of two: shorthand for --set batch_base2_exponent=log2(N)")
    p.add_argument("--lr", type=float, help="shorthand for --set gen_lr=X")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--workers", type=int, help=WORKERS_HELP)
    p.add_argument("--amp", choices=AMP_CHOICES, default="off", help=AMP_HELP)
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffle order and augmentation")
    p.add_argument("--metric", default=default_metric,
                   help="validation metric for the best checkpoint / tuning (nrmse: a blank output scores 1.0 and "
                        "cannot win; ssim can reward a blank image through the background)")
    p.add_argument("--mode", choices=["max", "min"], help="optimisation direction (default: from the metric)")
    p.add_argument("--val-samples", type=int, default=64, help="validation samples evaluated each epoch")
    p.add_argument("--augment", action="store_true", help="random Radon-symmetric flips")
    p.add_argument("--resume", action="store_true",
                   help="continue the run (or tune experiment) in OUT; without it an existing run is refused")
    p.add_argument("--tune", action="store_true", help="Ray Tune search instead of one fixed config")
    p.add_argument("--search-space", metavar="FILE",
                   help="tune: JSON/YAML file of keys → values or {choice|uniform|loguniform|randint|lograndint: …}; "
                        "its entries replace the built-in ones")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (with --tune: the search space) and exit")
    p.add_argument("--num-samples", type=int, default=4, help="tune: trials")
    p.add_argument("--space", choices=["full", "cpu"], default="full",
                   help="tune: the built-in search space — the researcher's ranges (full; networks for a GPU) or "
                        "small CPU-sized networks (cpu; the demo's)")
    p.add_argument("--max-concurrent", type=int, help="tune: trials at once (default: as many as the CPUs allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1, help="tune: CPUs (and torch threads) per trial")
    p.add_argument("--gpus-per-trial", type=float,
                   help="tune: GPUs per trial, fractional allowed (0.25: four trials share a GPU); default 1 when "
                        "the Ray cluster has a GPU, else 0; more than one node has is refused at once")
    p.add_argument("--searcher", choices=["optuna", "random"], default="optuna", help="tune: search algorithm")
    p.add_argument("--ray-address", help="tune: connect to a running Ray cluster (e.g. auto)")
    p.add_argument("--logger", help="tune: comma list of tensorboard, csv, mlflow; Ray always writes CSV, JSON and "
                                    "TensorBoard records, mlflow adds an MLflow run per trial (needs the mlflow "
                                    "package); single runs always write metrics.csv and TensorBoard scalars")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def common_overrides(args) -> dict:
    """Config overrides every training entry point takes: --set KEY=VALUE, --batch-size, --lr."""
    overrides = parse_overrides(args.set)
    if args.batch_size is not None:
        b = args.batch_size
        if b < 1 or b & (b - 1):
            raise InputError(f"--batch-size {b}: batches are 2**batch_base2_exponent; give a power of two")
        k = b.bit_length() - 1
        if overrides.get("batch_base2_exponent", k) != k or overrides.get("batch_size", b) != b:
            raise InputError(f"--batch-size {b} and --set batch_base2_exponent/batch_size disagree; give one")
        overrides.pop("batch_size", None)
        overrides["batch_base2_exponent"] = k
    if args.lr is not None:
        overrides["gen_lr"] = args.lr
    return to_stored(overrides)  # FrozenFlow's older batch_size / loss → the researcher's keys


def fit_options(args, cls=None, **extra):
    """The FitOptions (or a phase's subclass) the training flags describe."""
    cls = cls or FitOptions  # its checks refuse a bad --metric, --epochs, … before anything runs
    return cls(epochs=args.epochs, device=args.device, workers=args.workers, amp=args.amp, seed=args.seed,
               resume=args.resume,
               metric=args.metric, mode=args.mode, val_samples=args.val_samples, augment=args.augment,
               model=args.model, progress=not args.quiet, **extra)
