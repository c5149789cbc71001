#!/usr/bin/env bash
# Random vs global BYOL vs object-level BYOL for segmentation at the cpu-full pretraining budget.
# Pretrains the object-level arm with book/params/cpu-full.yaml + --objective object (the global arm is the
# shipped checkpoints/byol-cpu-full, made with that profile), then fine-tunes all three arms with
# book/params/experiment-cpu.yaml: LR chosen per arm and label budget on held-out training labels, 3 seeds.
#   2-core CPU (about 1 h):  experiments/object_vs_global.sh runs/object-vs-global
#   GPU (minutes):           DEVICE=cuda JOBS=8 experiments/object_vs_global.sh runs/object-vs-global
# Environment: PY (python with byol_lite importable; default .venv/bin/python), DEVICE (default cpu),
# JOBS (fine-tuning runs at once; default 1), PRETRAIN_ARGS (more pretrain options, e.g. "--precision bf16":
# cpu-full.yaml pins fp32, which a CPU with bf16 instructions runs 1.6x slower).
# Interrupted? Run it again: both steps resume.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cpu}
JOBS=${JOBS:-1}
OUT=${1:-runs/object-vs-global}
mkdir -p "$OUT"

start=$(date +%s)
"$PY" -m byol_lite pretrain --params book/params/cpu-full.yaml --objective object --device "$DEVICE" \
  --no-progress --out-dir "$OUT/pretrain-object" --resume ${PRETRAIN_ARGS:-}
echo "pretraining: $(( $(date +%s) - start )) s"

start=$(date +%s)
"$PY" -m byol_lite experiment book/params/experiment-cpu.yaml --device "$DEVICE" --jobs "$JOBS" \
  --out-dir "$OUT/experiment" --arm object="$OUT/pretrain-object"
echo "fine-tuning: $(( $(date +%s) - start )) s"
