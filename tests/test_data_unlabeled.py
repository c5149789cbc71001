"""Unlabeled images for pretraining: one square shape, bad files counted and skipped, never val."""
import numpy as np
import pytest
import torch
from PIL import Image

from byol_lite.data import build_synthetic, unlabeled_dataset
from byol_lite.data.unlabeled import UnlabeledImages, load_square
from test_data_voc import make_voc


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "one.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 30), dtype=np.uint8)).save(tmp_path / "a" / "two.PNG")     # grey
    Image.fromarray(rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)).save(tmp_path / "a" / "b" / "three.png")
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.mark.parametrize("cache", [True, False])
def test_folder_with_a_corrupt_file_is_reported_and_the_rest_loaded(tmp_path, cache):
    _folder(tmp_path)
    with pytest.warns(RuntimeWarning) as record:
        ds = unlabeled_dataset("folder", tmp_path, image_size=24, cache=cache)
    msg = str(record[0].message)
    assert "1 of 4 images" in msg and str(tmp_path / "a" / "broken.jpg") in msg and "3 used" in msg
    assert len(ds) == 3 and [p.name for p in ds.files] == ["three.png", "two.PNG", "one.jpg"]
    assert [p.name for p, _ in ds.bad_files] == ["broken.jpg"]
    items = [ds[i] for i in range(3)]
    assert all(x.shape == (3, 24, 24) and x.dtype == torch.uint8 for x in items)
    if cache:
        assert ds.images.shape == (3, 3, 24, 24) and torch.equal(ds.images[1], items[1])
    else:
        assert ds.images is None


def test_cached_and_streamed_items_are_identical(tmp_path):
    _folder(tmp_path)
    (tmp_path / "a" / "broken.jpg").unlink()
    cached = unlabeled_dataset("folder", tmp_path, image_size=16, cache=True)
    streamed = unlabeled_dataset("folder", tmp_path, image_size=16, cache=False)
    workers = UnlabeledImages(cached.files, image_size=16, cache=True, workers=2)
    for i in range(3):
        assert torch.equal(cached[i], streamed[i]) and torch.equal(cached[i], workers[i])


def test_truncated_file_found_late_is_skipped_with_a_warning(tmp_path):
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    data = (tmp_path / "0.jpg").read_bytes()
    (tmp_path / "0.jpg").write_bytes(data[: len(data) // 2])        # the header still parses
    ds = unlabeled_dataset("folder", tmp_path, image_size=32, cache=False)
    with pytest.warns(RuntimeWarning, match=r"0\.jpg: unreadable image skipped"):
        item = ds[0]
    assert torch.equal(item, load_square(tmp_path / "1.jpg", 32))


def test_no_usable_image_is_an_error(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"no usable image.*all 1 files are unreadable.*x\.jpg"):
        unlabeled_dataset("folder", tmp_path, image_size=16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        unlabeled_dataset("folder", tmp_path / "empty", image_size=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        unlabeled_dataset("folder", tmp_path / "missing", image_size=16)
    with pytest.raises(ValueError, match="unknown image source"):
        unlabeled_dataset("imagenet", tmp_path)


def test_short_side_resize_then_centre_crop(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, :16], wide[:, 44:] = 255, 255     # white sides, cropped away by the centre crop (cols 20..40)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    x = load_square(tmp_path / "wide.png", 10)
    assert x.shape == (3, 10, 10) and x.max() == 0
    wide[:, 28:32] = 255                      # a white centre stripe stays, in the middle
    Image.fromarray(wide).save(tmp_path / "wide.png")
    x = load_square(tmp_path / "wide.png", 10)
    assert x[0, 5, 4:6].min() > 200 and x[0, :, :2].max() == 0 and x[0, :, 8:].max() == 0


def test_synthetic_source_uses_train_and_unlabeled_never_val(tmp_path, monkeypatch):
    import byol_lite.data.synthetic as synthetic

    calls = []

    def fake_ensure(root=None, seed=0, **sizes):
        calls.append(root)
        return build_synthetic(tmp_path / "syn", seed=0, image_size=32, train=3, val=2, unlabeled=4)

    monkeypatch.setattr(synthetic, "ensure_synthetic", fake_ensure)
    ds = unlabeled_dataset("synthetic", tmp_path, image_size=32)
    assert calls == [tmp_path] and len(ds) == 7 and ds.images.shape == (7, 3, 32, 32)
    assert not [p for p in ds.files if "val" in p.name]
    assert sorted({p.name.split("_")[0] for p in ds.files}) == ["train", "unlabeled"]
    with pytest.raises(ValueError, match="val images are kept out"):
        unlabeled_dataset("synthetic", tmp_path, image_size=32, split="val")


def test_voc_source_reads_listed_jpegs(tmp_path):
    make_voc(tmp_path, ids=("a", "b", "c", "d"), size=(30, 40),
             splits={"trainval": ["a", "b", "c"], "train_aug": ["a", "d"]})
    assert len(unlabeled_dataset("voc", tmp_path, image_size=16)) == 3
    ds = unlabeled_dataset("voc", tmp_path, image_size=16, split="train_aug")
    assert [p.name for p in ds.files] == ["a.jpg", "d.jpg"]
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        unlabeled_dataset("voc", tmp_path / "nope", image_size=16)
