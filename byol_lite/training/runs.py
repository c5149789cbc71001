"""A training run's folder: config, metrics log, checkpoints, and the rules that protect them.

Shared by pretraining and fine-tuning. A run folder holds ``config.json``, ``metrics.jsonl``
(one JSON row per logged step), ``last.pt`` (the latest checkpoint, replaced atomically) and
``done.json`` once finished. Nothing a user made is silently replaced: a folder holding a run
is only reused with ``resume`` (same settings) or ``overwrite`` (the old folder is kept aside).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from byol_lite.checkpoint import atomic_save, atomic_write_json, atomic_write_text, remove_stale_temp_files, safe_load


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast is a speed-up on ``device``: CUDA, or a CPU with bf16 instructions
    (AVX512-BF16 or AMX). Elsewhere oneDNN emulates bf16, which is slower than fp32."""
    if device.type == "cuda":
        return True
    if device.type != "cpu":
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")   # torch.cpu's own CPU-feature probes
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 where :func:`native_bf16` says it pays (measured on the 2-core AMD EPYC with
    AVX512-BF16: the book's pretraining step 1.6x faster than fp32, a fine-tuning step 1.5x), fp32
    elsewhere. Not everywhere: on a 2-core Intel Xeon with AVX512-BF16 and no AMX, bf16 pretraining
    ran at 0.8x fp32 (chapter 5); pass ``fp32`` there."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: str):
    """``precision``: ``fp32``, ``bf16``, or ``auto`` (see :func:`resolve_precision`)."""
    if resolve_precision(device, precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def resolve_channels_last(device: torch.device, setting: bool | None) -> bool:
    """``None`` (the default) is on: cuDNN's bf16 convolutions want NHWC, and so do oneDNN's on a CPU
    (measured on the 2-core CPU: the book's pretraining step 1.4x faster in fp32, 1.2x in bf16).
    It changes speed only (tests/test_fast_step.py)."""
    return True if setting is None else setting


def seed_all(seed: int) -> None:
    """Seeds torch, numpy and Python's ``random``: a run's RNG state then depends on its seed only,
    so the state stored in a checkpoint is the same in an interrupted and an uninterrupted run."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    # numpy arrays are not allowed by weights_only loading: store the key as a tensor.
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def _differences(old: dict, new: dict, ignore: Iterable[str]) -> list[str]:
    ignore = set(ignore)
    keys = sorted((set(old) | set(new)) - ignore)
    return [f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]


def dataset_fingerprint(dataset) -> str:
    """A short identity of the data a run trains on, so resuming on other data is refused.

    Cached tensors and in-memory lists are hashed by content; file-backed datasets by their
    files' names and sizes (cheap for tens of thousands of files, and it catches added,
    removed or replaced images). Anything else is identified by its type and length only.
    """
    h = hashlib.sha1()

    def add_tensor(t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    cached = dataset if isinstance(dataset, torch.Tensor) else getattr(dataset, "images", None)
    files = [getattr(dataset, a, None) for a in ("files", "images", "masks")]
    files = [f for f in files if isinstance(f, list) and f and isinstance(f[0], (str, Path))]
    if isinstance(cached, torch.Tensor):
        add_tensor(cached)
    elif files:
        for paths in files:
            for f in map(Path, paths):
                h.update(f"{f.name}:{f.stat().st_size if f.exists() else -1};".encode())
    elif isinstance(dataset, (list, tuple)):
        for item in dataset:
            for t in item if isinstance(item, (list, tuple)) else [item]:
                add_tensor(torch.as_tensor(t))
    else:
        return f"{len(dataset)} items of {type(dataset).__name__}"
    return f"{len(dataset)} items, sha1 {h.hexdigest()[:12]}"


def _finite_or_none(row: Mapping[str, Any]) -> dict[str, Any]:
    """metrics.jsonl stays strict JSON: a NaN/inf value (a skipped step's loss) is written as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def format_postfix(row: Mapping[str, Any], keys: Iterable[str]) -> dict[str, str]:
    """Progress-bar text for the ``keys`` of a metrics row; a null (skipped) value shows as ``nan``."""
    return {k: "nan" if row[k] is None else f"{row[k]:.3f}" for k in keys if k in row}




class RunDir:
    """Opens ``path`` for a run with ``config``; see the module docstring for the rules.

    ``resumable_changes`` names settings that may differ on resume (e.g. logging intervals);
    any other difference -- including ``dataset`` (see :func:`dataset_fingerprint`) -- is refused
    unless ``force_resume`` is set. ``defaults``: the config class's defaults; a setting the package
    gained after the run was made is absent from its config.json and counts as its default then.
    """

    def __init__(self, path: str | Path, config: dict, resume: bool = False, overwrite: bool = False,
                 resumable_changes: Iterable[str] = (), force_resume: bool = False, dataset: str | None = None,
                 defaults: dict | None = None):
        self.path = Path(path)
        self.config = config
        self.resumed_from: dict | None = None
        self.last_saved_step: int | None = None
        if resume and overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in "
                             f"{self.path} (--resume) or start it again (--overwrite), not both")
        existing = (self.path / "config.json").is_file()
        if not existing and self.path.is_dir():
            foreign = sorted(p.name for p in self.path.iterdir() if not _is_temp(p))
            if foreign:
                raise FileExistsError(
                    f"{self.path} is not empty ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}) "
                    "and holds no byol_lite run (no config.json): choose an empty or new output folder, "
                    "so nothing there is overwritten.")
        if existing and overwrite:
            backup = _free_name(self.path.with_name(f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"))
            shutil.move(str(self.path), str(backup))
            print(f"overwrite: the previous run in {self.path} was moved to {backup}")
            existing = False
        if existing and not resume:
            state = "a finished run" if self.done else "an unfinished run"
            raise FileExistsError(
                f"{self.path} already holds {state}. Pass resume=True (--resume) to continue it, "
                "overwrite=True (--overwrite) to start again (the old folder is kept aside), "
                "or choose another output folder.")
        if existing:
            old = json.loads((self.path / "config.json").read_text())
            old = {**{k: v for k, v in (defaults or {}).items() if k not in old}, **old}
            new = dict(config)
            stored = self.path / "dataset.json"
            if dataset is not None and stored.is_file():
                old["dataset"], new["dataset"] = json.loads(stored.read_text())["dataset"], dataset
            diffs = _differences(old, new, set(resumable_changes) | {"resume", "overwrite", "force_resume"})
            if diffs and not force_resume:
                raise ValueError(
                    f"refusing to resume {self.path} with different settings:\n  " + "\n  ".join(diffs)
                    + "\nUse the run's settings, a new output folder, or force_resume=True (--force-resume).")
            if diffs:
                print(f"force_resume: continuing {self.path} although\n  " + "\n  ".join(diffs))
            removed = remove_stale_temp_files(self.path)
            if removed:
                print(f"resume: removed {len(removed)} partial file(s) left by an interrupted write: "
                      + ", ".join(p.name for p in removed))
            self.resumed_from = old
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(config, self.path / "config.json")
        if dataset is not None:
            atomic_write_json({"dataset": dataset}, self.path / "dataset.json")

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "last.pt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def done(self) -> bool:
        return (self.path / "done.json").is_file()

    def save_checkpoint(self, state: dict) -> None:
        atomic_save(state, self.checkpoint_path)
        self.last_saved_step = state.get("step")

    def load_checkpoint(self) -> dict | None:
        return safe_load(self.checkpoint_path) if self.checkpoint_path.is_file() else None

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict], dict]:
        """Continues from ``last.pt``: loads model and optimizer, drops metrics rows logged after it.

        Returns ``(step, history, state)`` -- ``(0, [], {})`` when there is no checkpoint yet (a run
        killed before its first one), whose rows are all dropped so they are not logged twice.
        """
        state = self.load_checkpoint()
        if state is None:
            self.truncate_metrics(0)
            return 0, [], {}
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise ValueError(f"{self.checkpoint_path} does not fit the model and optimizer of these settings "
                             f"(force_resume cannot change the architecture): {str(err).splitlines()[0]}") from None
        self.last_saved_step = state["step"]
        return state["step"], self.truncate_metrics(state["step"]), state

    def log(self, row: dict[str, Any]) -> dict[str, Any]:
        """Appends ``row`` (non-finite values as null) and returns what was written."""
        row = _finite_or_none(row)
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(row, allow_nan=False) + "\n")
        return row

    def read_metrics(self) -> list[dict]:
        """The logged rows; a last line cut short by a crash mid-append is left out."""
        if not self.metrics_path.is_file():
            return []
        lines = [line for line in self.metrics_path.read_text().splitlines() if line.strip()]
        rows = []
        for i, line in enumerate(lines):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise ValueError(f"{self.metrics_path}: line {i + 1} is not JSON") from None
        return rows

    def truncate_metrics(self, step: int) -> list[dict]:
        """Drops rows logged after the checkpoint being resumed (they will be logged again)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), self.metrics_path)
        return rows

    def mark_done(self, summary: dict) -> None:
        atomic_write_json(summary, self.path / "done.json")


def _is_temp(p: Path) -> bool:
    return p.name.startswith(".") and p.name.endswith(".tmp")


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if taken (two overwrites within a second)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


class NonFiniteGuard:
    """Catches a NaN/inf loss or gradient at the step it happens, before it reaches the weights.

    By default the run stops with :class:`FloatingPointError` naming the step, the learning rate
    and the loss terms (or parameters) that are not finite; the checkpoint on disk is the last
    good one, as nothing is saved after a bad step. With ``skip=True`` the batch is skipped
    instead -- no optimiser step, no EMA update, and BatchNorm running statistics put back as
    they were before the batch -- and counted in :attr:`skipped`.
    """

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
