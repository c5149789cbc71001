"""Joint transforms: the mask follows the image through every random scale, crop and flip."""
import pytest
import torch
from torchvision.transforms import InterpolationMode

from byol_lite.data import denormalize, normalize, train_transforms
from byol_lite.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def _noise(h=37, w=53, seed=0):
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", range(100))
def test_mask_derived_from_image_stays_aligned(seed):
    """Per-pixel noise: any offset, flip or resampling difference between image and mask shows."""
    image = _noise(seed=seed)
    mask = (image[0] > 127).long()
    t = train_transforms(32, scale=(0.5, 2.0), interpolation=InterpolationMode.NEAREST)
    torch.manual_seed(seed)
    out_image, out_mask = t(image, mask)
    assert out_image.shape == (3, 32, 32) and out_image.dtype == torch.uint8
    assert out_mask.shape == (32, 32) and out_mask.dtype == torch.int64
    valid = out_mask != 255
    assert valid.any()
    assert torch.equal((out_image[0][valid] > 127).long(), out_mask[valid])
    assert (out_image[:, ~valid] == 0).all()                 # padding: image 0 where the mask is 255


def _blocks(seed, cells=4, cell=24):
    g = torch.Generator().manual_seed(seed)
    low = torch.randint(0, 2, (3, cells, cells), generator=g).to(torch.uint8) * 200 + 20
    return low.repeat_interleave(cell, 1).repeat_interleave(cell, 2)


@pytest.mark.parametrize("seed", range(100))
def test_bilinear_image_nearest_mask_agree_away_from_edges(seed):
    """Default (bilinear image): disagreement only on the one-pixel seams between blocks."""
    image = _blocks(seed)
    mask = (image[0] > 127).long()
    torch.manual_seed(seed)
    out_image, out_mask = train_transforms(64)(image, mask)
    valid = out_mask != 255
    wrong = ((out_image[0] > 127).long() != out_mask) & valid
    assert set(out_mask.unique().tolist()) <= {0, 1, 255}    # nearest: no new label values
    assert wrong.sum() <= 0.06 * valid.sum() + 1


def test_transform_is_random_but_seeded():
    image, mask = _noise(80, 80), torch.zeros(80, 80, dtype=torch.long)
    t = train_transforms(48)
    outs = []
    for seed in (1, 1, 2):
        torch.manual_seed(seed)
        outs.append(t(image, mask)[0])
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


def test_small_images_are_padded_with_255_in_the_mask():
    image, mask = _noise(20, 20), torch.ones(20, 20, dtype=torch.long)
    torch.manual_seed(0)
    out_image, out_mask = train_transforms(48, scale=(1.0, 1.0))(image, mask)
    assert out_mask.shape == (48, 48) and (out_mask == 1).sum() == 400 and (out_mask == 255).sum() == 48 * 48 - 400


def test_base_size_sets_the_short_side():
    image, mask = _noise(40, 60), torch.zeros(40, 60, dtype=torch.long)
    out_image, out_mask = train_transforms(100, scale=(1.0, 1.0), base_size=100, hflip=0.0)(image, mask)
    assert out_image.shape == (3, 100, 100) and (out_mask[:, :100] != 255).all()  # 100 x 150, cropped


def test_one_normalisation_and_its_inverse():
    image = _noise(8, 6)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(normalize(image), (image / 255 - mean) / std)
    torch.testing.assert_close(denormalize(normalize(image)), image / 255)
