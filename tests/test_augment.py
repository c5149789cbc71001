import math

import pytest
import torch

from byol_lite.method.augment import (BLUR_REFERENCE_SIZE, BYOLAugment, VIEW1, VIEW2, apply_geometry, blur_kernel_size,
                                      paper_views, sample_params)


def images(n=16, size=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    # smooth structure plus a gradient, so crops of different places differ
    ramp = torch.linspace(0, 1, size)
    return ((0.5 * x + 0.5 * ramp.view(1, 1, 1, -1)) * 255).to(torch.uint8)


def test_shape_dtype_device_and_normalisation():
    aug = BYOLAugment(32)
    v1, v2 = aug(images(), 0)
    assert v1.shape == v2.shape == (16, 3, 32, 32)
    assert v1.dtype == torch.float32 and v1.device == images().device
    restored = aug.denormalize(v1)
    assert restored.min() >= 0 and restored.max() <= 1
    # float input in [0, 1] gives the same as uint8 input
    x = images()
    torch.testing.assert_close(aug(x.float() / 255, 0)[0], v1, atol=1e-5, rtol=1e-5)


def test_same_seed_same_views_other_seed_other_views():
    aug, x = BYOLAugment(32), images()
    a1, a2 = aug(x, 123)
    b1, b2 = aug(x, torch.Generator().manual_seed(123))
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    c1, _ = aug(x, 124)
    assert not torch.allclose(a1, c1)


def test_every_image_gets_its_own_parameters_measured_on_pixels():
    aug = BYOLAugment(32)
    same = images(1).expand(16, -1, -1, -1).contiguous()      # one image, sixteen times
    (v1, _), (p1, _) = aug(same, 0, return_params=True)
    # different crops (parameters) ...
    assert len({tuple(b.tolist()) for b in p1.boxes}) == 16
    # ... and different pixels: no two outputs coincide, and colour statistics spread out.
    flat = v1.flatten(1)
    dists = torch.cdist(flat, flat) + torch.eye(16) * 1e9
    assert dists.min() > 1.0
    channel_means = v1.mean(dim=(2, 3))
    assert channel_means.std(0).min() > 0.05
    # With one draw per batch, every output is identical.
    one = BYOLAugment(32, per_sample=False)(same, 0)[0]
    assert torch.allclose(one, one[:1].expand_as(one))


@pytest.mark.parametrize("cfg,rates", [(VIEW1, dict(blurred=1.0, solarized=0.0)),
                                       (VIEW2, dict(blurred=0.1, solarized=0.2))])
def test_rates_match_the_paper_table(cfg, rates):
    n = 2000
    p = sample_params(n, 64, 64, cfg, torch.Generator().manual_seed(7))
    expected = dict(flipped=0.5, jittered=0.8, grayscale=0.2, **rates)
    for name, rate in expected.items():
        observed = getattr(p, name).float().mean().item()
        tol = 4 * math.sqrt(rate * (1 - rate) / n) + 1e-9     # 4 binomial standard errors
        assert abs(observed - rate) <= tol, (name, observed, rate)
    area = (p.boxes[:, 2] - p.boxes[:, 0]) * (p.boxes[:, 3] - p.boxes[:, 1])
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    aspect = (p.boxes[:, 2] - p.boxes[:, 0]) / (p.boxes[:, 3] - p.boxes[:, 1])
    assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    assert p.sigma.min() >= 0.1 and p.sigma.max() <= 2.0


def test_solarize_and_blur_flags_act_on_pixels():
    aug = BYOLAugment(32)
    x = images(64)
    (_, v2), (_, p2) = aug(x, 3, return_params=True)
    # Re-render view 2 with solarize switched off: only the solarized images change.
    p2.solarized[:] = False
    plain = aug.apply(x, p2, VIEW2)
    (_, v2b), (_, p2b) = aug(x, 3, return_params=True)
    changed = (v2b - plain).abs().flatten(1).amax(1) > 1e-4
    assert not (changed & ~p2b.solarized).any()                 # nothing else changed
    assert changed.sum() >= p2b.solarized.sum() - 1 > 0        # (a view with no pixel ≥ 0.5 cannot change)
    # Blur lowers the high-frequency energy of an image.
    p2.blurred[:] = True
    p2.sigma[:] = 2.0 * BLUR_REFERENCE_SIZE / 32      # 2 px in this 32-px view
    blurred = aug.apply(x, p2, VIEW2)
    p2.blurred[:] = False
    sharp = aug.apply(x, p2, VIEW2)
    tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))
    assert (tv(blurred) < 0.8 * tv(sharp)).all()


def test_blur_kernel_scales_with_image_size():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(64) == 7
    assert blur_kernel_size(96) % 2 == 1 and 9 <= blur_kernel_size(96) <= 11


def blurred_impulse_width(size: int, sigma: float) -> float:
    """The measured σ (px) of a centred impulse after the view's blur, with every other step switched off."""
    aug = BYOLAugment(size)
    x = torch.zeros(1, 3, size, size)
    x[..., size // 2, size // 2] = 1.0
    p = sample_params(1, size, size, VIEW1, torch.Generator().manual_seed(0))
    p.boxes[:] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    p.flipped[:], p.jittered[:], p.grayscale[:], p.solarized[:] = False, False, False, False
    p.blurred[:], p.sigma[:] = True, sigma
    y = aug.denormalize(aug.apply(x, p, VIEW1))[0, 0].sum(0)          # the column profile
    t = torch.arange(size, dtype=torch.float32) - size // 2
    return float(((y * t**2).sum() / y.sum()).sqrt())


def test_blur_sigma_is_in_pixels_of_a_224_px_view_and_scales_with_the_view():
    # σ = 2 (the paper's maximum) is 2 px at 224 px, 1 px at 112 px: the same blur relative to the image.
    assert blurred_impulse_width(224, 2.0) == pytest.approx(2.0, rel=0.05)
    assert blurred_impulse_width(112, 2.0) == pytest.approx(1.0, rel=0.05)
    assert blurred_impulse_width(112, 1.0) == pytest.approx(0.5, rel=0.1)


def test_mask_follows_the_view():
    # An image whose red channel is its own mask: the mask carried through the geometry
    # must line up with the view's pixels.
    gen = torch.Generator().manual_seed(0)
    n, size = 32, 48
    mask = (torch.rand(n, 1, 6, 6, generator=gen) > 0.5).float()
    mask = torch.nn.functional.interpolate(mask, size=size, mode="nearest")
    img = torch.cat([mask, torch.zeros(n, 2, size, size)], 1)
    p = sample_params(n, size, size, VIEW1, gen)
    view = apply_geometry(img, p, 24, mode="nearest")
    carried = apply_geometry(mask.to(torch.int64), p, 24, mode="nearest")
    assert carried.dtype == torch.int64
    assert torch.equal(view[:, :1].to(torch.int64), carried)
    # and the flips really flip
    q = sample_params(n, size, size, VIEW1, gen)
    q.boxes[:] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    q.flipped[:] = True
    torch.testing.assert_close(apply_geometry(img, q, size, mode="nearest"), img.flip(-1))



def test_paper_views_knobs():
    v1, v2 = paper_views(crop_min_scale=0.3, jitter_strength=0.5, blur_p=(0.5, 0.0), solarize_p=(0.1, 0.3))
    assert v1.crop_scale == (0.3, 1.0) and v1.brightness == pytest.approx(0.2) and v1.hue == pytest.approx(0.05)
    assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (0.5, 0.0, 0.1, 0.3)
