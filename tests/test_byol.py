import copy

import pytest
import torch

from byol_lite import BYOL, build_backbone, cosine_tau, ema_update_
from byol_lite.optim import build_optimizer


def tiny_byol(predictor=True):
    torch.manual_seed(0)
    return BYOL(build_backbone("resnet18", stem="small", width=8), 64, 16, 64, predictor=predictor)


def test_target_has_no_predictor_and_starts_as_copy():
    model = tiny_byol()
    names = [n for n, _ in model.target.named_parameters()]
    assert names == [n for n, _ in model.online.named_parameters()]
    assert not any("predictor" in n for n, _ in model.target.named_modules())
    assert isinstance(model.predictor, torch.nn.Sequential) and model.predictor[0].in_features == 16
    for t, o in zip(model.target.parameters(), model.online.parameters()):
        assert torch.equal(t, o) and t.data_ptr() != o.data_ptr()


def test_no_gradient_reaches_the_target():
    model = tiny_byol()
    model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)).loss.backward()
    assert all(p.grad is None for p in model.target.parameters())
    assert all(not p.requires_grad for p in model.target.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert all(p.grad is not None for p in model.online.parameters())


def test_target_changes_only_by_the_ema_formula():
    model = tiny_byol()
    opt = build_optimizer("sgd", model.trainable_parameters(), lr=0.5, weight_decay=0.0)
    tau = 0.9
    for _ in range(3):
        before = [p.detach().clone() for p in model.target.parameters()]
        out = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        # The optimiser step leaves the target alone...
        for b, p in zip(before, model.target.parameters()):
            assert torch.equal(b, p)
        online = [p.detach().clone() for p in model.online.parameters()]
        model.update_target(tau)
        # ...and the update is exactly ξ ← τξ + (1 − τ)θ.
        for b, o, p in zip(before, online, model.target.parameters()):
            torch.testing.assert_close(p, tau * b + (1 - tau) * o, atol=1e-6, rtol=0)
    # The online network did move, so the check above was not vacuous.
    assert any(not torch.equal(t, o) for t, o in zip(model.target.parameters(), model.online.parameters()))


def test_ema_extremes_and_buffers():
    a, b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    bn_t, bn_o = torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    bn_o.running_mean.fill_(3.0)
    target, online = torch.nn.Sequential(copy.deepcopy(a), bn_t), torch.nn.Sequential(b, bn_o)
    start = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 1.0)
    assert all(torch.equal(s, p) for s, p in zip(start, target.parameters()))
    ema_update_(target, online, 0.0)
    assert all(torch.equal(o, p) for o, p in zip(online.parameters(), target.parameters()))
    assert torch.equal(bn_t.running_mean, torch.zeros(4))   # parameters only, not buffers


def test_ema_refuses_mismatched_networks():
    with pytest.raises(ValueError, match="differ in structure"):
        ema_update_(torch.nn.Linear(4, 4), torch.nn.Linear(4, 5), 0.5)


def test_cosine_tau_schedule():
    total = 1000
    assert cosine_tau(0, total, 0.996) == 0.996
    assert cosine_tau(total, total, 0.996) == 1.0
    assert cosine_tau(total // 2, total, 0.99) == pytest.approx(0.995)
    values = [cosine_tau(k, total, 0.97) for k in range(total + 1)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[1] > values[0] and values[-1] > values[-2]
