"""byol_lite's batched view augmentation against kornia's per-sample equivalent, same device, same batch.

Both make BYOL's two views (paper distributions, Table 6: random resized crop, flip, colour jitter with
p 0.8, grayscale 0.2, Gaussian blur 1.0 / 0.1 with σ scaled to the view size, solarize 0 / 0.2) from a
uint8 batch, every image drawing its own parameters, then ImageNet-normalise. The timed windows
alternate between the contenders (A B A B ...) and the medians are printed, with their ratio.

    .venv/bin/python benchmarks/augment_bench.py --size 64 --batch 64 --threads 2
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
from byol_lite.data.transforms import normalize  # noqa: E402
from byol_lite.method.augment import BLUR_REFERENCE_SIZE, VIEW1, VIEW2, BYOLAugment, blur_kernel_size  # noqa: E402


def kornia_views(size: int, device):
    """The paper's two view pipelines written with kornia.augmentation (per-sample parameters)."""
    import kornia.augmentation as K

    def view(blur_p: float, solarize_p: float, cfg=VIEW1):
        scale = size / BLUR_REFERENCE_SIZE
        return K.AugmentationSequential(
            K.RandomResizedCrop((size, size), scale=cfg.crop_scale, ratio=cfg.crop_ratio, resample="bicubic"),
            K.RandomHorizontalFlip(p=cfg.flip_p),
            K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p),
            K.RandomGrayscale(p=cfg.grayscale_p),
            K.RandomGaussianBlur(blur_kernel_size(size), (cfg.blur_sigma[0] * scale, cfg.blur_sigma[1] * scale),
                                 p=blur_p),
            K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p),   # threshold 0.5, as the paper
        ).to(device)

    one, two = view(VIEW1.blur_p, VIEW1.solarize_p), view(VIEW2.blur_p, VIEW2.solarize_p, VIEW2)

    def views(batch: torch.Tensor):
        x = batch.float() / 255
        return normalize(one(x), inplace=True), normalize(two(x), inplace=True)
    return views


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=64, help="view side in pixels (images are 1.25x larger)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--windows", type=int, default=7, help="timed windows per contender (median)")
    p.add_argument("--steps", type=int, default=5, help="batches per timed window")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    side = round(args.size * 1.25)
    images = torch.randint(0, 256, (args.batch, 3, side, side), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)
    ours = BYOLAugment(args.size)
    gen = torch.Generator().manual_seed(0)
    contenders = {"byol_lite": lambda: ours(images, gen), "kornia": kornia_views(args.size, device)}
    contenders["kornia"] = (lambda f: lambda: f(images))(contenders["kornia"])
    times = {name: [] for name in contenders}
    for name, run in contenders.items():     # warm-up
        run()
    for _ in range(args.windows):
        for name, run in contenders.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(args.steps):
                run()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(args.batch * args.steps / (time.perf_counter() - t))
    result = {name: statistics.median(v) for name, v in times.items()}
    result["kornia / byol_lite"] = result["kornia"] / result["byol_lite"]
    print(f"{args.device}, {args.threads} threads, batch {args.batch}, {args.size}-px view pairs from "
          f"{side}-px uint8 images; medians of {args.windows} windows of {args.steps} batches")
    for name in contenders:
        print(f"  {name:10s} {result[name]:8.1f} images/s (a pair of views each)")
    print(f"  kornia / byol_lite: {result['kornia / byol_lite']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(vars(args), **result), indent=1))


if __name__ == "__main__":
    main()
