"""Feature-store export: throughput against teacher inference alone, and peak memory against N.

    python -m benchmarks.bench_export [--small] [--workdir DIR] [--repeats R] [--threads T]

Throughput runs use 1 torch thread unless ``--threads`` says otherwise (0 = torch's default): on a
2-core machine shared with other processes, a 2-thread teacher stalls in OpenMP barriers whenever
another process holds a core — its time per batch was measured 5–15× inflated (22 ms quiet vs
300–900 ms under load), which makes "teacher alone" slow and the ratio meaningless.

Default geometry (180×180 μ-maps, network size 288, tuned default teacher config; the teacher is
trained for 1 epoch on a tiny dataset — its weights do not matter for throughput).

(a) Throughput, in this process, on the same batches of the same samples (``--throughput-n``; 4N:
    512, or 128 with ``--small``), measured alternately ``--repeats`` times:
    * teacher alone: read the μ-map batch (16) from the dataset's memmap, ``teacher.forward_taps(mu,
      need_output=False)`` — the inference the export needs (it stops after the last tap);
    * teacher and raw write: the same, and on the same thread each shard's bytes written into new files
      shaped as the store's (fallocate + writev, a rename; no checksums) as soon as its samples are
      computed, in a folder emptied first as the store is — the one-core limit at the export's pace;
    * export: ``RangeWriter.write_range`` over every range — read, teacher, and on the writer thread
      float16 conversion, bit check and shard writes (a fresh store each repeat; store creation and
      the finalising statistics pass are not included — they are in the end-to-end rows of (d)).
    Each layout is measured in its own block (after an ``os.sync``), so that the page-cache writeback of one
    layout's stores does not land in another's timings; within a block the kernel writes the stores back
    as it would during a real export.
    The reported ratio is export / teacher-alone samples/s (median of the per-repeat ratios).
    ``cpu_ratio`` is the same comparison in process CPU time per sample (all threads), which is far less
    sensitive to other processes competing for the cores than wall time.
    ``one_core_limit`` is teacher-and-raw-write / teacher-alone samples/s: the best ratio one core allows.
    The target is on ``ratio_to_limit``, the ratio over the limit of the run: 1.0 quiet (a free core takes
    the write), ``one_core_limit`` with ``--busy``.  ``raw_write_cpu_ms_per_sample`` is the CPU the raw
    write added to the teacher's.
    A per-batch stage breakdown (forward; fp16 conversion and check) explains it; store writes are
    measured against raw writes in bench_engines.
(d) Peak RSS of the export CLI (``python -m feature_store.export``) in a subprocess, for N and 4N
    samples, median of 3 alternating runs each (2 with --small): ru_maxrss of the export process
    (``RUSAGE_CHILDREN`` of a small launcher whose only child is the export — not of this process:
    a child's ru_maxrss includes the image it was forked from), plus the peaks of its anonymous and
    file-backed RSS (polled from /proc every 50 ms; file-backed = mapped files such as the dataset's
    .npy memmaps and shared libraries).  Must not grow with N beyond a few %.

Everything is created under ``--workdir`` (default: a temporary directory, removed at the end);
with ``--workdir`` the dataset and teacher are kept and reused by later runs.  Results go to
benchmarks/results/<--name>.json (default ``export``, or ``export_small`` with --small).

The helpers ``bench_teacher`` / ``bench_dataset`` / ``export_cli`` are shared with the other
feature-store benchmarks (bench_reader, bench_store_size).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import environment, print_table, write_results

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.9  # #25
TARGET_RSS_GROWTH = 0.05  # "a few %"


# ------------------------------------------------------------------ shared assets
def _run(cmd: list[str], what: str, env=None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def bench_dataset(workdir: Path, n_train: int, seed: int = 1, n_val: int = 0) -> Path:
    """A default-geometry synthetic dataset with ``n_train`` samples (reused if already there)."""
    out = Path(workdir) / f"data_n{n_train}_v{n_val}_s{seed}"
    if not (out / "dataset.json").exists():
        from shared.data.synthetic import make_synthetic_dataset

        shutil.rmtree(out, ignore_errors=True)
        make_synthetic_dataset(out, n_train, n_val, 0, seed=seed, montage=False, progress=False)
    return out


def bench_teacher(workdir: Path) -> Path:
    """An (essentially untrained: 1 epoch on 8 samples) teacher with the tuned default config."""
    out = Path(workdir) / "teacher"
    ckpt = out / "best.pt"
    if not ckpt.exists():
        data = bench_dataset(workdir, 8, seed=0, n_val=4)
        shutil.rmtree(out, ignore_errors=True)
        _run([sys.executable, "-m", "phase1_teacher.train", "--data", str(data), "--out", str(out), "--epochs", "1",
              "--val-samples", "4", "--quiet"], "teacher training")
    return ckpt


# Runs a command, polls its /proc/<pid>/status (Linux) for the anonymous and file-backed parts of
# its RSS, and prints its peak RSS from rusage.  A child's ru_maxrss also covers the memory image it
# was forked from (Linux keeps the pre-exec high-water mark), so a big benchmark process would
# inflate it: the export is therefore started from this small launcher process.
_RSS_LAUNCHER = """
import json, resource, subprocess, sys, time
p = subprocess.Popen(sys.argv[1:])
peak = {"RssAnon": 0, "RssFile": 0}
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/status"):
            k = line.split(":")[0]
            if k in peak:
                peak[k] = max(peak[k], int(line.split()[1]))
    except (OSError, ValueError):
        pass
    time.sleep(0.05)
print(json.dumps({"rc": p.returncode, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "anon_kib": peak["RssAnon"], "file_kib": peak["RssFile"]}))
"""


def export_cli(ckpt: Path, data: Path, store: Path, *extra: str, threads: int | None = None) -> dict:
    """Run the export CLI (train split) in a child process; its wall seconds and own peak RSS (MB)."""
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "feature_store.export", "--ckpt", str(ckpt), "--data", str(data), "--out", str(store),
           "--splits", "train", "--quiet", *extra]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    logf = Path(str(store) + ".log")
    with open(logf, "w") as log:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, *cmd], cwd=REPO, env=env, stdout=subprocess.PIPE,
                           stderr=log, text=True)
        wall = time.perf_counter() - t0
    if p.returncode != 0 or json.loads(p.stdout.splitlines()[-1])["rc"] != 0:
        raise RuntimeError(f"export failed:\n{logf.read_text()[-3000:]}")
    r = json.loads(p.stdout.splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": r["maxrss_kib"] / 1024.0,  # ru_maxrss is KiB on Linux
            "peak_anon_mb": r["anon_kib"] / 1024.0, "peak_file_mb": r["file_kib"] / 1024.0}


def tap_bytes_per_sample(ckpt: Path, dtype: str = "float16") -> int:
    from shared.models.frozen import load_frozen

    t = load_frozen(ckpt, kind="teacher", direction="IS")
    return int(sum(np.prod(s) for s in t.tap_shapes.values()) * np.dtype(dtype).itemsize)


# ------------------------------------------------------------------ (a) throughput
def _throughput(ckpt: Path, data: Path, workdir: Path, configs: list[dict], repeats: int, batch: int,
                busy: bool = False) -> tuple:
    import torch

    from feature_store import export as E

    def spec_for(cfg, store):
        return E.ExportSpec(ckpt=str(ckpt), data=str(data), store=str(store), splits=["train"],
                            codec=cfg["codec"], shard_size=cfg["shard_size"], batch_size=batch)

    base = spec_for(configs[0], workdir / "tp_probe.zarr")
    shutil.rmtree(base.store, ignore_errors=True)
    E.prepare(base, log=lambda *a: None)
    w = E.RangeWriter(base)
    teacher, mu_all = w.teacher, w.data.split("train").attenMap
    n = mu_all.shape[0]

    @torch.inference_mode()
    def teacher_alone(write_to: Path | None = None):
        """The teacher over every batch; with ``write_to``, on the same thread, each shard's bytes (fixed
        random data, files shaped as the store's) written raw into that folder as soon as its samples are
        computed: the one-core limit, at the export's pace."""
        if write_to is not None:
            shutil.rmtree(write_to, ignore_errors=True)  # emptied first, as each export's store is
            write_to.mkdir(parents=True)
        for s in range(0, n, batch):
            mu = torch.from_numpy(np.array(mu_all[s:s + batch], dtype=np.float32))
            teacher.forward_taps(mu * teacher.input_scale, need_output=False)
            end = min(n, s + batch)
            if write_to is not None and (end % SHARD == 0 or end == n):  # a shard's samples all computed
                start = (end - 1) // SHARD * SHARD
                _raw_write_shard(write_to, {t: c[:end - start] for t, c in raw_shard.items()}, start)

    def export_once(cfg):
        store = workdir / f"tp_{cfg['codec']}_{cfg['shard_size'] or 0}.zarr"
        spec = spec_for(cfg, store)
        shutil.rmtree(store, ignore_errors=True)  # a fresh store: prepare() resumes an identical one
        todo = E.prepare(spec, log=lambda *a: None)
        assert todo, "nothing to export"
        wr = E.RangeWriter(spec)
        wr.teacher = teacher  # same module object: no second copy / warm-up difference
        f0, c0, t0 = _faults(), time.process_time(), time.perf_counter()
        for split, r in todo:
            wr.write_range(split, r)
        wr.close()  # joins the reader/writer threads
        return time.perf_counter() - t0, time.process_time() - c0, _faults() - f0

    rng = np.random.default_rng(0)
    raw_shard = {t: list(rng.integers(0, 255, (SHARD, int(np.prod(s)) * 2), dtype=np.uint8))  # float16 chunks
                 for t, s in teacher.tap_shapes.items() if t in base.taps}
    teacher_alone()  # warm-up (allocator, oneDNN primitives)
    per = {c["label"]: [] for c in configs}
    for cfg in configs:  # one block per layout: the kernel's writeback of one never lands in another's timings
        os.sync()
        export_once(cfg)
        for _ in range(repeats):  # alternate, so that load from other processes hits all three alike
            f0, c0, t0 = _faults(), time.process_time(), time.perf_counter()
            teacher_alone()
            ta, ca, fa = time.perf_counter() - t0, time.process_time() - c0, _faults() - f0
            c0, t0 = time.process_time(), time.perf_counter()
            teacher_alone(write_to=workdir / "raw_write")
            tw, cw = time.perf_counter() - t0, time.process_time() - c0
            te, ce, fe = export_once(cfg)  # the write loop only, reader and writer threads included
            per[cfg["label"]].append({"export": n / te, "alone": n / ta, "and_write": n / tw, "cpu_export": ce / n,
                                      "cpu_alone": ca / n, "cpu_raw_write": (cw - ca) / n, "faults_export": fe / n,
                                      "faults_alone": fa / n})
    shutil.rmtree(workdir / "raw_write", ignore_errors=True)
    rows = []
    for cfg in configs:
        m = per[cfg["label"]]

        def med(f):
            return statistics.median(f(x) for x in m)

        row = {"config": cfg["label"], "samples": n, "export_samples_s": med(lambda x: x["export"]),
               "teacher_alone_samples_s": med(lambda x: x["alone"]),
               "ratio": med(lambda x: x["export"] / x["alone"]),
               "export_cpu_ms_per_sample": med(lambda x: x["cpu_export"]) * 1e3,
               "teacher_cpu_ms_per_sample": med(lambda x: x["cpu_alone"]) * 1e3,
               "cpu_ratio": med(lambda x: x["cpu_alone"] / x["cpu_export"]),
               "teacher_and_raw_write_samples_s": med(lambda x: x["and_write"]),
               "raw_write_cpu_ms_per_sample": med(lambda x: x["cpu_raw_write"]) * 1e3,  # CPU of the two less the teacher's
               # minor page faults of the whole process: memory the allocator had to get from the kernel again
               "export_faults_per_sample": med(lambda x: x["faults_export"]),
               "teacher_faults_per_sample": med(lambda x: x["faults_alone"]),
               # what one core can do at best: the teacher, then a raw write of each shard's bytes, nothing else
               "one_core_limit": med(lambda x: x["and_write"] / x["alone"])}
        # the limit: with a core free the write overlaps the teacher (1.0); with one core, teacher + write
        row["limit"] = row["one_core_limit"] if busy else 1.0
        row["ratio_to_limit"] = row["ratio"] / row["limit"]
        row["target"] = TARGET_RATIO
        row["meets_target"] = row["ratio_to_limit"] >= TARGET_RATIO
        rows.append(row)

    # per-batch stage breakdown (median ms per batch of `batch` samples)
    rows_b = w._read("train", 0, batch)  # the raw rows the teacher's input is made of (shared.data.views)

    def med_ms(fn, k=7):
        ts = []
        for _ in range(k):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    into = w._batch_buffers(batch)
    taps = w._forward(rows_b)
    fwd = med_ms(lambda: w._forward(rows_b))  # the teacher's thread
    store = med_ms(lambda: w._store(taps, "train", 0, into))  # the writer's thread: conversion and bit check
    w.close()
    stages = [{"stage": "teacher forward_taps (to the last tap)", "ms_per_batch": fwd},
              {"stage": "float16 conversion + bit check (writer thread)", "ms_per_batch": store}]
    for s in stages:
        s["samples_s_if_alone"] = batch / (s["ms_per_batch"] / 1e3)
    return rows, stages


def _faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


SHARD = 64  # samples per shard file of the throughput runs' layouts (the raw write's files too)


def _raw_write_shard(folder: Path, chunks: dict[str, list], start: int) -> None:
    """One shard's bytes put in new files the export's way (a file per tap, fallocate + writev, a rename),
    without the checksums: the physical part of an export's write."""
    from shared.files.atomic import write_parts

    for t, parts in chunks.items():
        tmp = folder / f"{t}.{start}.partial"
        with open(tmp, "wb") as f:
            write_parts(f, parts)
        os.replace(tmp, folder / f"{t}.{start}")


# ------------------------------------------------------------------ (d) memory
def _memory(ckpt: Path, workdir: Path, n: int, threads: int | None, repeats: int) -> list[dict]:
    """Peak RSS for N and 4N samples, alternating, ``repeats`` times each (median: single runs vary
    by ±20 MB with thread timing and allocator arenas)."""
    runs = {n: [], 4 * n: []}
    for _ in range(repeats):
        for k in runs:
            runs[k].append(export_cli(ckpt, bench_dataset(workdir, k), workdir / f"rss_{k}.zarr", threads=threads))
            shutil.rmtree(workdir / f"rss_{k}.zarr", ignore_errors=True)
    rows = []
    for k, rs in runs.items():
        rss = [r["peak_rss_mb"] for r in rs]
        wall = statistics.median(r["wall_s"] for r in rs)
        rows.append({"samples": k, "peak_rss_mb": statistics.median(rss), "min_mb": min(rss), "max_mb": max(rss),
                     "peak_anon_mb": statistics.median(r["peak_anon_mb"] for r in rs),
                     "peak_file_mb": statistics.median(r["peak_file_mb"] for r in rs),
                     "wall_s": wall, "end_to_end_samples_s": k / wall})
    base, base_anon = rows[0]["peak_rss_mb"], rows[0]["peak_anon_mb"]
    for r in rows:
        r["rss_growth"] = r["peak_rss_mb"] / base - 1
        r["anon_growth"] = r["peak_anon_mb"] / base_anon - 1 if base_anon else None
        r["meets_target"] = r["rss_growth"] <= TARGET_RSS_GROWTH
    return rows


def _spin(stop):
    while not stop.is_set():
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="quick run: N=32, 2 repeats, default config only")
    ap.add_argument("--n", type=int, help="N of the memory runs (default 128, 32 small)")
    ap.add_argument("--throughput-n", type=int,
                    help="samples of the throughput runs (default 4N: 8 shards, so that the last shard's write, "
                         "which no compute overlaps, is a small part of the run as in a real export)")
    ap.add_argument("--repeats", type=int, help="alternating repeats (default 3, 2 small)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the throughput runs (default 1; 0 = torch's default, see above)")
    ap.add_argument("--workdir", help="keep data/teacher/stores here (default: a temp dir, removed)")
    ap.add_argument("--name", help="results file benchmarks/results/<name>.json (default export[_small])")
    ap.add_argument("--busy", action="store_true",
                    help="a second process spins on one core during the throughput runs (results: export_busy)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    n = args.n or (32 if args.small else 128)
    repeats = args.repeats or (2 if args.small else 3)
    rss_repeats = 2 if args.small else 3
    configs = [{"label": "none, shard 64 (default)", "codec": "none", "shard_size": 64}]
    if not args.small:
        configs += [{"label": "lz4, shard 64", "codec": "lz4", "shard_size": 64},
                    {"label": "none, unsharded", "codec": "none", "shard_size": None}]
    tmp = None
    workdir = Path(args.workdir) if args.workdir else Path(tmp := tempfile.mkdtemp(prefix="bench_export_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        ckpt = bench_teacher(workdir)
        tp_n = args.throughput_n or 4 * n
        data = bench_dataset(workdir, tp_n)
        print(f"[bench_export] teacher + data ready in {time.perf_counter() - t0:.0f} s ({workdir})", flush=True)
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,), daemon=True) if args.busy else None
        if spinner:
            spinner.start()
        try:
            tp_rows, stages = _throughput(ckpt, data, workdir, configs, repeats, args.batch_size, args.busy)
        finally:
            if spinner:
                stop.set()
                spinner.join()
        print_table(tp_rows, title=f"(a) Export vs teacher alone, {tp_n} samples, batch {args.batch_size} "
                                   f"(median of {repeats} alternating repeats)")
        print_table(stages, title=f"Per-batch stages ({args.batch_size} samples, median ms)")
        mem_rows = _memory(ckpt, workdir, n, args.threads, rss_repeats)
        print_table(mem_rows, title=f"(d) Export CLI peak RSS vs N (median of {rss_repeats} runs each)", floatfmt=".3g")
        results = {"n": n, "throughput_n": tp_n, "batch_size": args.batch_size, "repeats": repeats,
                   "one_core_busy": args.busy,
                   "bytes_per_sample_float16": tap_bytes_per_sample(ckpt), "throughput": tp_rows, "stages": stages,
                   "memory": mem_rows}
        if not args.no_write:
            name = args.name or ("export_small" if args.small else "export") + ("_busy" if args.busy else "")
            print(f"wrote {write_results(name, results, environment(torch_threads_arg=args.threads))}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
