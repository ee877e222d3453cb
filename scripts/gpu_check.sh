#!/usr/bin/env bash
# On a CUDA machine: the whole pipeline at full size (S=288) with one table of samples/s and peak GPU
# memory per stage, and the reader/student throughput ratio. Without CUDA: says so, runs a CPU smoke
# test of a few seconds and exits 0.  Options: see `python -m benchmarks.gpu_check --help`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m benchmarks.gpu_check "$@"
