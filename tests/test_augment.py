import dataclasses
import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from byol_lite.method.augment import (BLUR_REFERENCE_SIZE, BYOLAugment, VIEW1, VIEW2, ViewConfig, ViewParams,
                                      apply_geometry, blur_kernel_size, paper_views, sample_params)
from byol_lite.method.object_level import region_views


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


# The geometry alone: the whole image (or a centred square of it), no flip, no colour step.
GEOMETRY = ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0,
                      blur_p=0.0, solarize_p=0.0)


def turned(n, height, width, degrees):
    """Parameters of ``GEOMETRY`` with every angle set to ``degrees``, and the square crop box centred."""
    p = sample_params(n, height, width, dataclasses.replace(GEOMETRY, rotation=abs(degrees) or 1.0),
                      torch.Generator().manual_seed(0))
    p.angle[:] = math.radians(degrees)
    return p


def test_a_quarter_turn_is_rot90_counter_clockwise():
    """Positive angles turn counter-clockwise as displayed: +90° is torch.rot90(k=1) over (H, W), what
    torchvision's rotate calls a counter-clockwise turn."""
    x = torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    aug = BYOLAugment(24, GEOMETRY, GEOMETRY)                 # the views' own path, bicubic
    view = aug.denormalize(aug.apply(x, turned(4, 24, 24, 90), GEOMETRY))
    torch.testing.assert_close(view, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-4, rtol=0)
    view = aug.denormalize(aug.apply(x, turned(4, 24, 24, -90), GEOMETRY))
    torch.testing.assert_close(view, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-4, rtol=0)


def mirrored(x, pad):
    """``x`` extended by ``pad`` pixels on every side with its mirror image, edge pixels repeated (the
    reflection ``grid_sample`` makes for coordinates past the edges)."""
    x = torch.cat([x[..., :pad].flip(-1), x, x[..., -pad:].flip(-1)], -1)
    return torch.cat([x[..., :pad, :].flip(-2), x, x[..., -pad:, :].flip(-2)], -2)


@pytest.mark.parametrize("height, width", [(32, 32), (32, 48), (48, 32)])
@pytest.mark.parametrize("degrees", [30.0, -70.0])
def test_any_angle_matches_torchvision_rotate_on_square_and_oblong_images(height, width, degrees):
    """The turn is about the centre in pixels, not in [-1, 1] units (which would shear an oblong image):
    a centred square crop of the turned image is torchvision's turned image cut to that square wherever the
    source lies inside the image (torchvision fills the rest with zeros), and everywhere once torchvision
    turns the image extended by its reflection (the views' corners are reflected image, never empty)."""
    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(2))
    side = min(height, width)
    ours = apply_geometry(x, turned(2, height, width, degrees), side, mode="bilinear")

    def centre(t):
        top, left = (t.shape[-2] - side) // 2, (t.shape[-1] - side) // 2
        return t[..., top:top + side, left:left + side]

    bilinear = TF.InterpolationMode.BILINEAR
    r = torch.arange(side) - (side - 1) / 2
    disc = r[:, None] ** 2 + r[None, :] ** 2 < (side / 2 - 1.5) ** 2
    ref = centre(TF.rotate(x, degrees, interpolation=bilinear))
    torch.testing.assert_close(ours[..., disc], ref[..., disc], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours, centre(TF.rotate(mirrored(x, side // 2), degrees, interpolation=bilinear)),
                               atol=1e-5, rtol=0)


def test_region_masks_follow_turned_views():
    """Object-level BYOL's masks come from the views' parameters: with rotation they must turn as the pixels.
    The image's colour encodes its region, so the region read back from each view's pixels must agree with
    the view's mask (all but the pixels that bilinear interpolation blends at region borders)."""
    n, size, k = 16, 48, 4
    coarse = torch.randint(0, k, (n, 1, 4, 4), generator=torch.Generator().manual_seed(3))
    labels = torch.nn.functional.interpolate(coarse.float(), size=size).to(torch.uint8)
    palette = torch.tensor([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=torch.uint8)
    batch = torch.cat([palette[labels[:, 0].long()].permute(0, 3, 1, 2), labels], 1)
    view = dataclasses.replace(GEOMETRY, crop_scale=(0.3, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5, rotation=180)
    aug = BYOLAugment(24, view, view, interpolation="bilinear")
    v1, v2, m1, m2 = region_views(aug, batch, torch.Generator().manual_seed(7), k)

    def region_of(v):
        rgb = aug.denormalize(v).permute(0, 2, 3, 1) * 255
        return torch.cdist(rgb.reshape(-1, 3), palette.float()).argmin(1).reshape(rgb.shape[:3])

    for v, m in ((v1, m1), (v2, m2)):
        assert (region_of(v) == m.argmax(1)).float().mean() > 0.9
    # the masks did turn: those of the same crops unturned agree far less with the views
    p1 = aug(batch[:, :3], 7, return_params=True)[1][0]         # the parameters region_views drew
    assert p1.angle.abs().max() > 1.0
    carried = apply_geometry(labels, p1, 24, mode="nearest")
    assert torch.equal(carried[:, 0].long(), m1.argmax(1))
    # nearest on a float image and on the integer mask: the same pixels exactly
    assert torch.equal(apply_geometry(labels.float(), p1, 24, mode="nearest").to(torch.uint8), carried)
    p1.angle[:] = 0
    still = apply_geometry(labels, p1, 24, mode="nearest")[:, 0]
    assert (region_of(v1) == still).float().mean() < 0.8


def test_angles_are_per_image_in_range_and_drawn_after_everything_else():
    n = 500
    plain = sample_params(n, 40, 56, VIEW1, g0 := torch.Generator().manual_seed(0))
    rotating = sample_params(n, 40, 56, dataclasses.replace(VIEW1, rotation=30), g1 := torch.Generator().manual_seed(0))
    # rotation changes no other parameter, and without it no angle is drawn ...
    for field in dataclasses.fields(ViewParams):
        if field.name != "angle":
            assert torch.equal(getattr(plain, field.name), getattr(rotating, field.name)), field.name
    assert torch.equal(plain.angle, torch.zeros(n))
    # ... the angles are the generator's next n numbers after the rest, and nothing else is drawn
    limit = math.radians(30)
    assert torch.equal(rotating.angle, -limit + 2 * limit * torch.rand(n, generator=g0))
    assert torch.equal(g0.get_state(), g1.get_state())
    # one angle per image, spread over the whole range and no further
    assert len(set(rotating.angle.tolist())) == n
    assert -limit <= rotating.angle.min() < -0.9 * limit and 0.9 * limit < rotating.angle.max() <= limit
    anyway = sample_params(n, 40, 40, dataclasses.replace(VIEW1, rotation=180), torch.Generator().manual_seed(1))
    assert anyway.angle.min() < -0.9 * math.pi and anyway.angle.max() > 0.9 * math.pi
    # one draw per batch and one process's rows carry the angle too
    assert torch.equal(rotating.first_for_all().angle, rotating.angle[:1].expand(n))
    assert torch.equal(rotating.rows(slice(3, 9)).angle, rotating.angle[3:9])


def test_paper_views_knobs():
    v1, v2 = paper_views(crop_min_scale=0.3, jitter_strength=0.5, blur_p=(0.5, 0.0), solarize_p=(0.1, 0.3))
    assert v1.crop_scale == (0.3, 1.0) and v1.brightness == pytest.approx(0.2) and v1.hue == pytest.approx(0.05)
    assert (v1.blur_p, v2.blur_p, v1.solarize_p, v2.solarize_p) == (0.5, 0.0, 0.1, 0.3)
    assert paper_views() == (VIEW1, VIEW2) and VIEW1.rotation == VIEW2.rotation == 0
    v1, v2 = paper_views(jitter_strength=0.5, hue=0.4, rotation=45)
    assert v1.hue == v2.hue == pytest.approx(0.2) and v1.rotation == v2.rotation == 45
    assert paper_views(jitter_strength=2.0, hue=0.4)[0].hue == 0.5       # at most half a turn
