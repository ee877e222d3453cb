"""CPU to put one shard's bytes in the page cache: the ways a writer can hand them to the kernel.

    python -m benchmarks.bench_write_parts [--workdir DIR] [--rounds 60]

A shard of the default store holds 64 chunks of a tap, each followed by its 4-byte crc32c (129 buffers
and the index).  Each round writes such a shard (the largest tap, 64 × 331,776 bytes) to a new file and
renames it, in shuffled order, three ways: one ``write`` per buffer through Python's file object; one
``writev`` of them all; and ``shared.files.atomic.write_parts`` (fallocate, then ``writev``: the
export's way).  Process CPU per sample-equivalent of 803,844 bytes (all six taps), median over rounds;
the ratio is to one write per buffer.  Results: benchmarks/results/write_parts.json.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import environment, print_table, write_results

SAMPLES, CHUNK, SAMPLE_BYTES = 64, 8 * 144 * 144 * 2, 803844


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--workdir", help="where the files go (default: a temp dir on the working directory's disk)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    from shared.files.atomic import write_parts

    buf = np.random.default_rng(0).integers(0, 255, (SAMPLES, CHUNK), dtype=np.uint8)
    parts = [p for row in buf for p in (row, b"\0\0\0\0")]

    def writev(f):
        f.flush()
        os.writev(f.fileno(), parts)

    ways = {"write per buffer": lambda f: [f.write(p) for p in parts], "writev": writev,
            "write_parts": lambda f: write_parts(f, parts)}
    folder = Path(tempfile.mkdtemp(prefix="bench_write_parts_", dir=args.workdir or "."))
    cpu = {w: [] for w in ways}
    try:
        for _ in range(args.rounds):
            order = list(ways)
            random.shuffle(order)
            for way in order:
                c0 = time.process_time()
                with open(folder / "shard.tmp", "wb") as f:
                    ways[way](f)
                os.replace(folder / "shard.tmp", folder / "shard")
                cpu[way].append((time.process_time() - c0) / SAMPLES * SAMPLE_BYTES / CHUNK)
                (folder / "shard").unlink()
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    base = statistics.median(cpu["write per buffer"])
    rows = [{"way": w, "cpu_ms_per_sample": statistics.median(v) * 1e3, "ratio_to_write_per_buffer":
             statistics.median(v) / base} for w, v in cpu.items()]
    print_table(rows, title=f"Page-cache write of a shard, median of {args.rounds} shuffled rounds")
    if not args.no_write:
        print(f"wrote {write_results('write_parts', {'rounds': args.rounds, 'rows': rows}, environment())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
