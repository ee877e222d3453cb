#!/usr/bin/env bash
# The headline experiment at equal budget (README "Headline experiment"): finer-grid synthetic data
# with 4096 training samples; injected (all levels) vs plain student, 2 seeds each, the same epochs;
# the three controls at 1 seed; FBP and MLEM; paired tests and contrast recovery on the test split.
# Every stage resumes, so an interrupted run continues where it stopped.  ~1.5 h on 2 quiet CPU cores
# (4 teacher epochs of ~175 s, 21 student epochs of 135-195 s, data, export and evaluation).
# Tables: python -m shared.evaluation.summary --demo "$HEADLINE_OUT" (the last step; benchmarks/results/headline.md).
#   HEADLINE_OUT=runs/headline  N_TRAIN=4096  STUDENT_EPOCHS=3  ./scripts/headline.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pipeline_common.sh"
OUT="${HEADLINE_OUT:-$ROOT/runs/headline}"
N_TRAIN="${N_TRAIN:-4096}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-4}"
STUDENT_EPOCHS="${STUDENT_EPOCHS:-3}"
mkdir -p "$OUT"

stage "1/5 synthetic data ($N_TRAIN/256/256) -> $OUT/data"
[ -f "$OUT/data/dataset.json" ] || "$FF" make-data --out "$OUT/data" --n-train "$N_TRAIN" --n-val 256 --n-test 256 --seed 0

stage "2/5 teacher, $TEACHER_EPOCHS epochs -> $OUT/teacher"
"$FF" train-teacher --data "$OUT/data" --out "$OUT/teacher" --epochs "$TEACHER_EPOCHS" --val-samples 64 --resume

stage "3/5 export -> $OUT/features.zarr"
"$FF" export --ckpt "$OUT/teacher/best.pt" --data "$OUT/data" --out "$OUT/features.zarr" --overwrite

stage "4/5 students, $STUDENT_EPOCHS epochs each: all levels and plain (seeds 0, 1), then the controls (seed 0)"
common=(--data "$OUT/data" --features "$OUT/features.zarr" --out "$OUT/ablation" --epochs "$STUDENT_EPOCHS" --val-samples 64)
"$FF" ablate "${common[@]}" --variants all,none --seeds 0,1
"$FF" ablate "${common[@]}" --variants control_scales_0,control_shuffled,control_atten_sino --seeds 0
"$FF" ablate "${common[@]}" --variants all,none,control_scales_0,control_shuffled,control_atten_sino --seeds 0,1 --report-only

stage "5/5 evaluate: injected vs plain (seed 0), FBP, MLEM; paired tests, CIs, contrast recovery -> $OUT/evaluation"
[ -f "$OUT/evaluation/summary.json" ] || "$FF" evaluate --student "$OUT/ablation/runs/all/seed0/student.pt" \
    --features "$OUT/features.zarr" --plain "$OUT/ablation/runs/none/seed0/student.pt" --data "$OUT/data" \
    --split test --out "$OUT/evaluation"
# the same pairing at seed 1 (students only): is the injection effect the same with other initial weights?
[ -f "$OUT/evaluation_seed1/summary.json" ] || "$FF" evaluate --student "$OUT/ablation/runs/all/seed1/student.pt" \
    --features "$OUT/features.zarr" --plain "$OUT/ablation/runs/none/seed1/student.pt" --data "$OUT/data" \
    --split test --out "$OUT/evaluation_seed1" --methods student
"$PY" -m shared.evaluation.summary --demo "$OUT"
echo "headline finished in $(( $(date +%s) - t0 )) s: $OUT/ablation/ablation.md, $OUT/evaluation/summary.json"
