"""Both BYOL views in one forward pass, each normalised by its own BatchNorm statistics.

The official BYOL code forwards each view separately, so every BatchNorm layer normalises a view
with that view's batch statistics. Concatenating the views into one batch of 2B halves the number
of convolution and matrix-multiply calls, but a plain BatchNorm would then mix the two views'
statistics (byol-pytorch does this). After ``split_batch_norm_by_view``, every BatchNorm layer in
training mode normalises each view's share of the batch with that share's statistics and updates
its running statistics once per view, in view order: the values of separate forwards
(``tests/test_fast_step.py``), in fewer, larger kernels. In eval mode nothing changes.
"""
from __future__ import annotations

import torch
from torch import nn


class _PerView:
    views = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:      # running statistics: nothing depends on which view a sample came from
            return super().forward(x)
        return torch.cat([super(_PerView, self).forward(part) for part in x.chunk(self.views)])


class PerViewBatchNorm1d(_PerView, nn.BatchNorm1d):
    """BatchNorm1d over each of ``views`` equal consecutive parts of a batch (training mode)."""


class PerViewBatchNorm2d(_PerView, nn.BatchNorm2d):
    """BatchNorm2d over each of ``views`` equal consecutive parts of a batch (training mode)."""


def split_batch_norm_by_view(model: nn.Module) -> nn.Module:
    """In place: ``model``'s BatchNorm layers become per-view ones (same parameters, buffers, state dict)."""
    for module in model.modules():
        if type(module) is nn.BatchNorm1d:
            module.__class__ = PerViewBatchNorm1d
        elif type(module) is nn.BatchNorm2d:
            module.__class__ = PerViewBatchNorm2d
    return model
