#!/usr/bin/env bash
# The gain over random init as a function of pretraining length.
# Pretrains the cpu-full recipe (book/params/cpu-full.yaml) for several lengths, with the global and/or the
# object-level objective, then fine-tunes every arm with book/params/experiment-cpu.yaml (LR chosen per arm
# on held-out training labels, 3 seeds). Each length is a full run with its own schedules (warm-up, LR and
# tau), as a shorter budget would be, not a snapshot of the long run.
#   GPU (minutes):  experiments/gain_vs_pretraining.sh runs/gain
#   2-core CPU, the curve in chapters 6 and 7 (about an hour): the short lengths of both objectives beside
#   random init; the 40-epoch points are the object-vs-global experiment's (experiments/object_vs_global.sh),
#   so its global arm is dropped here:
#     DEVICE=cpu OBJECTIVES="global object" LENGTHS="live e10" PRETRAIN_ARGS="--precision bf16" \
#       experiments/gain_vs_pretraining.sh runs/gain --arm byol=
# Lengths: live = chapter 5's 48 steps (with the profile's tau_base 0.99, not the chapter's 0.9); eN = N epochs of 68 steps (e40 = the cpu-full profile itself).
# Environment: PY (default .venv/bin/python), DEVICE (default cuda; on cuda the pretraining runs go in
# parallel, on cpu one after another), JOBS (fine-tuning runs at once; default 12 on cuda, 1 on cpu),
# OBJECTIVES (default "global"), LENGTHS (default "live e2 e5 e10 e20 e40"), PRETRAIN_ARGS (more pretrain
# options), EXPERIMENT (the experiment folder; default OUT/experiment). Arguments after OUT go to the
# experiment (e.g. --arm NAME=RUN for runs made elsewhere). Interrupted? Run it again: everything resumes.
set -euo pipefail
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
if [ "$DEVICE" = cpu ]; then JOBS=${JOBS:-1}; else JOBS=${JOBS:-12}; fi
OBJECTIVES=${OBJECTIVES:-global}
LENGTHS=${LENGTHS:-live e2 e5 e10 e20 e40}
OUT=${1:-runs/gain}
shift || true
EXPERIMENT=${EXPERIMENT:-$OUT/experiment}
mkdir -p "$OUT"

length_args() {   # LENGTH -> pretrain options (warm-up 5 % of the run, as in the profile)
  case $1 in
    live) echo "--epochs 1 --max-steps 48 --warmup-epochs 0.1" ;;
    e*) local n=${1#e}; echo "--epochs $n --warmup-epochs $(awk "BEGIN{print $n/20}")" ;;
    *) echo "unknown length $1 (live or eN)" >&2; exit 2 ;;
  esac
}

arm_name() {   # OBJECTIVE LENGTH -> the experiment's arm name (byol-e10, object-live, ...)
  local prefix=byol; [ "$1" = object ] && prefix=object
  echo "$prefix-$2"
}

start=$(date +%s)
arms=() pids=()
for objective in $OBJECTIVES; do
  for length in $LENGTHS; do
    name=$(arm_name "$objective" "$length")
    # shellcheck disable=SC2046,SC2086
    cmd=("$PY" -m byol_lite pretrain --params book/params/cpu-full.yaml --objective "$objective" --device "$DEVICE"
         --no-progress --out-dir "$OUT/pretrain-$name" --resume $(length_args "$length") ${PRETRAIN_ARGS:-})
    if [ "$DEVICE" = cpu ]; then "${cmd[@]}" > "$OUT/pretrain-$name.log" 2>&1
    else "${cmd[@]}" > "$OUT/pretrain-$name.log" 2>&1 & pids+=($!); fi
    arms+=(--arm "$name=$OUT/pretrain-$name")
  done
done
for pid in "${pids[@]}"; do wait "$pid"; done   # a failed run stops the script (set -e)
echo "pretraining: $(( $(date +%s) - start )) s"

start=$(date +%s)
"$PY" -m byol_lite experiment book/params/experiment-cpu.yaml --device "$DEVICE" --jobs "$JOBS" \
  --out-dir "$EXPERIMENT" "${arms[@]}" "$@"
echo "fine-tuning: $(( $(date +%s) - start )) s"
