"""The non-finite guard: a NaN/inf loss, gradient or weight is caught at the step it happens."""
from __future__ import annotations

import torch

from byol_lite.training.runs import RunDir


class NonFiniteGuard:
    """Catches a NaN/inf loss or gradient before it reaches the weights: the run stops with a
    :class:`FloatingPointError` naming the step, the LR and what is not finite (the checkpoint on disk is the
    last good one), or with ``skip=True`` the batch is skipped -- no optimiser step, no EMA update, BatchNorm
    statistics put back -- and counted in :attr:`skipped`."""

    def __init__(self, run: RunDir, skip: bool = False, advice: str = "", skipped: int = 0):
        self.run, self.skip, self.advice, self.skipped = run, skip, advice, skipped
        self._buffers: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []

    def before_forward(self, model: torch.nn.Module) -> None:
        """Remembers the buffers (BatchNorm statistics) a bad batch would corrupt; only when skipping."""
        if self.skip:
            self._buffers = list(model.buffers())
            self._saved = [b.clone() for b in self._buffers]

    def loss_ok(self, step: int, lr: float, loss: torch.Tensor, terms) -> bool:
        """``step``: steps completed before this batch (the bad one is reported as ``step + 1``, as
        metrics rows and checkpoints count completed steps); ``terms``: a callable returning
        ``{loss term: value or text}``, only evaluated for a bad loss."""
        if bool(torch.isfinite(loss)):
            return True
        detail = "; ".join(f"{name} = {_fmt(v)}" for name, v in terms().items())
        return self._bad(f"non-finite loss ({_fmt(loss)}) at step {step + 1} with lr={lr:.4g}: {detail}")

    def grads_ok(self, step: int, lr: float, loss: torch.Tensor, named_parameters) -> bool:
        bad = _nonfinite([(n, p.grad) for n, p in named_parameters if p.grad is not None])
        if not bad:
            return True
        return self._bad(f"non-finite gradients at step {step + 1} with lr={lr:.4g} from a finite loss "
                         f"({_fmt(loss)}), in {_names(bad)}")

    def check_weights(self, step: int, model: torch.nn.Module) -> None:
        """Before a checkpoint is written: weights overflowed by a finite but huge update are never saved."""
        bad = _nonfinite([(n, p.detach()) for n, p in model.named_parameters()])
        if bad:
            self._bad(f"non-finite weights after step {step}, in {_names(bad)}; they were not saved", can_skip=False)

    def _bad(self, what: str, can_skip: bool = True) -> bool:
        if not (self.skip and can_skip):
            kept = (f"the last good checkpoint (step {self.run.last_saved_step}) is kept in {self.run.checkpoint_path}"
                    if self.run.last_saved_step is not None else "no checkpoint had been written yet")
            hint = " Or pass skip_nonfinite=True (--skip-nonfinite) to skip such batches." if can_skip else ""
            raise FloatingPointError(f"{what}. Stopped; {kept}. {self.advice}{hint}")
        if self._buffers:
            torch._foreach_copy_(self._buffers, self._saved)
        self.skipped += 1
        print(f"skipped: {what} ({self.skipped} skipped so far)")
        return False


def _nonfinite(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding NaN/inf: one fused norm (one sync) in the usual all-finite case."""
    if not named or bool(torch.isfinite(torch.stack(torch._foreach_norm([t for _, t in named]))).all()):
        return []
    return [n for n, t in named if not bool(torch.isfinite(t).all())]   # a norm can overflow on finite values


def _names(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _fmt(v) -> str:
    return v if isinstance(v, str) else f"{float(torch.as_tensor(v).detach()):.4g}"
