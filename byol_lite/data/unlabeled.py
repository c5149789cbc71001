"""Unlabeled images for self-supervised pretraining, all brought to one square size.

Why one shape: the pretraining loop augments whole uint8 batches on the GPU. Small sets are decoded
once into an in-memory tensor, ``.images``, so an epoch is just indexing; large ones per item in
DataLoader workers. A bad file is reported and skipped; only a source with no usable image is an error.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
CACHE_MAX_IMAGES = 20_000
CACHE_MAX_SIZE = 96


def load_square(path, size: int) -> torch.Tensor:
    """uint8 ``[3, size, size]``: short side resized to ``size`` (antialiased), then centre crop. PIL's JPEG
    ``draft`` mode decodes at 1/2, 1/4 or 1/8 scale when that still covers ``size`` (a 500-px VOC photo
    then costs several times less)."""
    from PIL import Image

    with Image.open(path) as img:
        img.draft("RGB", (size, size))
        img = img.convert("RGB")
        w, h = img.size
        s = size / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        left, top = (nw - size) // 2, (nh - size) // 2
        # resize-with-box crops in the source's coordinates: one resampling pass, no full-size copy
        box = (left / s, top / s, (left + size) / s, (top + size) / s)
        out = img.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None if s >= 1 else 2.0)
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1).contiguous()


def in_memory(images) -> torch.Tensor | None:
    """The uint8 tensor of every image when ``images`` is one or caches one (``.images``), else None."""
    cached = images if isinstance(images, torch.Tensor) else getattr(images, "images", None)
    return cached if isinstance(cached, torch.Tensor) else None


def _report(bad: list[tuple[Path, str]], total: int, source: str) -> None:
    if not bad:
        return
    usable = total - len(bad)
    shown = "; ".join(f"{p} ({why})" for p, why in bad[:10]) + ("; ..." if len(bad) > 10 else "")
    if usable == 0:
        raise ValueError(f"no usable image in {source}: all {total} files are unreadable: {shown}")
    warnings.warn(f"{len(bad)} of {total} images in {source} are unreadable and were skipped "
                  f"({usable} used): {shown}", RuntimeWarning, stacklevel=3)


class UnlabeledImages(torch.utils.data.Dataset):
    """uint8 ``[3, S, S]`` images from a list of files; ``.images`` is the cache (None when streamed), which
    ``cache=None`` makes for small sets (<= 20k images of <= 96 px, ~550 MB at most). ``files``: the usable
    files; ``bad_files``: the skipped ones with the reason."""

    def __init__(self, files: Sequence, image_size: int = 64, cache: bool | None = None, source: str = "",
                 workers: int = 0):
        from PIL import Image

        self.image_size = int(image_size)
        self.source = source or "the image list"
        files = [Path(f) for f in files]
        if not files:
            raise ValueError(f"no images found in {self.source}: expected JPEG/PNG files "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        if cache is None:
            cache = len(files) <= CACHE_MAX_IMAGES and self.image_size <= CACHE_MAX_SIZE
        self.bad_files: list[tuple[Path, str]] = []
        self.images: torch.Tensor | None = None
        if cache:
            self.files, self.images = self._decode_all(files, workers)
        else:
            ok = []
            for f in files:                         # cheap header check; full decode happens per item
                try:
                    with Image.open(f) as img:
                        img.size
                    ok.append(f)
                except Exception as err:
                    self.bad_files.append((f, _reason(err)))
            self.files = ok
        _report(self.bad_files, len(files), self.source)

    def _decode_all(self, files: list[Path], workers: int):
        if workers > 0:
            loader = torch.utils.data.DataLoader(_Decode(files, self.image_size), batch_size=None,
                                                 num_workers=workers)
            results = list(loader)
        else:
            results = [_Decode(files, self.image_size)[i] for i in range(len(files))]
        good, tensors = [], []
        for f, (img, err) in zip(files, results):
            if err is None:
                good.append(f)
                tensors.append(img)
            else:
                self.bad_files.append((f, err))
        images = torch.stack(tensors) if tensors else torch.empty(0, 3, self.image_size, self.image_size,
                                                                  dtype=torch.uint8)
        return good, images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.images is not None:
            return self.images[index]
        for k in range(len(self.files)):             # a file that fails late is replaced by the next one
            path = self.files[(index + k) % len(self.files)]
            try:
                return load_square(path, self.image_size)
            except Exception as err:
                warnings.warn(f"{path}: unreadable image skipped ({_reason(err)})", RuntimeWarning)
        raise ValueError(f"no usable image in {self.source}")

    def __repr__(self) -> str:
        mode = "cached" if self.images is not None else "streamed"
        return f"UnlabeledImages({self.source}, n={len(self)}, size={self.image_size}, {mode})"


class _Decode(torch.utils.data.Dataset):
    """(image or None, error or None) per file: decoding errors become data, so workers never die."""

    def __init__(self, files, size):
        self.files, self.size = files, size

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            return load_square(self.files[i], self.size), None
        except Exception as err:
            return None, _reason(err)


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def image_files(folder) -> list[Path]:
    """Every JPEG/PNG under ``folder`` (recursive, case-insensitive suffix, hidden files skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist: expected a folder tree of JPEG/PNG files")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def unlabeled_dataset(source: str = "synthetic", root=None, image_size: int = 64, split: str | None = None,
                      cache: bool | None = None, workers: int = 0, embedded: str = "shapes") -> UnlabeledImages:
    """Images for pretraining, labels never read: ``synthetic`` (the embedded set ``embedded``: its train and
    unlabeled ids, never val, which stays unseen for evaluation), ``voc`` (the ``split`` ids, default
    trainval) or ``folder`` (every JPEG/PNG under ``root``)."""
    from byol_lite.data.voc import read_split, voc_dir

    if source == "synthetic":
        from byol_lite.data.synthetic import ensure_synthetic

        droot = ensure_synthetic(root, embedded=embedded)
        splits = [split] if split else ["train", "unlabeled"]
        if "val" in splits or "trainval" in splits:
            raise ValueError(f"split {split!r}: the synthetic val images are kept out of pretraining; "
                             f"use train or unlabeled")
        ids = [i for s in splits for i in read_split(droot, s)]
        files = [voc_dir(droot) / "JPEGImages" / f"{i}.jpg" for i in ids]
        name = f"{droot} ({'+'.join(splits)})"
    elif source == "voc":
        if root is None:
            raise ValueError("source 'voc' needs root: the folder that contains VOCdevkit/")
        split = split or "trainval"
        files = [voc_dir(root) / "JPEGImages" / f"{i}.jpg" for i in read_split(root, split)]
        name = f"{root} ({split})"
    elif source == "folder":
        if root is None:
            raise ValueError("source 'folder' needs root: a folder tree of JPEG/PNG images")
        files = image_files(root)
        name = str(root)
    else:
        raise ValueError(f"unknown image source {source!r}: expected synthetic, voc or folder")
    return UnlabeledImages(files, image_size=image_size, cache=cache, source=name, workers=workers)
