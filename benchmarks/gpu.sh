#!/usr/bin/env bash
# The benchmark on a GPU machine without internet, in well under 5 minutes on one H100/H200:
#   1. the CPU comparison (ResNet-18, 64 px, batch 64) pinned to 2 cores, as a clean-machine proxy
#      for the 2-core CPU target (skip with CPU=0);
#   2. ResNet-50 at 224 px, batch 128 on the GPU: byol_lite (its CUDA defaults: bf16 autocast,
#      channels_last, augmentation on the GPU, pinned memory, non_blocking copies; fp32 too, for
#      equal precision) against lightly (PIL pipeline, 8 DataLoader workers) and byol-pytorch.
# Peers come from wheels in .whl/ when present (see benchmarks/README.md), else from the environment.
# Results land in $OUT (or benchmarks/results/) as JSON next to the printed tables. COMPILE=1 adds torch.compile.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
RES=${OUT:-benchmarks/results}
mkdir -p "$RES"
export PYTHONUNBUFFERED=1
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
if [ "${CPU:-1}" = 1 ]; then
    lscpu | grep -E "Model name|Flags" | sed 's/\(Flags:\).*\(avx512_bf16\).*/\1 ... \2 .../' | cut -c1-120 || true
    taskset -c 0,1 $PY benchmarks/bench.py --threads 2 --json "$RES/cpu.json"
fi
EXTRA=()
[ "${COMPILE:-0}" = 1 ] && EXTRA+=(--compile)
$PY benchmarks/bench.py --device cuda --backbone resnet50 --image-size 224 --batch 128 --threads 8 --workers 8 \
    --ours default,fp32+cl --windows 5 --steps 5 --warmup 3 --pool 1024 "${EXTRA[@]}" --json "$RES/gpu.json"
