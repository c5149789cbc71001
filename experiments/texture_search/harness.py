"""Fast falsifiers for candidate embedded sets: probe / kNN / fine-tune of random, BYOL and oracle encoders."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import tex  # noqa: E402

from byol_lite.method.backbones import build_backbone  # noqa: E402
from byol_lite.segmentation.metrics import ConfusionMatrix  # noqa: E402
from byol_lite.data.transforms import normalize  # noqa: E402

WORK = Path(os.environ.get("TEXTURE_SEARCH_DIR", "runs/texture_search"))   # data cache, encoders, log
DATA, RUNS, LOG = WORK / "data", WORK / "runs", WORK / "log.jsonl"
DATA.mkdir(parents=True, exist_ok=True)
RUNS.mkdir(exist_ok=True)


def log(**row):
    row["time"] = time.strftime("%H:%M:%S")
    print(json.dumps(row), flush=True)
    with open(LOG, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def dataset(name="v1", n_unl=8000, size=80, **kw):
    path = DATA / f"{name}-u{n_unl}-s{size}.pt"
    if path.is_file():
        return torch.load(path)
    t = time.time()
    d = {}
    for split, code, n in (("train", 1, 400), ("val", 2, 300), ("unl", 3, n_unl)):
        d[split] = tex.generate(n, seed=0, code=code, size=size, **kw)
    torch.save(d, path)
    print(f"generated {name} in {time.time() - t:.0f}s")
    return d


def pretraining_images(d, unl=""):
    """BYOL's unlabelled pool: ``single`` = 8,000 images of one texture each (generated once, cached), else the
    candidate set's unlabelled and train images (labels unused)."""
    if unl != "single":
        return torch.cat([d["unl"][0], d["train"][0]])
    path = DATA / "single-u8000.pt"
    if not path.is_file():
        torch.save(tex.generate(8000, seed=0, code=8, workers=1, single=True)[0], path)
    return torch.load(path)


@torch.no_grad()
def features(encoder, imgs, which="l4", batch=100):
    encoder.eval()
    out = []
    for i in range(0, len(imgs), batch):
        x = normalize(imgs[i:i + batch])
        b = encoder
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        l3 = b.layer3(b.layer2(b.layer1(x)))
        l4 = b.layer4(l3)
        if which == "l4":
            f = l4
        elif which == "l3":
            f = F.avg_pool2d(l3, 2)
        elif which == "l2":
            f = F.avg_pool2d(b.layer2(b.layer1(x)), 4)
        elif which == "l34":
            f = torch.cat([F.avg_pool2d(l3, 2), l4], 1)
        out.append(f.float())
    return torch.cat(out)


def miou(logits_or_pred, masks, n_classes):
    cm = ConfusionMatrix(n_classes)
    cm.update(logits_or_pred, masks)
    return cm.compute()["miou"]


def probe(ftr, mtr, fval, mval, n_classes=6, steps=300, lr=0.03, wd=1e-4):
    mean = ftr.mean((0, 2, 3), keepdim=True)
    std = ftr.std((0, 2, 3), keepdim=True) + 1e-6
    ftr, fval = (ftr - mean) / std, (fval - mean) / std
    head = torch.nn.Conv2d(ftr.shape[1], n_classes, 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    size = mtr.shape[-2:]
    # trained at a quarter of the mask resolution (nearest labels): 16x cheaper, evaluated at full size
    small = (size[0] // 4, size[1] // 4)
    mtr_s = F.interpolate(mtr[:, None].float(), size=small, mode="nearest")[:, 0].long()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * s / steps))
        logits = F.interpolate(head(ftr), size=small, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, mtr_s, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = torch.cat([F.interpolate(head(fval[i:i + 100]), size=size, mode="bilinear",
                                        align_corners=False).argmax(1) for i in range(0, len(fval), 100)])
    return miou(pred, mval, n_classes)


def knn(ftr, mtr, fval, mval, n_classes=6, k=10, temp=0.07):
    h, w = ftr.shape[-2:]
    lab = F.interpolate(mtr[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    bank = F.normalize(ftr.permute(0, 2, 3, 1).reshape(-1, ftr.shape[1]), dim=1)
    lab = lab.reshape(-1)
    keep = lab != 255
    bank, lab = bank[keep], lab[keep]
    preds = []
    for i in range(0, len(fval), 50):
        q = F.normalize(fval[i:i + 50].permute(0, 2, 3, 1).reshape(-1, ftr.shape[1]), dim=1)
        sim = q @ bank.T
        top, idx = sim.topk(min(k, len(lab)), dim=1)
        wts = (top / temp).exp()
        votes = torch.zeros(len(q), n_classes).scatter_add_(1, lab[idx], wts)
        votes = votes.view(-1, h, w, n_classes).permute(0, 3, 1, 2)
        preds.append(F.interpolate(votes, size=mval.shape[-2:], mode="bilinear", align_corners=False).argmax(1))
    return miou(torch.cat(preds), mval, n_classes)


def subsets(n_pool, n, seeds):
    return [torch.randperm(n_pool, generator=torch.Generator().manual_seed(100 + s))[:n] for s in seeds]


def evaluate_encoder(encoder, d, name, budgets=(4, 16, 64, 400), seeds=(0, 1, 2), which="l4", do_knn=True, **extra):
    xtr, mtr = d["train"]
    xval, mval = d["val"]
    t = time.time()
    ftr, fval = features(encoder, xtr, which), features(encoder, xval, which)
    res = {}
    for n in budgets:
        ps, ks = [], []
        for idx in subsets(len(xtr), n, seeds if n < len(xtr) else seeds[:1]):
            ps.append(probe(ftr[idx], mtr[idx], fval, mval))
            if do_knn:
                ks.append(knn(ftr[idx], mtr[idx], fval, mval))
        res[n] = {"probe": ps, "knn": ks}
    log(kind="eval", name=name, which=which, seconds=round(time.time() - t, 1),
        **{f"probe{n}": [round(v, 3) for v in r["probe"]] for n, r in res.items()},
        **{f"knn{n}": [round(v, 3) for v in r["knn"]] for n, r in res.items()}, **extra)
    return res


def random_encoder(width=16, seed=0):
    torch.manual_seed(seed)
    return build_backbone("resnet18", stem="small", width=width)


def random_crops(x, m, crop, gen):
    """Random crop (scale 0.5-2 rescale first) + flip of a uint8 batch and its masks."""
    n, _, h, w = x.shape
    out_x, out_m = [], []
    for i in range(n):
        sc = float(0.5 + 1.5 * torch.rand((), generator=gen))
        nh, nw = max(crop, round(h * sc)), max(crop, round(w * sc))
        xi = F.interpolate(x[i:i + 1].float(), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        mi = F.interpolate(m[i:i + 1, None].float(), size=(nh, nw), mode="nearest")[:, 0]
        y0 = int(torch.randint(0, nh - crop + 1, (), generator=gen))
        x0 = int(torch.randint(0, nw - crop + 1, (), generator=gen))
        xi, mi = xi[..., y0:y0 + crop, x0:x0 + crop], mi[..., y0:y0 + crop, x0:x0 + crop]
        if torch.rand((), generator=gen) < 0.5:
            xi, mi = xi.flip(-1), mi.flip(-1)
        out_x.append(xi)
        out_m.append(mi)
    return torch.cat(out_x).round().clamp(0, 255).to(torch.uint8), torch.cat(out_m).long()


class Seg(torch.nn.Module):
    def __init__(self, encoder, n_classes=6, head="fcn"):
        super().__init__()
        from torchvision.models.segmentation.fcn import FCNHead
        self.encoder = encoder
        c = encoder.num_features
        self.head = FCNHead(c, n_classes) if head == "fcn" else torch.nn.Conv2d(c, n_classes, 1)

    def forward(self, x):
        return F.interpolate(self.head(self.encoder(x)[1]), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def supervised(encoder, x, m, steps, batch=32, lr=3e-3, crop=64, seed=0, head="fcn", wd=1e-4, bf16=True,
               freeze=False):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Seg(encoder, head=head)
    if freeze:
        encoder.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    model.train()
    if freeze:
        encoder.eval()
    for s in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * s / steps))
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        xb, mb = random_crops(x[idx], m[idx], crop, gen)
        xb = normalize(xb).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), mb, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def seg_miou(model, x, m, n_classes=6):
    model.eval()
    preds = torch.cat([model(normalize(x[i:i + 100])).argmax(1) for i in range(0, len(x), 100)])
    return miou(preds, m, n_classes)


def global_probe(encoder, name, crop=32):
    """Image-level family accuracy from pooled features of native-scale 32-px crops of single-texture images."""
    p = DATA / "single-probe.pt"
    if not p.is_file():
        x, m = tex.generate(1200, seed=0, code=9, workers=1, single=True)
        torch.save((x, m[:, 0, 0]), p)
    x, y = torch.load(p)
    o = (x.shape[-1] - crop) // 2
    xc = x[..., o:o + crop, o:o + crop]
    encoder.eval()
    with torch.no_grad():
        f = torch.cat([encoder(normalize(xc[i:i + 200]))[0].float() for i in range(0, len(xc), 200)])
    f = (f - f[:600].mean(0)) / (f[:600].std(0) + 1e-6)
    lin = torch.nn.Linear(f.shape[1], 6)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(500):
        loss = F.cross_entropy(lin(f[:600]), y[:600])
        opt.zero_grad(); loss.backward(); opt.step()
    acc = (lin(f[600:]).argmax(1) == y[600:]).float().mean().item()
    log(kind="global_probe", name=name, acc=round(acc, 3))
    return acc
