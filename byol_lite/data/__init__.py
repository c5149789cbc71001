"""Data for byol_lite: real PASCAL VOC 2012, the embedded synthetic default, unlabeled image folders.

- :class:`VOCSegmentation` reads the VOC layout (train, val, trainval, train_aug) as
  ``(uint8 [3,H,W], int64 [H,W])`` pairs, with errors that name the bad file.
- :func:`train_transforms`: joint image/mask transforms (masks nearest, padded 255); :func:`normalize`.
- :func:`ensure_synthetic`: the embedded dataset, generated on first use into ``data/``.
- :func:`unlabeled_dataset`: square uint8 images for pretraining (cached in memory when small).
- :func:`check_dataset` and :func:`prepare_voc` back ``python -m byol_lite data check|prepare-voc``.
"""
from byol_lite.data.check import CheckReport, check_dataset
from byol_lite.data.palette import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE, colorize, rgb_to_index, save_mask
from byol_lite.data.prepare_voc import build_train_aug, prepare_voc
from byol_lite.data.synthetic import (DEFAULT_SIZES, GENERATOR_VERSION, SHAPE_CLASSES, build_synthetic,
                                      ensure_synthetic)
from byol_lite.data.transforms import denormalize, normalize, train_transforms
from byol_lite.data.unlabeled import UnlabeledImages, image_files, load_square, unlabeled_dataset
from byol_lite.data.voc import DatasetError, VOCSegmentation, read_image, read_mask, resolve_source

__all__ = [
    "CheckReport", "DEFAULT_SIZES", "DatasetError", "GENERATOR_VERSION", "IGNORE_INDEX", "SHAPE_CLASSES",
    "UnlabeledImages", "VOCSegmentation", "VOC_CLASSES", "VOC_PALETTE", "build_synthetic", "build_train_aug",
    "check_dataset", "colorize", "denormalize", "ensure_synthetic", "image_files", "load_square",
    "normalize", "prepare_voc", "read_image", "read_mask", "resolve_source", "rgb_to_index", "save_mask", "train_transforms",
    "unlabeled_dataset",
]
