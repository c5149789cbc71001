"""Files that survive crashes and races: atomic writes, safe loading, folder locks.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then
renamed over the old one: a crash mid-write leaves the previous good checkpoint intact.
Loading never unpickles code (``weights_only=True``): a downloaded file cannot run anything.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

# Partial files are named ``.<target name>.<random>.tmp`` next to their target.
TEMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform/filesystem
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(Path(path), lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(text.encode()))


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Deletes the partial files a killed writer left in ``folder`` (never read; only clutter)."""
    stale = [p for p in Path(folder).glob(f".*{TEMP_SUFFIX}") if p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    _atomic_write(Path(path), lambda fh: fh.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def atomic_write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """``rows`` as a table whose columns are every key, in the order they first appear."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(text.getvalue(), path)


def lock_folder(folder: str | os.PathLike, blocking: bool = True) -> int | None:
    """An exclusive ``flock`` on ``folder`` itself, which the kernel releases when the process ends, however it
    ends: the descriptor to close to release it, or None without ``fcntl`` (Windows: no lock). Not
    ``blocking``: BlockingIOError while another process holds it."""
    try:
        import fcntl
    except ImportError:
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    return fd


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused to load — the file contains Python objects beyond tensors and plain "
            f"containers, which could run code when unpickled ({str(err).splitlines()[0]}). "
            "Only load checkpoints from sources you trust, re-saved as plain state_dicts."
        ) from None
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from None
