"""Hostile test of the export protocol: SIGKILL at random instants, rerun the same command, compare.

    python -m benchmarks.kill_export [--kills 30] [--seed 0]

A tiny dataset and a one-epoch teacher are made in a temporary folder; one uninterrupted export is
the reference.  Each round starts the export CLI into a fresh path, kills it (SIGKILL) at a random
instant between process start and the reference's duration — so imports, store creation, split
creation, writing and finalisation are all hit — reruns the *same* command (no --overwrite), and
requires: exit 0, ``verify --full`` clean (every chunk's checksum), every array byte-identical to
the reference, no ``*.partial`` or ``*.__lock`` temp files.  Results: benchmarks/results/kills.json.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

from benchmarks.common import kill_args, kill_rounds, kill_summary, rerun_error, tiny_workspace


def _export_cmd(teacher, data, store):
    return [sys.executable, "-m", "feature_store.export", "--ckpt", str(teacher), "--data", str(data), "--out",
            str(store), "--shard-size", "2", "--batch-size", "2", "--quiet", "--threads", "1"]


def _same(a: Path, b: Path) -> bool:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for split in gb.group_keys():
        if ga.attrs["splits"][split]["status"] != "complete":
            return False
        for tap in gb[split].array_keys():
            if not np.array_equal(np.asarray(ga[split][tap][:]), np.asarray(gb[split][tap][:]), equal_nan=True):
                return False
    return True


def main(argv=None) -> int:
    a, rng = kill_args(argv, __doc__, kills=30)
    work, data, config = tiny_workspace("kill_export_")
    from phase1_teacher.train import main as teacher_main

    assert teacher_main(["--data", str(data), "--out", str(work / "teacher"), "--epochs", "1", "--config",
                         str(config), "--quiet"]) == 0
    teacher = work / "teacher" / "best.pt"
    ref = work / "ref.zarr"
    t0 = time.perf_counter()
    subprocess.run(_export_cmd(teacher, data, ref), check=True, capture_output=True)
    full = time.perf_counter() - t0

    def after(k):
        store = work / f"k{k}.zarr"
        state = "absent" if not store.exists() else ("root" if (store / "zarr.json").exists() else "folder")
        rerun = subprocess.run(_export_cmd(teacher, data, store), capture_output=True, text=True)
        verify = subprocess.run([sys.executable, "-m", "feature_store.verify", "--features", str(store), "--full"],
                                capture_output=True, text=True)
        ok = (rerun.returncode == 0 and verify.returncode == 0 and _same(store, ref)
              and not list(store.rglob("*.partial")) and not list(store.rglob("*.__lock")))
        return {"store_at_kill": state, "survived": ok, "error": rerun_error(rerun)}

    rounds = kill_rounds(a.kills, rng, full, lambda k: _export_cmd(teacher, data, work / f"k{k}.zarr"), after)
    return kill_summary("kills", rounds, "resumed byte-identical with verify --full clean", export_seconds=full)


if __name__ == "__main__":
    raise SystemExit(main())
