"""Scale-out on one machine: a local Ray cluster (2 CPUs, this machine only), the export split over
two Ray workers and a 2-trial student tune against --ray-address; results equal single-process ones.
Also stores addressed by fsspec URLs (file://, memory://)."""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

from feature_store.export import main as export_main
from feature_store.reader import FeatureStoreDataset
from shared.cli import run_main

RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([RAY, "start", "--head", "--num-cpus", "2", "--include-dashboard=false",
                            "--disable-usage-stats"], capture_output=True, text=True, env=env)
    if start.returncode != 0:
        pytest.fail(f"ray start failed: {start.stderr[-2000:]}")
    yield env
    subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env)


def _arrays(store, split):
    g = zarr.open_group(str(store), mode="r")[split]
    return {t: np.asarray(g[t][:]) for t in g.array_keys() if t != "_done"}


def test_export_on_ray_workers_equals_single_process(ray_cluster, tiny_teacher, tiny_data, tmp_path):
    common = ["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--shard-size", "4", "--batch-size", "4",
              "--quiet"]
    r = subprocess.run([sys.executable, "-m", "feature_store.export", *common, "--out", str(tmp_path / "ray.zarr"),
                        "--ray-address", "auto", "--ray-workers", "2"], capture_output=True, text=True, env=ray_cluster)
    assert r.returncode == 0, r.stderr[-3000:]
    # same torch thread count as each Ray worker (1): convolutions then round identically
    subprocess.run([sys.executable, "-m", "feature_store.export", *common, "--out", str(tmp_path / "one.zarr"),
                    "--threads", "1"], check=True, capture_output=True)
    for split in ("train", "val", "test"):
        a, b = _arrays(tmp_path / "ray.zarr", split), _arrays(tmp_path / "one.zarr", split)
        assert a.keys() == b.keys() and len(a) == 6
        for t in a:
            np.testing.assert_array_equal(a[t], b[t])


@pytest.mark.slow
def test_student_tune_against_the_cluster(ray_cluster, tiny_store, tiny_data, tmp_path):
    out = tmp_path / "tune"
    cmd = [sys.executable, "-m", "phase2_student.tune", "--data", str(tiny_data), "--features", str(tiny_store),
           "--out", str(out), "--num-samples", "2", "--epochs", "1", "--inject", "36,9", "--ray-address", "auto"]
    for pin in ("gen_sino_size=64", "gen_image_size=32", "SI_gen_hidden_dim=4", "SI_gen_z_dim=8", "batch_size=4",
                "SI_gen_mult=1.5", "SI_gen_fill=0"):
        cmd += ["--set", pin]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ray_cluster)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == 2 and all(r["error"] == "" for r in rows)
    assert (out / "student.pt").exists()


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_store_urls(scheme, tiny_teacher, tiny_data, tiny_store, tmp_path):
    url = f"file://{tmp_path}/u.zarr" if scheme == "file" else f"memory://frozenflow-test-{os.getpid()}/u.zarr"
    args = ["--ckpt", str(tiny_teacher), "--data", str(tiny_data), "--out", url, "--splits", "val",
            "--shard-size", "4", "--batch-size", "4", "--quiet"]
    assert run_main(export_main, args) == 0
    assert run_main(export_main, args) == 0  # idempotent through the URL too
    ds = FeatureStoreDataset(url, "val")
    ref = FeatureStoreDataset(tiny_store, "val")
    for i in (0, 7):
        for t, v in ds[i].items():
            np.testing.assert_array_equal(v.numpy(), ref[i][t].numpy())
