"""Does starting the side convolutions at zero help? Students trained with each ``side_init``.

The built-in Generator as student (all levels, crosswise), on a demo folder's data and feature store
(``./scripts/demo.sh`` first), the demo's epoch budget, several seeds. ``side_init`` is a spec field,
so each variant is the built-in spec with that one field changed. Reported: validation NRMSE after
the first epoch (early training, where an initialisation matters most) and at the best epoch.

    .venv/bin/python -m benchmarks.bench_side_init [--demo runs/demo] [--epochs 12] [--seeds 0,1]
"""
from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import yaml

from benchmarks.common import environment, write_results
from phase2_student import StudentOptions, fit
from shared.config.construct_dictionaries import load_config
from shared.models.spec import SIDE_INITS

BUILTIN_SPEC = Path(__file__).resolve().parent.parent / "shared" / "model" / "builtin.yaml"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="a finished demo folder (data/, features.zarr)")
    ap.add_argument("--out", default="runs/bench_side_init")
    ap.add_argument("--epochs", type=int, default=12, help="the demo's student budget")
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args(argv)
    demo, out = Path(args.demo), Path(args.out)
    base = yaml.safe_load(BUILTIN_SPEC.read_text())
    rows = []
    for init in SIDE_INITS:
        spec = out / f"spec_{init}.yaml"
        spec.parent.mkdir(parents=True, exist_ok=True)
        spec.write_text(yaml.safe_dump({**base, "side_init": init}))
        for seed in (int(s) for s in args.seeds.split(",")):
            run = out / init / f"seed{seed}"
            options = StudentOptions(epochs=args.epochs, seed=seed, resume=True, val_samples=32, progress=False,
                                     features=str(demo / "features.zarr"), model=str(spec))
            fit(load_config("student"), str(demo / "data"), run, options)
            with open(run / "metrics.csv") as f:
                curve = [float(r["val_nrmse"]) for r in csv.DictReader(f)]
            rows.append({"side_init": init, "seed": seed, "val_nrmse_epoch1": curve[0], "val_nrmse_best": min(curve)})
            print(rows[-1])
    summary = {init: {k: statistics.mean(r[k] for r in rows if r["side_init"] == init)
                      for k in ("val_nrmse_epoch1", "val_nrmse_best")} for init in SIDE_INITS}
    print(summary)
    write_results("side_init", {"epochs": args.epochs, "runs": rows, "mean": summary}, environment())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
