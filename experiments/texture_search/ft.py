"""Fine-tune at 16 labels (3 nested-free subsets) from random init and from a saved encoder; val mIoU."""
import sys, time, torch, harness as H
d = H.dataset("v1", workers=1)
xtr, mtr = d["train"]; xval, mval = d["val"]
for arm in sys.argv[1:]:
    for lr in (3e-3, 1e-3):
        res = []
        t = time.time()
        for s, idx in enumerate(H.subsets(len(xtr), 16, (0, 1, 2))):
            enc = H.random_encoder(seed=s)
            if arm != "random":
                enc.load_state_dict(torch.load(H.RUNS / f"{arm}.pt"))
            model = H.supervised(enc, xtr[idx], mtr[idx], steps=200, batch=16, lr=lr, crop=64, seed=s)
            res.append(round(H.seg_miou(model, xval, mval), 3))
        H.log(kind="finetune16", name=arm, lr=lr, steps=200, batch=16, miou=res, seconds=round(time.time() - t))
