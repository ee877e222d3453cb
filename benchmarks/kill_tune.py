"""Hostile test of tuning: SIGKILL a ``tune-student`` at random instants, rerun with --resume, check the result.

    python -m benchmarks.kill_tune [--kills 10] [--seed 0]

A tiny dataset, teacher and feature store are made in a temporary folder; one uninterrupted 2-trial tune
(3 epochs each, one trial at a time) gives the duration over which the kill instants are drawn (Ray's start,
trial creation, every epoch report and checkpoint are hit). Even rounds kill the whole process group (a
machine crash: driver and Ray die together), odd rounds the driver alone (its Ray keeps running and must
be stopped by the rerun). Each round reruns with ``--resume`` and requires: exit 0; ``trials.csv`` with
both trials and no error; every trial's history epochs 1, 2, … with no gap or repeat; ``best.pt`` the
best trial's own best.pt and ``tune_summary.json`` its value; no process of the killed driver's Ray
session left. Tune's sampled values are not reproducible across a restore, so no bit-identity is asked.
Results: benchmarks/results/kills_tune.json (README "Reliability").
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path


from benchmarks.common import kill_args, kill_rounds, kill_summary, rerun_error, tiny_workspace
from tests.test_faults import _tiny_tune

SAMPLES = 2


def _check(out: Path, session: str | None) -> str:
    """'' when the resumed tune is whole and true, else what is wrong."""
    from shared.files import checkpoint as ckpt_io
    from shared.train.tune import session_processes

    rows = list(csv.DictReader(open(out / "trials.csv")))
    if len(rows) != SAMPLES or any(r["error"] for r in rows):
        return f"trials.csv: {len(rows)} rows, errors {[r['error'] for r in rows]}"
    for last in (out / "trials").glob("*/last.pt"):
        epochs = [h["epoch"] for h in ckpt_io.load(last)["history"]]
        if epochs != list(range(1, len(epochs) + 1)):
            return f"{last}: epochs {epochs}"
    summary = json.loads((out / "tune_summary.json").read_text())
    best = ckpt_io.load(out / "best.pt")["metrics"]["val_nrmse"]
    own = ckpt_io.load(out / "trials" / summary["best_trial"] / "best.pt")["metrics"]["val_nrmse"]
    if not best == own == summary["val_nrmse"]:
        return f"best.pt {best}, trial's best.pt {own}, summary {summary['val_nrmse']}"
    if session and session_processes(session):
        return f"{len(session_processes(session))} process(es) of the killed driver's Ray session left"
    return ""


def main(argv=None) -> int:
    a, rng = kill_args(argv, __doc__, kills=10)
    work, data, config = tiny_workspace("kill_tune_")
    py = sys.executable
    subprocess.run([py, "-m", "phase1_teacher.train", "--data", str(data), "--out", str(work / "teacher"), "--epochs",
                    "1", "--config", str(config), "--quiet"], check=True, capture_output=True)
    store = work / "features.zarr"
    subprocess.run([py, "-m", "feature_store.export", "--ckpt", str(work / "teacher" / "best.pt"), "--data", str(data),
                    "--out", str(store), "--shard-size", "4", "--quiet"], check=True, capture_output=True)

    def cmd(k, *extra):
        return _tiny_tune(data, store, work / f"k{k}", "--num-samples", str(SAMPLES), "--max-concurrent", "1", *extra)

    t0 = time.perf_counter()
    subprocess.run(cmd("ref"), check=True, capture_output=True)
    full = time.perf_counter() - t0

    def after(k):
        out = work / f"k{k}"
        record = out / "ray" / "driver.json"
        session = json.loads(record.read_text())["session_dir"] if record.exists() else None
        rerun = subprocess.run(cmd(k, "--resume"), capture_output=True, text=True)
        problem = _check(out, session) if rerun.returncode == 0 else ""
        return {"survived": rerun.returncode == 0 and not problem, "error": rerun_error(rerun) or problem}

    rounds = kill_rounds(a.kills, rng, full, cmd, after, whole_group=lambda k: k % 2 == 0)
    return kill_summary("kills_tune", rounds, "resumed to a whole, truthful tune", tune_seconds=full,
                        trials=SAMPLES, epochs=3)


if __name__ == "__main__":
    raise SystemExit(main())
