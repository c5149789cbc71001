#!/usr/bin/env bash
# When does BYOL start to pay? The gain over random init as a function of the images BYOL has seen, on the
# embedded object-prototype set (embedded: objects), with a supervised encoder as the positive control.
# 1. Pretraining: the cpu-objects profile (book/params/cpu-objects.yaml, 1,024,000 images) once per seed,
#    writing the online encoder at 25.6k ... 768k images seen (snapshots of one run: its LR and tau schedules
#    are set for the whole length); SHORT_SEEDS run the same schedule paused after SHORT_STEPS steps.
# 2. The oracle: random init fine-tuned on all 320 labelled pool images (the ceiling, and with its encoder
#    probed at 16 labels, the most a frozen encoder can give).
# 3. The frozen probe of every encoder (experiments/gain_vs_images/probe.yaml), fine-tuning of random init
#    and the longest encoders (finetune.yaml), the probe of those and the oracle at 4, 64 and 320 labels
#    (labels.yaml), then the tables and plots (table.py).
#   2-core CPU: SEEDS="0 1" SHORT_SEEDS="2" experiments/gain_vs_images.sh   (two 1-thread runs at once)
# Environment: PY (default .venv/bin/python), SEEDS (default "0 1"), SHORT_SEEDS (default none), SHORT_STEPS
# (default 2400 = 307k images), RUNS (pretraining folders RUNS-sSEED; default runs/pretrain-cpu-objects),
# OUT (default runs/gain-vs-images), TABLE (default experiments/results/gain-vs-images), PARALLEL (1: the
# pretraining runs at once, one thread each; default 1), JOBS (fine-tuning runs at once; default 2).
# Interrupted? Run it again: everything resumes.
set -euo pipefail
shopt -s nullglob
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0 1}
SHORT_SEEDS=${SHORT_SEEDS:-}
SHORT_STEPS=${SHORT_STEPS:-2400}
RUNS=${RUNS:-runs/pretrain-cpu-objects}
OUT=${OUT:-runs/gain-vs-images}
TABLE=${TABLE:-experiments/results/gain-vs-images}
PARALLEL=${PARALLEL:-1}
JOBS=${JOBS:-2}
mkdir -p "$OUT"

pids=()
for seed in $SEEDS $SHORT_SEEDS; do
  stop=0
  for s in $SHORT_SEEDS; do [ "$s" = "$seed" ] && stop=$SHORT_STEPS; done
  cmd=("$PY" -m byol_lite pretrain --params book/params/cpu-objects.yaml --seed "$seed" --out-dir "$RUNS-s$seed"
       --stop-after-steps "$stop" --resume)
  if [ "$PARALLEL" = 1 ]; then OMP_NUM_THREADS=1 "${cmd[@]}" > "$RUNS-s$seed.log" 2>&1 & pids+=($!)
  else "${cmd[@]}" > "$RUNS-s$seed.log" 2>&1; fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

"$PY" -m byol_lite finetune --params experiments/gain_vs_images/oracle.yaml --out-dir "$OUT/oracle" --resume
"$PY" experiments/gain_vs_images/table.py encoder "$OUT/oracle" "$OUT/oracle-backbone.pt"

arms=(--arm oracle="$OUT/oracle-backbone.pt")
longest=()
for seed in $SEEDS $SHORT_SEEDS; do
  for f in "$RUNS-s$seed"/snapshots/backbone-*.pt; do
    n=${f##*backbone-}; arms+=(--arm "s$seed-${n%.pt}=$f")
  done
  if [ -f "$RUNS-s$seed/done.json" ]; then
    n=$("$PY" -c "import json,sys; d, c = (json.load(open(f)) for f in sys.argv[1:]); print(d['steps'] * c['batch_size'])" \
        "$RUNS-s$seed/done.json" "$RUNS-s$seed/config.json")
    arms+=(--arm "s$seed-$n=$RUNS-s$seed/backbone.pt"); longest+=(--arm "s$seed-$n=$RUNS-s$seed/backbone.pt")
  fi
done
"$PY" -m byol_lite experiment experiments/gain_vs_images/probe.yaml --out-dir "$OUT/probe" --jobs "$JOBS" "${arms[@]}"
"$PY" -m byol_lite experiment experiments/gain_vs_images/finetune.yaml --out-dir "$OUT/finetune" --jobs "$JOBS" \
  "${longest[@]}"
"$PY" -m byol_lite experiment experiments/gain_vs_images/labels.yaml --out-dir "$OUT/labels" --jobs "$JOBS" \
  --arm oracle="$OUT/oracle-backbone.pt" "${longest[@]}"
"$PY" experiments/gain_vs_images/table.py table "$OUT" "$TABLE"
