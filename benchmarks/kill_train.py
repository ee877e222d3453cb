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

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment, write_results


def _cmd(data, out, config, epochs, resume=False):
    return [sys.executable, "-m", "phase1_teacher.train", "--data", str(data), "--out", str(out), "--epochs",
            str(epochs), "--config", str(config), "--quiet", "--device", "cpu", *(["--resume"] if resume else [])]


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_train_"))
    os.environ.setdefault("FROZENFLOW_CACHE", str(work / "cache"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # every run the same threads: bit-identical floats
    from shared.data.synthetic import make_synthetic_dataset
    from shared.outputs import MARKER
    from tests.conftest import TINY_GEOMETRY, tiny_teacher_config

    data = work / "data"
    make_synthetic_dataset(data, 24, 8, 8, seed=0, counts=5e4, montage=False, progress=False, **TINY_GEOMETRY)
    config = work / "t.json"
    config.write_text(json.dumps(tiny_teacher_config()))
    ref = work / "ref"
    t0 = time.perf_counter()
    subprocess.run(_cmd(data, ref, config, a.epochs), check=True, capture_output=True)
    full = time.perf_counter() - t0
    want_w, want_m = _weights(ref), _metrics(ref)
    rounds = []
    for k in range(a.kills):
        run = work / f"k{k}"
        delay = float(rng.uniform(0, full))
        proc = subprocess.Popen(_cmd(data, run, config, a.epochs), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        finished_first = proc.poll() is not None
        if not finished_first:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        rerun = subprocess.run(_cmd(data, run, config, a.epochs, resume=True), capture_output=True, text=True)
        ok = rerun.returncode == 0
        if ok:
            got = _weights(run)
            ok = (set(got) == set(want_w) and all(torch.equal(got[n], want_w[n]) for n in got)
                  and _metrics(run) == want_m and not list(run.glob(".*.partial")) and (run / MARKER).exists())
        rounds.append({"kill_after_s": round(delay, 3), "finished_before_kill": finished_first, "survived": ok,
                       "error": "" if rerun.returncode == 0 else rerun.stderr.strip().splitlines()[-1]})
        print(f"kill {k + 1}/{a.kills} after {delay:.2f} s of {full:.2f} s: {'ok' if ok else 'LOST'} "
              f"{rounds[-1]['error']}", flush=True)
    survived = sum(r["survived"] for r in rounds)
    killed = sum(not r["finished_before_kill"] for r in rounds)
    print(f"{killed} kills injected ({a.kills - killed} runs finished first), {survived}/{a.kills} resumed "
          f"bit-identical to the uninterrupted run")
    write_results("kills_train", {"train_seconds": full, "epochs": a.epochs, "kills_injected": killed,
                                  "rounds": len(rounds), "survived": survived, "details": rounds}, environment())
    return 0 if survived == len(rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
