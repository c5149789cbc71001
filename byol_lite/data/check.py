"""``data check``: scan a whole VOC-layout dataset and report every problem at once, with counts.

Why: the reader stops at the first bad file, which is right during training but slow for fixing a
dataset one error per run. The checker reuses the reader's own per-file checks, so "check passes"
means "training will not trip over a file".
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from byol_lite.data.palette import rgb_to_index, save_mask
from byol_lite.data.voc import (SPLITS, TRAIN_AUG_LISTS, DatasetError, check_sizes, read_classes, read_image,
                                read_mask, split_file, voc_dir)

IMAGE_ONLY_SPLITS = ("unlabeled",)      # lists of images without masks (the synthetic set's pretraining pool)


@dataclass
class Problem:
    kind: str
    path: Path
    message: str


@dataclass
class CheckReport:
    root: Path
    splits: dict[str, int] = field(default_factory=dict)          # split -> number of ids
    problems: list[Problem] = field(default_factory=list)
    pixel_counts: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    classes: tuple[str, ...] = ()
    converted: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> Counter:
        return Counter(p.kind for p in self.problems)

    def pixel_shares(self) -> dict[str, float]:
        total = int(self.pixel_counts.sum())
        if not total:
            return {}
        shares = {name: int(self.pixel_counts[i]) / total for i, name in enumerate(self.classes)}
        shares["ignore (255)"] = int(self.pixel_counts[255]) / total
        return shares

    def format(self, max_per_kind: int | None = 20) -> str:
        lines = [f"dataset {self.root}"]
        lines += [f"  {s}: {n} ids" for s, n in self.splits.items()]
        shares = self.pixel_shares()
        if shares:
            lines.append("pixel shares: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
        for p in self.converted:
            lines.append(f"converted colour-coded mask to indices: {p}")
        if self.ok:
            lines.append("no problems found")
            return "\n".join(lines)
        counts = self.counts()
        lines.append(f"{len(self.problems)} problem(s): " + ", ".join(f"{k} x{n}" for k, n in counts.items()))
        for kind in counts:
            msgs = [p.message for p in self.problems if p.kind == kind]
            shown = msgs if max_per_kind is None else msgs[:max_per_kind]
            lines.append(f"[{kind}] {len(msgs)}")
            lines += [f"  {m}" for m in shown]
            if len(shown) < len(msgs):
                lines.append(f"  ... and {len(msgs) - len(shown)} more (use --all to list them)")
        return "\n".join(lines)


def _available_splits(base: Path) -> list[str]:
    lists = base / "ImageSets" / "Segmentation"
    names = [s for s in SPLITS if s != "train_aug" and (lists / f"{s}.txt").is_file()]
    if any((lists / n).is_file() for n in TRAIN_AUG_LISTS):
        names.append("train_aug")
    names += [s for s in IMAGE_ONLY_SPLITS if (lists / f"{s}.txt").is_file()]
    return names


def _check_one(image_path: Path, mask_path: Path | None, num_classes: int, convert_rgb: bool):
    """Problems, pixel counts and whether a mask was converted, for one (image, mask) pair."""
    problems, counts, converted = [], None, False
    image = mask = None
    if not image_path.is_file():
        problems.append(Problem("missing image", image_path, f"{image_path}: image listed but missing"))
    else:
        try:
            image = read_image(image_path)
        except DatasetError as err:
            problems.append(Problem(err.problem, image_path, str(err)))
    if mask_path is not None:
        if not mask_path.is_file():
            problems.append(Problem("missing mask", mask_path, f"{mask_path}: mask listed but missing"))
        else:
            try:
                mask = read_mask(mask_path, num_classes)
            except DatasetError as err:
                if err.problem == "rgb mask" and convert_rgb:
                    try:
                        from PIL import Image

                        with Image.open(mask_path) as im:
                            index = rgb_to_index(np.asarray(im.convert("RGB")))
                        save_mask(index, mask_path)
                        converted = True
                        mask = read_mask(mask_path, num_classes)
                    except (ValueError, DatasetError) as err2:
                        problems.append(Problem("rgb mask", mask_path,
                                                f"{mask_path}: colour-coded mask not convertible: {err2}"))
                else:
                    problems.append(Problem(err.problem, mask_path, str(err)))
        if image is not None and mask is not None:
            try:
                check_sizes(image, mask, image_path, mask_path)
                counts = np.bincount(mask.numpy().ravel(), minlength=256)
            except DatasetError as err:
                problems.append(Problem(err.problem, mask_path, str(err)))
    return problems, counts, converted


def check_dataset(root, splits: list[str] | None = None, convert_rgb: bool = False,
                  workers: int = 4) -> CheckReport:
    """Checks every listed image and mask (a missing root raises: there is nothing to scan); ``convert_rgb``
    rewrites colour-coded RGB masks in place as palette PNGs of indices."""
    root = Path(root)
    base = voc_dir(root)
    classes = read_classes(root)
    report = CheckReport(root=root, classes=classes)
    wanted = splits or _available_splits(base)
    if not wanted:
        lists = base / "ImageSets" / "Segmentation"
        report.problems.append(Problem("split file missing", lists,
                                       f"{lists}: no split file (train.txt, val.txt, trainval.txt, ...) found"))
        return report
    pairs: dict[tuple[Path, Path | None], None] = {}
    for split in wanted:
        try:
            path = split_file(root, split)
        except FileNotFoundError as err:
            report.problems.append(Problem("split file missing", base / "ImageSets" / "Segmentation" / f"{split}.txt",
                                           str(err)))
            continue
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        report.splits[split] = len(ids)
        if not ids:
            report.problems.append(Problem("empty split", path, f"{path}: split file is empty"))
        mask_dir = base / ("SegmentationClassAug" if split == "train_aug" else "SegmentationClass")
        for i in ids:
            mask = None if split in IMAGE_ONLY_SPLITS else mask_dir / f"{i}.png"
            pairs[(base / "JPEGImages" / f"{i}.jpg", mask)] = None
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(lambda pair: _check_one(pair[0], pair[1], len(classes), convert_rgb), pairs))
    for (image_path, mask_path), (problems, counts, converted) in zip(pairs, results):
        report.problems += problems
        if counts is not None:
            report.pixel_counts += counts
        if converted:
            report.converted.append(mask_path)
    return report
