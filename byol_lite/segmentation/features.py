"""What an encoder's dense features say about images before a head is trained.

A segmentation head reads the encoder's last feature map ``[C, h, w]``: one
vector per cell of an ``h × w`` grid. Three views of those vectors show what
pretraining changed:

- :func:`pca_rgb`: the first three principal components as colours. PCA is
  fitted jointly over every pixel of every image, so one colour means one
  direction of feature space in all images.
- :func:`similarity_map`: the cosine similarity of every pixel to one chosen
  pixel, in its own image and in the others: which pixels the encoder treats
  as "the same stuff".
- :func:`nearest_patches`: the patches of a set of images whose features are
  closest to a query patch's, the retrieval a segmentation head can exploit.

With ground-truth masks, :func:`query_separation` and
:func:`retrieval_precision` turn the last two into numbers;
:func:`position_share` measures how much of the features is where a pixel is
rather than what it shows; :func:`feature_measures` takes all three.
:func:`estimate_batchnorm_statistics` makes an untrained encoder a fair
baseline for all of them, :func:`random_baselines` several such encoders.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from byol_lite.data.transforms import normalize
from byol_lite.device import eval_mode


def _batches(images: torch.Tensor, batch_size: int, device: torch.device):
    """Normalised as in training, and channels last as in training: oneDNN's
    and cuDNN's fast layout (a fifth less time than NCHW on the 2-core CPU)."""
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size].to(device))
        yield x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def dense_features(encoder: torch.nn.Module, images: torch.Tensor,
                   batch_size: int = 32) -> torch.Tensor:
    """The encoder's last feature map ``[N, C, h, w]`` (float32, CPU) of uint8
    images ``[N, 3, H, W]``, normalised as in training, the encoder in eval
    mode (BatchNorm's running statistics: an image's features do not depend
    on the rest of its batch, so ``batch_size`` changes speed only: 32 keeps
    a small encoder's activations in a CPU's cache, a tenth faster than 64
    on the 2-core CPU); the encoder's mode is restored."""
    device = next(encoder.parameters()).device
    with eval_mode(encoder):
        out = [encoder(x)[1].float().cpu().contiguous()
               for x in _batches(images, batch_size, device)]
    return torch.cat(out)


def estimate_batchnorm_statistics(encoder: torch.nn.Module,
                                  images: torch.Tensor,
                                  batch_size: int = 64) -> torch.nn.Module:
    """Sets every BatchNorm's running mean and variance of ``encoder`` to
    those of images ``[N, 3, H, W]`` (uint8, or float in [0, 1]; normalised
    as in training), in place, and returns it; no weight changes and every
    module's train/eval mode is restored. It is
    :func:`torch.optim.swa_utils.update_bn` over batches of ``batch_size``:
    statistics reset, then averaged over the batches, each batch counting
    equally (a short last one as much as a full one).

    Why: :func:`dense_features` reads an encoder in eval mode, with its
    running statistics. A trained encoder's describe its training images; an
    untrained one's are still mean 0 and variance 1, so it normalises nothing
    and is no fair baseline for what training changed. Estimated on the
    images the trained encoder saw, the untrained encoder differs from it in
    its weights only."""
    device = next(encoder.parameters()).device
    modes = {m: m.training for m in encoder.modules()}
    with torch.no_grad():   # statistics only: no graph for the gradients
        torch.optim.swa_utils.update_bn(
            _batches(images, batch_size, device), encoder)
    for module, training in modes.items():   # update_bn sets one mode for all
        module.training = training
    return encoder


def random_baselines(build, images: torch.Tensor,
                     seeds=(0, 1, 2)) -> dict[str, torch.nn.Module]:
    """``{"random SEED": encoder}``: ``build()`` called after
    ``torch.manual_seed(seed)`` for each seed, its BatchNorm statistics
    estimated on ``images`` (:func:`estimate_batchnorm_statistics`). Why
    several: their spread is the yardstick for whether a trained encoder's
    difference from random weights is more than chance."""
    encoders = {}
    for seed in seeds:
        torch.manual_seed(seed)
        encoders[f"random {seed}"] = estimate_batchnorm_statistics(
            build(), images)
    return encoders


def feature_measures(features: torch.Tensor, masks: torch.Tensor,
                     k: int = 5) -> dict[str, float]:
    """The three measures of one encoder's features over images with masks:
    ``auc`` (:func:`query_separation`), ``hits`` (:func:`retrieval_precision`
    among the ``k`` nearest), each with its standard error over the images
    (``auc_se``, ``hits_se``), and ``position`` (:func:`position_share`)."""
    auc = query_separation(features, masks)
    hits = retrieval_precision(features, masks, k=k)
    return dict(auc=float(np.nanmean(auc)), auc_se=_se(auc),
                hits=float(np.nanmean(hits)), hits_se=_se(hits),
                position=position_share(features))


def _se(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.std() / np.sqrt(len(values)))


def _unit(features: torch.Tensor) -> torch.Tensor:
    return F.normalize(features.float(), dim=1)


def pca_rgb(features: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, C, h, w]`` -> ``[N, 3, h, w]`` in [0, 1]: each pixel's first three
    principal components as red, green and blue.

    Why jointly: one PCA over the pixels of all ``N`` images (``mask``: bool
    ``[N, h, w]``, the pixels to fit it on; all by default) gives every image
    the same three axes, so equal colours are equal features across images.
    Each component is stretched from its 1st to its 99th percentile (a few
    extreme pixels do not wash the rest out), so a weak component looks as
    strong as the first: colours say which pixels share directions, not how
    far apart they are. Each component's sign is fixed
    so that its largest-magnitude loading is positive: the same features get
    the same colours whichever sign the SVD returns."""
    n, c, h, w = features.shape
    x = features.float().permute(0, 2, 3, 1).reshape(-1, c)
    fit = x if mask is None else x[mask.reshape(-1)]
    mean = fit.mean(0)
    _, _, vh = torch.linalg.svd(fit - mean, full_matrices=False)
    axes = vh[:3]                                # [k, C], k = min(3, C, pixels)
    top = axes.gather(1, axes.abs().argmax(1, keepdim=True))
    axes = axes * torch.where(top < 0, -1.0, 1.0)
    proj, fitted = (x - mean) @ axes.T, (fit - mean) @ axes.T
    lo = torch.quantile(fitted, 0.01, dim=0)
    hi = torch.quantile(fitted, 0.99, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    if rgb.shape[1] < 3:                         # fewer components: grey
        grey = rgb.new_full((len(rgb), 3 - rgb.shape[1]), 0.5)
        rgb = torch.cat([rgb, grey], 1)
    return rgb.reshape(n, h, w, 3).permute(0, 3, 1, 2)


def similarity_map(features: torch.Tensor, image: int, y: int,
                   x: int) -> torch.Tensor:
    """``[N, h, w]``: the cosine similarity of every pixel of every image to
    pixel ``(y, x)`` of image ``image`` (1 there). Why cosine: BYOL compares
    normalised vectors, so directions, not lengths, are what it shapes."""
    unit = _unit(features)
    return torch.einsum("nchw,c->nhw", unit, unit[image, :, y, x])


class Match(NamedTuple):
    """A patch: its image, the row and column of its top-left feature pixel,
    and its similarity to the query."""
    image: int
    y: int
    x: int
    score: float


def _patches(features: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, L, C*size*size]``: every ``size × size`` patch of unit vectors,
    scaled so that a dot product is the patch similarity."""
    unit = _unit(features)
    if size == 1:            # no copy: unfold of 1x1 patches is a reshape
        return unit.flatten(2).transpose(1, 2)
    return (F.unfold(unit, size) / size).transpose(1, 2)


def _nearest(patches: torch.Tensor, queries: list[tuple[int, int]], k: int,
             exclude_image: bool) -> list[list[tuple[int, int, float]]]:
    """For each query ``(image, patch index)``: the ``k`` best ``(image,
    patch index, score)``, from one matrix product over all queries."""
    n, per_image, _ = patches.shape
    picked = torch.stack([patches[i, j] for i, j in queries])
    scores = (picked @ patches.reshape(n * per_image, -1).T).reshape(
        len(queries), n, per_image)
    if exclude_image:
        scores[torch.arange(len(queries)),
               torch.tensor([i for i, _ in queries])] = -float("inf")
    k = min(k, (n - exclude_image) * per_image)
    best = torch.topk(scores.reshape(len(queries), -1), k)
    return [[(int(i) // per_image, int(i) % per_image, float(v))
             for v, i in zip(values, indices)]
            for values, indices in zip(best.values, best.indices)]


def nearest_patches(features: torch.Tensor, image: int, y: int, x: int,
                    size: int = 1, k: int = 5,
                    exclude_image: bool = True) -> list[Match]:
    """The ``k`` patches of ``size × size`` feature pixels most similar to the
    one whose top-left pixel is ``(y, x)`` of image ``image``, best first. A
    patch's similarity is the mean over its pixels of the cosine of matching
    pixels (the cosine of the concatenated unit vectors). Why exclude the
    query's image by default: its own patches overlap the query and win."""
    n, c, h, w = features.shape
    if not (0 <= y <= h - size and 0 <= x <= w - size):
        raise ValueError(f"a {size}x{size} patch at ({y}, {x}) does not fit "
                         f"a {h}x{w} feature map")
    gw = w - size + 1
    best = _nearest(_patches(features, size), [(image, y * gw + x)], k,
                    exclude_image)[0]
    return [Match(i, j // gw, j % gw, s) for i, j, s in best]


def object_pixel(mask: torch.Tensor, grid: tuple[int, int],
                 ignore_index: int = 255) -> tuple[int, int, int]:
    """``(y, x, class)``: the cell of a ``grid = (h, w)`` feature map over mask
    ``[H, W]`` with the largest share of object pixels (class 0 is the
    background, ``ignore_index`` void), of those the one whose 3×3
    neighbourhood has the most (the image's outside counts as background),
    and the most frequent object class in it; class 0 when the mask holds no
    object. Why: a query well inside an object, away from its border and
    from the image's, where a cell sees both."""
    h, w = grid
    fg = ((mask > 0) & (mask != ignore_index)).float()[None, None]
    share = F.adaptive_avg_pool2d(fg, (h, w))
    around = F.avg_pool2d(share, 3, stride=1, padding=1)[0, 0]
    share = share[0, 0]
    best = share >= share.max() - 1e-6
    y, x = divmod(int(torch.where(best, around, -1.0).argmax()), w)
    if share[y, x] == 0:
        return y, x, 0
    big_h, big_w = mask.shape
    cell = mask[y * big_h // h: -(-(y + 1) * big_h // h),
                x * big_w // w: -(-(x + 1) * big_w // w)]
    cell = cell[(cell > 0) & (cell != ignore_index)]
    return y, x, int(torch.mode(cell).values)


def separation_auc(similarity: torch.Tensor, mask: torch.Tensor,
                   positive: int, negative: int = 0,
                   ignore_index: int = 255) -> float:
    """The probability that a pixel of class ``positive`` is more similar to
    the query than a pixel of class ``negative`` (ties count half): the area
    under the ROC curve of the map ``similarity`` ``[h, w]`` bilinearly
    upsampled to mask ``[H, W]``. 0.5 is chance, 1 a perfect separation. Why
    an AUC: it uses only the order of the similarities, so encoders whose
    cosines live on different scales (a random network's are mostly close to
    1) are compared fairly. NaN when either class is absent."""
    from scipy.stats import rankdata

    up = F.interpolate(similarity[None, None].float(), size=tuple(mask.shape),
                       mode="bilinear", align_corners=False)[0, 0]
    keep = mask != ignore_index
    pos = up[keep & (mask == positive)].numpy()
    neg = up[keep & (mask == negative)].numpy()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    # the Mann-Whitney U of the positives, from their ranks among all (ties
    # averaged); scipy's mannwhitneyu computes the same, 3x slower per call
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u) / (len(pos) * len(neg))


def query_separation(features: torch.Tensor, masks: torch.Tensor,
                     ignore_index: int = 255) -> np.ndarray:
    """Per image: :func:`separation_auc` of the similarity map to its
    :func:`object_pixel`, the query object's class against the background
    (other objects and void left out); NaN for an image without an object
    or without background. Why: does a pixel's feature already say which
    pixels belong with it, before any head is trained?"""
    grid = tuple(features.shape[-2:])
    out = np.full(len(masks), np.nan)
    for i, mask in enumerate(masks):
        y, x, cls = object_pixel(mask, grid, ignore_index)
        if cls:
            sim = similarity_map(features[i:i + 1], 0, y, x)[0]
            out[i] = separation_auc(sim, mask, cls, 0, ignore_index)
    return out


def cell_labels(masks: torch.Tensor, grid: tuple[int, int],
                ignore_index: int = 255) -> torch.Tensor:
    """``[N, h, w]``: the most frequent class of the non-void pixels under each
    cell of a ``grid = (h, w)`` feature map over masks ``[N, H, W]``
    (``ignore_index`` where a cell is all void). Why: to say what a feature
    pixel "is" in the mask's terms."""
    valid = masks != ignore_index
    classes = int(masks[valid].max()) + 1 if valid.any() else 1
    onehot = F.one_hot(torch.where(valid, masks, 0).long(), classes)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid[:, None]
    counts = F.adaptive_avg_pool2d(onehot, grid)
    labels = counts.argmax(1)
    return torch.where(counts.sum(1) > 0, labels,
                       torch.full_like(labels, ignore_index))


def retrieval_precision(features: torch.Tensor, masks: torch.Tensor,
                        k: int = 5, ignore_index: int = 255) -> np.ndarray:
    """Per image: the share of the ``k`` feature pixels of the *other* images
    nearest (cosine) to its :func:`object_pixel` whose :func:`cell_labels`
    class is the query's. Why: in the embedded data colour and texture are
    drawn independently of the class, so finding the class in other images
    takes features that encode shape, which a segmentation head must tell
    apart. NaN for an image without an object. The neighbours are those of
    :func:`nearest_patches` with ``size=1``."""
    grid = tuple(features.shape[-2:])
    labels = cell_labels(masks, grid, ignore_index).flatten(1)
    out = np.full(len(masks), np.nan)
    queries = {i: object_pixel(mask, grid, ignore_index)
               for i, mask in enumerate(masks)}
    queries = {i: q for i, q in queries.items() if q[2]}
    if not queries:
        return out
    # all queries in one product (300 images: 10 s one query at a time, 0.3 s)
    near = _nearest(_patches(features, 1),
                    [(i, y * grid[1] + x) for i, (y, x, _) in queries.items()],
                    k, exclude_image=True)
    for (i, (_, _, cls)), matches in zip(queries.items(), near):
        out[i] = float(np.mean([int(labels[m, j]) == cls
                                for m, j, _ in matches]))
    return out


def position_share(features: torch.Tensor) -> float:
    """The share of the features' variance (over all pixels of all ``N``
    images, summed over channels) that the pixel's position alone explains:
    the variance of the per-position mean over images, divided by the total.
    1 when every image has the same feature map, near 0 when features do not
    depend on where the pixel is. Why: zero padding lets a convolutional
    network know where a pixel is, whatever the image shows."""
    x = features.float()
    total = x.var(dim=(0, 2, 3), unbiased=False).sum()
    by_position = x.mean(0)
    explained = (by_position - by_position.mean((1, 2), keepdim=True))
    return float(explained.pow(2).mean((1, 2)).sum() / total)
