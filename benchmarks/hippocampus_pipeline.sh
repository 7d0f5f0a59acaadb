#!/usr/bin/env bash
# End-to-end check on real 3D MRI: train-teacher -> distill (DMD) -> evaluate, with wall times.
# Usage: bash benchmarks/hippocampus_pipeline.sh [OUT_DIR] [TEACHER_ITERS] [STUDENT_ITERS]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/hippocampus}
TI=${2:-2000}
SI=${3:-2000}
DATA=${NAPARI_DMD_DATA:-../shared/data}/msd_hippocampus
NDMD=${NDMD:-.venv/bin/napari-dmd}
COMMON=(--data "$DATA" --val-fraction 0.1 --max-val-cases 20 --num-threads 2 --lr 3e-3
        --val-interval 250 --checkpoint-interval 250)
echo "machine: $(nproc) cores, $(uname -m); $(date -u)"
t0=$(date +%s)
$NDMD train-teacher "${COMMON[@]}" --out "$OUT/teacher" --iterations "$TI"
t1=$(date +%s)
$NDMD distill --teacher "$OUT/teacher/best.pt" "${COMMON[@]}" --out "$OUT/student" --method dmd \
    --model student --iterations "$SI"
t2=$(date +%s)
$NDMD evaluate --model "$OUT/student/best.pt" --teacher "$OUT/teacher/best.pt" --data "$DATA" \
    --split val --json "$OUT/evaluate.json"
t3=$(date +%s)
echo "wall time: teacher $((t1 - t0)) s, student $((t2 - t1)) s, evaluate $((t3 - t2)) s, total $((t3 - t0)) s"
