"""The pretraining diagnostics read what the book says they read: spread of projections, rank of features."""
import math

import torch

from byol_lite.method.diagnostics import collapse_std, effective_rank


def test_collapse_std_is_zero_for_one_point_and_about_one_over_root_d_when_spread():
    g = torch.Generator().manual_seed(0)
    assert collapse_std(torch.ones(512, 64)) == 0.0
    assert collapse_std(torch.randn(512, 64, generator=g) * 1e-3 + 5) < 1e-3          # near one point: collapsed
    assert abs(collapse_std(torch.randn(4096, 64, generator=g)) - 1 / math.sqrt(64)) < 0.005


def test_effective_rank_counts_equally_used_directions():
    features = torch.zeros(100, 32)
    features[:10, :10] = torch.eye(10)                  # ten orthogonal directions, equal weight
    assert abs(effective_rank(features) - 10) < 1e-3
    assert abs(effective_rank(torch.ones(100, 32)) - 1) < 1e-3
    features[:10, :10] = torch.diag(torch.tensor([100.0] + [1.0] * 9))   # one direction dominates
    assert effective_rank(features) < 3
