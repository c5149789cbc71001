"""Object-level BYOL (DetCon-B without negatives): masks follow their views, pooling, the per-region loss, training and resume."""
import json

import pytest
import torch
from PIL import Image
from torch import nn

import byol_lite.method.object_level as ol
from byol_lite.method.augment import BYOLAugment, ViewConfig, sample_params
from byol_lite.method.backbones import backbone_from_run, build_backbone
from byol_lite.method.byol import BYOL
from byol_lite.data import UnlabeledImages
from byol_lite.method.object_level import (ObjectBYOL, cached_region_masks, pool_regions, region_views, segment_regions,
                                    view_masks, with_regions)
from byol_lite.pretrain import pretrain
from conftest import TINY, assert_same_run, interrupt_after_first_checkpoint

GEOMETRY_ONLY = ViewConfig(crop_scale=(0.1, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def quadrant_batch(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """[n, 4, size, size] uint8: red marks the right part, green the bottom part (a random split per image);
    the 4th channel is the known region map 2·bottom + right."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randint(size // 4, 3 * size // 4, (n,), generator=gen)
    ys = torch.randint(size // 4, 3 * size // 4, (n,), generator=gen)
    grid = torch.arange(size)
    right = (grid[None, None, :] >= xs[:, None, None]).expand(n, size, size)
    bottom = (grid[None, :, None] >= ys[:, None, None]).expand(n, size, size)
    return torch.stack([right * 255, bottom * 255, torch.zeros_like(right), 2 * bottom + right], 1).to(torch.uint8)


def test_mask_follows_its_view_exactly():
    batch = quadrant_batch(64, 40)
    augment = BYOLAugment(32, GEOMETRY_ONLY, GEOMETRY_ONLY)
    gen = torch.Generator().manual_seed(1)
    view1, view2, masks1, masks2 = region_views(augment, batch, gen, num_regions=4)
    gen = torch.Generator().manual_seed(1)
    _, (p1, p2) = augment(batch[:, :3], gen, return_params=True)
    assert p1.flipped.any() and not p1.flipped.all()          # both orientations are exercised
    for view, masks in ((view1, masks1), (view2, masks2)):
        rgb = augment.denormalize(view)                        # what the network sees, decoded
        seen = 2 * (rgb[:, 1] > 0.5).long() + (rgb[:, 0] > 0.5).long()
        assert masks.shape == (64, 4, 32, 32)
        assert torch.equal(masks.argmax(1), seen) and torch.equal(masks.sum(1), torch.ones(64, 32, 32))
        assert (masks.flatten(2).amax(2).sum(1) > 1).float().mean() > 0.5   # most views show a boundary


def test_crop_and_flip_move_the_mask_by_hand():
    regions = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    regions[..., 4:] = 1                                        # left half 0, right half 1
    params = sample_params(1, 8, 8, ViewConfig(), torch.Generator().manual_seed(0))
    params.boxes = torch.tensor([[0.25, 0.0, 1.0, 1.0]])       # columns 2..7
    params.flipped = torch.tensor([False])
    assert view_masks(regions, params, 6, 2).argmax(1)[0, 0].tolist() == [0, 0, 1, 1, 1, 1]
    params.flipped = torch.tensor([True])
    assert view_masks(regions, params, 6, 2).argmax(1)[0, 0].tolist() == [1, 1, 1, 1, 0, 0]


def test_mask_pooling_by_hand():
    fmap = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 5.0]]])[None]    # [1, 2, 2, 2]
    masks = torch.zeros(1, 3, 4, 4)
    masks[0, 0, :2, :2] = 1          # region 0: the top-left cell...
    masks[0, 0, 0, 2] = 1            # ...and a quarter of the top-right one
    masks[0, 1] = 1 - masks[0, 0]    # region 1: the rest; region 2: absent
    pooled = pool_regions(fmap, masks)
    # region 0: (1·1 + 0.25·2) / 1.25; region 1: (0.75·2 + 3 + 4) / 2.75
    assert torch.allclose(pooled[0, :, 0], torch.tensor([1.2, 8.5 / 2.75, 0.0]))
    assert torch.allclose(pooled[0, :, 1], torch.tensor([5.0, 5.0, 0.0]))


class PixelEncoder(nn.Module):
    """A 1×1 convolution: each feature cell depends on its own pixel only."""

    num_features = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x):
        fmap = self.conv(x)
        return fmap.mean(dim=(2, 3)), fmap


def test_region_absent_from_one_view_adds_nothing_to_the_loss():
    torch.manual_seed(0)
    model = ObjectBYOL(PixelEncoder(), proj_hidden=16, proj_dim=8, pred_hidden=16)
    view1, view2 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    masks1 = torch.zeros(4, 3, 8, 8)
    masks1[:, 0, :, :4] = 1          # left half
    masks1[:, 1, :4, 4:] = 1         # top right
    masks1[:, 2, 4:, 4:] = 1         # bottom right: not in view 2
    masks2 = torch.zeros(4, 3, 8, 8)
    masks2[:, 0, :, :4] = 1
    masks2[:, 1, :, 4:] = 1
    loss = model(view1, view2, masks1, masks2).loss
    changed = view1.clone()
    changed[:, :, 4:, 4:] = torch.randn(4, 3, 4, 4) * 10
    assert torch.equal(model(changed, view2, masks1, masks2).loss, loss)
    changed[:, :, :, :4] += 1        # a region both views share does count
    assert not torch.allclose(model(changed, view2, masks1, masks2).loss, loss)


def _tiny_pair():
    torch.manual_seed(0)
    kwargs = dict(proj_hidden=32, proj_dim=16, pred_hidden=32)
    glob = BYOL(build_backbone("resnet18", width=8, image_size=32), **kwargs)
    obj = ObjectBYOL(build_backbone("resnet18", width=8, image_size=32), **kwargs)
    obj.load_state_dict(glob.state_dict())
    return glob, obj


def test_one_region_covering_every_view_is_global_byol():
    glob, obj = _tiny_pair()
    view1, view2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    whole = torch.ones(8, 1, 32, 32)
    torch.testing.assert_close(obj(view1, view2, whole, whole).loss, glob(view1, view2).loss)


def test_target_gets_no_gradient():
    _, model = _tiny_pair()
    masks = view_masks(quadrant_batch(8, 32)[:, 3:], sample_params(8, 32, 32, GEOMETRY_ONLY, torch.Generator()), 32, 4)
    model(torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32), masks, masks).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target.parameters())
    assert all(p.grad is not None for p in model.online.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_segments_are_merged_by_colour_and_position_to_at_most_num_regions():
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    image[0, :, 24:] = 255                                     # a red right part, 16 of 40 columns
    regions = segment_regions(image, num_regions=2, scale=100.0)
    expected = torch.zeros(40, 40, dtype=torch.uint8)
    expected[:, 24:] = 1                                       # region 0 is the largest segment
    # (FH's smoothing cuts thin strips along the edge; they join the region of their own colour)
    assert torch.equal(regions, expected)
    island = torch.zeros(3, 40, 40, dtype=torch.uint8)
    island[:, :, 20:] = 255
    island[:, 17:23, 30:36] = 120    # a grey square, nearer black in colour, inside the white half
    expected = torch.zeros(40, 40, dtype=torch.uint8)
    expected[:, 20:] = 1                                       # it joins the region around it
    assert torch.equal(segment_regions(island, num_regions=2, scale=100.0), expected)
    busy = (torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    ids = segment_regions(busy, num_regions=5, scale=10.0).unique()
    assert len(ids) == 5 and ids.max() == 4                    # many FH segments, merged to 5


def _image_folder(tmp_path, n=6, size=24):
    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        img = (torch.rand(3, 3, 3, generator=gen) * 255).to(torch.uint8)
        img = img.repeat_interleave(size // 3, 1).repeat_interleave(size // 3, 2)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    return sorted(tmp_path.glob("*.png"))


def test_masks_are_cached_in_memory_and_next_to_the_images(tmp_path, monkeypatch):
    files = _image_folder(tmp_path)
    data = UnlabeledImages(files, image_size=24, cache=True)
    monkeypatch.setattr(ol, "_MEMORY", {})
    first = cached_region_masks(data, 4, 50.0)
    stored = list((tmp_path / ".byol_lite-cache").glob("regions-*.pt"))
    assert len(stored) == 1 and torch.equal(torch.load(stored[0], weights_only=True), first)

    def no_recompute(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(ol, "region_masks", no_recompute)
    assert cached_region_masks(data, 4, 50.0) is first                      # memory
    monkeypatch.setattr(ol, "_MEMORY", {})
    assert torch.equal(cached_region_masks(UnlabeledImages(files, image_size=24, cache=True), 4, 50.0), first)
    monkeypatch.undo()
    monkeypatch.setattr(ol, "_MEMORY", {})
    cached_region_masks(data, 4, 200.0)                                      # other settings: another file
    assert len(list((tmp_path / ".byol_lite-cache").glob("regions-*.pt"))) == 2
    stored[0].write_bytes(b"not a checkpoint")
    monkeypatch.setattr(ol, "_MEMORY", {})
    with pytest.warns(RuntimeWarning, match="unreadable region-mask cache"):
        assert torch.equal(cached_region_masks(data, 4, 50.0), first)


def test_streamed_images_carry_the_same_masks(tmp_path):
    files = _image_folder(tmp_path)
    cached = with_regions(UnlabeledImages(files, image_size=24, cache=True), 4, 50.0)
    streamed = with_regions(UnlabeledImages(files, image_size=24, cache=False), 4, 50.0)
    assert cached.shape == (6, 4, 24, 24)
    assert torch.equal(torch.stack([streamed[i] for i in range(len(streamed))]), cached)
    with pytest.raises(ValueError, match="num_regions=300.*1 to 255"):
        with_regions(cached[:, :3], 300)


class Plain(torch.utils.data.Dataset):
    def __init__(self, images):
        self.images_list = images

    def __len__(self):
        return len(self.images_list)

    def __getitem__(self, i):
        return self.images_list[i]


def test_sets_without_content_identity_are_never_served_stale_masks(tmp_path):
    halves = quadrant_batch(2, 24)[:, :3]
    first = with_regions(Plain(list(halves)), 4, 50.0)
    second = with_regions(Plain(list(halves.flip(-1))), 4, 50.0)     # same type and length, other content
    assert not torch.equal(first[0][3], second[0][3])


def test_large_images_are_segmented_small_and_their_masks_brought_back(tmp_path):
    files = _image_folder(tmp_path, n=3, size=120)              # 3 x 3 blocks of 40 px, larger than 96 px
    streamed = with_regions(UnlabeledImages(files, image_size=120, cache=False), 9, 50.0)
    assert len(list((tmp_path / ".byol_lite-cache").glob("regions-*.pt"))) == 1
    for i in range(3):
        item = streamed[i]
        assert item.shape == (4, 120, 120) and torch.equal(item[:3], UnlabeledImages(files, 120)[i])
        blocks = item[3].view(3, 40, 3, 40)[:, 4:-4, :, 4:-4]  # each block, 4 px in from its edges
        assert (blocks == blocks[:, :1, :, :1]).all()           # is one region
        assert len(blocks[:, 0, :, 0].unique()) == len(item[:3].view(3, 3, 40, 3, 40)[:, :, 0, :, 0]
                                                       .flatten(1).T.unique(dim=0))   # one per distinct colour


def test_object_pretraining_runs_and_resumes_exactly(blocks, tmp_path, monkeypatch):
    params = dict(TINY, objective="object", num_regions=6, max_steps=20, checkpoint_every=10, log_every=5,
                  rank_every=10)
    straight = pretrain(dataset=blocks, out_dir=tmp_path / "straight", **params)
    assert isinstance(straight.model, ObjectBYOL)
    assert {"loss", "collapse_std", "feature_rank"} <= set(straight.history[-1])
    encoder = backbone_from_run(tmp_path / "straight")
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, straight.model.encoder.state_dict()[k]), k

    undo = interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=blocks, out_dir=tmp_path / "split", **params)
    undo()
    with pytest.raises(ValueError, match="objective: 'object' in the run, 'global' now"):
        pretrain(dataset=blocks, out_dir=tmp_path / "split", resume=True, **{**params, "objective": "global"})
    resumed = pretrain(dataset=blocks, out_dir=tmp_path / "split", resume=True, **params)
    assert_same_run(straight, resumed)
    assert json.loads((tmp_path / "split" / "config.json").read_text())["objective"] == "object"
