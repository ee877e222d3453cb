"""GPU plumbing on a CPU-only machine: device and precision resolution, mixed precision through the
training loop (bf16 autocast runs on CPU), GPU shares per Ray Tune trial on logical GPUs, and the
one-line refusal when the cluster has fewer GPUs than a trial asks for."""
import csv
import json
import time

import pytest
import torch

from phase1_teacher.train import main as teacher_main
from phase2_student.train import main as student_main
from shared.cli import run_main
from shared.device import loader_workers, resolve_amp, resolve_device
from shared.config.schema import RunConfig
from shared.train.loop import FitOptions, Task, train

from conftest import tiny_teacher_config


def test_device_and_precision_resolution():
    cpu = torch.device("cpu")
    assert resolve_device("auto") == cpu and resolve_device("CPU") == cpu
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")
    assert resolve_amp("off", cpu) is None and resolve_amp("auto", cpu) is None  # auto: off on CPU
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)
    with pytest.raises(ValueError, match="--amp must be one of"):
        resolve_amp("half", cpu)
    assert loader_workers(None, cpu) == 0 and loader_workers(3, cpu) == 3
    with pytest.raises(ValueError, match="fp16"):
        FitOptions(amp="fp16")  # refused when the options are made, before any training


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, 16, 16, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": 2 * self.x[i]}


@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("off", torch.float32)])
def test_mixed_precision_trains_in_the_autocast_dtype(amp, dtype, tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1))
    seen = set()

    def step(m, batch, device):
        pred = m(batch["x"].to(device))
        seen.add(pred.dtype)
        return pred, batch["y"].to(device)

    config = {"batch_size": 8, "gen_lr": 1e-2, "gen_b1": 0.9, "gen_b2": 0.999, "loss": "mse", "lr_schedule": "none"}
    best = train(Task(model=model, step=step, kind="teacher"), RunConfig.parse(config, "teacher"), _Pairs(), _Pairs(8), tmp_path / amp,
                 FitOptions(epochs=8, amp=amp, progress=False, val_samples=8))
    history = list(csv.DictReader(open(tmp_path / amp / "metrics.csv")))
    assert seen == {dtype}  # training and validation forward passes ran in that precision
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"]) / 2  # and it learns
    assert isinstance(best["val_nrmse"], float) and best["val_nrmse"] < 0.5


def test_teacher_cli_with_bf16_and_fp16_refused_on_cpu(tiny_data, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_teacher_config()))
    base = ["--data", str(tiny_data), "--config", str(cfg), "--epochs", "1", "--quiet"]
    assert run_main(teacher_main, base + ["--out", str(tmp_path / "bf16"), "--amp", "bf16"]) == 0
    assert (tmp_path / "bf16" / "best.pt").exists()
    assert run_main(teacher_main, base + ["--out", str(tmp_path / "fp16"), "--amp", "fp16"]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err and not (tmp_path / "fp16").exists()


def _tune_args(tiny_data, tiny_store, out, *extra):
    args = ["--data", str(tiny_data), "--features", str(tiny_store), "--out", str(out), "--tune", "--searcher",
            "random", "--num-samples", "2", "--epochs", "2", "--inject", "144", "--quiet", *extra]
    for pin in ("gen_sino_size=64", "gen_image_size=32", "SI_gen_hidden_dim=4", "SI_gen_z_dim=8",
                "SI_gen_mult=1.5", "SI_gen_fill=0", "batch_size=4"):
        args += ["--set", pin]
    return args


def test_more_gpus_per_trial_than_the_cluster_has_fails_at_once(tiny_data, tiny_store, tmp_path, capsys):
    out = tmp_path / "tune"
    t0 = time.time()
    assert run_main(student_main, _tune_args(tiny_data, tiny_store, out, "--gpus-per-trial", "0.5")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gpus-per-trial 0.5: the Ray cluster has 0 GPU(s)" in err[0], err
    assert time.time() - t0 < 60 and not (out / "ray").exists()
    assert run_main(student_main, _tune_args(tiny_data, tiny_store, out, "--gpus-per-trial", "-1")) == 2
    assert run_main(student_main, ["--data", str(tiny_data), "--out", str(out), "--gpus-per-trial", "1"]) == 2
    assert "applies only with --tune" in capsys.readouterr().err


def test_two_trials_share_one_logical_gpu(tiny_data, tiny_store, tmp_path):
    """Ray with one logical GPU: --gpus-per-trial 0.5 runs two trials at once, each assigned GPU 0."""
    import ray

    ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "tune"
        assert run_main(student_main, _tune_args(tiny_data, tiny_store, out, "--gpus-per-trial", "0.5")) == 0
    finally:
        ray.shutdown()
    used = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/resources.json"))]
    assert len(used) == 2
    for u in used:
        assert u["gpu"] == 0.5 and u["gpu_ids"] == ["0"] and u["cuda_visible_devices"] == "0"
        assert u["device"] == "cpu"  # a logical GPU: torch still sees no CUDA here, so auto falls back
    # concurrent: each trial started before the other finished (its last metrics.csv write)
    spans = [(u["started"], (p.parent / "metrics.csv").stat().st_mtime)
             for u, p in zip(used, sorted((out / "trials").glob("*/resources.json")))]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans
    summary = json.loads((out / "tune_summary.json").read_text())
    assert summary["resources_per_trial"] == {"cpu": 1.0, "gpu": 0.5}
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert [r["gpu_ids"] for r in rows] == ["0", "0"]
