"""ResNet encoders that return both the pooled vector (for BYOL) and the feature map (for segmentation).

They are torchvision's ResNets, not re-implementations: parameter names match
``torchvision.models.resnet*`` so weights move in both directions with ``load_state_dict``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet

PRETRAIN_RUN = "runs/pretrain"     # where pretraining writes by default, and what fine-tuning's init="byol" reads
ARCHS = {
    "resnet18": (resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (resnet.Bottleneck, [3, 4, 6, 3]),
}


class Backbone(resnet.ResNet):
    """A torchvision ResNet without its classifier. ``stem="small"`` swaps the 7×7/2 convolution and max-pool
    for one 3×3/1 convolution (CIFAR-style), so 32–96 px images keep a useful feature map (stride 8, not 32);
    ``width`` scales every stage (64 is torchvision's; narrow ones make CPU pretraining practical); ``dilate``
    turns the last stages' strides into dilation (Bottleneck blocks only) for output stride 8 or 16."""

    def __init__(self, arch: str = "resnet18", stem: str = "imagenet", width: int = 64,
                 dilate: tuple[bool, bool, bool] = (False, False, False)):
        if arch not in ARCHS:
            raise ValueError(f"unknown backbone {arch!r}; choose one of {', '.join(ARCHS)}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"unknown stem {stem!r}; choose 'imagenet' or 'small'")
        block, layers = ARCHS[arch]
        super().__init__(block, layers, replace_stride_with_dilation=list(dilate))
        self.arch, self.stem, self.width = arch, stem, width
        if width != 64:
            self._rebuild(block, layers, width, list(dilate))
        if stem == "small":
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        del self.fc
        self.num_features = width * 8 * block.expansion

    def _rebuild(self, block, layers, width, dilate):
        # torchvision hard-codes 64/128/256/512 channels; rebuild the stages with its own
        # _make_layer at another width, then re-run its weight initialisation.
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(width)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2, dilate=dilate[2])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def output_stride(self) -> int:
        stride = 1 if self.stem == "small" else 4
        for layer in (self.layer2, self.layer3, self.layer4):
            first = layer[0]
            conv = first.conv2 if isinstance(first, resnet.Bottleneck) else first.conv1
            stride *= conv.stride[0]
        return stride

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(layer3's output, layer4's output)``: segmentation's auxiliary head reads the first."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        mid = self.layer3(self.layer2(self.layer1(x)))
        return mid, self.layer4(mid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(pooled [B, C], feature_map [B, C, h, w])``."""
        fmap = self.forward_features(x)[1]
        return torch.flatten(self.avgpool(fmap), 1), fmap


def build_backbone(arch: str = "resnet18", stem: str = "auto", width: int = 64, image_size: int | None = None,
                   dilate: tuple[bool, bool, bool] = (False, False, False)) -> Backbone:
    """``stem="auto"`` picks the small stem for images of 96 px or less."""
    if stem == "auto":
        stem = "small" if image_size is not None and image_size <= 96 else "imagenet"
    return Backbone(arch, stem=stem, width=width, dilate=dilate)


def save_backbone(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Writes a torchvision-format ``state_dict`` (no ``fc``), atomically, as CPU tensors: a file made on a
    GPU then loads with a plain ``torch.load`` on any machine."""
    from byol_lite.checkpoint import atomic_save

    atomic_save({k: v.detach().cpu() for k, v in backbone.state_dict().items()}, Path(path))


def load_backbone(backbone: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Loads a ``state_dict`` saved by :func:`save_backbone` or a torchvision ResNet's (``fc.*`` is dropped)."""
    from byol_lite.checkpoint import safe_load

    state = safe_load(Path(path))
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    backbone.load_state_dict(state, strict=strict)
    return backbone


def backbone_from_run(run_dir: str | os.PathLike) -> Backbone:
    """The online encoder of a finished (or checkpointed) pretraining run folder."""
    import json

    run_dir = Path(run_dir)
    cfg_path, weights = run_dir / "config.json", run_dir / "backbone.pt"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: {run_dir} is not a pretraining run folder "
                                    "(expected config.json and backbone.pt written by `python -m byol_lite pretrain`)")
    cfg = json.loads(cfg_path.read_text())
    backbone = build_backbone(cfg["backbone"], stem=cfg["stem"], width=cfg["width"], image_size=cfg.get("image_size"))
    return load_backbone(backbone, weights)
