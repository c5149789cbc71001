"""Signals that tell learning from collapse, computed during pretraining.

- ``collapse_std``: the per-dimension standard deviation of L2-normalised projections,
  averaged over dimensions. A collapsed network maps every image to one point (→ 0); a
  healthy one spreads its outputs over the sphere (≈ 1/√d for d dimensions).
- ``effective_rank``: exp of the entropy of the normalised singular values of a feature matrix
  (RankMe, Garrido et al. 2023): how many directions the features really use; ``feature_rank``
  measures it on an encoder's features of fixed, un-augmented images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from byol_lite.data.transforms import normalize
from byol_lite.device import eval_mode


@torch.no_grad()
def collapse_std(z: torch.Tensor) -> float:
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


@torch.no_grad()
def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum() + eps
    return torch.exp(-(p * p.log()).sum()).item()


@torch.no_grad()
def feature_rank(encoder: nn.Module, images: torch.Tensor, size: int) -> float:
    """:func:`effective_rank` of ``encoder``'s pooled features (in eval mode) of uint8 ``images`` resized to ``size``."""
    x = images.to(next(encoder.parameters()).device).float() / 255
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    with eval_mode(encoder):
        return effective_rank(encoder(normalize(x))[0])
