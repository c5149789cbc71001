"""``data check``: every problem of a dataset in one report, with counts, and the RGB fix."""
import numpy as np
from PIL import Image

from byol_lite.cli import main
from byol_lite.data import check_dataset, save_mask
from test_data_voc import make_voc


def _broken(tmp_path):
    ids = tuple("abcdefgh")
    base = make_voc(tmp_path, ids=ids, size=(16, 16),
                    splits={"train": list(ids[:6]), "trainval": list(ids), "val": ["g", "h", "zz"]})
    (base / "JPEGImages/a.jpg").unlink()                                       # missing image
    (base / "SegmentationClass/b.png").unlink()                                # missing mask
    save_mask(np.zeros((4, 4), np.uint8), base / "SegmentationClass/c.png")    # size mismatch
    Image.open(base / "SegmentationClass/d.png").convert("RGB").save(base / "SegmentationClass/d.png")  # RGB
    save_mask(np.full((16, 16), 99, np.uint8), base / "SegmentationClass/e.png")                      # labels
    data = (base / "JPEGImages/f.jpg").read_bytes()
    (base / "JPEGImages/f.jpg").write_bytes(data[:40])                         # truncated image
    return base


def test_reports_every_problem_with_counts(tmp_path, capsys):
    base = _broken(tmp_path)
    report = check_dataset(tmp_path)
    assert not report.ok
    assert dict(report.counts()) == {"missing image": 2, "missing mask": 2, "size mismatch": 1, "rgb mask": 1,
                                     "label values": 1, "unreadable image": 1}
    assert report.splits == {"train": 6, "val": 3, "trainval": 8}
    paths = {p.path.name for p in report.problems}
    assert paths == {"a.jpg", "b.png", "c.png", "d.png", "e.png", "f.jpg", "zz.jpg", "zz.png"}
    assert main(["data", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "8 problem(s)" in out and "[missing image] 2" in out and str(base / "SegmentationClass/e.png") in out
    assert "label values 99 outside 0..20" in out and "colour-coded RGB mask" in out


def test_split_option_and_missing_split(tmp_path):
    _broken(tmp_path)
    report = check_dataset(tmp_path, splits=["val", "train_aug"])
    assert report.splits == {"val": 3}
    assert dict(report.counts()) == {"split file missing": 1, "missing image": 1, "missing mask": 1}


def test_convert_rgb_rewrites_colour_masks_as_indices(tmp_path, capsys):
    base = make_voc(tmp_path)
    path = base / "SegmentationClass/a.png"
    indices = np.array(Image.open(path))
    Image.open(path).convert("RGB").save(path)
    assert not check_dataset(tmp_path).ok
    assert main(["data", "check", str(tmp_path), "--convert-rgb"]) == 0
    assert "converted colour-coded mask to indices" in capsys.readouterr().out
    assert Image.open(path).mode == "P" and np.array_equal(np.array(Image.open(path)), indices)
    assert check_dataset(tmp_path).ok


def test_clean_dataset_and_missing_root(tmp_path, capsys):
    make_voc(tmp_path)
    report = check_dataset(tmp_path)
    assert report.ok and abs(sum(report.pixel_shares().values()) - 1) < 1e-9
    assert main(["data", "check", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "absent does not exist" in err and "JPEGImages/<id>.jpg" in err
