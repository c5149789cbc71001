"""Joint (image, mask) transforms on torchvision ``transforms.v2``.

Why v2 with ``tv_tensors``: one random draw is applied to both tensors (same scale, crop and
flip), and v2 resizes a ``tv_tensors.Mask`` with nearest-neighbour whatever the image uses, so a
label is never interpolated into a class that was not there. The image stays uint8 until the model
code normalises it with :func:`normalize`, the one ImageNet normalisation of the package.
"""
from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from byol_lite.data.palette import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """uint8 or [0, 1] float images ``[..., 3, H, W]`` -> ImageNet mean/std, what the backbones expect."""
    x = images if images.is_floating_point() else F.to_dtype(images, torch.float32, scale=True)
    return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD, inplace=inplace)


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """:func:`normalize` undone, clipped to [0, 1]: a normalised image for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)


class RandomScale(v2.Transform):
    """Resizes by a random factor in ``scale`` of the image's own size (or of ``base_size``, short side): v2's
    ``RandomResize`` only sets an absolute short side, and small images need a factor of their own size."""

    def __init__(self, scale: tuple[float, float], base_size: int | None = None,
                 interpolation: InterpolationMode = InterpolationMode.BILINEAR):
        super().__init__()
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        self.scale, self.base_size, self.interpolation = tuple(scale), base_size, interpolation

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        s = float(torch.empty(()).uniform_(self.scale[0], self.scale[1]))
        if self.base_size is not None:
            s *= self.base_size / min(h, w)
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # Masks are resized with NEAREST by v2 regardless of ``interpolation``.
        return F.resize(inpt, params["size"], interpolation=self.interpolation, antialias=True)


class JointTransform:
    """Wraps a v2 pipeline as ``f(image uint8 [3,H,W], mask int64 [H,W]) -> (image, mask)``, plain tensors; the
    mask travels as uint8 (values are 0..255) for fast nearest resizing."""

    def __init__(self, pipeline: v2.Transform):
        self.pipeline = pipeline

    def __call__(self, image: torch.Tensor, mask: torch.Tensor):
        img, msk = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask.to(torch.uint8)))
        return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor).to(torch.int64)

    def __repr__(self) -> str:
        return f"JointTransform({self.pipeline!r})"


def train_transforms(crop_size: int | tuple[int, int], scale: tuple[float, float] = (0.5, 2.0),
                     base_size: int | None = None, hflip: float = 0.5, fill: int = 0,
                     interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> JointTransform:
    """Random scale, random crop (image padded with ``fill``, mask with 255), horizontal flip. ``base_size``: the
    short side becomes ``base_size * s`` (torchvision's reference: 520 and crop 480 on VOC), else scaled by ``s``."""
    return JointTransform(v2.Compose([
        RandomScale(scale, base_size, interpolation),
        v2.RandomCrop(crop_size, pad_if_needed=True, fill={tv_tensors.Image: fill, tv_tensors.Mask: IGNORE_INDEX}),
        v2.RandomHorizontalFlip(hflip),
    ]))
