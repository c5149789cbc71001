"""Pictures of segmentation results: image / ground truth / prediction panels, per-class IoU, confusion matrix,
mIoU against the number of labels and against the length of pretraining; and what encoders'
features look like before any head is trained (:func:`show_features`, :func:`show_nearest_patches`).

Every function returns a ``matplotlib.figure.Figure`` built without ``pyplot``: nothing accumulates in
pyplot's global figure list, and a notebook shows a returned figure exactly once.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from byol_lite.data import VOC_CLASSES, VOC_PALETTE, colorize
from byol_lite.segmentation.features import (nearest_patches, pca_rgb,
                                             similarity_map)


def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    names = list(class_names) if class_names is not None else list(VOC_CLASSES)
    return names[:n] + [str(i) for i in range(len(names), n)]


def show_segmentation(images, targets=None, preds=None, class_names: Sequence[str] | None = None,
                      max_images: int = 4, panel_size: float = 2.2) -> Figure:
    """One row per image: the image, its ground truth and/or prediction in VOC colours (void in cream),
    and a legend of the classes that appear. ``images``: uint8 ``[N, 3, H, W]`` (or a list of such);
    ``targets``/``preds``: index masks ``[N, H, W]``."""
    n = min(len(images), max_images)
    columns = [("image", images)] + [(t, m) for t, m in (("ground truth", targets), ("prediction", preds))
                                     if m is not None]
    fig = Figure(figsize=(panel_size * len(columns) + 1.8, panel_size * n), layout="constrained")
    axes = np.asarray(fig.subplots(n, len(columns), squeeze=False))
    present: set[int] = set()
    for i in range(n):
        for j, (title, data) in enumerate(columns):
            ax = axes[i, j]
            a = _rgb(data[i])
            if j == 0:
                ax.imshow(a)
            else:
                present.update(int(v) for v in np.unique(a) if v != 255)
                ax.imshow(colorize(a), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
    names = _names(class_names, max(present, default=0) + 1)
    handles = [Patch(color=VOC_PALETTE[c] / 255, label=names[c]) for c in sorted(present)]
    handles.append(Patch(color=VOC_PALETTE[255] / 255, label="void (255)"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def plot_class_iou(iou: Sequence[float], class_names: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Horizontal IoU bars in each class's colour, the mIoU as a dashed line; absent classes (NaN) are marked."""
    iou = [float(v) for v in iou]
    names = _names(class_names, len(iou))
    fig = Figure(figsize=(6, 0.3 * len(iou) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(iou))
    ax.barh(y, [0 if math.isnan(v) else v for v in iou], color=VOC_PALETTE[: len(iou)] / 255, edgecolor="black",
            linewidth=0.5)
    for k, v in enumerate(iou):
        ax.text(0.01 if math.isnan(v) else v + 0.01, k, "absent" if math.isnan(v) else f"{v:.2f}", va="center",
                fontsize="small")
    miou = float(np.nanmean(iou)) if not all(math.isnan(v) for v in iou) else math.nan
    ax.axvline(miou, color="black", linestyle="--", linewidth=1, label=f"mIoU {miou:.3f}")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("IoU")
    ax.legend(loc="lower right")
    ax.set_title(title or "per-class IoU")
    return fig


def plot_confusion_matrix(matrix, class_names: Sequence[str] | None = None, normalize: bool = True) -> Figure:
    """Rows = ground truth, columns = prediction; ``normalize`` divides each row by its pixel count (so the
    diagonal is each class's recall and rare classes stay visible)."""
    m = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if normalize:
        rows = m.sum(1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    names = _names(class_names, len(m))
    side = 0.35 * len(m) + 2.5
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, label="fraction of the row's pixels" if normalize else "pixels")
    if len(m) <= 12:
        dark = 0.5 * (1 if normalize else m.max())
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center", fontsize="x-small",
                    color="white" if v > dark else "black")
    ax.set_xticks(range(len(m)), names, rotation=90)
    ax.set_yticks(range(len(m)), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    return fig


def plot_sweep(rows: Sequence[dict], x: str, y: str, hue: str | None = None, log_x: bool = False) -> Figure:
    """``y`` against ``x``, one line per value of ``hue``: the mean over the rows that share (hue, x) -- e.g. over
    seeds --, their min-max as a band and each row as a dot. ``x`` may be numeric or categorical."""
    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    _draw_sweep(fig.subplots(), rows, x, y, hue, "log" if log_x else "linear")
    return fig


def _draw_sweep(ax, rows: Sequence[dict], x: str, y: str, hue: str | None, scale: str = "linear", **scale_kw):
    groups: dict[str, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups["all" if hue is None else str(r[hue])][r[x]].append(float(r[y]))
    xs_all = sorted({r[x] for r in rows}, key=lambda v: (isinstance(v, str), v))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_all)
    pos = (lambda v: float(v)) if numeric else {v: i for i, v in enumerate(xs_all)}.__getitem__
    for name, points in sorted(groups.items()):
        xs = [v for v in xs_all if v in points]
        mean = [float(np.mean(points[v])) for v in xs]
        n = max(len(p) for p in points.values())
        line, = ax.plot([pos(v) for v in xs], mean, marker="o",
                        label=f"{name} (mean of {n})" if hue is not None else f"mean of {n}")
        ax.fill_between([pos(v) for v in xs], [min(points[v]) for v in xs], [max(points[v]) for v in xs],
                        color=line.get_color(), alpha=0.2)
        for v in xs:
            ax.scatter([pos(v)] * len(points[v]), points[v], color=line.get_color(), s=10, alpha=0.6)
    ax.set_xscale(scale, **scale_kw)
    ax.set_xticks([pos(v) for v in xs_all], [f"{v:g}" if numeric else str(v) for v in xs_all])
    ax.minorticks_off()
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(title=hue)


def plot_gain_vs_pretraining(rows: Sequence[dict], metric: str = "miou") -> Figure:
    """``metric`` against pretraining steps of :func:`~byol_lite.experiment.run_experiment`'s rows: a panel per
    label budget, a line per objective from the random-init arm at step 0 (x linear below 10 steps, log above);
    arms of unknown pretraining (a weights file) are left out."""
    rows = [r for r in rows if not math.isnan(float(r["pretrain_steps"]))]
    objectives = sorted({r["objective"] for r in rows} - {"none"})
    fractions = sorted({float(r["label_fraction"]) for r in rows})
    fig = Figure(figsize=(4.6 * len(fractions), 3.8), layout="constrained")
    for ax, fraction in zip(fig.subplots(1, len(fractions), squeeze=False)[0], fractions):
        here = [r for r in rows if float(r["label_fraction"]) == fraction]
        lines = [{**r, "objective": o, "pretrain_steps": float(r["pretrain_steps"])}
                 for r in here for o in objectives if r["objective"] in ("none", o)]
        _draw_sweep(ax, lines, "pretrain_steps", metric, "objective", "symlog", linthresh=10)
        ax.set_xlabel("pretraining steps (0 = random init)")
        ax.set_ylabel("mIoU" if metric == "miou" else metric)
        ax.set_title(f"{here[0]['n_train']} labeled images ({100 * fraction:g}%)")
    return fig


def plot_label_efficiency(rows: Sequence[dict], metric: str = "miou") -> Figure:
    """``metric`` against the label fraction of :func:`~byol_lite.experiment.run_experiment`'s rows, a line per
    arm (mean over seeds, min–max band, seeds as dots)."""
    rows = [{**r, "label_fraction": float(r["label_fraction"])} for r in rows]
    fig = plot_sweep(rows, "label_fraction", metric, hue="arm", log_x=True)
    ax = fig.axes[0]
    fractions = sorted({r["label_fraction"] for r in rows})
    ax.set_xticks(fractions, [f"{100 * f:g}%" for f in fractions])
    ax.set_xlabel("fraction of the labeled training pool used")
    ax.set_ylabel("mIoU" if metric == "miou" else metric)
    return fig


def _rgb(image) -> np.ndarray:
    """A tensor or array as numpy, a ``[3, H, W]`` image channels-last for imshow (masks unchanged)."""
    a = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor)
                   else image)
    return a.transpose(1, 2, 0) if a.ndim == 3 and a.shape[0] == 3 else a


def show_features(images, features: dict, query: tuple[int, int, int],
                  panel_size: float = 1.45) -> Figure:
    """One row per image: the image, then for each encoder of ``features``
    (name -> feature maps ``[N, C, h, w]`` of ``images``) the PCA colours of
    its features (:func:`~byol_lite.segmentation.features.pca_rgb`, fitted
    over all the images) and the cosine similarity of every pixel to pixel
    ``query = (image, y, x)`` (marked ×), on one colour scale per encoder from
    its lowest similarity to 1. Why side by side: what pretraining changed is
    the difference between the columns, not any one of them."""
    names = list(features)
    n = len(images)
    cols = 1 + 2 * len(names)
    fig = Figure(figsize=(panel_size * cols, panel_size * n + 0.9),
                 layout="constrained")
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    qi, qy, qx = query
    stride = images.shape[-1] / next(iter(features.values())).shape[-1]
    for i in range(n):
        axes[i, 0].imshow(_rgb(images[i]))
        axes[i, 0].set_ylabel(f"image {i}", fontsize="small")
    axes[qi, 0].plot((qx + 0.5) * stride - 0.5, (qy + 0.5) * stride - 0.5,
                     "x", color="red", ms=8, mew=2)
    axes[0, 0].set_title("image", fontsize="small")
    for j, name in enumerate(names):
        pca = pca_rgb(features[name])
        sim = similarity_map(features[name], qi, qy, qx)
        lo = float(sim.min())
        for i in range(n):
            axes[i, 1 + j].imshow(_rgb(pca[i]), interpolation="nearest")
            im = axes[i, 1 + len(names) + j].imshow(
                sim[i], cmap="viridis", vmin=lo, vmax=1,
                interpolation="nearest")
        axes[qi, 1 + len(names) + j].plot(qx, qy, "x", color="red", ms=8,
                                          mew=2)
        axes[0, 1 + j].set_title(f"PCA: {name}", fontsize="small")
        axes[0, 1 + len(names) + j].set_title(f"similarity: {name}",
                                              fontsize="small")
        bar = fig.colorbar(im, ax=axes[:, 1 + len(names) + j],
                           location="bottom", shrink=0.9, aspect=12)
        bar.ax.tick_params(labelsize="x-small")
        bar.set_label("cosine", fontsize="x-small")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    return fig


def show_nearest_patches(images, features: dict, query: tuple[int, int, int],
                         k: int = 5, size: int = 1,
                         panel_size: float = 1.2) -> Figure:
    """One row per encoder of ``features`` (name -> feature maps of
    ``images``): the query patch (``query = (image, y, x)``, its top-left
    feature pixel, ``size × size`` feature pixels) and its ``k`` nearest
    patches in the *other* images
    (:func:`~byol_lite.segmentation.features.nearest_patches`), each shown
    with one patch of context around it and outlined, titled with its image
    and cosine. Why context: a feature pixel sees more than its own cell."""
    names = list(features)
    side = images.shape[-1]
    stride = side // next(iter(features.values())).shape[-1]
    fig = Figure(figsize=(panel_size * (k + 1), panel_size * len(names) + 0.3),
                 layout="constrained")
    axes = np.asarray(fig.subplots(len(names), k + 1, squeeze=False))
    qi, qy, qx = query

    def crop(ax, i, y, x, title):
        y0, x0 = max(0, (y - size) * stride), max(0, (x - size) * stride)
        y1 = min(images.shape[-2], (y + 2 * size) * stride)
        x1 = min(side, (x + 2 * size) * stride)
        ax.imshow(_rgb(images[i])[y0:y1, x0:x1], extent=(x0, x1, y1, y0))
        ax.add_patch(Rectangle((x * stride, y * stride), size * stride,
                               size * stride, fill=False, color="red", lw=1.5))
        ax.set_title(title, fontsize="x-small")
        ax.set_xticks([]), ax.set_yticks([])

    for r, name in enumerate(names):
        crop(axes[r, 0], qi, qy, qx, f"query (image {qi})")
        axes[r, 0].set_ylabel(name, fontsize="small")
        found = nearest_patches(features[name], qi, qy, qx, size=size, k=k)
        for c, m in enumerate(found, start=1):
            crop(axes[r, c], m.image, m.y, m.x,
                 f"image {m.image}, cos {m.score:.2f}")
        for ax in axes[r, len(found) + 1:]:
            ax.set_axis_off()
    return fig


def plot_gain_vs_images(rows: Sequence[dict]) -> Figure:
    """val mIoU against the images BYOL has seen (log axis), a panel per ``evaluation`` (probe, fine-tune):
    each pretraining seed's mean over label subsets as a dot, their mean as a line; random init as a band
    (mean ± 2 SD over its label subsets) and the supervised oracle as a dashed line, the floor at 0 in view.
    ``rows``: the gain-vs-images table (``kind`` random / byol / oracle, ``images_seen``, ``pretrain_seed``)."""
    evaluations = list(dict.fromkeys(r["evaluation"] for r in rows))
    fig = Figure(figsize=(5.2 * len(evaluations), 3.9), layout="constrained")
    for ax, evaluation in zip(fig.subplots(1, len(evaluations), squeeze=False)[0], evaluations):
        here = [r for r in rows if r["evaluation"] == evaluation]
        random = np.array([float(r["miou"]) for r in here if r["kind"] == "random"])
        oracle = [float(r["miou"]) for r in here if r["kind"] == "oracle"]
        byol = [r for r in here if r["kind"] == "byol"]
        per_seed: dict[tuple, list[float]] = defaultdict(list)
        for r in byol:
            per_seed[(int(r["images_seen"]), r["pretrain_seed"])].append(float(r["miou"]))
        lengths = sorted({n for n, _ in per_seed})
        dots = [(n, float(np.mean(v))) for (n, _), v in per_seed.items()]
        ax.scatter([n for n, _ in dots], [m for _, m in dots], s=14, color="C0", alpha=0.7, label="BYOL, one seed each")
        ax.plot(lengths, [np.mean([m for n, m in dots if n == length]) for length in lengths], color="C0",
                marker="o", label="BYOL, mean over seeds")
        if len(random):
            spread = 2 * random.std(ddof=1) if len(random) > 1 else 0.0
            ax.axhspan(random.mean() - spread, random.mean() + spread, color="C1", alpha=0.25,
                       label="random init (mean ± 2 SD)")
            ax.axhline(random.mean(), color="C1")
        if oracle:
            ax.axhline(float(np.mean(oracle)), color="C2", linestyle="--", label="supervised oracle")
        ax.set_xscale("log")
        ax.set_xticks(lengths, [f"{n / 1000:g}k" if n < 1e6 else f"{n / 1e6:g}M" for n in lengths], rotation=35)
        ax.minorticks_off()
        ax.set_ylim(0, max([1e-3, *oracle, *(m for _, m in dots), *random]) * 1.1)
        ax.set_xlabel("images seen by BYOL (log scale)")
        ax.set_ylabel("val mIoU")
        n_train = here[0]["n_train"]
        name = {"probe": "frozen linear probe", "finetune": "fine-tuned"}.get(evaluation, evaluation)
        ax.set_title(f"{name}, {n_train} labelled images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return fig
