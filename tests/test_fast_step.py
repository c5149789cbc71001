"""The speed settings change how a step is computed, never what it computes.

Each optimised variant of the training step (channels_last, bf16 autocast, the rewritten
colour jitter) is checked against a plain reference on the same inputs and parameters.
"""
import copy

import pytest
import torch
from torchvision.transforms.functional import adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation

from byol_lite import BYOL, build_backbone
from byol_lite.method.augment import BYOLAugment, _jitter_op_, _shift_hue_
from byol_lite.method.view_norm import split_batch_norm_by_view
from byol_lite.device import autocast, resolve_channels_last, resolve_precision

CPU = torch.device("cpu")


def step(model: BYOL, v1, v2, precision="fp32", channels_last=False):
    """One forward/backward as pretrain() does it; returns the loss and the online gradients."""
    model = copy.deepcopy(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
    with autocast(CPU, precision):
        out = model(v1, v2)
    out.loss.backward()
    return out.loss.detach(), [p.grad.float() for p in model.trainable_parameters()]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = BYOL(build_backbone("resnet18", stem="imagenet", width=16), 128, 32, 128)
    images = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    v1, v2 = BYOLAugment(32)(images, 0)
    return model, v1, v2, step(model, v1, v2)


def relative_errors(grads, ref_grads) -> list[float]:
    """Per tensor ‖g − r‖ / ‖r‖, the measure float32 reordering keeps small whatever the CPU. Tensors whose
    true gradient is zero (the heads' Linear biases just before a BatchNorm: ‖r‖ ~1e-7, pure rounding)
    are measured against the whole gradient's norm instead."""
    total = torch.cat([r.flatten() for r in ref_grads]).norm()
    return [float((g - r).norm() / (r.norm() if r.norm() > 1e-6 * total else total))
            for g, r in zip(grads, ref_grads)]


def test_channels_last_step_equals_the_plain_step(setup):
    model, v1, v2, (ref_loss, ref_grads) = setup
    loss, grads = step(model, v1, v2, channels_last=True)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    # Measured on an AMD EPYC with AVX512: at most 2.8e-5 (median 1.5e-5). Views that differ by 1e-3 in one
    # image of the 8 move each tensor by 1e-3 or more (median 0.14; the three zero-gradient biases aside),
    # so 2e-4 still tells a different step.
    assert max(relative_errors(grads, ref_grads)) < 2e-4


def _buffers(model):
    return [b.float() for b in model.buffers() if b.is_floating_point()]


def _fused_and_separate(model, inputs):
    """The loss, gradients and BatchNorm running statistics of one step, views fused and separate."""
    results = []
    for fuse in (False, True):
        m = copy.deepcopy(model)
        if fuse:
            m.fuse_views = True
            split_batch_norm_by_view(m)
        out = m(*inputs)
        out.loss.backward()
        results.append((out, [p.grad for p in m.trainable_parameters()], _buffers(m)))
    return results


def test_fused_views_step_equals_the_separate_step(setup):
    """One forward of both views with per-view BatchNorm statistics gives the outputs, gradients and
    running statistics of two forwards. A plain BatchNorm over the joined batch (mixed statistics)
    changes the loss, which this tolerance catches."""
    model, v1, v2, _ = setup
    (ref, ref_grads, ref_bufs), (out, grads, bufs) = _fused_and_separate(model, (v1, v2))
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    for a, b in ((out.online_pred, ref.online_pred), (out.target_proj, ref.target_proj)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert max(relative_errors(grads, ref_grads)) < 2e-4
    assert max(relative_errors(bufs, ref_bufs)) < 1e-5       # running means/vars updated once per view
    mixed = copy.deepcopy(model)
    joined = mixed.online["projector"](mixed.online["encoder"](torch.cat([v1, v2]))[0])
    assert not torch.allclose(joined[: len(v1)], ref.online_proj[: len(v1)], rtol=1e-3, atol=1e-3)


def test_fused_views_object_level_step_equals_the_separate_step(setup):
    """Object-level BYOL: the kept regions of both views form one batch of two equal halves."""
    from byol_lite.method.augment import ViewConfig, sample_params
    from byol_lite.method.object_level import ObjectBYOL, view_masks

    geometry = ViewConfig(crop_scale=(0.3, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)

    model, v1, v2, _ = setup
    obj = ObjectBYOL(copy.deepcopy(model.encoder), 128, 32, 128)
    gen = torch.Generator().manual_seed(3)
    regions = torch.randint(0, 3, (len(v1), 1, 8, 8), generator=gen).repeat_interleave(5, -1)
    regions = regions.repeat_interleave(5, -2).to(torch.uint8)
    masks = [view_masks(regions, sample_params(len(v1), 40, 40, geometry, gen), 32, 3) for _ in range(2)]
    (ref, ref_grads, ref_bufs), (out, grads, bufs) = _fused_and_separate(obj, (v1, v2, *masks))
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-6)
    assert max(relative_errors(grads, ref_grads)) < 2e-4
    assert max(relative_errors(bufs, ref_bufs)) < 1e-5


def test_bf16_channels_last_step_follows_the_plain_step(setup):
    """bf16 keeps ~3 significant digits, so only approximately: the loss agrees to 1% and the whole
    gradient points the same way (cosine 0.83 at batch 8 and 0.89 at batch 32 when measured; the
    per-tensor cosine is meaningless for biases in front of a BatchNorm, whose exact gradient is 0)."""
    model, v1, v2, (ref_loss, ref_grads) = setup
    loss, grads = step(model, v1, v2, precision="bf16", channels_last=True)
    assert loss.dtype == torch.float32            # the regression loss is computed in fp32 under autocast
    assert abs(loss - ref_loss) <= 0.01 * ref_loss
    flat = torch.cat([g.flatten() for g in grads])
    ref = torch.cat([r.flatten() for r in ref_grads])
    assert torch.nn.functional.cosine_similarity(flat, ref, dim=0) > 0.75
    assert 0.8 < flat.norm() / ref.norm() < 1.25


def test_hue_shift_matches_torchvision():
    """The batched, per-image hue rotation against torchvision's adjust_hue, one image at a time
    (grey pixels, pure colours and both signs of shift included)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, 9, 9, generator=gen)
    x[0] = 0.5                                             # all grey: hue undefined, must stay grey
    x[1, :, :3] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)   # pure red
    shift = torch.tensor([0.1, -0.1, 0.5, -0.5, 0.03, 0.25])
    ours = _shift_hue_(x.clone(), shift)
    for i in range(len(x)):
        torch.testing.assert_close(ours[i], adjust_hue(x[i], float(shift[i])), rtol=0, atol=2e-5)


@pytest.mark.parametrize("op, reference", [(0, adjust_brightness), (1, adjust_contrast),
                                           (2, adjust_saturation), (3, adjust_hue)])
def test_jitter_ops_match_torchvision(op, reference):
    """Each in-place colour-jitter operation, with a different factor per image, against torchvision's
    function on one image at a time (the grey weights differ in the fourth digit: 0.299 vs 0.2989)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 8, 8, generator=gen)
    f = torch.tensor([0.6, 1.0, 1.4, 1.8]) if op < 3 else torch.tensor([-0.1, 0.0, 0.05, 0.1])
    ours = _jitter_op_(x.clone(), op, f)
    for i in range(len(x)):
        torch.testing.assert_close(ours[i], reference(x[i], float(f[i])), rtol=0, atol=1e-3)


def test_channels_last_policy():
    assert resolve_channels_last(torch.device("cuda"), None) is True and resolve_channels_last(CPU, None) is True
    assert resolve_channels_last(CPU, False) is False and resolve_channels_last(torch.device("cuda"), False) is False


def test_auto_precision_is_bf16_exactly_where_the_hardware_has_it(monkeypatch):
    assert resolve_precision(torch.device("cuda"), "auto") == "bf16"
    for avx512_bf16, amx, expected in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert resolve_precision(CPU, "auto") == expected
        assert isinstance(autocast(CPU, "auto"), torch.autocast) == (expected == "bf16")
    assert resolve_precision(CPU, "fp32") == "fp32" and resolve_precision(CPU, "bf16") == "bf16"
    with pytest.raises(ValueError, match="choose auto, fp32 or bf16"):
        resolve_precision(CPU, "fp16")


def test_compiled_run_matches_eager(blocks, tmp_path):
    """``compile=True`` runs the model's forward through inductor and trains the eager run: the same
    logged losses to float tolerance and the same parameter names (a checkpoint loads either way)."""
    from byol_lite.pretrain import pretrain
    from conftest import TINY

    params = dict(TINY, max_steps=3, log_every=1, precision="fp32", channels_last=False)
    eager = pretrain(dataset=blocks, out_dir=tmp_path / "eager", **params)
    compiled = pretrain(dataset=blocks, out_dir=tmp_path / "compiled", compile=True, **params)
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None
    assert [r["loss"] for r in compiled.history] == pytest.approx([r["loss"] for r in eager.history], rel=1e-4)
    se, sc = eager.model.state_dict(), compiled.model.state_dict()
    assert se.keys() == sc.keys()
    for k in se:
        torch.testing.assert_close(sc[k], se[k], rtol=1e-3, atol=1e-4)
