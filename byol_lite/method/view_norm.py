"""Both BYOL views in one forward pass, each normalised by its own BatchNorm statistics.

The official BYOL code forwards each view separately, so every BatchNorm layer normalises a view
with that view's batch statistics. Concatenating the views into one batch of 2B halves the number
of convolution and matrix-multiply calls, but a plain BatchNorm would then mix the two views'
statistics (byol-pytorch does this). Inside ``per_view_batch_norm``, every BatchNorm layer in
training mode normalises each view's share of the batch with that share's statistics and updates
its running statistics once per view, in view order: the values of separate forwards
(``tests/test_fast_step.py``), in fewer, larger kernels.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def _split_forward(layer: nn.modules.batchnorm._BatchNorm, views: int, x: torch.Tensor) -> torch.Tensor:
    forward = type(layer).forward
    if not layer.training:      # running statistics: nothing depends on which view a sample came from
        return forward(layer, x)
    return torch.cat([forward(layer, part) for part in x.chunk(views)])


@contextmanager
def per_view_batch_norm(model: nn.Module, views: int = 2):
    """Within the block, ``model``'s BatchNorm layers treat a batch as ``views`` equal consecutive parts."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if any(isinstance(m, nn.SyncBatchNorm) for m in layers):
        raise ValueError("per-view BatchNorm in one forward is not implemented for SyncBatchNorm; "
                         "forward the views separately (fuse_views=False) under DDP")
    for layer in layers:
        layer.forward = lambda x, layer=layer: _split_forward(layer, views, x)
    try:
        yield model
    finally:
        for layer in layers:
            del layer.forward
