"""The convolution floor of a BYOL step: a bare torchvision ResNet with nothing else in the step.

A BYOL step runs the online encoder forward and backward on two views and the target encoder
forward (no gradient) on the same two views. This times exactly that for a plain torchvision
ResNet, per precision and memory format, and prints the images/s a step could reach if heads,
loss, optimiser, EMA and augmentation cost nothing: the ceiling for any BYOL implementation
with per-view BatchNorm on this machine. bench.py's throughputs divided by these say how much of
the step is spent outside the encoders.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/model_bound.py          # ResNet-18, 64 px, batch 64
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision


def timed(fn, repeats: int) -> float:
    fn()                                   # warm-up: oneDNN builds its kernels on first use
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64, help="images per view")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.arch}, {args.image_size} px, 2 views x {args.batch}, {args.threads} threads")
    print(f"{'precision':9s} {'format':6s} {'online fwd+bwd ms':>18s} {'target fwd ms':>14s} {'ceiling img/s':>14s}")
    for precision in ("fp32", "bf16"):
        for channels_last in (False, True):
            model = getattr(torchvision.models, args.arch)()
            model.fc = torch.nn.Identity()
            views = [torch.randn(args.batch, 3, args.image_size, args.image_size) for _ in range(2)]
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]

            def cast():
                return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

            def online():
                for v in views:
                    with cast():
                        y = model(v)
                    y.float().sum().backward()

            def target():
                with torch.no_grad(), cast():
                    for v in views:
                        model(v)

            t_online, t_target = timed(online, args.repeats), timed(target, args.repeats)
            print(f"{precision:9s} {'cl' if channels_last else 'nchw':6s} {1e3 * t_online:18.0f} "
                  f"{1e3 * t_target:14.0f} {args.batch / (t_online + t_target):14.1f}", flush=True)


if __name__ == "__main__":
    main()
