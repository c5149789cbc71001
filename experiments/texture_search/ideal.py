"""F4: BYOL whose two views come from two renders of one layout (nuisances resampled), then probe."""
import sys, time, torch, math
import torch.nn.functional as F
import harness as H, tex
from byol_lite.pretrain import PretrainConfig, build_model, build_augment
from byol_lite.method.optim import build_optimizer, scaled_lr, warmup_cosine
from byol_lite.method.byol import cosine_tau

args = dict(a.split("=", 1) for a in sys.argv[2:])
name = sys.argv[1]
steps = int(args.pop("max_steps", 1200))
tau0 = float(args.pop("tau", 0.99))
save_at = [int(v) for v in args.pop("save_at", "").split(",") if v]
snaps = {}
same = args.pop("same", "0") == "1"        # control: both views from render A (= ordinary BYOL on A)
single = args.pop("single", "0") == "1"
obj = args.pop("obj", "0") == "1"       # object-level: regions = the layout's label map (an ideal-regions control)
geo = args.pop("geo", "0") == "1"       # the two renders share orientation and period
objective = args.pop("loss", "byol")    # byol | nce (InfoNCE on the online projections, T 0.2) | sup (image-level
                                        # cross-entropy on the family: the views' supervised ceiling; single only)
path = H.DATA / f"pairs{'-single' if single else ''}{'-geo' if geo else ''}-u8000.pt"
if obj:
    rpath = H.DATA / "pairs-u8000-labels.pt"
    if not rpath.is_file():
        torch.save(tex.generate(8000, seed=0, code=7, workers=1, pairs=True)[1], rpath)
    regions = torch.load(rpath).to(torch.uint8)
    regions[regions == 255] = 6
    regions = regions[:, None]
if path.is_file():
    pairs = torch.load(path)
else:
    pairs = tex.generate(8000, seed=0, code=7, workers=1, pairs=True, single=single, shared_geometry=geo)[0]
    torch.save(pairs, path)
if objective == "sup":
    lpath = H.DATA / "pairs-single-u8000-family.pt"
    if not lpath.is_file():
        torch.save(tex.generate(8000, seed=0, code=7, workers=1, pairs=True, single=True)[1][:, 0, 0].clone(), lpath)
    family = torch.load(lpath)
d = H.dataset("v1", workers=1)
cfg = PretrainConfig(width=16, image_size=32, batch_size=128, proj_hidden=1024, pred_hidden=1024, base_lr=0.45,
                     base_tau=0.99, **({"objective": "object", "num_regions": 7} if obj else {}))
seed = int(args.pop("seed", 0))     # pretraining seed: initialisation, batches and views
torch.manual_seed(seed)
model = build_model(cfg).to(memory_format=torch.channels_last)
if objective == "sup":
    model.online["projector"] = torch.nn.Linear(model.encoder.num_features, 6)
    model.predictor = torch.nn.Identity()
aug = build_augment(cfg)
from dataclasses import replace
cs = tuple(float(v) for v in args.pop("crop", "0.08,1.0").split(","))
aug.view1, aug.view2 = replace(aug.view1, crop_scale=cs), replace(aug.view2, crop_scale=cs)
if args.pop("noblur", "0") == "1":
    aug.view1, aug.view2 = replace(aug.view1, blur_p=0.0), replace(aug.view2, blur_p=0.0)
js = float(args.pop("jitter", 1.0))
if js != 1.0:
    from byol_lite.method.augment import paper_views
    v1, v2 = paper_views(cs[0], js)
    aug.view1, aug.view2 = replace(v1, crop_scale=cs), replace(v2, crop_scale=cs)
peak = scaled_lr(cfg.base_lr, cfg.batch_size)
optname = args.pop("optimizer", "lars")
if optname == "adamw":
    peak = float(args.pop("lr", 1e-3))
wd = float(args.pop("wd", cfg.weight_decay))
pred_mult = float(args.pop("pred_lr", 1.0))     # the predictor's LR as a multiple of the rest's
pred_ids = {id(p) for p in model.predictor.parameters()}
opts = [(build_optimizer(optname, [p for p in model.trainable_parameters() if id(p) not in pred_ids], peak, wd), 1.0)]
if pred_ids:
    opts.append((build_optimizer(optname, list(model.predictor.parameters()), peak, wd), pred_mult))
gen = torch.Generator().manual_seed(seed)
t = time.time()
model.train()
for step in range(steps):
    idx = torch.randint(0, len(pairs), (cfg.batch_size,), generator=gen)
    a, b = pairs[idx, :3], pairs[idx, 3:]
    if same:
        b = a
    p1 = aug.params(len(idx), 80, 80, aug.view1, gen)
    p2 = aug.params(len(idx), 80, 80, aug.view2, gen)
    v1 = aug.apply(a, p1, aug.view1).contiguous(memory_format=torch.channels_last)
    v2 = aug.apply(b, p2, aug.view2).contiguous(memory_format=torch.channels_last)
    lr = warmup_cosine(step, steps, round(0.05 * steps), peak)
    for opt, mult in opts:
        for g in opt.param_groups:
            g["lr"] = lr * mult
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if obj:
            from byol_lite.method.object_level import view_masks
            r = regions[idx]
            out = model(v1, v2, view_masks(r, p1, 32, 7), view_masks(r, p2, 32, 7))
        elif objective == "sup":
            logits = model.online["projector"](model.encoder(torch.cat([v1, v2]))[0])
        else:
            out = model(v1, v2)
    if objective == "nce":
        z = F.normalize(out.online_proj.float(), dim=1)
        sim = z @ z.T / 0.2
        sim.fill_diagonal_(float("-inf"))
        n = len(idx)
        loss = F.cross_entropy(sim, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))
    elif objective == "sup":
        loss = F.cross_entropy(logits.float(), family[idx].repeat(2))
    else:
        loss = out.loss
    for opt, _ in opts:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt, _ in opts:
        opt.step()
    if objective == "byol":
        model.update_target(cosine_tau(step, steps, tau0))
    if step + 1 in save_at:
        import copy; snaps[step + 1] = copy.deepcopy(model.encoder.state_dict())
    if step % 200 == 0:
        print(step, float(loss), flush=True)
H.log(kind="pretrain-ideal", name=name, steps=steps, same=same, objective=objective, seconds=round(time.time() - t),
      loss=float(loss))
torch.save(model.encoder.state_dict(), H.RUNS / f"{name}.pt")
H.global_probe(model.encoder, name)
H.evaluate_encoder(model.encoder, d, name, budgets=(16, 400))
for k, sd in snaps.items():
    model.encoder.load_state_dict(sd)
    H.global_probe(model.encoder, f"{name}@{k}")
    H.evaluate_encoder(model.encoder, d, f"{name}@{k}", budgets=(16,))
