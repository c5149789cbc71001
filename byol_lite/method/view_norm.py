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

import functools

import torch
from torch import nn


class _PerView:
    views = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:      # running statistics: nothing depends on which view a sample came from
            return super().forward(x)
        return torch.cat([super(_PerView, self).forward(part) for part in x.chunk(self.views)])


@functools.cache
def per_view_class(cls: type) -> type:
    """``cls`` (a BatchNorm, SyncBatchNorm, ...) normalising each of ``views`` equal consecutive parts of a
    training batch on its own; registered here under its name, so modules using it still pickle."""
    name = f"PerView{cls.__name__}"
    new = type(name, (_PerView, cls), {"__module__": __name__, "__doc__": per_view_class.__doc__})
    globals()[name] = new
    return new


def split_batch_norm_by_view(model: nn.Module) -> nn.Module:
    """In place: ``model``'s BatchNorm layers become per-view ones (same parameters, buffers, state dict).
    Idempotent, so it can follow a conversion to synchronised BatchNorm (per-view statistics over all
    processes, as separate forwards under DDP compute them)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, _PerView):
            module.__class__ = per_view_class(type(module))
    return model
