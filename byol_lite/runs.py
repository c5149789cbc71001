"""A training run's folder: config, metrics log, checkpoints, and the rules that protect them.

Shared by pretraining and fine-tuning. A run folder holds ``config.json``, ``metrics.jsonl``
(one JSON row per logged step), ``last.pt`` (the latest checkpoint, replaced atomically) and
``done.json`` once finished. Nothing a user made is silently replaced: a folder holding a run
is only reused with ``resume`` (same settings) or ``overwrite`` (the old folder is kept aside).
"""
from __future__ import annotations

import contextlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from byol_lite.checkpoint import atomic_save, atomic_write_json, safe_load


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    """``precision``: ``fp32``, ``bf16``, or ``auto`` (bf16 on CUDA, fp32 elsewhere)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose auto, fp32 or bf16")


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


class RunDir:
    """Opens ``path`` for a run with ``config``; see the module docstring for the rules.

    ``resumable_changes`` names settings that may differ on resume (e.g. logging intervals);
    any other difference is refused unless ``force_resume`` is set.
    """

    def __init__(self, path: str | Path, config: dict, resume: bool = False, overwrite: bool = False,
                 resumable_changes: Iterable[str] = (), force_resume: bool = False):
        self.path = Path(path)
        self.config = config
        self.resumed_from: dict | None = None
        existing = (self.path / "config.json").is_file()
        if existing and overwrite:
            backup = self.path.with_name(f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
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
            diffs = _differences(old, config, set(resumable_changes) | {"resume", "overwrite", "force_resume"})
            if diffs and not force_resume:
                raise ValueError(
                    f"refusing to resume {self.path} with different settings:\n  " + "\n  ".join(diffs)
                    + "\nUse the run's settings, a new output folder, or force_resume=True (--force-resume).")
            self.resumed_from = old
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(config, self.path / "config.json")

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

    def load_checkpoint(self) -> dict | None:
        return safe_load(self.checkpoint_path) if self.checkpoint_path.is_file() else None

    def log(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def truncate_metrics(self, step: int) -> list[dict]:
        """Drops rows logged after the checkpoint being resumed (they will be logged again)."""
        rows = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(self.metrics_path)
        return rows

    def mark_done(self, summary: dict) -> None:
        atomic_write_json(summary, self.path / "done.json")
