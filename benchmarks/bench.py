"""End-to-end BYOL pretraining throughput: byol_lite against lightly and byol-pytorch.

One step = augment a batch of uint8 images into two views + forward/backward + optimiser step +
EMA target update. Every contender trains a torchvision ResNet-18/50 with the same image size,
batch, projector/predictor sizes (4096 → 256) and thread count. Each one lives in its own worker
process (so peak RSS / CUDA memory is its own), and the parent interleaves timed windows across
them (A B C A B C ...), so load from other users of the machine hits every contender alike.
Reported: the median images/s over the windows, and each contender's "model-only" floor (the
same step on views made beforehand), which shows what augmentation costs.

    python benchmarks/bench.py                        # CPU: ResNet-18, 64 px, batch 64, 2 threads
    python benchmarks/bench.py --device cuda --backbone resnet50 --image-size 224 --batch 128

The peers are benchmark-only dependencies (benchmarks/requirements.txt); a missing one is
skipped with a note. Each runs in its documented default mode: lightly's BYOLTransform on PIL
images through a DataLoader, byol-pytorch's BYOL wrapper with its built-in batch augmentation.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJ_HIDDEN, PROJ_DIM = 4096, 256


# ----------------------------------------------------------------------------------------------
# Workers: each builds one contender and answers "run MODE STEPS" with the images/s it measured.
# ----------------------------------------------------------------------------------------------

def _images(args, torch):
    """Fixed uint8 images, stored 1.25× the view size as byol_lite's datasets are."""
    side = round(args.image_size * 1.25)
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (args.pool, 3, side, side), dtype=torch.uint8, generator=gen)


def _cycle(iterable_factory):
    while True:
        yield from iterable_factory()


class ByolLite:
    """The step of ``byol_lite.pretrain.pretrain`` (same calls, same order, no logging)."""

    def __init__(self, args, torch, device, variant: str):
        sys.path.insert(0, str(ROOT))
        from byol_lite.method.optim import build_optimizer
        from byol_lite.pretrain import PretrainConfig, build_augment, build_model
        from byol_lite.device import autocast, resolve_channels_last

        self.torch, self.device = torch, device
        cfg = PretrainConfig(backbone=args.backbone, stem="imagenet", image_size=args.image_size,
                             batch_size=args.batch, proj_hidden=PROJ_HIDDEN, pred_hidden=PROJ_HIDDEN,
                             proj_dim=PROJ_DIM)
        compile_mode = False
        for opt in filter(None, variant.split("+")):   # "bf16+cl": precision bf16, channels_last on
            if opt in ("fp32", "bf16"):
                cfg.precision = opt
            elif opt in ("cl", "nocl"):
                cfg.channels_last = opt == "cl"
            elif opt in ("fuse", "sep"):
                cfg.fuse_views = opt == "fuse"
            elif opt in ("compile", "autotune"):
                compile_mode = "max-autotune-no-cudagraphs" if opt == "autotune" else None
            elif opt != "default":
                raise SystemExit(f"unknown byol_lite variant {opt!r} in --ours: use default, fp32, bf16, cl, nocl, "
                                 "fuse/sep (views in one forward or two), compile (inductor's default mode), "
                                 "autotune (max-autotune-no-cudagraphs)")
        self.channels_last = resolve_channels_last(device, cfg.channels_last)
        self.model = build_model(cfg).to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.compiled = compile_mode is not False
        if self.compiled:
            self.model.compile(mode=compile_mode)
        self.optimizer = build_optimizer(cfg.optimizer, self.model.trainable_parameters(), 0.1, cfg.weight_decay)
        self.augment = build_augment(cfg)
        self.autocast = lambda: autocast(device, cfg.precision)
        images = _images(args, torch)
        if device.type == "cuda":
            images = images.pin_memory()
        self.batches = _cycle(lambda: images.split(args.batch)[: len(images) // args.batch])
        self.step_no = 0
        self.fixed = self.views(next(self.batches))

    def views(self, batch):
        batch = batch.to(self.device, non_blocking=True)
        gen = self.torch.Generator().manual_seed(self.step_no)
        v1, v2 = self.augment(batch, gen)
        if self.channels_last:
            v1 = v1.contiguous(memory_format=self.torch.channels_last)
            v2 = v2.contiguous(memory_format=self.torch.channels_last)
        return v1, v2

    def train(self, v1, v2):
        with self.autocast():
            out = self.model(v1, v2)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()
        self.model.update_target(0.99)
        self.step_no += 1

    def step(self, model_only: bool):
        self.train(*(self.fixed if model_only else self.views(next(self.batches))))


class Lightly:
    """lightly's documented BYOL recipe (examples/pytorch/byol.py), views made per image in PIL."""

    def __init__(self, args, torch, device):
        import torchvision
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad, update_momentum
        from lightly.transforms.byol_transform import BYOLTransform, BYOLView1Transform, BYOLView2Transform
        from torch import nn
        from torchvision.transforms.functional import to_pil_image

        self.torch, self.device, self.update_momentum = torch, device, update_momentum
        resnet = getattr(torchvision.models, args.backbone)()
        feat = resnet.fc.in_features
        self.backbone = nn.Sequential(*list(resnet.children())[:-1]).to(device)
        self.projection_head = BYOLProjectionHead(feat, PROJ_HIDDEN, PROJ_DIM).to(device)
        self.prediction_head = BYOLPredictionHead(PROJ_DIM, PROJ_HIDDEN, PROJ_DIM).to(device)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        params = [*self.backbone.parameters(), *self.projection_head.parameters(),
                  *self.prediction_head.parameters()]
        self.optimizer = torch.optim.SGD(params, lr=0.06)
        self.criterion = NegativeCosineSimilarity()
        transform = BYOLTransform(view_1_transform=BYOLView1Transform(input_size=args.image_size),
                                  view_2_transform=BYOLView2Transform(input_size=args.image_size))
        pil = [to_pil_image(img) for img in _images(args, torch)]

        class Dataset(torch.utils.data.Dataset):
            def __len__(self):
                return len(pil)

            def __getitem__(self, i):
                return transform(pil[i]), 0

        loader = torch.utils.data.DataLoader(Dataset(), batch_size=args.batch, shuffle=True, drop_last=True,
                                             num_workers=args.workers, persistent_workers=args.workers > 0,
                                             pin_memory=device.type == "cuda")
        self.batches = _cycle(lambda: loader)
        (x0, x1), _ = next(self.batches)
        self.fixed = x0.to(device), x1.to(device)

    def _online(self, x):
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def _momentum(self, x):
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def step(self, model_only: bool):
        if model_only:
            x0, x1 = self.fixed
        else:
            (x0, x1), _ = next(self.batches)
            x0, x1 = x0.to(self.device, non_blocking=True), x1.to(self.device, non_blocking=True)
        self.update_momentum(self.backbone, self.backbone_momentum, m=0.99)
        self.update_momentum(self.projection_head, self.projection_head_momentum, m=0.99)
        p0, z0 = self._online(x0), self._momentum(x0)
        p1, z1 = self._online(x1), self._momentum(x1)
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()


class ByolPytorch:
    """byol-pytorch's ``BYOL`` wrapper (README usage), its default batch augmentation inside forward."""

    def __init__(self, args, torch, device):
        import torchvision
        from byol_pytorch import BYOL

        self.torch, self.device = torch, device
        self.learner = BYOL(getattr(torchvision.models, args.backbone)().to(device), image_size=args.image_size,
                            hidden_layer="avgpool", projection_size=PROJ_DIM, projection_hidden_size=PROJ_HIDDEN,
                            use_simplicial_embeddings=False)
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=3e-4)
        images = _images(args, torch)
        if device.type == "cuda":
            images = images.pin_memory()
        self.batches = _cycle(lambda: images.split(args.batch)[: len(images) // args.batch])
        # Model-only: the same wrapper with its augmentation replaced by "take the view made beforehand".
        self.fixed = self.learner.augment1(next(self.batches).to(device).float() / 255)
        self.identity = BYOL.__new__(BYOL)
        self.identity.__dict__ = dict(self.learner.__dict__)
        self.identity._modules = dict(self.learner._modules, augment1=torch.nn.Identity(),
                                      augment2=torch.nn.Identity())

    def step(self, model_only: bool):
        if model_only:
            loss = self.identity(self.fixed)
        else:
            loss = self.learner(next(self.batches).to(self.device, non_blocking=True).float() / 255)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.learner.update_moving_average()


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = args.worker
    if name.startswith("byol_lite"):
        contender = ByolLite(args, torch, device, name.partition(":")[2])
    elif name == "lightly":
        contender = Lightly(args, torch, device)
    elif name == "byol-pytorch":
        contender = ByolPytorch(args, torch, device)
    else:
        raise SystemExit(f"unknown contender {name!r}")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    flops = None
    if not getattr(contender, "compiled", False):
        # FLOPs of one step (forward + backward: what MFU counts), on views made beforehand
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            contender.step(model_only=True)
        flops = counter.get_total_flops() / args.batch
    print("ready", json.dumps({"flops_per_image": flops}), flush=True)
    for line in sys.stdin:
        mode, steps = line.split()
        model_only = mode == "model"
        sync()
        start = time.perf_counter()
        for _ in range(int(steps)):
            contender.step(model_only)
        sync()
        seconds = time.perf_counter() - start
        reply = {"ips": int(steps) * args.batch / seconds,
                 "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if device.type == "cuda":
            reply["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        print(json.dumps(reply), flush=True)


# ----------------------------------------------------------------------------------------------
# Parent: starts the workers, interleaves the windows, prints the table and the ratios.
# ----------------------------------------------------------------------------------------------

def _available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet50"])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every contender")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for lightly's PIL pipeline")
    p.add_argument("--windows", type=int, default=5, help="timed windows per contender and mode (median)")
    p.add_argument("--steps", type=int, default=3, help="steps per timed window")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per contender and mode first")
    p.add_argument("--pool", type=int, default=512, help="distinct images cycled through")
    p.add_argument("--ours", default="default,sep,fp32+cl",
                   help="byol_lite variants: 'default' (its defaults: channels_last; bf16 on CUDA and on CPUs "
                        "with bf16 instructions, else fp32; both views in one forward) or '+'-joined fp32/bf16, "
                        "cl/nocl, fuse/sep (views in one forward or two), compile/autotune (torch.compile, default "
                        "or max-autotune-no-cudagraphs)")
    p.add_argument("--peers", default="lightly,byol-pytorch")
    p.add_argument("--peak-tflops", type=float, help="the device's dense peak at the step's precision (H100/H200 "
                                                       "SXM bf16: 989), to report the MFU of end-to-end steps")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)

    names = ["byol_lite" if v == "default" else f"byol_lite:{v}" for v in dict.fromkeys(args.ours.split(","))]
    for peer in filter(None, args.peers.split(",")):
        if _available(peer.replace("-", "_")):
            names.append(peer)
        else:
            print(f"note: {peer} is not installed; skipped (pip install -r benchmarks/requirements.txt "
                  f"-c requirements.txt)")
    passthrough = list(argv if argv is not None else sys.argv[1:])
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    procs, flops = {}, {}
    for name in names:
        procs[name] = subprocess.Popen([sys.executable, __file__, *passthrough, "--worker", name], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        word, _, info = procs[name].stdout.readline().partition(" ")
        if word != "ready":
            raise SystemExit(f"worker {name} failed to start (its error is above)")
        flops[name] = json.loads(info)["flops_per_image"]

    def ask(name, mode, steps):
        procs[name].stdin.write(f"{mode} {steps}\n")
        procs[name].stdin.flush()
        return json.loads(procs[name].stdout.readline())

    modes = ("e2e", "model")
    warmup_s = {}      # the untimed first steps: where torch.compile spends its compile time
    for name in names:
        for mode in modes:
            warmup_s[name, mode] = args.warmup * args.batch / ask(name, mode, args.warmup)["ips"]
    samples = {(n, m): [] for n in names for m in modes}
    memory = {}
    for _ in range(args.windows):
        for mode in modes:
            for name in names:
                r = ask(name, mode, args.steps)
                samples[name, mode].append(r["ips"])
                memory[name] = r.get("cuda_mb", r["rss_mb"])
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()

    median = {k: statistics.median(v) for k, v in samples.items()}
    mem_kind = "peak CUDA MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(f"\n{args.backbone}, {args.image_size} px, batch {args.batch}, {args.threads} threads, {args.device}; "
          f"median of {args.windows} windows x {args.steps} steps; load average {os.getloadavg()[0]:.2f}")
    print(f"{'contender':<20}{'end-to-end img/s':>18}{'model-only img/s':>18}{'e2e/model':>11}{mem_kind:>15}")
    # byol_lite's variants all compute the same step: a compiled one takes the eager count
    ours_flops = next((f for n, f in flops.items() if n.startswith("byol_lite") and f), None)
    flops = {n: f or (ours_flops if n.startswith("byol_lite") else None) for n, f in flops.items()}
    achieved = {n: median[n, "e2e"] * flops[n] / 1e12 for n in names if flops[n]}
    for name in names:
        e2e, mod = median[name, "e2e"], median[name, "model"]
        line = f"{name:<20}{e2e:>18.1f}{mod:>18.1f}{e2e / mod:>11.2f}{memory[name]:>15.0f}"
        line += f"{warmup_s[name, 'e2e']:>8.1f} s warm-up"
        if name in achieved:
            line += f"{flops[name] / 1e9:>10.1f} GFLOP/img {achieved[name]:.3f} TFLOP/s"
            if args.peak_tflops:
                line += f" MFU {achieved[name] / args.peak_tflops:.1%}"
        print(line)
    ratios = {}
    for ours in (n for n in names if n.startswith("byol_lite")):
        for peer in (n for n in names if not n.startswith("byol_lite")):
            ratios[f"{ours} / {peer}"] = median[ours, "e2e"] / median[peer, "e2e"]
    for key, value in ratios.items():
        print(f"end-to-end {key}: {value:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "median": {f"{n} {m}": v for (n, m), v in
                                                                              median.items()},
                                               "samples": {f"{n} {m}": v for (n, m), v in samples.items()},
                                               "memory_mb": memory, "ratios": ratios,
                                               "warmup_s": {f"{n} {m}": v for (n, m), v in warmup_s.items()},
                                               "flops_per_image": flops, "e2e_tflops": achieved,
                                               "mfu": {n: a / args.peak_tflops for n, a in achieved.items()}
                                               if args.peak_tflops else None,
                                               "loadavg": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
