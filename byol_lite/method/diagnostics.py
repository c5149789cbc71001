"""Signals that tell learning from collapse, computed during pretraining.

- ``collapse_std``: the per-dimension standard deviation of L2-normalised projections,
  averaged over dimensions. A collapsed network maps every image to one point (→ 0); a
  healthy one spreads its outputs over the sphere (≈ 1/√d for d dimensions).
- ``effective_rank``: exp of the entropy of the normalised singular values of a feature matrix
  (RankMe, Garrido et al. 2023): how many directions the features really use.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def collapse_std(z: torch.Tensor) -> float:
    return F.normalize(z.float(), dim=1).std(dim=0).mean().item()


@torch.no_grad()
def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    s = torch.linalg.svdvals(features.float())
    p = s / s.sum() + eps
    return torch.exp(-(p * p.log()).sum()).item()
