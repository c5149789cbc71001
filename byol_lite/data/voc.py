"""The PASCAL VOC 2012 segmentation layout: reading it, and saying exactly what is wrong with it.

Why: a segmentation run that dies at step 3,000 on one bad mask, or silently trains on colour
codes read as labels, wastes an evening. Every failure here names the offending file, what was
found and what was expected, and the same per-file checks back ``python -m byol_lite data check``.
Decoding uses PIL (torchvision's own decoders are deprecated since 0.29 in favour of TorchCodec,
and PIL is what reads palette PNGs as indices anyway).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from byol_lite.data.palette import IGNORE_INDEX, VOC_CLASSES

SPLITS = ("train", "val", "trainval", "train_aug")
# List-file names used for train_aug by the common converters (ours writes train_aug.txt).
TRAIN_AUG_LISTS = ("train_aug.txt", "trainaug.txt", "aug.txt")
INDEX_MODES = ("P", "L", "1", "I", "I;16")

EXPECTED_TREE = """ROOT/VOCdevkit/VOC2012/
  JPEGImages/<id>.jpg
  SegmentationClass/<id>.png        (8-bit palette or grey PNG, pixel value = class index, 255 = ignore)
  SegmentationClassAug/<id>.png     (train_aug only)
  ImageSets/Segmentation/{train,val,trainval}.txt  (+ train_aug.txt)"""


class DatasetError(ValueError):
    """A bad file in a dataset; ``path`` is the file and ``problem`` a short key used by ``data check``."""

    def __init__(self, path, problem: str, message: str):
        super().__init__(message)
        self.path = Path(path)
        self.problem = problem


def resolve_source(data: str, data_root, embedded: str = "shapes") -> str:
    """``auto``: VOC when a ``data_root`` is given, else the embedded set. Passing a VOC folder alone
    switches a run to it; a wrong path then fails in :func:`voc_dir` with the expected tree, rather than
    quietly generating the embedded set there. ``embedded`` names an embedded set, so another one than the
    default with a source other than the embedded one is refused rather than ignored."""
    source = data if data != "auto" else "synthetic" if data_root is None else "voc"
    if embedded != "shapes" and source != "synthetic":
        from byol_lite.config import ParameterError

        raise ParameterError(f"parameter 'embedded' is {embedded!r}, an embedded set, but data is {source!r}: "
                             "set data to synthetic (data_root: where to generate it), or leave embedded at shapes")
    return source


def voc_dir(root) -> Path:
    """``root/VOCdevkit/VOC2012``, or a FileNotFoundError that shows the expected tree."""
    root = Path(root)
    base = root / "VOCdevkit" / "VOC2012"
    if not base.is_dir():
        what = "does not exist" if not root.exists() else f"has no {base.relative_to(root)}/ folder"
        raise FileNotFoundError(
            f"{root} {what}: expected the folder that contains VOCdevkit/, laid out as\n{EXPECTED_TREE}\n"
            f"Get real VOC with `python -m byol_lite data prepare-voc DEST` (see data/README.md) or the "
            f"embedded dataset with `python -m byol_lite data synthetic --out DIR`; to pretrain on a plain "
            f"folder of images, pass data=folder (--data folder).")
    return base


def split_file(root, split: str) -> Path:
    """The list file of ``split``; FileNotFoundError naming it and the splits that do exist."""
    base = voc_dir(root)
    lists = base / "ImageSets" / "Segmentation"
    names = TRAIN_AUG_LISTS if split == "train_aug" else (f"{split}.txt",)
    for name in names:
        if (lists / name).is_file():
            return lists / name
    found = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
    hint = (" train_aug is built from SBD by `python -m byol_lite data prepare-voc DEST`." if split == "train_aug"
            else "")
    raise FileNotFoundError(f"split file {lists / names[0]} is missing (split {split!r}); "
                            f"splits found: {', '.join(found) or 'none'}.{hint}")


def read_split(root, split: str) -> list[str]:
    """Ids listed for ``split``, one per line (blank lines skipped)."""
    path = split_file(root, split)
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split file {path} is empty: expected one image id per line, e.g. 2007_000032")
    return ids


def read_classes(root) -> tuple[str, ...]:
    """Class names: ``root/classes.txt`` when present (the synthetic set writes one), else the 21 VOC names."""
    path = Path(root) / "classes.txt"
    if path.is_file():
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
        if not 1 <= len(names) <= 255:
            raise ValueError(f"{path}: expected 1..255 class names, one per line, got {len(names)}")
        return names
    return VOC_CLASSES


def _decode(path, what: str, expected: str, mode: str | None = None) -> tuple[str, np.ndarray]:
    """The file's mode and pixels (converted to ``mode`` if given); a truncated or unreadable file raises
    :class:`DatasetError` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return img.mode, np.asarray(img.convert(mode) if mode else img)
    except FileNotFoundError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError... for bad files
        raise DatasetError(path, f"unreadable {what}",
                           f"{path}: unreadable or truncated {what} ({err}); expected {expected}") from None


def read_image(path) -> torch.Tensor:
    """uint8 ``[3, H, W]``; a truncated or unreadable file raises :class:`DatasetError` naming it."""
    _, rgb = _decode(path, "image", "a complete JPEG/PNG — re-extract or re-download it, or remove its id from "
                                    "the split list", "RGB")
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_mask(path, num_classes: int = len(VOC_CLASSES)) -> torch.Tensor:
    """int64 ``[H, W]`` class indices from a palette or 8-bit grey PNG; 255 = ignore. Raises
    :class:`DatasetError` for a colour-coded RGB mask (with the conversion to offer), for values outside
    ``0..num_classes-1`` and 255, and for an unreadable file."""
    mode, arr = _decode(path, "mask", "a PNG of class indices")
    if mode not in INDEX_MODES:
        what = "colour-coded RGB" if mode in ("RGB", "RGBA") else f"{mode}-mode"
        raise DatasetError(
            path, "rgb mask",
            f"{path}: {what} mask; expected class indices (an 8-bit palette 'P' or grey 'L' PNG, "
            f"pixel value = class index). Convert VOC colours to indices with byol_lite.data.rgb_to_index, or "
            f"rewrite every such mask in place with `python -m byol_lite data check ROOT --convert-rgb`.")
    arr = arr.astype(np.int64)
    bad = np.unique(arr[(arr < 0) | ((arr >= num_classes) & (arr != IGNORE_INDEX))])
    if bad.size:
        shown = ", ".join(map(str, bad[:8].tolist())) + (", ..." if bad.size > 8 else "")
        raise DatasetError(path, "label values",
                           f"{path}: label values {shown} outside 0..{num_classes - 1} and {IGNORE_INDEX} (ignore); "
                           f"expected class indices of the {num_classes} classes")
    return torch.from_numpy(arr)


def check_sizes(image: torch.Tensor, mask: torch.Tensor, image_path, mask_path) -> None:
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        (ih, iw), (mh, mw) = image.shape[-2:], mask.shape[-2:]
        raise DatasetError(mask_path, "size mismatch",
                           f"{mask_path}: mask is {mw}x{mh} (WxH) but its image {image_path} is {iw}x{ih}; "
                           f"a mask must have exactly its image's size")


def missing_files(paths: Sequence[Path]) -> list[Path]:
    """The paths that do not exist (one directory listing per folder, not one stat per file)."""
    listed = {f: set(os.listdir(f)) if f.is_dir() else set() for f in {p.parent for p in paths}}
    return [p for p in paths if p.name not in listed[p.parent]]


class VOCSegmentation(torch.utils.data.Dataset):
    """``(image uint8 [3, H, W], mask int64 [H, W])`` pairs of a split of the VOC layout under ``root``
    (train_aug: masks from ``SegmentationClassAug/``), ``transforms(image, mask)`` applied jointly.
    Missing files are reported at construction; bad contents when an item is read."""

    def __init__(self, root, split: str = "train", transforms: Callable | None = None):
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        base = voc_dir(self.root)
        self.classes = read_classes(self.root)
        self.num_classes = len(self.classes)
        self.ids = read_split(self.root, split)
        list_path = split_file(self.root, split)
        mask_dir = base / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        self.images = [base / "JPEGImages" / f"{i}.jpg" for i in self.ids]
        self.masks = [mask_dir / f"{i}.png" for i in self.ids]
        for paths, what in ((self.images, "image"), (self.masks, "mask")):
            missing = missing_files(paths)
            if missing:
                shown = "\n  ".join(map(str, missing[:5])) + ("\n  ..." if len(missing) > 5 else "")
                raise FileNotFoundError(f"{len(missing)} of {len(paths)} {what}s listed in {list_path} are missing:"
                                        f"\n  {shown}\nRe-extract the dataset, or remove those ids from the list "
                                        "(`python -m byol_lite data check ROOT` lists every problem).")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image = read_image(self.images[index])
        mask = read_mask(self.masks[index], self.num_classes)
        check_sizes(image, mask, self.images[index], self.masks[index])
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return f"VOCSegmentation(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, classes={self.num_classes})"
