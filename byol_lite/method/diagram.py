"""BYOL's architecture as a figure drawn by code, so the book builds offline.

The sizes in the boxes are read from a :class:`~byol_lite.method.byol.BYOL`
model (its encoder's features, its heads' ``in_dim``, ``hidden_dim`` and
``out_dim``), not typed into the picture: change the configuration and the
figure follows.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import nn

from byol_lite.method.heads import MLPHead

ONLINE, TARGET, LOSS = "#dbe8f6", "#f0e0c8", "#e6e6e6"
EMA_TEXT = r"EMA: $\xi \leftarrow \tau\,\xi + (1-\tau)\,\theta$"
SG_TEXT = "stop-gradient:\nno gradient to ξ"
LOSS_TEXT = ("symmetric loss:\n"
             r"$\ell(p_1, \mathrm{sg}(z'_2))$" "\n"
             r"$+\ \ell(p_2, \mathrm{sg}(z'_1))$" "\n"
             r"$\ell(p, z) = 2 - 2\cos(p, z)$")


def _head_sizes(head: MLPHead) -> str:
    return f"{head.in_dim}→{head.hidden_dim}→{head.out_dim}"


def _encoder_name(encoder: nn.Module) -> str:
    arch = getattr(encoder, "arch", type(encoder).__name__)
    name = arch.replace("resnet", "ResNet-")
    width = getattr(encoder, "width", 64)
    return name if width == 64 else f"{name}, width {width}"


def byol_diagram(model, base_tau: float | None = None,
                 tau_schedule: str = "cosine") -> Figure:
    """Online branch (encoder → projector → predictor) over the target branch
    (encoder → projector), fed by two views of one image, with the EMA that
    makes the target, the stop-gradient and the symmetric loss.

    Both views go through both networks (the crossed arrows): the loss sums
    ``ℓ(q(z₁), sg(z′₂))`` and ``ℓ(q(z₂), sg(z′₁))``. Only the paper's layout
    is drawn (predictor online); the chapter-2 ablations raise ValueError.
    ``base_tau`` and ``tau_schedule`` (a PretrainConfig's), when given, are
    printed with the EMA.
    """
    predictor, projector = model.predictor, model.online["projector"]
    if not isinstance(predictor, MLPHead):
        raise ValueError("byol_diagram draws BYOL with its online predictor; "
                         "this model has none")
    encoder = model.online["encoder"]
    features = getattr(encoder, "num_features", projector.in_dim)

    fig = Figure(figsize=(8, 3.85))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 16)
    ax.set_ylim(0.35, 8.05)
    ax.set_aspect("equal")
    ax.axis("off")
    fs = 9

    def box(x, y, w, h, text, colour):
        style = "round,pad=0.05,rounding_size=0.15"
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h,
                                    boxstyle=style, facecolor=colour,
                                    edgecolor="black", linewidth=0.8))
        ax.text(x, y, text, ha="center", va="center", fontsize=fs,
                linespacing=1.5)

    def arrow(start, end, **kw):
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>",
                                     mutation_scale=10, linewidth=0.9,
                                     shrinkA=0, shrinkB=0, **kw))

    top, bottom, mid = 6.5, 1.9, 4.2
    bw, bh = 2.3, 1.15                      # a network box
    xs = {"view": 2.45, "f": 5.5, "g": 8.95, "q": 12.4}
    out_x = 14.75
    enc = _encoder_name(encoder)

    # The image and its two views.
    box(0.7, mid, 1.1, 0.95, "image\n$x$", "white")
    box(xs["view"], top, 1.4, bh, "view $v_1$\n$t \\sim \\mathcal{T}$",
        "white")
    box(xs["view"], bottom, 1.4, bh,
        "view $v_2$\n$t' \\sim \\mathcal{T}'$", "white")
    arrow((1.3, mid + 0.3), (xs["view"] - 0.75, top - 0.3))
    arrow((1.3, mid - 0.3), (xs["view"] - 0.75, bottom + 0.3))

    # Each view through both networks: the crossed arrows.
    left, right = xs["view"] + 0.75, xs["f"] - bw / 2 - 0.05
    arrow((left, top), (right, top))
    arrow((left, bottom), (right, bottom))
    arrow((left, top - 0.35), (right, bottom + 0.35), color="0.4")
    arrow((left, bottom + 0.35), (right, top - 0.35), color="0.4")

    # Online network (top) and target network (bottom).
    box(xs["f"], top, bw, bh, f"encoder $f_\\theta$\n{enc}", ONLINE)
    box(xs["g"], top, bw, bh,
        f"projector $g_\\theta$\n{_head_sizes(projector)}", ONLINE)
    box(xs["q"], top, bw, bh,
        f"predictor $q_\\theta$\n{_head_sizes(predictor)}", ONLINE)
    box(xs["f"], bottom, bw, bh, f"encoder $f_\\xi$\n{enc}", TARGET)
    box(xs["g"], bottom, bw, bh,
        f"projector $g_\\xi$\n{_head_sizes(model.target['projector'])}",
        TARGET)
    ax.text(xs["g"], top + 1.05, "online network θ: trained by gradients",
            ha="center", va="center", fontsize=fs, color="#1f4e8c",
            weight="bold")
    ax.text(xs["g"] - bw / 2, bottom - 1.05,
            "target network ξ: no predictor, no gradients",
            ha="center", va="center", fontsize=fs, color="#8c5a1f",
            weight="bold")

    def link(x0, x1, y, label):
        arrow((x0, y), (x1, y))
        ax.text((x0 + x1) / 2, y + 0.1, label, ha="center", va="bottom",
                fontsize=fs - 1)

    gap = bw / 2 + 0.05
    link(xs["f"] + gap, xs["g"] - gap, top, f"$y$: {features}")
    link(xs["g"] + gap, xs["q"] - gap, top, f"$z$: {projector.out_dim}")
    arrow((xs["q"] + gap, top), (out_x - 0.6, top))
    link(xs["f"] + gap, xs["g"] - gap, bottom, f"$y'$: {features}")
    link(xs["g"] + gap, out_x - 0.6, bottom,
         f"$z'$: {model.target['projector'].out_dim}")

    # Outputs, the stop-gradient and the loss.
    ax.text(out_x, top, "$p_1, p_2$", ha="center", va="center", fontsize=fs)
    ax.text(out_x, bottom, "$z'_1, z'_2$", ha="center", va="center",
            fontsize=fs)
    box(out_x - 1.1, mid, 3.3, 1.9, LOSS_TEXT, LOSS)
    arrow((out_x, top - 0.3), (out_x, mid + 0.95 + 0.08))
    arrow((out_x, bottom + 0.3), (out_x, mid - 0.95 - 0.08),
          linestyle=(0, (1, 1.5)))
    cut = bottom + 0.78
    for dy in (-0.08, 0.08):
        ax.plot([out_x - 0.22, out_x + 0.22],
                [cut + dy + 0.08, cut + dy - 0.08], color="black",
                linewidth=1.4)
    ax.text(out_x + 0.35, cut, "sg", ha="left", va="center", fontsize=fs,
            weight="bold")
    ax.text(out_x, bottom - 0.35, SG_TEXT, ha="center", va="top",
            fontsize=fs - 1, linespacing=1.4)

    # The EMA: the target's weights follow the online encoder and projector.
    ema_x = (xs["f"] + xs["g"]) / 2
    arrow((ema_x, top - bh / 2 - 0.15), (ema_x, bottom + bh / 2 + 0.15),
          linestyle="--", color="#8c5a1f")
    ema = EMA_TEXT + "\nof encoder and projector,\nafter every step"
    if base_tau is not None:
        ema += (f"; τ from {base_tau:g} to 1" if tau_schedule == "cosine"
                else f"; τ = {base_tau:g}")
    ax.text(ema_x + 0.2, mid, ema, ha="left", va="center", fontsize=fs - 1,
            color="#8c5a1f", linespacing=1.4)
    return fig
