#!/usr/bin/env bash
# The gain of BYOL init over random init as a function of pretraining length (issue 4).
# Pretrains the cpu-full recipe (book/params/cpu-full.yaml) for several lengths at once, then fine-tunes
# every arm with the experiment file's recipe (LR chosen per arm on held-out training labels, 3 seeds).
#   GPU (minutes):      experiments/gain_vs_pretraining.sh runs/gain
#   2-core CPU (hours): DEVICE=cpu JOBS=1 experiments/gain_vs_pretraining.sh runs/gain
# Environment: PY (python with byol_lite importable; default .venv/bin/python), DEVICE (default cuda),
# JOBS (fine-tuning runs at once; default 12).
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-12}
OUT=${1:-runs/gain}
mkdir -p "$OUT"

pretrain() {   # NAME [PretrainConfig options...]
  local name=$1; shift
  "$PY" -m byol_lite pretrain --params book/params/cpu-full.yaml --device "$DEVICE" --no-progress \
    --out-dir "$OUT/pretrain-$name" --resume "$@" > "$OUT/pretrain-$name.log" 2>&1
}

start=$(date +%s)
# chapter 5's live run (48 steps), then 2 to 40 epochs; the 40-epoch run IS the cpu-full profile.
pretrain live --epochs 1 --max-steps 48 --warmup-epochs 0.1 &
pretrain e2 --epochs 2 --warmup-epochs 0.1 &
pretrain e5 --epochs 5 --warmup-epochs 0.25 &
pretrain e10 --epochs 10 --warmup-epochs 0.5 &
pretrain e20 --epochs 20 --warmup-epochs 1 &
pretrain e40 &
pretrain e40-crop0.2 --crop-min-scale 0.2 &
wait
echo "pretraining: $(( $(date +%s) - start )) s"

arms=()
for name in live e2 e5 e10 e20 e40-crop0.2; do arms+=(--arm "byol-$name=$OUT/pretrain-$name"); done
start=$(date +%s)
"$PY" -m byol_lite experiment book/params/experiment-cpu.yaml --device "$DEVICE" --jobs "$JOBS" \
  --out-dir "$OUT/experiment" --arm byol="$OUT/pretrain-e40" "${arms[@]}"   # byol = the cpu-full profile
echo "fine-tuning: $(( $(date +%s) - start )) s"
