#!/usr/bin/env bash
# End to end on built-in synthetic data: data → teacher → (later stages are added as they land).
# Everything goes to runs/demo (override with DEMO_OUT); rerunning reuses finished stages.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT="${DEMO_OUT:-$ROOT/runs/demo}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-15}"
mkdir -p "$OUT"
t0=$(date +%s)

echo "== 1/2 synthetic data -> $OUT/data"
[ -f "$OUT/data/dataset.json" ] || "$PY" -m shared.data.synthetic --out "$OUT/data" --n-train 256 --n-val 64 --n-test 64 --seed 0

echo "== 2/2 teacher: mu-map -> attenuation sinogram ($TEACHER_EPOCHS epochs) -> $OUT/teacher"
# --resume: a finished run does nothing, an interrupted one continues
"$PY" -m phase1_teacher.train --data "$OUT/data" --out "$OUT/teacher" --epochs "$TEACHER_EPOCHS" --val-samples 32 --resume

"$PY" -m shared.summary --demo "$OUT"
echo "demo finished in $(( $(date +%s) - t0 )) s; figures: $OUT/data/montage.png $OUT/teacher/learning_curve.png $OUT/teacher/val_preview.png"
