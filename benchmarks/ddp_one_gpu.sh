#!/usr/bin/env bash
# Smoke test of the torchrun path on ONE CUDA GPU: a few steps of pretraining and fine-tuning started
# by torchrun (--nproc_per_node=1), as a multi-GPU run is started. Prints each check; exits non-zero
# on the first that fails. About a minute on a recent GPU. Usage, from the repository root:
#   bash benchmarks/ddp_one_gpu.sh            # PYTHON=/path/to/python to choose the interpreter
# DEVICE=cpu runs the same steps on the CPU (a check of this script, not of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT_DIR:-runs/ddp_one_gpu}
DEVICE=${DEVICE:-cuda}
rm -rf "$OUT"

if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible'; print('GPU:', torch.cuda.get_device_name(0))"
    echo "check: CUDA is available"
fi

"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m byol_lite pretrain --device "$DEVICE" \
    --image-size 64 --width 16 --batch-size 64 --max-steps 20 --log-every 5 --rank-every 10 \
    --checkpoint-every 10 --no-progress --out-dir "$OUT/pretrain"
"$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m byol_lite finetune --device "$DEVICE" \
    --init "$OUT/pretrain" --steps 20 --batch-size 16 --log-every 5 --checkpoint-every 10 --no-progress \
    --out-dir "$OUT/finetune"

"$PY" - "$OUT" "$DEVICE" <<'PYEOF'
import json, math, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "pretrain" / "metrics.jsonl").read_text().splitlines()]
assert (out / "pretrain" / "done.json").is_file() and rows[-1]["step"] == 20
assert all(math.isfinite(r["loss"]) for r in rows) and 0 < rows[-1]["loss"] < 8
print(f"check: pretraining under torchrun finished 20 steps; loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}, "
      f"{rows[-1]['images_per_s']:.0f} images/s")
ckpt = torch.load(out / "pretrain" / "last.pt", map_location="cpu", weights_only=True)
config = json.loads((out / "pretrain" / "config.json").read_text())
assert config["device"] == sys.argv[2] and any(v.is_cuda for v in torch.load(out / "pretrain" / "last.pt",
    weights_only=True)["model"].values()) == (sys.argv[2] == "cuda")
print(f"check: the run trained on {sys.argv[2]} (the checkpoint's tensors were saved from there)")
names = [k for k in ckpt["model"] if k.endswith("running_var")]
assert names and not any(k.startswith("module.") for k in ckpt["model"])
print("check: checkpoint holds plain (unwrapped) parameter names, online and target")
done = json.loads((out / "finetune" / "done.json").read_text())
assert done["steps"] == 20 and 0 <= done["metrics"]["miou"] <= 1
print(f"check: fine-tuning from the pretraining run finished; mIoU {done['metrics']['miou']:.4f}")
PYEOF
echo "all checks passed"
