"""SIGKILL at awkward moments; rerunning the same command must complete with nothing lost."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from feature_store import layout as L
from shared.files import checkpoint as ckpt_io
from tests.conftest import tiny_teacher_config


def _wait_for(pred, timeout=90, step=0.005):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize("when", ["after_first_range", "random_0.4s", "random_1.2s"])
def test_export_killed_at_several_points_resumes_identically(when, tiny_teacher, tiny_data, tmp_path):
    cmd = [sys.executable, "-m", "feature_store.export", "--ckpt", str(tiny_teacher), "--data", str(tiny_data),
           "--shard-size", "2", "--batch-size", "1", "--quiet", "--splits", "train,val"]
    store = tmp_path / "k.zarr"
    proc = subprocess.Popen(cmd + ["--out", str(store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if when == "after_first_range":
        _wait_for(lambda: L.done_flags(zarr.open_group(str(store), mode="r"), "train").any())
    else:  # counted from the moment the store exists (imports take a variable time)
        _wait_for(lambda: (store / "zarr.json").exists())
        time.sleep(float(when.split("_")[1][:-1]))
    _kill(proc)
    subprocess.run(cmd + ["--out", str(store)], check=True, capture_output=True)
    subprocess.run(cmd + ["--out", str(tmp_path / "ref.zarr")], check=True, capture_output=True)
    got, ref = zarr.open_group(str(store), mode="r"), zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    for split in ("train", "val"):
        assert got.attrs["splits"][split]["status"] == "complete"
        for tap in ref[split].array_keys():
            np.testing.assert_array_equal(np.asarray(got[split][tap][:]), np.asarray(ref[split][tap][:]))
    assert not list(store.rglob("*.partial")) and not list(store.rglob("*.__lock"))


def test_teacher_killed_mid_training_resumes_to_the_same_weights(tiny_data, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_teacher_config()))
    base = [sys.executable, "-m", "phase1_teacher.train", "--data", str(tiny_data), "--epochs", "4", "--config",
            str(cfg), "--quiet", "--val-samples", "4"]
    cut = tmp_path / "cut"
    proc = subprocess.Popen(base + ["--out", str(cut)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: ckpt_io.load(cut / "last.pt")["epoch"] >= 2, step=0.02)
    _kill(proc)
    killed_at = ckpt_io.load(cut / "last.pt")["epoch"]
    assert 2 <= killed_at < 4, killed_at
    r = subprocess.run(base + ["--out", str(cut), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    subprocess.run(base + ["--out", str(tmp_path / "full")], check=True, capture_output=True)
    a, b = ckpt_io.load(cut / "last.pt"), ckpt_io.load(tmp_path / "full" / "last.pt")
    assert [r["epoch"] for r in a["history"]] == [1, 2, 3, 4]
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_checkpoint_write_killed_keeps_the_previous_good_file(tmp_path):
    target = tmp_path / "ck.pt"
    ckpt_io.save_atomic({"format_version": ckpt_io.FORMAT_VERSION, "kind": "teacher", "n": -1}, target)
    code = ("import sys, torch; from shared.files.checkpoint import save_atomic\n"
            "for i in range(10**6):\n"
            "    save_atomic({'format_version': 2, 'kind': 'teacher', 'n': i, 'w': torch.randn(2_000_000)}, sys.argv[1])\n")
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)])
        time.sleep(delay)
        _kill(proc)
        ck = ckpt_io.load(target)  # never a torn file: the old or a complete new one
        assert ck["kind"] == "teacher" and isinstance(ck["n"], int)
        if ck["n"] >= 0:
            assert ck["w"].shape == (2_000_000,)


def test_concurrent_readers_while_verify_runs(tiny_store, tiny_teacher, tiny_data):
    reader = ("import sys, numpy as np, torch; from feature_store.reader import FeatureStoreDataset\n"
              "ds = FeatureStoreDataset(sys.argv[1], 'train')\n"
              "tot = 0.0\n"
              "for _ in range(5):\n"
              "    for b in torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=1):\n"
              "        tot += float(b['enc9'].sum())\n"
              "assert np.isfinite(tot); print('ok')\n")
    procs = [subprocess.Popen([sys.executable, "-c", reader, str(tiny_store)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    v = subprocess.run([sys.executable, "-m", "feature_store.verify", "--features", str(tiny_store), "--ckpt", str(tiny_teacher),
                        "--data", str(tiny_data)], capture_output=True, text=True)
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert v.returncode == 0, v.stdout
    assert all(p.returncode == 0 for p in procs) and all(o.strip() == "ok" for o in outs)


def _tiny_tune(data, store, out, *extra):
    """A tune-student command on the tiny data: 3 epochs, level 9, random search."""
    cmd = [sys.executable, "-m", "phase2_student.tune", "--data", str(data), "--features", str(store), "--out",
           str(out), "--epochs", "3", "--inject", "9", "--searcher", "random", *extra]
    for pin in ("gen_sino_size=64", "gen_image_size=32", "SI_gen_hidden_dim=4", "SI_gen_z_dim=8", "batch_size=4",
                "SI_gen_mult=1.5", "SI_gen_fill=0"):
        cmd += ["--set", pin]
    return cmd


@pytest.mark.slow
def test_tune_killed_then_resumed_finishes_the_trials(tiny_data, tiny_store, tmp_path):
    out = tmp_path / "tune"
    cmd = _tiny_tune(tiny_data, tiny_store, out, "--num-samples", "2", "--max-concurrent", "1")
    # the whole job (driver and the Ray processes it started) dies at once, as on a machine crash
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    assert _wait_for(lambda: any(ckpt_io.load(p)["epoch"] >= 1 for p in (out / "trials").glob("*/last.pt")),
                     timeout=180, step=0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "student.pt").exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    import csv

    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2 and all(r["error"] == "" for r in rows)
    for last in (out / "trials").glob("*/last.pt"):
        epochs = [h["epoch"] for h in ckpt_io.load(last)["history"]]
        assert epochs == list(range(1, len(epochs) + 1))  # resumed, never restarted or duplicated
    assert (out / "student.pt").exists()


@pytest.mark.slow
def test_a_killed_drivers_ray_is_stopped_by_the_next_run(tiny_data, tiny_store, tmp_path):
    """Only the driver dies (SIGKILL): the Ray it started keeps running until the next run of the same
    experiment stops it (its record names the session), then the tune resumes and finishes."""
    import psutil

    out = tmp_path / "tune"
    cmd = _tiny_tune(tiny_data, tiny_store, out, "--num-samples", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = out / "ray" / "driver.json"
    assert _wait_for(record.exists, timeout=180, step=0.05)
    session = json.loads(record.read_text())["session_dir"]

    def ray_processes():
        from shared.train.tune import session_processes

        return session_processes(session)

    assert _wait_for(lambda: len(ray_processes()) > 0, timeout=60, step=0.05)
    assert _wait_for(lambda: any(ckpt_io.load(p)["epoch"] >= 1 for p in (out / "trials").glob("*/last.pt")),
                     timeout=180, step=0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone, after its trial's first epoch
    proc.wait()
    time.sleep(1)
    left = ray_processes()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert left, "the killed driver left no Ray process: nothing to test"  # its agents, measured: 2 or more
    assert "left running by the killed driver" in r.stdout
    assert _wait_for(lambda: not ray_processes(), timeout=30, step=0.2)
    assert (out / "student.pt").exists() and not record.exists()


@pytest.mark.slow
def test_a_tune_killed_before_its_first_trial_state_starts_afresh(tiny_data, tiny_store, tmp_path):
    """Killed as soon as Ray starts (only Tune's tuner.pkl written): Ray would restore trials with an empty
    config (every trial then failed with KeyError 'inject_levels'); the rerun starts the experiment afresh."""
    out = tmp_path / "tune"
    cmd = _tiny_tune(tiny_data, tiny_store, out, "--num-samples", "1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    tuner = out / "ray" / "student" / "tuner.pkl"
    assert _wait_for(tuner.exists, timeout=180, step=0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if any(tuner.parent.glob("experiment_state-*.json")):
        pytest.skip("Tune saved its state before the kill landed: not the window under test")
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "starting the experiment afresh" in r.stdout
    assert (out / "student.pt").exists()
