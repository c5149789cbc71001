"""VOC class names and colour map, and the conversions between index masks and colours: the reader, the
generator, the checker and the plots need the same 256-entry palette, and only exactly this table turns a
colour-coded (RGB) mask back into indices."""
from __future__ import annotations

from pathlib import Path

import numpy as np

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IGNORE_INDEX = 255


def _voc_palette() -> np.ndarray:
    """The standard VOC bit-shift colour map: bit 7 - j of r, g, b is bit 3j, 3j + 1, 3j + 2 of the class index."""
    index, palette = np.arange(256), np.zeros((256, 3), dtype=np.uint8)
    for j in range(8):
        for channel in range(3):
            palette[:, channel] |= (((index >> (3 * j + channel)) & 1) << (7 - j)).astype(np.uint8)
    return palette


VOC_PALETTE: np.ndarray = _voc_palette()


def colorize(mask) -> np.ndarray:
    """Index mask (numpy or tensor, [H, W]) -> uint8 RGB [H, W, 3] in VOC colours, for plotting."""
    m = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
    if m.ndim != 2:
        raise ValueError(f"colorize expects an [H, W] index mask, got shape {tuple(m.shape)}")
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ValueError(f"colorize expects values in 0..255, got {m.min()}..{m.max()}")
    return VOC_PALETTE[m.astype(np.int64)]


def rgb_to_index(rgb) -> np.ndarray:
    """Colour-coded mask [H, W, 3] -> uint8 index mask, inverting :data:`VOC_PALETTE`; ``ValueError`` for colours
    not in it (a JPEG-compressed or anti-aliased mask cannot be converted without guessing)."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] < 3:
        raise ValueError(f"rgb_to_index expects an [H, W, 3] colour image, got shape {a.shape}")
    a = a[..., :3].astype(np.int64)
    code = (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]
    pal = VOC_PALETTE.astype(np.int64)
    pal_code = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lookup = {int(c): i for i, c in enumerate(pal_code)}     # first index wins for repeated colours
    uniq, inverse = np.unique(code, return_inverse=True)
    unknown = [u for u in uniq.tolist() if u not in lookup]
    if unknown:
        shown = ", ".join(f"({u >> 16}, {(u >> 8) & 255}, {u & 255})" for u in unknown[:5])
        raise ValueError(f"{len(unknown)} colour(s) are not VOC palette colours, e.g. {shown}")
    return np.array([lookup[u] for u in uniq.tolist()], dtype=np.uint8)[inverse.reshape(code.shape)]


def save_mask(mask, path: str | Path) -> None:
    """Writes an index mask as an 8-bit palette PNG with the VOC colours, as VOC stores them."""
    from PIL import Image

    m = np.asarray(mask.cpu() if hasattr(mask, "cpu") else mask)
    if m.size and (m.min() < 0 or m.max() > 255):
        raise ValueError(f"{path}: mask values must be 0..255, got {m.min()}..{m.max()}")
    m = np.ascontiguousarray(m, dtype=np.uint8)
    img = Image.frombytes("P", (m.shape[1], m.shape[0]), m.tobytes())
    img.putpalette(VOC_PALETTE.tobytes())
    img.save(path, format="PNG", optimize=False)
