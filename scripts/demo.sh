#!/usr/bin/env bash
# End to end on built-in synthetic data:
#   data → teacher → feature export (+verify) → student with and without injection → a researcher's own
#   Generator class (examples/own_generator) as the injected student → the mixer merge with feature
#   dropout → evaluation. The other teacher kinds and the dropout comparison: scripts/variants.sh.
# --overwrite replaces the store only when it was made by another teacher (a retrained one).
# Everything goes to runs/demo (override with DEMO_OUT); rerunning resumes/reuses finished stages.
# Budgets (epochs) can be raised for a longer, better run: TEACHER_EPOCHS=40 STUDENT_EPOCHS=60 ./scripts/demo.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pipeline_common.sh"
OUT="${DEMO_OUT:-$ROOT/runs/demo}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-15}"
STUDENT_EPOCHS="${STUDENT_EPOCHS:-12}"
INJECT="${INJECT:-144,36,9}"
OWN="$ROOT/examples/own_generator"
mkdir -p "$OUT"

stage "1/8 synthetic data -> $OUT/data"
[ -f "$OUT/data/dataset.json" ] || "$FF" make-data --out "$OUT/data" --n-train 256 --n-val 64 --n-test 64 --seed 0

stage "2/8 teacher: mu-map -> attenuation sinogram, $TEACHER_EPOCHS epochs -> $OUT/teacher"
# --resume: a finished run does nothing, an interrupted one continues
# the tuned network, as a researcher's dict (examples/researcher_dicts): what does not apply is listed once
"$FF" train-teacher --data "$OUT/data" --out "$OUT/teacher" --epochs "$TEACHER_EPOCHS" --val-samples 32 --resume \
    --config "$ROOT/examples/researcher_dicts/teacher_atten.json"

stage "3/8 export teacher features -> $OUT/features.zarr"
"$FF" export --ckpt "$OUT/teacher/best.pt" --data "$OUT/data" --out "$OUT/features.zarr" --overwrite
"$FF" verify --features "$OUT/features.zarr" --ckpt "$OUT/teacher/best.pt" --data "$OUT/data" --full  # every chunk's checksum

stage "4/8 student with injection ($INJECT), $STUDENT_EPOCHS epochs -> $OUT/student"
# the researcher's ACT dict; its config.json gains the teacher's whole dict under FROZEN_
"$FF" train-student --data "$OUT/data" --features "$OUT/features.zarr" --out "$OUT/student" \
    --inject "$INJECT" --epochs "$STUDENT_EPOCHS" --val-samples 32 --resume \
    --config "$ROOT/examples/researcher_dicts/student_act.json"

stage "5/8 plain student (no injection), same budget -> $OUT/student_plain"
"$FF" train-student --data "$OUT/data" --out "$OUT/student_plain" \
    --inject none --epochs "$STUDENT_EPOCHS" --val-samples 32 --resume \
    --config "$ROOT/examples/researcher_dicts/student_act.json"

stage "6/8 your own Generator (examples/own_generator, unmodified) as the student, injection ($INJECT) -> $OUT/own_student"
"$FF" inspect-model --model "$OWN/spec.yaml" --config "$OWN/student.json" --direction SI --depth 1 | tail -n 12
"$FF" train-student --model "$OWN/spec.yaml" --config "$OWN/student.json" --data "$OUT/data" \
    --features "$OUT/features.zarr" --out "$OUT/own_student" --inject "$INJECT" --epochs "$STUDENT_EPOCHS" \
    --val-samples 32 --resume

stage "7/8 the other merge and feature dropout: 1x1 mixers, dropout 0.5 -> 0 (all or none) -> $OUT/student_mixer"
"$FF" train-student --data "$OUT/data" --features "$OUT/features.zarr" --out "$OUT/student_mixer" \
    --inject "$INJECT" --epochs "$STUDENT_EPOCHS" --val-samples 32 --resume \
    --config "$ROOT/examples/researcher_dicts/student_act.json" \
    --set inject_merge=mixer --set feature_drop_max=0.5 --set feature_drop_min=0

stage "8/8 evaluate on the test split (student, FBP, MLEM) -> $OUT/evaluation"
# one evaluation: injected and plain student, FBP, MLEM; paired differences with CIs and p-values
"$FF" evaluate --student "$OUT/student/student.pt" --features "$OUT/features.zarr" \
    --plain "$OUT/student_plain/student.pt" --data "$OUT/data" --split test --out "$OUT/evaluation" \
    --baseline-defaults --overwrite
"$FF" evaluate --student "$OUT/own_student/student.pt" --features "$OUT/features.zarr" \
    --plain "$OUT/student_plain/student.pt" --data "$OUT/data" --split test --out "$OUT/evaluation_own" \
    --methods student --overwrite

"$FF" evaluate --student "$OUT/student_mixer/student.pt" --features "$OUT/features.zarr" \
    --plain "$OUT/student_plain/student.pt" --data "$OUT/data" --split test --out "$OUT/evaluation_mixer" \
    --methods student --overwrite

"$PY" -m shared.evaluation.summary --demo "$OUT"
echo "demo finished in $(( $(date +%s) - t0 )) s. Figures: $OUT/data/montage.png, $OUT/teacher/val_preview.png,"
echo "  $OUT/teacher/learning_curve.png, $OUT/student/learning_curve.png, $OUT/student/feature_scales.png,"
echo "  $OUT/evaluation/comparison.png, $OUT/evaluation/box_plots.png, $OUT/evaluation/crc_vs_size.png"
