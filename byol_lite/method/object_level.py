"""Object-level BYOL: the BYOL loss per unsupervised region, not per image. DetCon-B's regions and architecture
(Hénaff et al. 2021) without its negatives: DetCon-B scores each region with InfoNCE against other regions.

Regions: Felzenszwalb–Huttenlocher segments (never labels; at most 96 px a side), the ``num_regions`` (8: a
handful per 64-px view) largest kept, the rest joined to the nearest in colour and centroid; computed once
per image set, cached in memory and next to the images. Each view's mask is the region map cropped and
flipped with that view's parameters (nearest, at view resolution), one-hot, then area-averaged to the
feature-map grid; regions are pooled on the encoder's last feature map, before the projector. Only regions
present in both views enter the heads and the loss (mean over them, both directions summed, as BYOL's).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from skimage.segmentation import felzenszwalb
from tqdm.auto import tqdm

from byol_lite.method.augment import BYOLAugment, ViewParams, apply_geometry
from byol_lite.method.byol import BYOL
from byol_lite.checkpoint import atomic_save, safe_load

FH_SIGMA = 0.8              # Gaussian smoothing before segmentation (skimage's and the FH paper's default)
FH_MIN_FRACTION = 0.01      # smallest FH segment, as a fraction of the image area
SEGMENT_MAX_SIZE = 96       # larger images are segmented at this size: FH's cost grows with the pixels,
                            # and a region only needs the feature map's precision (a 224-px view has 7-28 cells)
METHOD_VERSION = 1          # part of the cache key: bump when segment_regions changes its output

_MEMORY: dict[str, torch.Tensor] = {}   # cache key -> region maps, for repeated runs in one process
_MEMORY_MAX = 4


def segment_regions(image: torch.Tensor, num_regions: int, scale: float) -> torch.Tensor:
    """uint8 region ids in ``[0, num_regions)`` (0 = largest) for one uint8 ``[3, H, W]`` image, at its size
    or, if larger, brought down to ``SEGMENT_MAX_SIZE`` on its longer side."""
    ratio = SEGMENT_MAX_SIZE / max(image.shape[1:])
    if ratio < 1:
        small = [round(n * ratio) for n in image.shape[1:]]
        image = F.interpolate(image[None].float(), small, mode="bilinear", antialias=True, align_corners=False)
        image = image[0].round().clamp(0, 255).to(torch.uint8)
    img = image.permute(1, 2, 0).cpu().numpy()
    h, w = img.shape[:2]
    seg = felzenszwalb(img, scale=scale, sigma=FH_SIGMA, min_size=max(1, round(FH_MIN_FRACTION * h * w)))
    flat = seg.ravel()
    size = np.bincount(flat)
    yy, xx = np.mgrid[:h, :w]
    coords = [img[..., c].ravel() / 255 for c in range(3)] + [yy.ravel() / h, xx.ravel() / w]
    feats = np.stack([np.bincount(flat, weights=v, minlength=len(size)) / size for v in coords], 1)
    kept = np.argsort(-size, kind="stable")[:num_regions]
    assign = ((feats[:, None, :] - feats[None, kept, :]) ** 2).sum(-1).argmin(1)
    return torch.from_numpy(assign[seg].astype(np.uint8))


class _Segment(torch.utils.data.Dataset):
    def __init__(self, images, num_regions: int, scale: float):
        self.images, self.num_regions, self.scale = images, num_regions, scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return segment_regions(self.images[index], self.num_regions, self.scale)


def region_masks(images, num_regions: int = 8, scale: float = 100.0, workers: int = 0,
                 progress: bool = False) -> torch.Tensor:
    """uint8 ``[N, h, w]`` region maps of uint8 images ``[N, 3, H, W]`` or a Dataset of them
    (8-12 ms per image of 80 px or more on one core; ``workers`` DataLoader processes share the work)."""
    if not 1 <= num_regions <= 255:
        raise ValueError(f"num_regions={num_regions}: region ids are stored as uint8, choose 1 to 255")
    segments = _Segment(images, num_regions, scale)
    # (the sampler bounds the indices: a Dataset may not raise IndexError past its end)
    loader = torch.utils.data.DataLoader(segments, batch_size=None, num_workers=workers)
    return torch.stack(list(tqdm(loader, desc="region masks", unit="img", disable=not progress)))


def _disk_path(dataset, key: str) -> Path | None:
    """Next to the image files of a file-backed set, in a hidden folder that image listings skip."""
    files = getattr(dataset, "files", None)
    if not files:
        return None
    return Path(os.path.commonpath([Path(f).parent for f in files])) / ".byol_lite-cache" / f"regions-{key}.pt"


def cached_region_masks(dataset, num_regions: int = 8, scale: float = 100.0, workers: int = 0,
                        progress: bool = False) -> torch.Tensor:
    """:func:`region_masks` of an image set (a uint8 tensor or a Dataset), computed once: kept in memory and,
    for a file-backed set, next to its images, under a key of the set's :func:`dataset_fingerprint` and the
    method's settings (new images or settings: new masks)."""
    from byol_lite.data.fingerprint import dataset_fingerprint

    identity = dataset_fingerprint(dataset)   # (a bad num_regions is refused by region_masks, before any cache)
    if identity.endswith(f" items of {type(dataset).__name__}"):     # no content or file identity: never reuse
        return region_masks(dataset, num_regions, scale, workers, progress)
    key = hashlib.sha1(f"{identity}|{num_regions}|{scale}|{FH_SIGMA}|{FH_MIN_FRACTION}|"
                       f"{SEGMENT_MAX_SIZE}|{METHOD_VERSION}".encode()).hexdigest()[:16]
    if key in _MEMORY:
        return _MEMORY[key]
    path = _disk_path(dataset, key)
    masks = None
    if path is not None and path.is_file():
        try:
            masks = safe_load(path)
        except ValueError as err:
            warnings.warn(f"{path}: unreadable region-mask cache, recomputing it ({err})", RuntimeWarning)
        if masks is not None and (not isinstance(masks, torch.Tensor) or masks.dtype != torch.uint8
                                  or masks.ndim != 3 or len(masks) != len(dataset)):
            warnings.warn(f"{path}: region-mask cache does not fit the images, recomputing it", RuntimeWarning)
            masks = None
    if masks is None:
        masks = region_masks(dataset, num_regions, scale, workers, progress)
        if path is not None:
            try:
                atomic_save(masks, path)
            except OSError as err:
                warnings.warn(f"could not cache region masks at {path} ({err}); they will be computed again "
                              "next time (make the image folder writable to keep them)", RuntimeWarning)
    while len(_MEMORY) >= _MEMORY_MAX:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = masks
    return masks


def _resize_labels(labels: torch.Tensor, size) -> torch.Tensor:
    """Nearest (pixel-centre aligned) resampling of uint8 label maps ``[..., h, w]`` to ``size``."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).float()
    out = F.interpolate(flat, size=tuple(size), mode="nearest-exact")
    return out.to(torch.uint8).reshape(*labels.shape[:-2], *size)


class RegionImages(torch.utils.data.Dataset):
    """A streamed image set (too large to cache) whose items carry their region map as a 4th channel."""

    def __init__(self, dataset, masks: torch.Tensor):
        self.dataset, self.masks = dataset, masks

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.dataset[index]
        return torch.cat([image, _resize_labels(self.masks[index], image.shape[1:])[None]])


def with_regions(dataset, num_regions: int = 8, scale: float = 100.0, workers: int = 0, progress: bool = False):
    """The images with their region map as a 4th uint8 channel ``[.., 4, H, W]``, so one batch index
    (and one host-to-device copy) delivers both: a tensor for cached sets, a Dataset for streamed ones."""
    masks = cached_region_masks(dataset, num_regions, scale, workers, progress)
    images = dataset if isinstance(dataset, torch.Tensor) else getattr(dataset, "images", None)
    if images is None:
        return RegionImages(dataset, masks)
    return torch.cat([images, _resize_labels(masks, images.shape[2:])[:, None]], dim=1)


def view_masks(regions: torch.Tensor, params: ViewParams, size: int, num_regions: int) -> torch.Tensor:
    """One-hot float ``[B, K, size, size]``: region maps ``[B, 1, H, W]`` cropped and flipped as the view was."""
    labels = apply_geometry(regions, params, size, mode="nearest")[:, 0].long()
    return F.one_hot(labels, num_regions).permute(0, 3, 1, 2).float()


def region_views(augment: BYOLAugment, batch: torch.Tensor, generator, num_regions: int,
                 batch_size: int | None = None, offset: int = 0):
    """``(view1, view2, masks1, masks2)`` of a batch ``[B, 4, H, W]`` made by :func:`with_regions`
    (``batch_size``/``offset``: this process's rows of a batch split over processes, as in ``BYOLAugment``)."""
    (view1, view2), params = augment(batch[:, :3], generator, return_params=True, batch_size=batch_size,
                                     offset=offset)
    return view1, view2, *(view_masks(batch[:, 3:], p, augment.size, num_regions) for p in params)


def pool_regions(fmap: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``[B, K, C]``: per region, the mean of the feature map ``[B, C, h, w]`` weighted by the fraction
    of each cell that the region covers (``masks`` ``[B, K, H, W]`` at any resolution; zeros if absent)."""
    weights = F.adaptive_avg_pool2d(masks.float(), fmap.shape[-2:])
    area = weights.sum(dim=(2, 3))
    return torch.einsum("bkhw,bchw->bkc", weights, fmap.float()) / area.clamp_min(1e-12)[..., None]


def present(masks: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` bool: the region covers at least one pixel of the view."""
    return masks.flatten(2).amax(dim=2) > 0


class RegionView(NamedTuple):
    image: torch.Tensor     # [B, 3, S, S] the normalised view
    masks: torch.Tensor     # [B, K, S, S] its one-hot region masks
    keep: torch.Tensor      # [B, K] regions present in both views


class ObjectBYOL(BYOL):
    """BYOL with one loss term per region present in both views (same modules, so same checkpoints). The heads
    see the ``[M, C]`` kept region vectors of each view separately: BatchNorm never sees an absent region."""

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, masks1: torch.Tensor, masks2: torch.Tensor):
        keep = present(masks1) & present(masks2)
        return super().forward(RegionView(view1, masks1, keep), RegionView(view2, masks2, keep))

    def _join(self, view1: RegionView, view2: RegionView) -> RegionView:
        # both views keep the same regions, so the heads' batch still splits into two equal halves
        return RegionView(torch.cat([view1.image, view2.image]), torch.cat([view1.masks, view2.masks]),
                          torch.cat([view1.keep, view2.keep]))

    def _represent(self, encoder, view: RegionView) -> torch.Tensor:
        return pool_regions(encoder(view.image)[1], view.masks)[view.keep]
