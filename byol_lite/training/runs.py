"""A training run's folder: config, metrics log, checkpoints, and the rules that protect them.

Shared by pretraining and fine-tuning. A run folder holds ``config.json``, ``dataset.json`` (the data
read and the number of processes), ``metrics.jsonl`` (one JSON row per logged step), ``last.pt`` (the
latest checkpoint, replaced atomically) and ``done.json`` once finished. Nothing a user made is
silently replaced: a folder holding a run is only reused with ``resume`` (same settings) or
``overwrite`` (the old folder is kept aside), and only by one process at a time (:class:`FolderLock`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from byol_lite.checkpoint import (atomic_save, atomic_write_json, atomic_write_text, lock_folder,
                                  remove_stale_temp_files, safe_load)

LOCK_FILE = ".lock"     # the pid of the process writing the folder; the lock itself is on the folder


class ResumeRefused(ValueError):
    """The run in the folder was made with other settings, data or process count than asked for now."""


class RunInUse(FileExistsError):
    """Another process is writing the run folder."""


class FolderLock:
    """One writer per run folder: a :func:`~byol_lite.checkpoint.lock_folder` lock, which a killed holder
    cannot leave behind, and the holder's pid in ``.lock`` for the message (the next holder replaces it)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.stale = folder / LOCK_FILE, None
        try:
            self.fd = lock_folder(folder, blocking=False)
        except BlockingIOError:
            holder = f"process {self._pid()}" if self._pid() else "another process"
            raise RunInUse(f"{folder} is in use: {holder} is writing this run (two writers would corrupt it). "
                           "Wait for it to finish or stop it, or choose another output folder.") from None
        self.stale = self._pid()

    def _pid(self) -> str | None:
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def claim(self) -> None:
        """Records this process as the holder (once the folder is known to be this run's)."""
        if self.fd is not None:
            if self.stale:
                print(f"{self.path.parent}: took over the lock of process {self.stale}, which has stopped")
            atomic_write_text(f"{os.getpid()}\n", self.path)

    def release(self) -> None:
        if self.fd is not None:
            if self._pid() == str(os.getpid()):
                self.path.unlink()
            os.close(self.fd)
            self.fd = None


class RunDir:
    """Opens ``config.out_dir`` for a run with ``config``. On resume every setting but the config's
    ``RESUMABLE_CHANGES``, the ``dataset`` fingerprint and the number of ``processes`` must be the run's, or
    :class:`ResumeRefused` (unless ``force_resume``); what a run predates (a newer setting, the process
    count) counts as its default."""

    def __init__(self, config, dataset: str | None = None, processes: int = 1):
        self.path = Path(config.out_dir)
        self.config = dataclasses.asdict(config)
        self.last_saved_step: int | None = None
        if config.resume and config.overwrite:
            raise ValueError("resume and overwrite exclude each other: continue the run in "
                             f"{self.path} (--resume) or start it again (--overwrite), not both")
        self._lock = FolderLock(self.path)
        try:
            self._open(config, {"dataset": dataset, "processes": processes})
        except BaseException:
            self._lock.release()
            raise
        self._lock.claim()

    def __getstate__(self):   # the other processes of a torchrun get the folder, not this process's lock
        return {**vars(self), "_lock": None}

    def close(self) -> None:
        """Lets another process open the folder (on the process that opened it)."""
        if self._lock is not None:
            self._lock.release()

    def _open(self, config, facts: dict) -> None:
        existing = (self.path / "config.json").is_file()
        if not existing and self.path.is_dir():
            # ours: a partial file of an interrupted write, or the lock of a process that was killed
            foreign = sorted(p.name for p in self.path.iterdir()
                             if p.name != LOCK_FILE and not (p.name.startswith(".") and p.name.endswith(".tmp")))
            if foreign:
                raise FileExistsError(
                    f"{self.path} is not empty ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}) "
                    "and holds no byol_lite run (no config.json): choose an empty or new output folder, "
                    "so nothing there is overwritten.")
        if existing and config.overwrite:
            backup = _free_name(self.path.with_name(f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"))
            self._lock.release()
            shutil.move(str(self.path), str(backup))
            print(f"overwrite: the previous run in {self.path} was moved to {backup}")
            self._lock = FolderLock(self.path)
            existing = False
        if existing and not config.resume:
            state = "a finished run" if self.done else "an unfinished run"
            raise FileExistsError(
                f"{self.path} already holds {state}. Pass resume=True (--resume) to continue it, "
                "overwrite=True (--overwrite) to start again (the old folder is kept aside), "
                "or choose another output folder.")
        if existing:
            self._check_resume(config, facts)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config, self.path / "config.json")
        atomic_write_json(facts, self.path / "dataset.json")

    def _check_resume(self, config, facts: dict) -> None:
        old = json.loads((self.path / "config.json").read_text())
        old = {**dataclasses.asdict(type(config)()), **old}   # what the run predates counts as its default
        new = dict(self.config)
        stored = self.path / "dataset.json"
        if stored.is_file():
            old.update({"processes": 1, **json.loads(stored.read_text())})
            new.update(facts)
        keys = sorted((set(old) | set(new)) - set(config.RESUMABLE_CHANGES) - {"resume", "overwrite", "force_resume"})
        diffs = [f"{k}: {old.get(k)!r} in the run, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]
        if diffs and not config.force_resume:
            why = ("\nA resumed run must take the path of an uninterrupted one, and the number of processes "
                   "changes it (the rounding of every sum over the batch, each process's dropout): resume "
                   f"with {old['processes']} process(es)." if old.get("processes") != new.get("processes") else "")
            raise ResumeRefused(
                f"refusing to resume {self.path} with different settings:\n  " + "\n  ".join(diffs) + why
                + "\nUse the run's settings, a new output folder, or force_resume=True (--force-resume).")
        if diffs:
            print(f"force_resume: continuing {self.path} although\n  " + "\n  ".join(diffs))
        removed = remove_stale_temp_files(self.path)
        if removed:
            print(f"resume: removed {len(removed)} partial file(s) left by an interrupted write: "
                  + ", ".join(p.name for p in removed))

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

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict], dict]:
        """``(step, history, state)`` of ``last.pt``, loaded into model and optimizer; metrics rows logged after it
        are dropped (all of them, with ``(0, [], {})``, when a run was killed before its first checkpoint)."""
        if not self.checkpoint_path.is_file():
            self.truncate_metrics(0)
            return 0, [], {}
        state = safe_load(self.checkpoint_path)
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise ValueError(f"{self.checkpoint_path} does not fit the model and optimizer of these settings "
                             f"(force_resume cannot change the architecture): {str(err).splitlines()[0]}") from None
        self.last_saved_step = state["step"]
        return state["step"], self.truncate_metrics(state["step"]), state

    def log(self, row: dict[str, Any]) -> dict[str, Any]:
        """Appends ``row`` and returns what was written: non-finite values (a skipped step's loss) as null, so
        metrics.jsonl stays strict JSON."""
        row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
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

    def summary(self) -> dict | None:
        """``done.json``: what a finished run reported, or None while it is not finished."""
        return json.loads((self.path / "done.json").read_text()) if self.done else None


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... if taken (two overwrites within a second)."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


