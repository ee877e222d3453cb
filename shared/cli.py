"""Entry-point plumbing: one-line errors (traceback only with --debug), config overrides."""
from __future__ import annotations

import json
import sys


def run_main(main, argv=None) -> int:
    """Call ``main(argv)``; expected failures end with one line on stderr and exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print("interrupted; rerun the same command (with --resume where offered) to continue", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError, KeyError, FloatingPointError) as e:
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1


def parse_overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs; VALUE is JSON when it parses (numbers, true/false/null, lists), else a string."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_training_args(p, default_metric: str = "ssim") -> None:
    """Options shared by the teacher's and the student's train/tune entry points."""
    p.add_argument("--data", required=True, help="dataset folder (dataset.json + .npy files)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--epochs", type=int, default=10, help="epochs (per trial when tuning)")
    p.add_argument("--config", help="tuned config JSON (default: shared/config/tuned/<task>.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="gen_lr")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", default=default_metric, help="validation metric for the best checkpoint / tuning")
    p.add_argument("--mode", choices=["max", "min"])
    p.add_argument("--val-samples", type=int, default=64)
    p.add_argument("--augment", action="store_true", help="random Radon-symmetric flips")
    p.add_argument("--resume", action="store_true", help="continue the run (or tune experiment) in OUT")
    p.add_argument("--tune", action="store_true", help="Ray Tune search instead of one fixed config")
    p.add_argument("--num-samples", type=int, default=4, help="tune: trials")
    p.add_argument("--max-concurrent", type=int, help="tune: trials at once")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--searcher", choices=["optuna", "random"], default="optuna")
    p.add_argument("--ray-address", help="connect to a running Ray cluster (e.g. auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def metric_and_mode(args) -> tuple[str, str]:
    from .metrics import HIGHER_IS_BETTER

    name = args.metric[4:] if args.metric.startswith("val_") else args.metric
    if name not in HIGHER_IS_BETTER:
        raise ValueError(f"--metric must be one of {sorted(HIGHER_IS_BETTER)}, got {args.metric!r}")
    return f"val_{name}", args.mode or ("max" if HIGHER_IS_BETTER[name] else "min")


def common_overrides(args) -> dict:
    """Config overrides every training entry point takes: --set KEY=VALUE, --batch-size, --lr."""
    overrides = parse_overrides(args.set)
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.lr:
        overrides["gen_lr"] = args.lr
    return overrides


def train_options(args, out, report=None, progress=True):
    from .training import TrainOptions

    return TrainOptions(epochs=args.epochs, out_dir=out, device=args.device, workers=args.workers, seed=args.seed,
                        resume=True, metric=args.metric, mode=args.mode, val_samples=args.val_samples,
                        progress=progress, report=report)
