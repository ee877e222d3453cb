#!/usr/bin/env bash
# The frozen-flow variants a group runs next (README "Frozen-flow variants"), on the demo's data:
# three frozen networks — attenuation IS (today's teacher, routed crosswise), attenuation SI and activity SI
# (both routed co-flow) — each feeding the student (all levels) with feature dropout off and on (0.5 at the
# first epoch, cosine to 0, all-or-none), against the plain student; 2 seeds each, the same budget; paired
# tests on the test split (ablation.md). Every stage resumes. Results: benchmarks/results/variants.md.
#   VARIANTS_OUT=runs/variants  TEACHER_EPOCHS=15  STUDENT_EPOCHS=12  ./scripts/variants.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/pipeline_common.sh"
OUT="${VARIANTS_OUT:-$ROOT/runs/variants}"
TEACHER_EPOCHS="${TEACHER_EPOCHS:-15}"
STUDENT_EPOCHS="${STUDENT_EPOCHS:-12}"
mkdir -p "$OUT"

stage "1/4 synthetic data (the demo's: 256/64/64, seed 0) -> $OUT/data"
[ -f "$OUT/data/dataset.json" ] || "$FF" make-data --out "$OUT/data" --n-train 256 --n-val 64 --n-test 64 --seed 0

stores=()
for teacher in "attenuation IS" "attenuation SI" "activity SI"; do
    read -r kind direction <<< "$teacher"
    name="${kind}_${direction}"
    stage "2/4 teacher $teacher, $TEACHER_EPOCHS epochs -> $OUT/teacher_$name"
    "$FF" train-teacher --kind "$kind" --direction "$direction" --data "$OUT/data" --out "$OUT/teacher_$name" \
        --epochs "$TEACHER_EPOCHS" --val-samples 32 --resume
    stage "3/4 export $teacher -> $OUT/features_$name.zarr"
    "$FF" export --ckpt "$OUT/teacher_$name/best.pt" --data "$OUT/data" --out "$OUT/features_$name.zarr" --overwrite
    stores+=("$name=$OUT/features_$name.zarr")
done

stage "4/4 students, $STUDENT_EPOCHS epochs: all levels from each teacher, dropout off and 0.5; plain; seeds 0, 1"
"$FF" ablate --data "$OUT/data" --features "$(IFS=,; echo "${stores[*]}")" --out "$OUT/ablation" \
    --variants all,none --dropout off,0.5 --seeds 0,1 --epochs "$STUDENT_EPOCHS" --val-samples 32
echo "variants finished in $(( $(date +%s) - t0 )) s: $OUT/ablation/ablation.md"
