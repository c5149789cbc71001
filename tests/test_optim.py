import math

import pytest
import torch

from byol_lite.method.optim import (LARS, build_optimizer, param_groups,
                                   scaled_lr, trust_ratios, warmup_cosine)


def test_lars_step_matches_hand_computation():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 4))
    b = torch.nn.Parameter(torch.randn(8))
    w.grad, b.grad = torch.randn(8, 4), torch.randn(8)
    w0, b0, gw, gb = w.detach().clone(), b.detach().clone(), w.grad.clone(), b.grad.clone()
    opt = LARS(param_groups([w, b], weight_decay=0.1), lr=0.5, momentum=0.9, trust_coefficient=1e-3)
    opt.step()
    update = gw + 0.1 * w0
    trust = 1e-3 * w0.norm() / update.norm()
    torch.testing.assert_close(w.detach(), w0 - 0.5 * trust * update)
    # Biases: no weight decay, no trust ratio — plain momentum SGD.
    torch.testing.assert_close(b.detach(), b0 - 0.5 * gb)
    # Second step: momentum accumulates.
    w1 = w.detach().clone()
    w.grad = gw.clone()
    opt.step()
    update2 = gw + 0.1 * w1
    trust2 = 1e-3 * w1.norm() / update2.norm()
    torch.testing.assert_close(w.detach(), w1 - 0.5 * (0.9 * trust * update + trust2 * update2))


def test_current_trust_ratios_are_the_ones_the_step_applies():
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(8, 4))
    w2 = torch.nn.Parameter(5 * torch.randn(3, 8))
    b = torch.nn.Parameter(torch.randn(8))
    for p in (w1, w2, b):
        p.grad = torch.randn_like(p)
    w2.grad *= 100                  # another gradient scale: another ratio
    opt = LARS(param_groups([w1, w2, b], weight_decay=0.1), lr=0.5,
               momentum=0.9, trust_coefficient=1e-3)
    reported = opt.current_trust_ratios()
    assert [p is q for (p, _), q in zip(reported, (w1, w2))] == [True, True]
    for p, r in reported:           # the bias is not adapted: not reported
        expected = 1e-3 * p.norm() / (p.grad + 0.1 * p).norm()
        assert r == pytest.approx(expected.item(), rel=1e-5)
    assert reported[0][1] / reported[1][1] > 10
    before = [p.detach().clone() for p, _ in reported]
    decayed = [p.grad + 0.1 * p.detach() for p, _ in reported]
    opt.step()                      # first step: no momentum yet
    for (p, r), w0, g in zip(reported, before, decayed):
        torch.testing.assert_close(p.detach(), w0 - 0.5 * r * g)


def test_trust_ratio_is_one_for_a_zero_tensor():
    zero, w = torch.zeros(4, 4), torch.ones(4, 4)
    ratios = trust_ratios([zero, w, w], [w, torch.zeros(4, 4), 2 * w], 1e-3)
    assert [r.item() for r in ratios] == pytest.approx([1.0, 1.0, 5e-4])


def test_param_groups_exclude_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    decay, no_decay = param_groups(list(model.parameters()), 1e-6)
    assert {p.ndim for p in decay["params"]} == {2, 4} and decay["weight_decay"] == 1e-6
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0 and no_decay["lars_exclude"]


def test_build_optimizer_kinds():
    ps = list(torch.nn.Linear(3, 3).parameters())
    assert isinstance(build_optimizer("lars", ps, 0.1, 1e-6), LARS)
    assert isinstance(build_optimizer("sgd", ps, 0.1, 1e-6), torch.optim.SGD)
    assert isinstance(build_optimizer("adamw", ps, 0.1, 1e-6), torch.optim.AdamW)
    with pytest.raises(ValueError, match="lars, sgd or adamw"):
        build_optimizer("rmsprop", ps, 0.1, 0)


def test_lr_schedule():
    assert scaled_lr(0.2, 4096) == pytest.approx(3.2)
    peak, total, warm = 1.0, 100, 10
    lrs = [warmup_cosine(k, total, warm, peak) for k in range(total)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert warmup_cosine(55, total, warm, peak) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(total, total, warm, peak) == pytest.approx(0.0, abs=1e-12)
