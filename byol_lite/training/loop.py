"""The skeleton every training run shares, around the step its entry point writes out.

``pretrain.py`` and ``finetune.py`` keep their step -- batch, forward, loss, update -- in plain sight;
:class:`Trainer` does the rest the same way for both: processes and device, seeding, the run folder
(lock, resume rules, a checkpoint every ``checkpoint_every`` steps, the metrics log), the guarded update
and the progress bar. Batches come from a :class:`BatchPlan` and every random draw of a step from seeds
of (seed, step), so a resumed run takes exactly the path of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from byol_lite.config import RunConfig
from byol_lite.device import autocast, resolve_channels_last, rng_state, seed_all, set_rng_state
from byol_lite.training.distributed import setup as setup_distributed
from byol_lite.training.guard import NonFiniteGuard
from byol_lite.training.runs import ResumeRefused, RunDir


class Schedule(NamedTuple):
    """A run's length and learning rate, from its config and its data (``config.schedule(n)``)."""

    steps_per_epoch: float
    total_steps: int
    warmup_steps: int
    peak_lr: float


@dataclass
class RunResult:
    """What ``pretrain`` and ``finetune`` return."""

    model: nn.Module
    history: list[dict]           # the rows of metrics.jsonl (on rank 0; empty on the other processes)
    run_dir: Path
    metrics: dict | None = None   # fine-tuning: the final evaluation (None while paused by stop_after_steps)
    # wall time from opening the run to its end (steps, evaluations, checkpoints), summed over its resumed
    # segments: what a chapter reports when it reads a finished run back instead of training it again;
    # nan for a run finished by a version that did not record it
    train_seconds: float = math.nan


def step_seed(seed: int, step: int) -> int:
    """The seed of the random draws of step ``step`` (augmentation, dropout), whatever ran before."""
    return seed * 1_000_003 + step


class BatchPlan:
    """The keys of the batches of steps ``start..total-1``: consecutive items of an endless stream of
    per-epoch permutations of ``indices`` (seeded by seed and epoch). ``drop_last``: epochs of whole batches
    (pretraining's); ``rows``: this process's disjoint share of every batch; ``item_seeds``: keys are
    ``(index, seed)``, an augmentation seed per item (fine-tuning's crops)."""

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, start: int, total: int,
                 rows: slice = slice(None), drop_last: bool = False, item_seeds: bool = False):
        self.indices, self.batch_size, self.seed, self.start, self.total = list(indices), batch_size, seed, start, total
        self.rows, self.item_seeds = rows, item_seeds
        self.epoch_length = len(self.indices) - (len(self.indices) % batch_size if drop_last else 0)

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        epoch, perm = None, []
        for step in range(self.start, self.total):
            keys = []
            for j in range(self.batch_size)[self.rows]:
                e, offset = divmod(step * self.batch_size + j, self.epoch_length)
                if e != epoch:
                    gen = torch.Generator().manual_seed(self.seed * 100_003 + e)
                    epoch, perm = e, torch.randperm(len(self.indices), generator=gen).tolist()
                index = self.indices[perm[offset]]
                keys.append((index, step_seed(self.seed, step) * 4096 + j) if self.item_seeds else index)
            yield keys


class Trainer:
    """Everything of a run but its step. Made from the config before the model (it joins the process group,
    picks the device and seeds); :meth:`open` then takes the model, the optimiser and the run folder."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.ctx = setup_distributed(config.device)     # one process unless started by torchrun
        self.device = self.ctx.device
        self.channels_last = resolve_channels_last(self.device, config.channels_last)
        seed_all(config.seed)

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` with BatchNorm statistics over all processes (SyncBatchNorm; unchanged in one process)."""
        return self.ctx.sync_batchnorm(model, self.config.sync_batchnorm)

    @contextlib.contextmanager
    def open(self, config: RunConfig, model: nn.Module, optimizer: torch.optim.Optimizer, total: int, dataset: str,
             desc: str, advice: str, stop: int = 0, extra: dict | None = None,
             on_save: Callable[[Path], None] | None = None):
        """Opens ``config.out_dir`` (rank 0 writes it), resumes with ``config.resume`` and puts the model on the
        device in training mode; leaving the block lets another process open the folder. ``stop``: pause after
        this many steps (0: no pause); ``advice``: what to change after a NaN; ``extra``: more checkpoint keys;
        ``on_save(folder)``: more files beside each checkpoint."""
        ctx = self.ctx
        self.config, self.model, self.optimizer, self.total = config, model, optimizer, total
        self.stop, self.extra, self.on_save = min(total, stop or total), extra or {}, on_save
        self.folder = ctx.on_main(lambda: RunDir(config, dataset=dataset, processes=ctx.world_size))
        self.bar = None
        try:
            self.finished = ctx.on_main(self.folder.summary)     # done.json when the run was finished already
            model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
            self.step, self.history, state = ctx.on_main(
                lambda: self.folder.restore(model, optimizer) if config.resume else (0, [], {}))
            if state and not ctx.is_main:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
            self._seconds_before = state.get("train_seconds", 0.0)   # the earlier segments' time
            self._segment_start, self._final_seconds = time.perf_counter(), None
            if "rng" in state:    # (fine-tuning checkpoints made before the skeleton have none; it reseeds every step)
                set_rng_state(state["rng"])
            self.guard = NonFiniteGuard(self.folder, config.skip_nonfinite, advice,
                                        skipped=state.get("skipped_nonfinite", 0))
            if config.compile:
                model.compile()   # in place: parameter names, and so checkpoints, stay those of the eager model
            self.train_model = ctx.ddp(model)   # what the step calls: DDP averages the gradients over processes
            model.train()
            self.bar = tqdm(total=total, initial=self.step, desc=desc, unit="step",
                            disable=not (config.progress and ctx.is_main))
            self._tick, self._logged = time.perf_counter(), self.step
            yield self
        finally:
            if self.bar is not None:
                self.bar.close()
            if ctx.is_main:
                self.folder.close()

    def steps(self, batches: Iterable):
        """``(step, batch)`` from the resumed step up to the stop; after each step's body, the checkpoint when
        one is due (every ``checkpoint_every`` steps, at the stop and at the end)."""
        for batch in batches:
            yield self.step, batch
            self.step += 1
            self.bar.update(1)
            if self.step % self.config.checkpoint_every == 0 or self.step in (self.stop, self.total):
                self.save()

    def save(self) -> None:
        """Writes the checkpoint (rank 0), after checking that the weights are finite and equal on every process."""
        self.guard.check_weights(self.step, self.model)
        self.ctx.check_replicas(self.model, self.step)
        if self.ctx.is_main:
            self.folder.save_checkpoint({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                         "step": self.step, "rng": rng_state(), "config": dataclasses.asdict(self.config),
                                         "skipped_nonfinite": self.guard.skipped,
                                         "train_seconds": self.train_seconds(), **self.extra})
            if self.on_save:
                self.on_save(self.folder.path)

    def train_seconds(self) -> float:
        """Wall time of this run so far, earlier segments of a resumed run included; a finished run read
        back reports the time recorded when it finished."""
        if self.finished:
            return self.finished.get("train_seconds", math.nan)
        if self._final_seconds is not None:
            return self._final_seconds
        return self._seconds_before + time.perf_counter() - self._segment_start

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def set_lr(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    @contextlib.contextmanager
    def forward(self):
        """The forward pass at the run's precision; when bad batches are skipped, the BatchNorm statistics
        are remembered first (a skipped batch must not move them)."""
        self.guard.before_forward(self.model)
        with autocast(self.device, self.config.precision):
            yield

    def update(self, loss: torch.Tensor, global_loss: torch.Tensor, lr: float, terms: Callable[[], dict]) -> bool:
        """zero_grad -> backward -> optimiser step, unless the guard finds ``global_loss`` (the mean over processes,
        so that all decide alike) or a gradient not finite: it stops the run, or skips the step (returns False).
        ``terms()``: the loss's parts by name, for the message."""
        if not self.guard.loss_ok(self.step, lr, global_loss, terms):
            return False
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not self.guard.grads_ok(self.step, lr, global_loss, self.model.named_parameters()):
            return False
        self.optimizer.step()
        return True

    def throughput(self, done: int) -> float:
        """Images per second (all processes) since the last logged row; ``done``: steps completed."""
        return (done - self._logged) * self.config.batch_size / (time.perf_counter() - self._tick)

    def log(self, row: dict, postfix: Sequence[str]) -> None:
        """Appends ``row`` and the count of skipped batches to metrics.jsonl (rank 0), and shows its ``postfix``
        keys on the progress bar (a null, skipped, value as ``nan``)."""
        if self.ctx.is_main:
            row = self.folder.log({**row, "skipped_nonfinite": self.guard.skipped})
            self.history.append(row)
            self.bar.set_postfix({k: "nan" if row[k] is None else f"{row[k]:.3f}" for k in postfix if k in row})
        self._tick, self._logged = time.perf_counter(), row["step"]

    def finish(self, summary: Callable[[], dict]) -> None:
        """Writes done.json (rank 0), unless the run was finished before."""
        self._final_seconds = round(self.train_seconds(), 3)
        if self.ctx.is_main and not self.finished:
            self.folder.mark_done({**summary(), "train_seconds": self._final_seconds})

    def result(self, metrics: dict | None = None) -> RunResult:
        return RunResult(self.model, self.history, self.folder.path, metrics, self.train_seconds())


def resume_or_restart(train: Callable[..., RunResult], config: RunConfig, *args, **kwargs) -> RunResult:
    """What a chapter wants of its run folder: the run there continued (a finished one read back) when its
    settings and data are this config's, else started again with the old folder kept aside. ``train``:
    ``pretrain`` or ``finetune``, called with ``args``/``kwargs`` (the data)."""
    try:
        return train(config, *args, resume=True, **kwargs)
    except ResumeRefused as err:
        print(f"not resumed: {err}")
        return train(config, *args, overwrite=True, **kwargs)
