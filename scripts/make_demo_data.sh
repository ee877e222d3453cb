#!/usr/bin/env bash
# Write a synthetic demo dataset (torso phantoms, 256/64/64 samples, seed 0).
#   scripts/make_demo_data.sh [DIR] [extra args for frozenflow make-data]
# DIR defaults to demo_data in the repo root (a relative DIR is relative to where you call from);
# extra args override the defaults, e.g. --channels 3 --attn-sino --counts 1e6 --seed 1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/demo_data"
if [[ $# -gt 0 && "$1" != -* ]]; then
    OUT="$(realpath -m -- "$1")"
    shift
fi
cd "$ROOT"
"$ROOT/scripts/setup.sh"
exec .venv/bin/frozenflow make-data --out "$OUT" \
    --n-train 256 --n-val 64 --n-test 64 --seed 0 "$@"
