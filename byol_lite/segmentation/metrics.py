"""Semantic-segmentation metrics from one confusion matrix accumulated over a whole split.

VOC's mIoU is defined on the dataset-wide confusion matrix, not as a mean of per-image scores:
IoU_c = TP / (TP + FP + FN), averaged over the classes that occur in the ground truth or the
prediction (a class absent from both has no IoU, so it is NaN and left out of the mean).
"""
from __future__ import annotations

import torch


class ConfusionMatrix:
    """Accumulates ``[num_classes, num_classes]`` int64 counts (rows = ground truth, columns = prediction), exact
    batch by batch; target pixels equal to ``ignore_index`` (VOC's void) or outside the classes are dropped."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def reset(self) -> None:
        self.matrix = torch.zeros_like(self.matrix)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class indices ``[N, H, W]`` or logits/scores ``[N, C, H, W]``; ``target``: ``[N, H, W]``."""
        n = self.num_classes
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != n:
                raise ValueError(f"logits have {pred.shape[1]} channels but the matrix has {n} classes")
            pred = pred.argmax(1)
        elif pred.is_floating_point():
            raise ValueError("pred with the target's shape must hold integer class indices; "
                             "pass logits as [N, C, H, W] to have them arg-maxed")
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; "
                             "upsample the logits to the mask size before updating")
        target = target.long()
        keep = (target >= 0) & (target < n)
        if self.ignore_index is not None:
            keep &= target != self.ignore_index
        pred, target = pred[keep].long(), target[keep]
        if pred.numel() and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"predicted class indices must lie in [0, {n}); got {pred.min()}..{pred.max()}")
        counts = torch.bincount(target * n + pred, minlength=n * n).view(n, n)
        self.matrix = self.matrix.to(counts.device) + counts

    def compute(self) -> dict:
        """``{"miou": float, "iou": [float] * num_classes (NaN = class absent), "pixel_acc": float}``."""
        mat = self.matrix.cpu().double()
        tp = mat.diag()
        union = mat.sum(0) + mat.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        total = mat.sum()
        return {
            "miou": torch.nanmean(iou).item(),
            "iou": iou.tolist(),
            "pixel_acc": (tp.sum() / total).item() if total > 0 else float("nan"),
        }
