"""Data for byol_lite: real PASCAL VOC 2012 (:class:`VOCSegmentation`, :func:`prepare_voc`,
:func:`check_dataset`), the embedded synthetic default (:func:`ensure_synthetic`), and unlabeled images
for pretraining (:func:`unlabeled_dataset`)."""
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
