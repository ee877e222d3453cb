"""Hostile test of training: SIGKILL at random instants, rerun with --resume, compare with an uninterrupted run.

    python -m benchmarks.kill_train [--kills 20] [--epochs 4] [--seed 0]

A tiny dataset is made in a temporary folder; one uninterrupted ``train-teacher`` of ``--epochs`` epochs
is the reference. Each round starts the same command into a fresh folder, kills it (SIGKILL) at a
random instant between process start and the reference's duration (imports, the data checks, the
folder claim, every epoch and checkpoint write are hit), reruns it with ``--resume`` until it exits 0,
and requires: the final ``last.pt`` weights bit-identical to the reference's, the same ``metrics.csv``
values, no orphaned ``.*.partial`` temp files, and the output marker present. Results:
benchmarks/results/kills_train.json (README "Reliability").
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import kill_args, kill_rounds, kill_summary, rerun_error, tiny_workspace


def _cmd(data, out, config, epochs, resume=False):
    return [sys.executable, "-m", "phase1_teacher.train", "--data", str(data), "--out", str(out), "--epochs",
            str(epochs), "--config", str(config), "--quiet", "--device", "cpu", *(["--resume"] if resume else [])]


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def main(argv=None) -> int:
    a, rng = kill_args(argv, __doc__, kills=20, epochs=4)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # every run the same threads: bit-identical floats
    work, data, config = tiny_workspace("kill_train_")
    from shared.files.outputs import MARKER

    ref = work / "ref"
    t0 = time.perf_counter()
    subprocess.run(_cmd(data, ref, config, a.epochs), check=True, capture_output=True)
    full = time.perf_counter() - t0
    want_w, want_m = _weights(ref), _metrics(ref)

    def after(k):
        run = work / f"k{k}"
        rerun = subprocess.run(_cmd(data, run, config, a.epochs, resume=True), capture_output=True, text=True)
        ok = rerun.returncode == 0
        if ok:
            got = _weights(run)
            ok = (set(got) == set(want_w) and all(torch.equal(got[n], want_w[n]) for n in got)
                  and _metrics(run) == want_m and not list(run.glob(".*.partial")) and (run / MARKER).exists())
        return {"survived": ok, "error": rerun_error(rerun)}

    rounds = kill_rounds(a.kills, rng, full, lambda k: _cmd(data, work / f"k{k}", config, a.epochs), after)
    return kill_summary("kills_train", rounds, "resumed bit-identical to the uninterrupted run",
                        train_seconds=full, epochs=a.epochs)


if __name__ == "__main__":
    raise SystemExit(main())
