"""BYOL on one unlabelled set with views that also randomise what the paper's views leave alone.

python rot.py NAME unl=single|layout rotate=1 hue=0.5 seed=0 max_steps=300 [lr=0.45 eta=0.001 ...]

The texture families' orientation is random per image, and the paper's views (crop, flip, jitter with
hue +-0.1) keep it: two views of one image share orientation and most of its colours, which BYOL can match
instead of the family. ``rotate=1`` turns every view by its own angle (uniform 0-360 degrees, reflected
borders, before the crop); ``hue`` widens the hue shift (0.5: any hue). Then probes as the other scripts.
"""
import copy
import math
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

import harness as H
from byol_lite.method.augment import BYOLAugment
from byol_lite.method.byol import cosine_tau
from byol_lite.method.optim import build_optimizer, scaled_lr, warmup_cosine
from byol_lite.pretrain import PretrainConfig, build_augment, build_model

args = dict(a.split("=", 1) for a in sys.argv[2:])
name = sys.argv[1]
steps = int(args.pop("max_steps", 300))
seed = int(args.pop("seed", 0))
unl = args.pop("unl", "single")
rotate = args.pop("rotate", "0") == "1"
hue = float(args.pop("hue", 0.1))
crop_min = float(args.pop("crop", 0.08))
batch = int(args.pop("batch", 128))
width = int(args.pop("width", 16))
size = int(args.pop("size", 32))
base_lr = float(args.pop("lr", 0.45))     # LARS, per 256 images
eta = float(args.pop("eta", 1e-3))        # LARS trust coefficient: a step moves a tensor by ~lr * eta of its norm
save_at = [int(v) for v in args.pop("save_at", "").split(",") if v]
budgets = tuple(int(v) for v in args.pop("budgets", "16,400").split(","))
assert not args, f"unknown arguments {args}"

d = H.dataset("v1", workers=1)
images = H.pretraining_images(d, unl)


class RotatingAugment(BYOLAugment):
    """The package's views, each turned first by its own uniform angle (reflect-padded, so no corners)."""

    def __init__(self, *a, angles_from=None, **kw):
        super().__init__(*a, **kw)
        self.gen = angles_from

    def apply(self, images, params, cfg):
        x = images.float() / 255
        n = len(x)
        a = torch.rand(n, generator=self.gen) * 2 * math.pi
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return super().apply(x.clamp(0, 1), params, cfg)


cfg = PretrainConfig(width=width, image_size=size, batch_size=batch, proj_hidden=1024, pred_hidden=1024,
                     base_lr=base_lr, base_tau=0.99, blur_p1=0.0, blur_p2=0.0, crop_min_scale=crop_min)
torch.manual_seed(seed)
model = build_model(cfg).to(memory_format=torch.channels_last)
base = build_augment(cfg)
v1, v2 = (replace(v, hue=hue) for v in (base.view1, base.view2))
gen = torch.Generator().manual_seed(seed)
aug = (RotatingAugment(size, v1, v2, angles_from=torch.Generator().manual_seed(seed + 7)) if rotate
       else BYOLAugment(size, v1, v2))
peak = scaled_lr(cfg.base_lr, batch)
opt = build_optimizer("lars", model.trainable_parameters(), peak, cfg.weight_decay)
for g in opt.param_groups:
    g["trust_coefficient"] = eta
snaps = {}
t = time.time()
model.train()
for step in range(steps):
    idx = torch.randint(0, len(images), (batch,), generator=gen)
    x1, x2 = aug(images[idx], gen)
    x1, x2 = (v.contiguous(memory_format=torch.channels_last) for v in (x1, x2))
    lr = warmup_cosine(step, steps, round(0.05 * steps), peak)
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x1, x2)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    opt.step()
    model.update_target(cosine_tau(step, steps, cfg.base_tau))
    if step + 1 in save_at:
        snaps[step + 1] = copy.deepcopy(model.encoder.state_dict())
    if step % 100 == 0:
        print(step, float(out.loss), flush=True)
H.log(kind="pretrain-rot", name=name, unl=unl, rotate=rotate, hue=hue, seed=seed, steps=steps, batch=batch,
      width=width, size=size, crop=crop_min, base_lr=base_lr, eta=eta, seconds=round(time.time() - t),
      loss=round(float(out.loss), 4))
torch.save(model.encoder.state_dict(), H.RUNS / f"{name}.pt")
# A copy: state_dict() holds the live tensors, which loading the snapshots below overwrites (an earlier version
# evaluated the last snapshot twice and called the second one the end of the run).
final = copy.deepcopy(model.encoder.state_dict())
for k, sd in [*snaps.items(), (steps, final)]:
    model.encoder.load_state_dict(sd)
    tag = name if k == steps else f"{name}@{k}"
    H.global_probe(model.encoder, tag)
    H.evaluate_encoder(model.encoder, d, tag, budgets=budgets if k == steps else (16,))
