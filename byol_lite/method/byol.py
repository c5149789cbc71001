"""The BYOL model: online and target networks, the regression loss and the EMA target update.

Sharp edges this module gets right (each has a test in ``tests/test_byol.py``):
- the predictor exists on the online side only (``predictor_side="target"`` is the seed article's
  error, kept as an explicit ablation for the book's chapter 2);
- the target never receives gradients and changes only through the EMA;
- the loss is symmetric, and the two directions are *summed*, as in the paper (a mean would halve
  SGD's steps; under LARS the trust ratio cancels it for the weights, and only the excluded biases
  and norms would take half steps: book chapter 3);
- BatchNorm statistics are per view, as in the official implementation (which forwards the views
  separately; ``fuse_views=True`` forwards them as one batch with the same per-view statistics,
  ``method/view_norm.py``); the target runs in training mode (batch statistics).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from byol_lite.method.heads import MLPHead
from byol_lite.method.view_norm import split_batch_norm_by_view


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``2 − 2·cos(p, z)`` per sample (shape ``[B]``), i.e. ``‖p̄ − z̄‖²`` of the L2-normalised vectors; in float32
    even under autocast, as the cosine of nearly equal bf16 vectors loses most of its digits."""
    p = F.normalize(p.float(), dim=-1)
    z = F.normalize(z.float(), dim=-1)
    return 2 - 2 * (p * z).sum(dim=-1)


def cosine_tau(step: int, total_steps: int, base_tau: float = 0.996) -> float:
    """τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2: ``base_tau`` at step 0, exactly 1.0 at ``total_steps``."""
    if total_steps <= 0:
        return 1.0
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base_tau) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place, parameters only: ξ ← τ·ξ + (1 − τ)·θ, as one fused multi-tensor operation. Buffers (BatchNorm
    statistics) are left alone: the target computes its own in its training-mode forward passes."""
    t_params = list(target.parameters())
    o_params = list(online.parameters())
    if len(t_params) != len(o_params) or any(t.shape != o.shape for t, o in zip(t_params, o_params)):
        raise ValueError("target and online networks differ in structure; cannot apply the EMA update")
    # lerp(ξ, θ, 1 − τ) = ξ + (1 − τ)(θ − ξ) = τξ + (1 − τ)θ, exact at τ = 1 (no change) and τ = 0 (copy).
    torch._foreach_lerp_(t_params, o_params, 1.0 - tau)


@dataclass
class BYOLOutput:
    loss: torch.Tensor          # scalar: both directions summed, each averaged over the batch
    online_proj: torch.Tensor   # [2B, D] online projections z (view 1 then view 2), for the collapse monitor
    online_pred: torch.Tensor   # [2B, D] predictions p
    target_proj: torch.Tensor   # [2B, D] target outputs z' (no grad; after the target's predictor if it has one)
    directions: tuple[torch.Tensor, torch.Tensor]   # the loss's two terms: p1 against z'2, and p2 against z'1


PREDICTOR_SIDES = ("online", "target")


class BYOL(nn.Module):
    """``online = encoder → projector`` (+ ``predictor``); ``target`` = a copy of ``online`` updated by EMA.

    Ablations: ``predictor=False`` (with τ = 0 it collapses); ``predictor_side="target"``, the seed article's
    variant: no online predictor, and the target ends in ``target_predictor``, which stays at its random
    initialisation (no gradient, and no online predictor for the EMA to average).
    """

    def __init__(self, encoder: nn.Module, proj_hidden: int = 4096, proj_dim: int = 256,
                 pred_hidden: int = 4096, predictor: bool = True, predictor_side: str = "online",
                 fuse_views: bool = False):
        super().__init__()
        self.fuse_views = fuse_views
        if predictor_side not in PREDICTOR_SIDES:
            raise ValueError(f"predictor_side={predictor_side!r}; valid values are: {', '.join(PREDICTOR_SIDES)}")
        if predictor_side == "target" and not predictor:
            raise ValueError("predictor_side='target' needs predictor=True: without a predictor there is "
                             "nothing to put on the target")
        feat_dim = encoder.num_features
        self.online = nn.ModuleDict({"encoder": encoder, "projector": MLPHead(feat_dim, proj_hidden, proj_dim)})
        head = MLPHead(proj_dim, pred_hidden, proj_dim) if predictor else nn.Identity()
        online_side = predictor_side == "online"
        self.predictor = head if online_side else nn.Identity()
        self.target = copy.deepcopy(self.online)
        self.target_predictor = nn.Identity() if online_side else head
        self.target.requires_grad_(False)
        self.target_predictor.requires_grad_(False)
        if fuse_views:
            split_batch_norm_by_view(self)

    @property
    def encoder(self) -> nn.Module:
        """The online encoder: what pretraining is for, and what fine-tuning starts from."""
        return self.online["encoder"]

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def _represent(self, encoder: nn.Module, x) -> torch.Tensor:
        """What the projector sees: the pooled feature map (object-level BYOL pools per region instead)."""
        return encoder(x)[0]

    def _online(self, x):
        z = self.online["projector"](self._represent(self.online["encoder"], x))
        return self.predictor(z), z

    @torch.no_grad()
    def _target(self, x):
        return self.target_predictor(self.target["projector"](self._represent(self.target["encoder"], x)))

    def _join(self, view1, view2):
        """The two views as one batch, view 1 first (what ``fuse_views`` forwards)."""
        return torch.cat([view1, view2])

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> BYOLOutput:
        if self.fuse_views:
            both = self._join(view1, view2)
            (p1, p2), (z1, z2) = (t.chunk(2) for t in self._online(both))
            t1, t2 = self._target(both).chunk(2)
        else:
            p1, z1 = self._online(view1)
            p2, z2 = self._online(view2)
            t1, t2 = self._target(view1), self._target(view2)
        directions = regression_loss(p1, t2).mean(), regression_loss(p2, t1).mean()
        return BYOLOutput(directions[0] + directions[1], torch.cat([z1, z2]), torch.cat([p1, p2]), torch.cat([t1, t2]), directions)

    def update_target(self, tau: float) -> None:
        ema_update_(self.target, self.online, tau)
