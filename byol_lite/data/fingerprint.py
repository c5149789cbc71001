"""Which data a run read: recorded in its folder, compared on resume, the key of the region-mask cache."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from byol_lite.data.unlabeled import in_memory


def dataset_fingerprint(dataset) -> str:
    """A short identity of the data a run trains on, so resuming on other data is refused: the content of
    cached tensors and in-memory lists, the files' names and sizes of file-backed datasets (cheap for tens of
    thousands of files; catches added, removed or replaced images), else only the type and length."""
    h = hashlib.sha1()

    def add_tensor(t: torch.Tensor) -> None:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")

    cached = in_memory(dataset)
    files = [getattr(dataset, a, None) for a in ("files", "images", "masks")]
    files = [f for f in files if isinstance(f, list) and f and isinstance(f[0], (str, Path))]
    if cached is not None:
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
