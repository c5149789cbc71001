"""BYOL's two view distributions, applied to a whole batch on its own device.

Every image draws its own crop, flip, jitter, grayscale, blur and solarize parameters, as in the official
code (byol-pytorch draws one set per batch), and, beyond the paper, a rotation angle when asked for, on the CPU
from a ``torch.Generator``, so a seed gives the same views on any device; the pixel work runs where the batch
lives. The angle, crop box and flip are returned on request, so a mask can follow a view exactly
(:func:`apply_geometry`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from byol_lite.data.transforms import denormalize, normalize


@dataclass(frozen=True)
class ViewConfig:
    """One view distribution. Defaults are the paper's (Table 6) common part."""

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    rotation: float = 0.0     # degrees: each image turns by its own angle in [-rotation, rotation] (180: any)
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 1.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)   # pixels of a BLUR_REFERENCE_SIZE view; scaled to the view's size
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5


# The paper's σ range is for 224-px views. Applied unscaled to a 32-px view, σ = 2 px is 14 px at 224 and
# wipes out fine structure (textures of period 5-12 px at 80 px vanished from the views), so σ scales with the view.
BLUR_REFERENCE_SIZE = 224

VIEW1 = ViewConfig(blur_p=1.0, solarize_p=0.0)   # T
VIEW2 = ViewConfig(blur_p=0.1, solarize_p=0.2)   # T'


def paper_views(crop_min_scale: float = 0.08, jitter_strength: float = 1.0,
                blur_p: tuple[float, float] = (1.0, 0.1), solarize_p: tuple[float, float] = (0.0, 0.2),
                hue: float = 0.1, rotation: float = 0.0) -> tuple[ViewConfig, ViewConfig]:
    """The paper's pair, with the knobs chapters and ablations turn (jitter strength scales all four factors,
    ``hue`` the largest hue shift before that scaling; ``rotation``: degrees, both views, 0 in the paper)."""
    def make(base: ViewConfig, blur: float, sol: float) -> ViewConfig:
        return replace(base, crop_scale=(crop_min_scale, 1.0), blur_p=blur, solarize_p=sol, rotation=rotation,
                       brightness=0.4 * jitter_strength, contrast=0.4 * jitter_strength,
                       saturation=0.2 * jitter_strength, hue=min(0.5, hue * jitter_strength))
    return make(VIEW1, blur_p[0], solarize_p[0]), make(VIEW2, blur_p[1], solarize_p[1])


@dataclass
class ViewParams:
    """Per-image parameters of one view (CPU tensors, first dimension = batch); ``boxes`` are ``(x0, y0, x1, y1)``
    fractions of the input's width/height, ``flipped`` mirrors left-right after cropping, ``angle`` turns the
    input about its centre before cropping, counter-clockwise as displayed (torchvision's ``rotate``; π/2 is
    ``torch.rot90(x, 1, dims=(-2, -1))``)."""

    boxes: torch.Tensor        # [B, 4] float
    flipped: torch.Tensor      # [B] bool
    jittered: torch.Tensor     # [B] bool
    factors: torch.Tensor      # [B, 4] brightness, contrast, saturation, hue shift
    order: torch.Tensor        # [B, 4] permutation of the four jitter operations
    grayscale: torch.Tensor    # [B] bool
    blurred: torch.Tensor      # [B] bool
    sigma: torch.Tensor        # [B] float
    solarized: torch.Tensor    # [B] bool
    angle: torch.Tensor        # [B] float, radians

    def first_for_all(self) -> "ViewParams":
        """The first image's parameters repeated over the batch (one draw per batch, as byol-pytorch does)."""
        return ViewParams(**{k: v[:1].expand_as(v).clone() for k, v in vars(self).items()})

    def rows(self, index: slice) -> "ViewParams":
        """The parameters of some of the images (one process's share of a batch)."""
        return ViewParams(**{k: v[index] for k, v in vars(self).items()})


def _uniform(gen, n, lo, hi):
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def sample_params(batch: int, height: int, width: int, cfg: ViewConfig, gen: torch.Generator) -> ViewParams:
    """Draws one view's parameters for ``batch`` images of ``height × width``. The crop follows
    ``RandomResizedCrop``: up to 10 tries for an (area, aspect) that fits, else a centre crop. The angles are
    drawn last and only when ``cfg.rotation`` > 0, so without rotation a seed gives the views it always gave."""
    tries = 10
    area = height * width * _uniform(gen, (batch, tries), *cfg.crop_scale)
    log_r = _uniform(gen, (batch, tries), math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio)
    h = torch.sqrt(area / ratio)
    ok = (w <= width) & (h <= height)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((batch,), -1))
    idx = first.clamp(min=0)
    w = w.gather(1, idx[:, None])[:, 0]
    h = h.gather(1, idx[:, None])[:, 0]
    # Fallback: the whole image, cut to the nearest allowed aspect ratio.
    in_ratio = width / height
    if in_ratio < cfg.crop_ratio[0]:
        fw, fh = width, width / cfg.crop_ratio[0]
    elif in_ratio > cfg.crop_ratio[1]:
        fw, fh = height * cfg.crop_ratio[1], height
    else:
        fw, fh = width, height
    failed = first < 0
    w = torch.where(failed, torch.full_like(w, fw), w)
    h = torch.where(failed, torch.full_like(h, fh), h)
    u = torch.rand(batch, 2, generator=gen)
    x0 = torch.where(failed, (width - w) / 2, u[:, 0] * (width - w))
    y0 = torch.where(failed, (height - h) / 2, u[:, 1] * (height - h))
    boxes = torch.stack([x0 / width, y0 / height, (x0 + w) / width, (y0 + h) / height], dim=1)

    flipped = torch.rand(batch, generator=gen) < cfg.flip_p
    jittered = torch.rand(batch, generator=gen) < cfg.jitter_p
    factors = torch.stack([
        _uniform(gen, batch, max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
        _uniform(gen, batch, max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
        _uniform(gen, batch, max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
        _uniform(gen, batch, -cfg.hue, cfg.hue),
    ], dim=1)
    order = torch.argsort(torch.rand(batch, 4, generator=gen), dim=1)
    grayscale = torch.rand(batch, generator=gen) < cfg.grayscale_p
    blurred = torch.rand(batch, generator=gen) < cfg.blur_p
    sigma = _uniform(gen, batch, *cfg.blur_sigma)
    solarized = torch.rand(batch, generator=gen) < cfg.solarize_p
    limit = math.radians(cfg.rotation)
    angle = _uniform(gen, batch, -limit, limit) if cfg.rotation > 0 else torch.zeros(batch)
    return ViewParams(boxes, flipped, jittered, factors, order, grayscale, blurred, sigma, solarized, angle)


def _sampling_grid(params: ViewParams, size: int, device, aspect: float = 1.0) -> torch.Tensor:
    """``grid_sample`` coordinates [B, size, size, 2] that map output pixels to the crop box (mirrored if
    flipped) of the input turned by ``angle``; ``aspect``: the input's width / height. Without rotation the map
    is a per-axis scale and shift, so it is built elementwise: ``F.affine_grid``'s batched 3×2 matmul took
    2.4 ms a view at batch 64 and 64 px, this 0.3 ms (2 threads, AMD EPYC, 2026-12-07)."""
    b = params.boxes.to(device=device, dtype=torch.float32)
    sx = b[:, 2] - b[:, 0]
    sy = b[:, 3] - b[:, 1]
    cx = b[:, 0] + b[:, 2] - 1       # box centre in [-1, 1] coordinates
    cy = b[:, 1] + b[:, 3] - 1
    sx = torch.where(params.flipped.to(device), -sx, sx)
    base = (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1   # pixel centres
    gx = torch.addcmul(cx[:, None], sx[:, None], base)            # [B, size], along the width
    gy = torch.addcmul(cy[:, None], sy[:, None], base)            # [B, size], along the height
    n = len(b)
    gx, gy = gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)
    if params.angle.any():
        # Output → input is the inverse turn, in pixel units (a [-1, 1] unit is width/2 px along x, height/2
        # along y): x' = x cos a − y sin a, y' = x sin a + y cos a, with y pointing down.
        a = params.angle.to(device=device, dtype=torch.float32)[:, None, None]
        cos, sin = torch.cos(a), torch.sin(a)
        gx, gy = cos * gx - sin / aspect * gy, sin * aspect * gx + cos * gy
    return torch.stack((gx, gy), dim=-1)


def apply_geometry(x: torch.Tensor, params: ViewParams, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Turns, crops, resizes to ``size × size`` and flips ``x`` [B, C, H, W] as the view did: ``mode="nearest"``
    for masks (integer tensors keep their dtype), any ``size`` (a feature map's) for a mask at that resolution.
    A turned view reaches past the input's edges, which are reflected there (no empty corners); without
    rotation the edge pixels are repeated as always (bicubic taps beyond the edge differ between the two)."""
    grid = _sampling_grid(params, size, x.device, x.shape[-1] / x.shape[-2])
    src = x if x.is_floating_point() else x.float()
    padding = "reflection" if params.angle.any() else "border"
    out = F.grid_sample(src, grid, mode=mode, padding_mode=padding, align_corners=False)
    return out if x.is_floating_point() else out.round().to(x.dtype)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _shift_hue_(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """RGB → HSV, rotate hue by ``shift`` (fraction of a turn, per image), → RGB, written into ``x``.
    One image plane at a time and no three-channel temporary: on a CPU each fresh full-batch tensor costs
    new pages, and this cut the hue step from 8.4 to 5.8 ms (batch 64, 64 px, 2 threads, AMD EPYC, medians of
    400 interleaved calls, 2026-12-07)."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc                                  # = v·s, the chroma
    inv = delta.clamp(min=1e-12).reciprocal_()
    # Hue in sixths of a turn from the channel that holds the max, red before green (torchvision's order);
    # grey pixels (delta = 0) get hue 0. Blending with 0/1 weights is faster here than nested torch.where.
    on_r = (maxc == r).float()
    on_g = (maxc == g).float().mul_(1 - on_r)
    h = (g - b).mul_(inv).mul_(on_r)
    h.addcmul_((b - r).mul_(inv).add_(2), on_g).addcmul_((r - g).mul_(inv).add_(4), (1 - on_r).sub_(on_g))
    h.mul_(delta > 0).add_((6 * shift).view(-1, 1, 1))
    # HSV → RGB with the continuous formula (no branches): f(n) = v − v·s·max(0, min(k, 4 − k, 1)),
    # k = (n + h) mod 6, for n = 5, 3, 1 (red, green, blue).
    for c, n in enumerate((5.0, 3.0, 1.0)):
        k = (h + n).remainder_(6)
        weight = torch.minimum(k, 4 - k).clamp_(0, 1)
        torch.sub(maxc, weight.mul_(delta), out=x[:, c])
    return x


def _jitter_op_(x: torch.Tensor, op: int, f: torch.Tensor) -> torch.Tensor:
    """One colour-jitter operation with per-image factor ``f``, in place on ``x`` (a gathered copy)."""
    f4 = f.view(-1, 1, 1, 1)
    if op == 0:    # brightness
        x.mul_(f4)
    elif op == 1:  # contrast: blend with the image's mean grey level (taken before x changes)
        grey = _gray(x).mean(dim=(2, 3), keepdim=True)
        x.mul_(f4).add_((1 - f4) * grey)
    elif op == 2:  # saturation: blend with the pixel's grey level (taken before x changes)
        grey = _gray(x)
        x.mul_(f4).add_(grey.mul_(1 - f4))
    else:          # hue
        return _shift_hue_(x, f)
    return x.clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-image σ, as one grouped convolution per axis."""
    n, c, h, w = x.shape
    half = kernel // 2
    t = torch.arange(kernel, device=x.device, dtype=x.dtype) - half
    k = torch.exp(-0.5 * (t[None] / sigma.to(x.device, x.dtype)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, dim=0)          # [n·c, K]
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode="reflect"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode="reflect"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def blur_kernel_size(size: int) -> int:
    """≈10% of the side, odd: 23 at 224 px (the paper's), 7 at 64 px."""
    return max(3, 2 * round(0.05 * size) + 1)


# Hand-written rather than kornia.augmentation: benchmarks/augment_bench.py (the same two view distributions,
# per-sample parameters, one CPU thread, 2-core AMD EPYC with AVX512-BF16, 2026-12-07) made 1,524 view pairs/s
# against kornia 0.9.0's 646 at 64 px (kornia 0.42x) and 5,254 against 2,016 at 32 px (0.38x).
class BYOLAugment:
    """Callable producing two views ``[B, 3, size, size]``, ImageNet-normalised, from a uint8 or [0, 1] float batch.
    ``per_sample=False`` gives every image of a batch the same parameters (to show why that is worse)."""

    denormalize = staticmethod(denormalize)     # a view back to [0, 1], for display

    def __init__(self, size: int, view1: ViewConfig = VIEW1, view2: ViewConfig = VIEW2, per_sample: bool = True,
                 interpolation: str = "bicubic"):
        self.size, self.view1, self.view2 = size, view1, view2
        self.per_sample = per_sample
        self.interpolation = interpolation
        self.kernel = blur_kernel_size(size)

    def params(self, batch: int, height: int, width: int, cfg: ViewConfig, gen: torch.Generator) -> ViewParams:
        p = sample_params(batch, height, width, cfg, gen)
        return p if self.per_sample else p.first_for_all()

    def apply(self, images: torch.Tensor, params: ViewParams, cfg: ViewConfig) -> torch.Tensor:
        """Renders one view of ``images`` with drawn ``params`` (``cfg`` gives the solarize threshold)."""
        x = images.float() / 255 if not images.is_floating_point() else images.float()
        dev = x.device
        x = apply_geometry(x, params, self.size, mode=self.interpolation).clamp_(0, 1)

        jit = params.jittered.to(dev)
        factors = params.factors.to(dev)
        order = params.order.to(dev)
        for slot in range(4):
            for op in range(4):
                idx = torch.nonzero(jit & (order[:, slot] == op)).flatten()
                if idx.numel():
                    x[idx] = _jitter_op_(x[idx], op, factors[idx, op])

        # The remaining steps touch only the images that draw them, and normalise in place:
        # on a CPU every full-batch temporary costs fresh pages, which showed as much as the arithmetic.
        idx = torch.nonzero(params.grayscale.to(dev)).flatten()
        if idx.numel():
            x[idx] = _gray(x[idx]).expand(-1, 3, -1, -1)
        idx = torch.nonzero(params.blurred.to(dev)).flatten()
        if idx.numel():
            sigma = params.sigma.to(dev)[idx] * (self.size / BLUR_REFERENCE_SIZE)
            x[idx] = _gaussian_blur(x[idx], sigma, self.kernel)
        idx = torch.nonzero(params.solarized.to(dev)).flatten()
        if idx.numel():
            sub = x[idx]
            x[idx] = torch.where(sub >= cfg.solarize_threshold, 1 - sub, sub)
        return normalize(x, inplace=True)

    def __call__(self, images: torch.Tensor, generator=None, return_params: bool = False,
                 batch_size: int | None = None, offset: int = 0):
        """``batch_size``/``offset``: ``images`` are rows ``offset, offset + 1, ...`` of a batch of ``batch_size``
        split over processes. Parameters are drawn for the whole batch and sliced, so every image gets the
        parameters it would get in one process, whatever the number of processes."""
        gen = generator   # a torch.Generator, a seed, or None (a fresh random seed)
        if not isinstance(gen, torch.Generator):
            gen = torch.Generator()
            if generator is None:
                gen.seed()
            else:
                gen.manual_seed(int(generator))
        b, _, h, w = images.shape
        rows = slice(offset, offset + b)
        p1 = self.params(batch_size or b, h, w, self.view1, gen).rows(rows)
        p2 = self.params(batch_size or b, h, w, self.view2, gen).rows(rows)
        v1, v2 = self.apply(images, p1, self.view1), self.apply(images, p2, self.view2)
        return ((v1, v2), (p1, p2)) if return_params else (v1, v2)
