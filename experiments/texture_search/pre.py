"""python pre.py NAME key=value ...: BYOL pretrain on a candidate set, then probe/kNN the encoder."""
import sys, time, json, torch
import harness as H
from byol_lite.pretrain import pretrain

args = dict(a.split("=", 1) for a in sys.argv[2:])
name = sys.argv[1]
dsname = args.pop("ds", "v1")
which = args.pop("which", "l4")
d = H.dataset(dsname, workers=1)
unl = H.pretraining_images(d, args.pop("unl", ""))
cfg = dict(width=16, image_size=32, batch_size=128, max_steps=300, base_lr=0.45, warmup_epochs=0.1, base_tau=0.99,
           precision="bf16", progress=False, rank_every=0, log_every=25, checkpoint_every=10**6, device="cpu",
           out_dir=H.RUNS / name, overwrite=True, proj_hidden=1024, pred_hidden=1024)
for k, v in args.items():
    cfg[k] = v
t = time.time()
res = pretrain(dataset=unl, **cfg)
sec = time.time() - t
h = res.history
H.log(kind="pretrain", name=name, ds=dsname, seconds=round(sec), cfg={k: v for k, v in cfg.items() if k not in ("out_dir",)},
      loss=[round(r["loss"], 3) for r in h[::max(1, len(h)//8)]], collapse=round(h[-1]["collapse_std"], 4),
      img_s=round(float(cfg.get("batch_size", 128)) * int(cfg["max_steps"]) / sec, 1))
H.global_probe(res.model.encoder, name)
H.evaluate_encoder(res.model.encoder, d, name, budgets=(16, 400), which=which)
