import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from byol_lite.segmentation.metrics import ConfusionMatrix

C = 6


def random_batch(n=4, size=24, seed=0, ignore_frac=0.1):
    """Random predictions and targets in which every class occurs, with some void (255) target pixels."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (n, size, size), generator=g)
    # a ground-truth-biased prediction, so IoUs are spread out rather than all ~1/(2C-1)
    noise = torch.randint(0, C, (n, size, size), generator=g)
    pred = torch.where(torch.rand(n, size, size, generator=g) < 0.6, target, noise)
    target[torch.rand(n, size, size, generator=g) < ignore_frac] = 255
    assert set(target[target != 255].unique().tolist()) == set(range(C))
    assert set(pred.unique().tolist()) == set(range(C))
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics(seed):
    pred, target = random_batch(seed=seed)
    cm = ConfusionMatrix(C, ignore_index=255)
    cm.update(pred, target)
    out = cm.compute()
    per_class = MulticlassJaccardIndex(num_classes=C, average="none", ignore_index=255)(pred, target)
    macro = MulticlassJaccardIndex(num_classes=C, average="macro", ignore_index=255)(pred, target)
    acc = MulticlassAccuracy(num_classes=C, average="micro", ignore_index=255)(pred, target)
    assert out["iou"] == pytest.approx(per_class.tolist(), abs=1e-6)
    assert out["miou"] == pytest.approx(macro.item(), abs=1e-6)
    assert out["pixel_acc"] == pytest.approx(acc.item(), abs=1e-6)
    assert int(cm.matrix.sum()) == int((target != 255).sum())


def test_class_absent_from_both_sides_is_nan_and_excluded():
    target = torch.tensor([[[0, 0, 1, 1], [0, 3, 3, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 3, 0, 2]]])   # class 2 predicted only where void: not counted
    cm = ConfusionMatrix(5)
    cm.update(pred, target)
    out = cm.compute()
    # class 0: TP 2, FP 1 (the 3 read as 0), FN 1 -> 2/4; class 1: 2/3; class 3: 1/2; classes 2 and 4 absent
    assert out["iou"][0] == pytest.approx(0.5)
    assert out["iou"][1] == pytest.approx(2 / 3)
    assert out["iou"][3] == pytest.approx(0.5)
    assert math.isnan(out["iou"][2]) and math.isnan(out["iou"][4])
    assert out["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert out["pixel_acc"] == pytest.approx(5 / 7)


def test_class_in_prediction_only_counts_as_zero():
    target = torch.tensor([[[0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 0, 0, 1]]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    out = cm.compute()
    assert out["iou"][:2] == [pytest.approx(0.75), 0.0]
    assert math.isnan(out["iou"][2])
    assert out["miou"] == pytest.approx(0.375)


def test_batches_accumulate_exactly_like_one_batch():
    pred, target = random_batch(n=6, seed=3)
    whole = ConfusionMatrix(C)
    whole.update(pred, target)
    parts = ConfusionMatrix(C)
    for p, t in zip(pred.split(2), target.split(2)):
        parts.update(p, t)
    assert torch.equal(whole.matrix, parts.matrix)
    assert whole.matrix.dtype == torch.int64
    assert parts.compute() == whole.compute()
    parts.reset()
    assert parts.matrix.sum() == 0


def test_logits_equal_their_argmax():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, C, 16, 16, generator=g)
    _, target = random_batch(n=3, size=16, seed=4)
    a, b = ConfusionMatrix(C), ConfusionMatrix(C)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.matrix, b.matrix)


def test_rejects_inputs_it_cannot_score():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="upsample"):
        cm.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cm.update(torch.full((1, 4, 4), 3), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        cm.update(torch.zeros(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
