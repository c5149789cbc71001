"""Projector and predictor MLPs: Linear → BatchNorm → ReLU → Linear, as in the BYOL paper.

The BatchNorm is not decoration: without it the paper reports much worse results, and the
seed article's formulas drop it. The output layer has no BatchNorm.
"""
from __future__ import annotations

from torch import nn


class MLPHead(nn.Sequential):
    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
