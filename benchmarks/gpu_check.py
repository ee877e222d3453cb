"""The whole pipeline at full size on a CUDA GPU, with one table of throughput and peak memory.

    scripts/gpu_check.sh [--out runs/gpu_check] [--n-train 256] [--batch-size 32] [--amp auto]

Stages: synthetic data (S = 288 sinograms, 180² images), teacher training, feature export, the
feature reader alone, student training with and without injection, evaluation (student, plain, FBP,
MLEM on the test split), then one training step at batch 256 per network for its peak memory.
Reported per stage: samples/s (training: the last epoch's training samples over its wall time,
validation included) and peak GPU memory (``torch.cuda.max_memory_allocated``); and the ratio of
reader to student-training throughput — below 1 the student waits on the store.
Without CUDA it says so in one line and runs the same stages at tiny sizes on the CPU in a few
seconds (a smoke test of the plumbing; nothing there is a GPU measurement), exiting 0.
"""
from __future__ import annotations

from shared.config.schema import RunConfig
import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import torch

FULL = dict(image_size=180, pixel_mm=3.0, n_radial=180, n_angles=180)
TINY = dict(image_size=32, pixel_mm=12.0, n_radial=48, n_angles=40)
TINY_KEYS = {"gen_sino_size": 64, "gen_image_size": 32, "IS_gen_hidden_dim": 4, "IS_gen_z_dim": 8,
             "SI_gen_hidden_dim": 4, "SI_gen_z_dim": 8, "SI_gen_mult": 1.5, "SI_gen_fill": 0}


def _peak(device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def _reset(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _epoch_rate(run: Path, n_train: int) -> float:
    last = list(csv.DictReader(open(run / "metrics.csv")))[-1]
    return n_train / float(last["seconds"])


def run(out: Path, n_train: int, batch: int, amp: str, epochs: int, tiny: bool) -> list[dict]:
    from torch.utils.data import DataLoader

    from feature_store import open_store
    from feature_store.export import main as export_main
    from phase1_teacher.train import TeacherOptions
    from phase1_teacher.train import fit as fit_teacher
    from phase2_student.evaluate import evaluate
    from phase2_student.task import student_datasets
    from phase2_student.train import StudentOptions
    from phase2_student.train import fit as fit_student
    from shared.cli import run_main
    from shared.config.construct_dictionaries import load_config, merge_frozen
    from shared.data.synthetic import make_synthetic_dataset
    from shared.device import loader_workers, resolve_device

    device = resolve_device("auto")
    rows = []
    n_val = n_test = max(8, n_train // 8)
    extra = TINY_KEYS if tiny else {}
    t0 = time.time()
    data = make_synthetic_dataset(out / "data", n_train, n_val, n_test, seed=0, montage=False, progress=not tiny,
                                  **(TINY if tiny else FULL))
    rows.append({"stage": "synthetic data (CPU)", "samples_per_s": (n_train + 2 * n_val) / (time.time() - t0)})

    teacher_cfg = load_config("teacher", None, {**{k: v for k, v in extra.items() if not k.startswith("SI_")},
                                                "batch_size": batch})
    _reset(device)
    fit_teacher(teacher_cfg, data, out / "teacher", TeacherOptions(epochs=epochs, amp=amp, progress=not tiny,
                                                                     val_samples=n_val))
    rows.append({"stage": f"teacher training (batch {batch})", "samples_per_s": _epoch_rate(out / "teacher", n_train),
                 "peak_GiB": _peak(device)})

    store = out / "features.zarr"
    _reset(device)
    t0 = time.time()
    assert run_main(export_main, ["--ckpt", str(out / "teacher" / "best.pt"), "--data", str(out / "data"),
                                  "--out", str(store), "--batch-size", str(batch), "--quiet"]) == 0
    rows.append({"stage": "export (all splits)", "samples_per_s": (n_train + 2 * n_val) / (time.time() - t0),
                 "peak_GiB": _peak(device)})

    student_cfg = load_config("student", None, {**{k: v for k, v in extra.items() if not k.startswith("IS_")},
                                                "batch_size": batch})
    manifest = open_store(store)
    (train_set,) = student_datasets(RunConfig.parse(merge_frozen(student_cfg, manifest.teacher_config, manifest.path), "student"), data,
                                    manifest, splits=("train",))
    workers = loader_workers(None, device)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda")
    t0 = time.time()
    for b in loader:
        b["sino"].to(device, non_blocking=True)
    reader = n_train / (time.time() - t0)
    rows.append({"stage": f"feature reader + sinograms ({workers} workers)", "samples_per_s": reader})

    for name, levels, features in (("student, injected 144/36/9", [144, 36, 9], str(store)),
                                   ("student, plain", [], None)):
        _reset(device)
        run_dir = out / ("student" if levels else "student_plain")
        fit_student({**student_cfg, "inject_levels": levels}, data, run_dir,
                    StudentOptions(epochs=epochs, amp=amp, progress=not tiny, val_samples=n_val, features=features))
        rows.append({"stage": f"{name} (batch {batch})", "samples_per_s": _epoch_rate(run_dir, n_train),
                     "peak_GiB": _peak(device)})
    student_rate = rows[-2]["samples_per_s"]

    t0 = time.time()
    evaluate(out / "student" / "student.pt", data, "test", out / "evaluation", str(store),
             plain_path=out / "student_plain" / "student.pt", baseline_split=None, overwrite=True)
    rows.append({"stage": "evaluate (student, plain, FBP, MLEM)", "samples_per_s": n_test / (time.time() - t0)})

    if device.type == "cuda":  # one step at the largest batch the users' search spaces reach
        rows += _batch_256(device, amp, teacher_cfg, student_cfg, manifest)
    rows.append({"stage": "reader / injected student training", "samples_per_s": reader / student_rate,
                 "note": "ratio; ≥ 1: the student never waits on the store"})
    return rows


def _batch_256(device, amp, teacher_cfg, student_cfg, manifest) -> list[dict]:
    from phase2_student.task import student_network
    from shared.config.construct_dictionaries import merge_frozen
    from shared.device import autocast, resolve_amp
    from shared.models import load_spec
    from shared.models.network import build

    dtype = resolve_amp(amp, device)
    rows = []
    S, N = student_cfg["gen_sino_size"], student_cfg["gen_image_size"]
    for name, model, make in (
            ("teacher", build(load_spec("builtin"), teacher_cfg, "IS"), lambda b: (torch.rand(b, 1, N, N, device=device), {})),
            ("student", student_network(RunConfig.parse(merge_frozen({**student_cfg, "inject_levels": [144, 36, 9]},
                                                         manifest.teacher_config, manifest.path), "student"), manifest),
             lambda b: (torch.rand(b, 1, S, S, device=device),
                        {"features": {t: torch.rand(b, *s, device=device) for t, s in manifest.tap_shapes.items()}}))):
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters())
        _reset(device)
        x, kw = make(256)
        with autocast(device, dtype):
            y = model(x, **kw)
        y.float().square().mean().backward()
        opt.step()
        rows.append({"stage": f"{name}: one training step at batch 256", "peak_GiB": _peak(device)})
        del model, opt, x, kw, y
        torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/gpu_check", help="working folder: new, empty, or an earlier gpu_check's (replaced)")
    p.add_argument("--n-train", type=int, default=256, help="training samples (val and test: n/8 each)")
    p.add_argument("--batch-size", type=int, default=32, help="training and export batch")
    p.add_argument("--epochs", type=int, default=2, help="epochs per training run")
    p.add_argument("--amp", default="auto", help="mixed precision for training (shared.device.resolve_amp)")
    args = p.parse_args(argv)
    from shared.files.outputs import MARKER, claim

    out = claim(args.out, "gpu check", overwrite=True)  # a folder gpu_check made is replaced; anything else refused
    for child in out.iterdir():
        if child.name != MARKER:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    cuda = torch.cuda.is_available()
    t0 = time.time()
    if cuda:
        print(f"[gpu_check] {torch.cuda.get_device_name(0)}: full size (S=288, 180² images), "
              f"{args.n_train} training samples, batch {args.batch_size}, --amp {args.amp}")
        rows = run(out, args.n_train, args.batch_size, args.amp, args.epochs, tiny=False)
    else:
        print("[gpu_check] no CUDA device on this machine: CPU smoke run at tiny sizes only (no GPU figures)")
        rows = run(out, 16, 4, "off", 1, tiny=True)
    from benchmarks.common import markdown_table

    for r in rows:
        r["samples_per_s"] = round(r["samples_per_s"], 2) if "samples_per_s" in r else ""
        r["peak_GiB"] = round(r["peak_GiB"], 2) if r.get("peak_GiB") is not None else ""
    print(markdown_table(rows, ["stage", "samples_per_s", "peak_GiB", "note"]))
    print(f"[gpu_check] {'CUDA' if cuda else 'CPU smoke'} run finished in {time.time() - t0:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
