"""Labeled images for fine-tuning and evaluation: where they are, which of them a run may use, and
items whose augmentation depends on their own seed only."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch


def _count(fraction: float, n: int, what: str) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"{what} must be in (0, 1], got {fraction}")
    return max(1, round(fraction * n))


def labeled_split(ids: Sequence, fraction: float = 1.0, holdout_fraction: float = 0.0,
                  seed: int = 0) -> tuple[list, list]:
    """``(train, holdout)`` from ONE permutation of ``ids`` seeded by ``seed``: the held-out part (for choosing
    the LR) is its tail and the training subset a prefix of the rest, so the 5% subset lies inside the 10%
    one and neither touches the held-out images."""
    ids = list(ids)
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    n_holdout = round(holdout_fraction * len(ids))
    pool, holdout = order[: len(ids) - n_holdout], order[len(ids) - n_holdout:]
    if not pool:
        raise ValueError(f"holdout_fraction={holdout_fraction} leaves none of the {len(ids)} labeled images "
                         "to train on")
    train = pool[: _count(fraction, len(pool), "label_fraction")]
    return [ids[i] for i in train], [ids[i] for i in holdout]


def resolve_data_root(data: str, data_root: str | None, embedded: str = "shapes") -> Path | str:
    """The folder containing VOCdevkit/: the embedded set ``embedded`` (generated on first use) or the
    user's VOC."""
    from byol_lite.data.synthetic import ensure_synthetic

    if data == "synthetic":
        return ensure_synthetic(data_root, embedded=embedded)
    if data_root is None:
        raise ValueError("data=voc needs data_root: the folder that contains VOCdevkit/ (--data-root DIR)")
    return data_root


def labeled_splits(data: str, data_root: str | None, *splits: str, embedded: str = "shapes") -> list:
    """One :class:`~byol_lite.data.voc.VOCSegmentation` per split of the labeled data ``data`` (and, for the
    embedded set, ``embedded``) names."""
    from byol_lite.data.voc import VOCSegmentation

    root = resolve_data_root(data, data_root, embedded)
    return [VOCSegmentation(root, split) for split in splits]


class SeededItems(torch.utils.data.Dataset):
    """Items ``(index, seed)`` -> ``transform(*base[index])`` with the CPU RNG seeded by ``seed`` (the caller's
    left untouched): an item's augmentation depends on its seed only, not on the worker or on what ran
    before, which is what makes resuming exact."""

    def __init__(self, base, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(*self.base[index])
