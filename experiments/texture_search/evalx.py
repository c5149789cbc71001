import sys, torch, harness as H
d = H.dataset("v1", workers=1)
for name in sys.argv[1:]:
    nm, which = name.split(":")
    enc = H.random_encoder()
    enc.load_state_dict(torch.load(H.RUNS / f"{nm}.pt")) if nm != "random" else None
    H.evaluate_encoder(enc, d, f"{nm}", budgets=(16,), which=which)
