"""The same training loops on several GPUs (or CPU processes), started by PyTorch's own launcher
(``torchrun --nproc_per_node=4 -m byol_lite pretrain ...``), which tells each process its place through
environment variables; :func:`setup` reads them. With one process every helper here does nothing.

The conventions the loops follow under several processes:

- ``batch_size`` stays the *global* batch (so the LR rule and the schedules are one process's); every
  process draws the same per-epoch permutation and takes its own rows of every batch (:meth:`Context.rows`).
- Augmentation parameters are drawn for the whole global batch (or per image) and sliced, so the views do
  not depend on the number of processes; dropout is seeded per process.
- DDP averages the gradients; BatchNorm statistics are the global batch's (SyncBatchNorm, on by default).
  Every process then takes the same optimiser step and EMA: :meth:`Context.check_replicas` verifies it.
- Only rank 0 writes: run folder, metrics, checkpoints, progress bar (:meth:`Context.on_main`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce

from byol_lite.device import pick_device

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` processes, computing on ``device``."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch of ``batch_size``."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size={batch_size} does not split evenly over {self.world_size} processes: "
                             f"use a multiple of {self.world_size} (batch_size is the global batch; each process "
                             f"takes batch_size / {self.world_size})")
        per = batch_size // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)

    def sync_batchnorm(self, model: nn.Module, enabled: bool = True) -> nn.Module:
        """``model`` with BatchNorm statistics computed over all processes (unchanged in one process); the
        parameters are kept, not copied, so an optimiser built before or after sees the same ones."""
        if not (self.distributed and enabled):
            return model
        if self.device.type != "cpu":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # torch's SyncBatchNorm (and DDP with it) refuses CPU modules; under gloo (CPU tests, CPU clusters)
        # each BatchNorm becomes ours, in place: same parameters and buffers, another forward.
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.__class__ = CPUSyncBatchNorm
        return model

    def ddp(self, model: nn.Module) -> nn.Module:
        """The module the training step calls: ``model`` in DistributedDataParallel (which leaves BYOL's EMA target
        out of the all-reduce and broadcasts rank 0's weights, so all start alike), or ``model`` itself."""
        if not self.distributed:
            return model
        device_ids = [self.device] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over processes (a detached copy); ``tensor`` itself in one process."""
        if not self.distributed:
            return tensor
        out = tensor.detach().clone()
        dist.all_reduce(out)
        return out / self.world_size

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` concatenated along the first dimension (rank order). The first
        dimension may differ between processes (object-level BYOL keeps a varying number of regions)."""
        if not self.distributed:
            return tensor
        n = torch.tensor([tensor.shape[0]], device=tensor.device)
        sizes = [torch.empty_like(n) for _ in range(self.world_size)]
        dist.all_gather(sizes, n)
        longest = max(int(s) for s in sizes)
        padded = tensor.detach().new_zeros((longest, *tensor.shape[1:]))
        padded[: tensor.shape[0]] = tensor.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])

    def on_main(self, fn: Callable[[], T]) -> T:
        """Runs ``fn`` on rank 0 only and returns its result, or raises its exception, on every process (so none
        waits forever for the others)."""
        if not self.distributed:
            return fn()
        payload = [None]
        if self.is_main:
            try:
                result = fn()
            except Exception as err:
                dist.broadcast_object_list([("error", err)], src=0)
                raise
            payload = [("ok", result)]
        dist.broadcast_object_list(payload, src=0)
        kind, value = payload[0]
        if kind == "error":
            raise value
        return value

    def check_replicas(self, model: nn.Module, step: int) -> None:
        """Stops if the weights (online and EMA target) differ between processes: equal averaged gradients give
        equal steps, so a difference means they no longer train one model (e.g. one changed on one rank only)."""
        if not self.distributed:
            return
        named = [(n, p.detach()) for n, p in model.named_parameters()]
        norms = torch.stack(torch._foreach_norm([p.float() for _, p in named]))
        every = self.gather(norms[None])
        bad = ((every - every[0]).abs() > 1e-6 * every[0].abs().clamp(min=1e-12)).any(0)
        if bool(bad.any()):
            names = [n for (n, _), b in zip(named, bad.tolist()) if b]
            raise RuntimeError(f"after step {step} the weights differ between the {self.world_size} processes in "
                               f"{', '.join(names[:3])}{' and more' if len(names) > 3 else ''}: they no longer "
                               "train one model. Check that nothing changes the model on some ranks only.")


def setup(device: str = "auto") -> Context:
    """The context of this process: joins torchrun's process group when there are several processes (NCCL
    between GPUs, each ``cuda:LOCAL_RANK``; gloo with ``device="cpu"``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    target = pick_device(device)
    if world == 1:
        return Context(target)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        if target.index is not None:
            raise ValueError(f"device={device} under torchrun with {world} processes would put every process on "
                             "one GPU: use device=cuda or auto (each process then takes cuda:LOCAL_RANK)")
        target = torch.device("cuda", local_rank)
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        if target.type == "cuda":
            dist.init_process_group("nccl", device_id=target)
        else:
            dist.init_process_group("gloo")
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise RuntimeError(f"the process group ({dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"torchrun's environment (RANK={rank}, WORLD_SIZE={world})")
    return Context(target, rank, world)


def is_main_process() -> bool:
    """Rank 0, or not under torchrun: the process that prints summaries and errors."""
    return int(os.environ.get("RANK", "0")) == 0


def cleanup() -> None:
    """Leaves the process group, if this process joined one (the end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch for CPU tensors (under gloo, where torch's ``SyncBatchNorm`` refuses to
    run): mean and variance from all-reduced sums. In eval mode or in one process it is plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        x = input.double()   # var = E[x²] - E[x]² cancels digits; float64 keeps them (a CPU-only path)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        sums = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))   # its gradient: the sum, too
        c = self.num_features
        n = sums[-1]
        mean = sums[:c] / n
        var = sums[c:2 * c] / n - mean * mean              # biased: what normalises the batch
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var.detach() * n / (n - 1)           # what BatchNorm stores
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        shape = [1, c] + [1] * (input.dim() - 2)
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)
