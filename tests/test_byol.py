import copy

import pytest
import torch

from byol_lite import BYOL, build_backbone, cosine_tau, ema_update_
from byol_lite.method.optim import build_optimizer


def tiny_byol(predictor=True, predictor_side="online"):
    torch.manual_seed(0)
    return BYOL(build_backbone("resnet18", stem="small", width=8), 64, 16, 64, predictor=predictor,
                predictor_side=predictor_side)


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


def test_default_is_the_papers_predictor_on_the_online_side():
    default, explicit = tiny_byol(), tiny_byol(predictor_side="online")
    assert isinstance(default.target_predictor, torch.nn.Identity)
    # Same modules and the same initial weights: the option adds nothing to the default model.
    a, b = default.state_dict(), explicit.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any("target_predictor" in k for k in a)       # old checkpoints still load


def test_seed_variant_puts_a_frozen_predictor_after_the_target_only():
    model = tiny_byol(predictor_side="target")
    assert isinstance(model.predictor, torch.nn.Identity)           # the online network has none
    q = model.target_predictor
    assert isinstance(q, torch.nn.Sequential) and (q[0].in_features, q[-1].out_features) == (16, 16)
    assert isinstance(q[1], torch.nn.BatchNorm1d)
    # The target's output is its projection passed through that predictor.
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    out = model(x1, x2)
    with torch.no_grad():
        z_t = model.target["projector"](model.target["encoder"](x1)[0])
        torch.testing.assert_close(out.target_proj[:4], q(z_t))
    torch.testing.assert_close(out.online_pred, out.online_proj)     # no online predictor: p = z
    # No gradient reaches the target or its predictor, and neither is handed to the optimiser.
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in [*model.target.parameters(), *q.parameters()])
    assert all(p.grad is not None for p in model.online.parameters())
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.online.parameters()}


def test_seed_variant_ema_covers_encoder_and_projector_only():
    model = tiny_byol(predictor_side="target")
    names = [n for n, _ in model.target.named_parameters()]
    assert names == [n for n, _ in model.online.named_parameters()]
    q_start = [p.clone() for p in model.target_predictor.parameters()]
    opt = build_optimizer("sgd", model.trainable_parameters(), lr=0.5, weight_decay=0.0)
    before = [p.detach().clone() for p in model.target.parameters()]
    out = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16))
    out.loss.backward()
    opt.step()
    model.update_target(0.5)
    for b, o, p in zip(before, model.online.parameters(), model.target.parameters()):
        torch.testing.assert_close(p, 0.5 * b + 0.5 * o, atol=1e-6, rtol=0)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.target.parameters()))
    # The seed gives the target's predictor no update rule: nothing online to average, no gradient.
    assert all(torch.equal(s, p) for s, p in zip(q_start, model.target_predictor.parameters()))


def test_predictor_side_is_checked():
    with pytest.raises(ValueError, match="valid values are: online, target"):
        tiny_byol(predictor_side="both")
    with pytest.raises(ValueError, match="needs predictor=True"):
        tiny_byol(predictor=False, predictor_side="target")


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
