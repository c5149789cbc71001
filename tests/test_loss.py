import math

import pytest
import torch
import torch.nn.functional as F

from byol_lite import BYOL, build_backbone, regression_loss


def test_seed_example_values():
    z = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.9, 0.1]])
    cos = 0.9 / math.sqrt(0.82)
    loss = regression_loss(p, z)
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(0.012233, abs=1e-6)
    assert loss.item() == pytest.approx(2 - 2 * cos, abs=1e-7)
    # The seed article's −2·cos form differs by the constant 2, and equals −1.987767 (not "≈ −1.8").
    assert (loss - 2).item() == pytest.approx(-1.987767, abs=1e-6)


def test_equals_mse_of_normalised_vectors():
    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(64, 32, generator=gen) * 5, torch.randn(64, 32, generator=gen) * 0.1
    expected = ((F.normalize(p, dim=1) - F.normalize(z, dim=1)) ** 2).sum(1)
    torch.testing.assert_close(regression_loss(p, z), expected, atol=1e-5, rtol=1e-5)
    # Scale invariance: the inputs need not be normalised.
    torch.testing.assert_close(regression_loss(3 * p, 0.5 * z), expected, atol=1e-5, rtol=1e-5)


def test_range_and_extremes():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    assert regression_loss(v, 7 * v).item() == pytest.approx(0.0, abs=1e-6)
    assert regression_loss(v, -v).item() == pytest.approx(4.0, abs=1e-6)


def test_training_loss_is_sum_of_both_directions():
    torch.manual_seed(0)
    model = BYOL(build_backbone("resnet18", stem="small", width=8), 64, 16, 64)
    v1, v2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    out = model(v1, v2)
    p1, p2 = out.online_pred.split(8)
    t1, t2 = out.target_proj.split(8)
    direction_a = regression_loss(p1, t2).mean()
    direction_b = regression_loss(p2, t1).mean()
    torch.testing.assert_close(out.loss, direction_a + direction_b)
    # Not the average of the two: that would halve the effective learning rate.
    assert out.loss.item() == pytest.approx(direction_a.item() + direction_b.item(), rel=1e-6)
    # Symmetric: swapping the views gives the same loss (same parameters, same batch statistics).
    torch.testing.assert_close(model(v2, v1).loss, out.loss, atol=1e-5, rtol=1e-5)
