"""Segmentation models: a ``byol_lite`` backbone plus one of torchvision's segmentation heads.

The backbone's start (``init``: random, a BYOL run's online encoder, a torchvision ResNet ``state_dict``)
is the only thing the BYOL-vs-random comparison varies. Inputs are ImageNet-normalised float images;
outputs are logits upsampled bilinearly to the input size.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from byol_lite.checkpoint import atomic_save, safe_load
from byol_lite.method.backbones import PRETRAIN_RUN, Backbone, backbone_from_run, build_backbone, load_backbone

HEADS = ("fcn", "deeplabv3", "linear")


class SegmentationModel(nn.Module):
    """``backbone`` → head (``fcn``, ``deeplabv3`` or ``linear``: one 1×1 convolution) → logits at the input's
    size, as torchvision's ``{"out": ..., "aux": ...}`` (``aux`` only while training). ``freeze_backbone=True``
    trains only the head, backbone BatchNorm in eval mode; with ``head="linear"`` that is the linear probe."""

    def __init__(self, backbone: Backbone, num_classes: int = 21, head: str = "fcn", aux: bool = False,
                 freeze_backbone: bool = False, atrous_rates: tuple[int, ...] | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        self.backbone = backbone
        self.num_classes, self.head, self.aux, self.freeze_backbone = num_classes, head, aux, freeze_backbone
        channels = backbone.num_features
        self.atrous_rates = None
        if head == "fcn":
            self.classifier = FCNHead(channels, num_classes)
        elif head == "deeplabv3":
            # DeepLabV3's (6, 12, 18) at output stride 16, doubled at 8, halved at 32 (chosen for ~513 px crops:
            # on small images the larger rates reach only padding)
            default = tuple(r * 16 // backbone.output_stride for r in (6, 12, 18))
            self.atrous_rates = tuple(atrous_rates or default)
            self.classifier = DeepLabHead(channels, num_classes, self.atrous_rates)
        else:
            self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)
        # torchvision's auxiliary loss: an FCN head on layer3, whose width is half of layer4's.
        self.aux_classifier = FCNHead(channels // 2, num_classes) if aux else None
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    @property
    def spec(self) -> dict:
        """Everything :func:`build_segmentation_model` needs to rebuild this architecture."""
        b = self.backbone
        return {"backbone": b.arch, "stem": b.stem, "width": b.width, "output_stride": b.output_stride,
                "num_classes": self.num_classes, "head": self.head, "aux": self.aux,
                "freeze_backbone": self.freeze_backbone,
                "atrous_rates": list(self.atrous_rates) if self.atrous_rates else None}

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:  # frozen features must not drift through BatchNorm running statistics
            self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            mid, feat = self.backbone.forward_features(x)
        out = {"out": F.interpolate(self.classifier(feat), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None and self.training:
            out["aux"] = F.interpolate(self.aux_classifier(mid), size=size, mode="bilinear", align_corners=False)
        return out


def with_output_stride(backbone: Backbone, output_stride: int | None) -> Backbone:
    """The same weights with the last stages' strides turned into dilation, as torchvision does (Bottleneck
    blocks only: resnet18/34 reach stride 8 through the small stem). ``None`` keeps the backbone's own stride,
    except that an ImageNet-stem resnet50 goes to 16 (the BYOL paper's VOC setting)."""
    natural = backbone.output_stride
    bottleneck = isinstance(backbone.layer4[0], resnet.Bottleneck)
    if output_stride is None:
        output_stride = 16 if bottleneck and natural == 32 else natural
    if output_stride == natural:
        return backbone
    n_dilated = math.log2(natural / output_stride) if output_stride > 0 else -1
    if not n_dilated.is_integer() or not 0 < n_dilated <= 3:
        raise ValueError(f"output_stride={output_stride} is not reachable from {backbone.arch} with the "
                         f"{backbone.stem!r} stem (its stride is {natural}; dilation can only lower it by "
                         "factors of 2). Choose 8, 16 or 32, or the small stem for stride 8.")
    if not bottleneck:
        raise ValueError(f"{backbone.arch} is built from BasicBlocks, which torchvision cannot dilate, so its "
                         f"output stride stays {natural} with the {backbone.stem!r} stem. Use stem='small' "
                         "(stride 8), output_stride=None, or resnet50 (dilated to 8 or 16).")
    n = int(n_dilated)
    dilated = Backbone(backbone.arch, stem=backbone.stem, width=backbone.width,
                       dilate=tuple([False] * (3 - n) + [True] * n))
    dilated.load_state_dict(backbone.state_dict())
    return dilated


def init_path(init: str) -> Path:
    """The file or folder an ``init`` other than ``"random"`` names (``"byol"``: the default pretraining folder)."""
    return Path(PRETRAIN_RUN if init == "byol" else init)


def build_segmentation_model(init: str = "random", backbone: str = "resnet18", stem: str = "auto", width: int = 64,
                             image_size: int | None = None, output_stride: int | None = None, num_classes: int = 21,
                             head: str = "fcn", aux: bool = False, freeze_backbone: bool = False,
                             atrous_rates: tuple[int, ...] | None = None) -> SegmentationModel:
    """A segmentation model whose backbone starts from ``init``: ``"random"``; ``"byol"`` (``runs/pretrain``); a
    pretraining run folder, whose recorded backbone/stem/width win over the arguments; or a torchvision-format
    ResNet ``state_dict`` file (``fc.*`` ignored) matching ``backbone``/``stem``/``width``. ``image_size`` only
    resolves ``stem="auto"`` (small stem for ≤ 96 px)."""
    path = None if str(init) == "random" else init_path(str(init))
    if path is not None and path.is_dir():
        encoder = backbone_from_run(path)
    else:
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"init={str(init)!r}: no such pretraining run folder or weights file. Use "
                                    "'random', 'byol' (the default pretraining folder), a pretraining run folder "
                                    "(config.json + backbone.pt), or a torchvision-format ResNet state_dict file.")
        encoder = build_backbone(backbone, stem=stem, width=width, image_size=image_size)
        try:
            if path is not None:
                load_backbone(encoder, path)
        except RuntimeError as err:
            raise ValueError(f"{path} does not fit backbone={backbone} stem={encoder.stem} width={width}: set the "
                             f"backbone, stem and width of the network these weights came from.\n{err}") from None
    encoder = with_output_stride(encoder, output_stride)
    return SegmentationModel(encoder, num_classes=num_classes, head=head, aux=aux, freeze_backbone=freeze_backbone,
                             atrous_rates=atrous_rates)


def save_segmentation_model(model: SegmentationModel, path: str | os.PathLike) -> None:
    """Weights plus the architecture spec, so :func:`load_segmentation_model` needs nothing else."""
    atomic_save({"model": model.state_dict(), "spec": model.spec}, Path(path))


def load_segmentation_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SegmentationModel:
    """From a file written by :func:`save_segmentation_model` or a fine-tuning checkpoint, or a fine-tuning
    run folder (its final ``model.pt``, else its latest checkpoint ``last.pt``)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such fine-tuning run folder or checkpoint file (expected a folder "
                                "written by `python -m byol_lite finetune`, or its model.pt / last.pt)")
    if path.is_dir():
        found = [p for p in (path / "model.pt", path / "last.pt") if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{path} holds neither model.pt nor last.pt: not a fine-tuning run folder "
                                    "(written by `python -m byol_lite finetune`)")
        path = found[0]
    state = safe_load(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise ValueError(f"{path} is not a segmentation checkpoint (expected the keys 'model' and 'spec' written "
                         "by byol_lite fine-tuning); a backbone state_dict goes to init= of fine-tuning instead")
    spec = dict(state["spec"])
    rates = spec.pop("atrous_rates")
    model = build_segmentation_model("random", atrous_rates=tuple(rates) if rates else None, **spec)
    model.load_state_dict(state["model"])
    return model
