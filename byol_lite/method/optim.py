"""Optimisers and the learning-rate schedule of BYOL pretraining.

LARS as the paper uses it: the update of each weight tensor is rescaled by the trust ratio
η·‖w‖/‖g + λw‖, with biases and normalisation parameters excluded from both weight decay and
the trust ratio. PyTorch has no LARS, so it is here, written with fused ``_foreach`` ops.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratios. Groups with ``lars_exclude=True`` skip
    weight decay and the trust ratio (plain momentum SGD)."""

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, lars_exclude: bool = False):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, lars_exclude=lars_exclude)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = _decayed_gradients(group)
            if not params:
                continue
            if not group["lars_exclude"]:
                ratios = trust_ratios(params, grads, group["trust_coefficient"])
                grads = torch._foreach_mul(grads, ratios)
            bufs = []
            for p, g in zip(params, grads):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss

    @torch.no_grad()
    def current_trust_ratios(self) -> list[tuple[nn.Parameter, float]]:
        """The trust ratio the next ``step`` would give each adapted parameter,
        from its current ``.grad``: the same computation as ``step``'s, so the
        book (chapter 3) can watch what LARS does to each layer."""
        pairs = []
        for group in self.param_groups:
            params, grads = _decayed_gradients(group)
            if params and not group["lars_exclude"]:
                ratios = trust_ratios(params, grads,
                                      group["trust_coefficient"])
                pairs += [(p, r.item()) for p, r in zip(params, ratios)]
        return pairs


def _decayed_gradients(group: dict):
    """A group's parameters that have a gradient, and their gradients g + λw
    (λ: the group's weight decay, applied to adapted groups only)."""
    params = [p for p in group["params"] if p.grad is not None]
    grads = [p.grad for p in params]
    if params and not group["lars_exclude"] and group["weight_decay"]:
        grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
    return params, grads


def trust_ratios(params: list[torch.Tensor], grads: list[torch.Tensor],
                 trust_coefficient: float) -> list[torch.Tensor]:
    """η·‖w‖/‖g‖ per tensor, for ``grads`` that already include the weight
    decay (g + λw); 1 where either norm is 0 (a zero-initialised tensor, or
    no gradient), so such a tensor takes a plain step."""
    p_norm = torch._foreach_norm(params)
    g_norm = torch._foreach_norm(grads)
    return [torch.where((pn > 0) & (gn > 0), trust_coefficient * pn / gn,
                        torch.ones_like(pn))
            for pn, gn in zip(p_norm, g_norm)]


def param_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Weights (≥ 2-D) get weight decay and LARS adaptation; biases and norm parameters (1-D) get neither."""
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True},
    ]


def build_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    groups = param_groups(params, weight_decay)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    for g in groups:
        g.pop("lars_exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose lars, sgd or adamw")


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The paper's linear scaling rule: LR = base × batch / 256."""
    return base_lr * batch_size / 256


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak_lr * 0.5 * (1 + math.cos(math.pi * progress))
