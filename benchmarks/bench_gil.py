"""The teacher's forward beside one of the export writer's steps running in another thread of the process.

    python -m benchmarks.bench_gil [--workdir DIR] [--rounds 7]

The export runs the teacher on the caller's thread and converts, checks and writes on a writer thread
(feature_store.export.RangeWriter).  Work on that thread that holds Python's GIL stops the teacher
between two of its ops, however many cores are free.  Each round times the bench teacher's forward
(1 torch thread, a batch of 16, to the last tap) alone and beside a thread doing one step in a loop,
in shuffled order: a crc32c of a sample's 0.8 MB with ``google_crc32c`` (zarr's) and with ``crc32c``
(the store's, ``feature_store.engine._crc32c``), the float16 conversion into a shard buffer, the bit
check (``nonfinite_rows``), a page-cache ``pwrite``, and pure Python (a loop, the worst case).
Reported: the teacher's speed beside each step over its speed alone (median of rounds; 1.0 = no
effect).  Results: benchmarks/results/gil.json.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import environment, print_table, write_results

SAMPLE_BYTES = 803844  # the default store's six taps of one sample, float16


def _steps(folder: Path) -> dict:
    import crc32c
    import google_crc32c
    import torch

    from feature_store.reader import nonfinite_rows

    raw = np.random.default_rng(0).integers(0, 255, SAMPLE_BYTES, dtype=np.uint8)
    f32 = torch.randn(16, 8, 144, 144)
    h = np.empty((16, 8, 144, 144), np.float16)
    fd = os.open(folder / "gil_write.bin", os.O_WRONLY | os.O_CREAT)

    def python_loop():
        x = 0
        for _ in range(10000):
            x += 1

    return {"crc32c, google_crc32c (zarr's)": lambda: google_crc32c.value(raw),
            "crc32c, crc32c package (the store's)": lambda: crc32c.crc32c(raw),
            "float16 conversion into a buffer": lambda: torch.from_numpy(h).copy_(f32),
            "bit check (nonfinite_rows)": lambda: nonfinite_rows(h),
            "page-cache pwrite": lambda: os.pwrite(fd, raw, 0),
            "pure Python loop": python_loop}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--workdir", help="keep the bench teacher here (default: a temp dir)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from benchmarks.bench_export import bench_dataset, bench_teacher
    from shared.data.dataset_io import open_dataset
    from shared.data.views import TeacherRows, TeacherView
    from shared.models.frozen import load_frozen

    torch.set_num_threads(1)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gil_"))
    workdir.mkdir(parents=True, exist_ok=True)
    teacher = load_frozen(bench_teacher(workdir), kind="teacher")
    data = open_dataset(bench_dataset(workdir, 16))
    view = TeacherView.of_teacher(teacher, data)
    x = view.input(TeacherRows(data, "train", view.kind).read(0, 16, 1), torch.device("cpu"))
    taps = list(teacher.tap_shapes)

    @torch.inference_mode()
    def forward_s() -> float:  # the best of two passes: one pass is ~0.1 s, short enough to catch a stall
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            teacher.forward_taps(x, taps=taps, need_output=False)
            best = min(best, time.perf_counter() - t0)
        return best

    steps = _steps(workdir)
    forward_s()
    alone, beside = [], {k: [] for k in steps}
    for _ in range(args.rounds):
        order = list(steps)
        random.shuffle(order)
        for name in order:
            a = forward_s()
            stop = threading.Event()

            def loop(fn=steps[name]):
                torch.set_num_threads(1)
                while not stop.is_set():
                    fn()

            th = threading.Thread(target=loop)
            th.start()
            time.sleep(0.05)
            b = forward_s()
            stop.set()
            th.join()
            alone.append(a)
            beside[name].append(a / b)
    rows = [{"step in the other thread": k, "teacher speed vs alone": statistics.median(v), "min": min(v),
             "max": max(v)} for k, v in beside.items()]
    print_table(rows, title=f"Teacher forward (16 samples, 1 thread; alone {statistics.median(alone) * 1e3:.0f} ms) "
                            f"beside a thread running one step, median of {args.rounds} rounds")
    if not args.no_write:
        print(f"wrote {write_results('gil', {'rounds': args.rounds, 'rows': rows, 'alone_ms': statistics.median(alone) * 1e3}, environment(torch_threads=1))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
