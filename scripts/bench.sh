#!/usr/bin/env bash
# Every benchmark at small sizes (a few minutes on 2 cores), then one table:
# benchmarks/results/latest.json and latest.md.  Ratios are measured against a baseline in the same
# run, because these machines are shared; run on a quiet machine for absolute numbers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
"$PY" -m benchmarks.bench_projector --batch 32 --repeats 5 --name projector_small
"$PY" -m benchmarks.bench_export --small
"$PY" -m benchmarks.bench_reader --small
"$PY" -m benchmarks.bench_checksum --samples 64 --rounds 3 --name checksum_small
"$PY" -m benchmarks.bench_store_size --small
"$PY" -m benchmarks.bench_engines --n 64 --rounds 2 --name engines_small
"$PY" -m benchmarks.bench_injection --rounds 10
"$PY" -m benchmarks.report
