#!/usr/bin/env bash
# Every GPU number in one run, in well under 10 minutes on one H100/H200 (no internet needed):
#   1. the CPU comparison (ResNet-18, 64 px, batch 64) pinned to 2 cores, as a clean-machine proxy
#      for the 2-core CPU (skip with CPU=0);
#   2. ResNet-50 at 224 px, batch 128 on the GPU: byol_lite (its CUDA defaults: bf16 autocast,
#      channels_last, both views in one forward, augmentation on the GPU, pinned memory,
#      non_blocking copies; fp32 too, and views forwarded separately) against lightly (PIL
#      pipeline, DataLoader workers) and byol-pytorch: end to end and model-only, peak memory,
#      FLOPs per image and the MFU against PEAK_TFLOPS (default 989, the H100/H200 SXM bf16 dense
#      peak); then compiled against eager (torch.compile);
#   3. the input pipeline alone: the embedded set's 280-px JPEGs through 0/8/16 DataLoader workers;
#   4. the torchrun smoke test on this one card (benchmarks/ddp_one_gpu.sh; skip with DDP=0).
# Peers come from wheels in .whl/ when present (see benchmarks/README.md), else from the environment.
# Everything lands in $OUT (default benchmarks/results/): JSON per part and log.txt.
# DEVICE=cpu TINY=1 runs every part in a tiny configuration on the CPU (tests/test_benchmarks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
RES=${OUT:-benchmarks/results}
mkdir -p "$RES"
exec > >(tee -a "$RES/log.txt") 2>&1
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-cuda}
if [ "${TINY:-0}" = 1 ]; then   # seconds on a CPU: checks the script, measures nothing
    GPU_ARGS=(--backbone resnet18 --image-size 32 --batch 4 --threads 1 --windows 1 --steps 1 --warmup 1 --pool 8)
    LOADER_ARGS=(--image-size 32 --batch 4 --workers 0,1 --batches 2 --windows 1)
    COMPILED=""
else
    GPU_ARGS=(--backbone resnet50 --image-size 224 --batch 128 --threads 8 --workers 8 --windows 5 --steps 5
              --warmup 3 --pool 1024)
    LOADER_ARGS=(--image-size 224 --batch 128 --workers 0,8,16)
    COMPILED=default+compile,sep+compile
fi
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.cuda.get_device_name() if torch.cuda.is_available() else None)"
if [ "${CPU:-1}" = 1 ]; then
    lscpu | grep -E "Model name|Flags" | sed 's/\(Flags:\).*\(avx512_bf16\).*/\1 ... \2 .../' | cut -c1-120 || true
    taskset -c 0,1 $PY benchmarks/bench.py --threads 2 --json "$RES/cpu.json"
fi
PEAK=(--peak-tflops "${PEAK_TFLOPS:-989}")
$PY benchmarks/bench.py --device "$DEVICE" "${GPU_ARGS[@]}" --ours default,sep,fp32+cl "${PEAK[@]}" \
    --json "$RES/gpu.json"
if [ -n "$COMPILED" ]; then      # compiled against eager in one run (compile time not in the windows)
    $PY benchmarks/bench.py --device "$DEVICE" "${GPU_ARGS[@]}" --ours "default,$COMPILED" --peers "" "${PEAK[@]}" \
        --json "$RES/gpu-compiled.json"
fi
$PY benchmarks/loader.py "${LOADER_ARGS[@]}" --json "$RES/loader.json"
if [ "${DDP:-1}" = 1 ]; then
    DEVICE=$DEVICE PYTHON=$PY OUT_DIR="$RES/ddp_one_gpu" bash benchmarks/ddp_one_gpu.sh
fi
echo "done: $RES"
