"""Export throughput with and without ``feature_store.export._keep_freed_memory`` (glibc malloc thresholds).

    python -m benchmarks.bench_export_malloc [--workdir DIR] [--rounds 4] [--repeats 3]

The setting is process-wide and cannot be undone, so each measurement is a child process running
bench_export's throughput comparison (default layout, 512 samples, 1 torch thread, ``--repeats``
alternations of teacher alone / raw write / export); the children alternate between the export as
shipped ("kept") and the export with the call made a no-op ("glibc default"), ``--rounds`` of each.
Reported per mode: the median over children of export / teacher alone, and of minor page faults per
sample of the export and of the teacher alone.  Results: benchmarks/results/export_malloc.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import environment, print_table, write_results

REPO = Path(__file__).resolve().parents[1]
MODES = ("kept", "glibc default")


def _child(mode: str, workdir: Path, repeats: int) -> None:
    import torch

    from benchmarks import bench_export as B
    from feature_store import export as E

    torch.set_num_threads(1)
    if mode == "glibc default":
        E._keep_freed_memory = lambda: None
    rows, _ = B._throughput(B.bench_teacher(workdir), B.bench_dataset(workdir, 512), workdir,
                            [{"label": mode, "codec": "none", "shard_size": 64}], repeats, 16)
    print(json.dumps(rows[0]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/bench_export", help="bench teacher and data (kept for reuse)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    if args.child:
        _child(args.child, workdir, args.repeats)
        return 0
    from benchmarks.bench_export import bench_dataset, bench_teacher

    bench_teacher(workdir), bench_dataset(workdir, 512)  # made once, before any timing
    got = {m: [] for m in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            p = subprocess.run([sys.executable, "-m", "benchmarks.bench_export_malloc", "--child", mode, "--workdir",
                                str(workdir), "--repeats", str(args.repeats)], cwd=REPO, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"child ({mode}) failed:\n{p.stderr[-3000:]}")
            got[mode].append(json.loads(p.stdout.splitlines()[-1]))
    rows = [{"malloc": m, "export / teacher alone": statistics.median(r["ratio"] for r in rs),
             "per child": [round(r["ratio"], 3) for r in rs],
             "export faults per sample": statistics.median(r["export_faults_per_sample"] for r in rs),
             "teacher faults per sample": statistics.median(r["teacher_faults_per_sample"] for r in rs),
             "export CPU ms per sample": statistics.median(r["export_cpu_ms_per_sample"] for r in rs),
             "teacher CPU ms per sample": statistics.median(r["teacher_cpu_ms_per_sample"] for r in rs)}
            for m, rs in got.items()]
    print_table(rows, title=f"Export vs teacher alone, {args.rounds} children per mode, alternating")
    if not args.no_write:
        print(f"wrote {write_results('export_malloc', {'rounds': args.rounds, 'repeats': args.repeats, 'rows': rows}, environment(torch_threads=1))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
