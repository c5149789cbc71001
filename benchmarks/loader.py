"""Images/s of pretraining's input pipeline alone: the embedded set's JPEGs decoded and resized by
DataLoader workers, as ``byol_lite.pretrain`` streams images it does not cache (views > 76 px).
Compared with a training step's images/s (benchmarks/bench.py), it says whether input keeps up.

    python benchmarks/loader.py --image-size 224 --batch 128 --workers 0,8,16
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from byol_lite.data.unlabeled import unlabeled_dataset  # noqa: E402
from byol_lite.pretrain import _batches, load_size  # noqa: E402
from byol_lite.training.loop import BatchPlan  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=224, help="view side (images load at 1.25x)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", default="0,8,16", help="comma-separated DataLoader worker counts")
    p.add_argument("--batches", type=int, default=20, help="timed batches per window, after one untimed")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--data-root", help="where the embedded set is (generated there if absent; default data/)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    images = unlabeled_dataset("synthetic", args.data_root, image_size=load_size(args.image_size), cache=False)
    result = {}
    for workers in (int(w) for w in args.workers.split(",")):
        rates = []
        for window in range(args.windows):
            steps = args.batches + 1
            plan = BatchPlan(range(len(images)), args.batch, window, 0, steps, slice(0, args.batch), drop_last=True)
            batches = iter(_batches(images, plan, workers, torch.cuda.is_available()))
            next(batches)                      # workers started and warm
            start = time.perf_counter()
            n = sum(len(b) for b in batches)
            rates.append(n / (time.perf_counter() - start))
        result[workers] = statistics.median(rates)
        print(f"{workers:3d} workers: {result[workers]:8.1f} images/s ({load_size(args.image_size)}-px JPEGs, "
              f"batch {args.batch}, median of {args.windows})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "images_per_s": result}, indent=1))


if __name__ == "__main__":
    main()
