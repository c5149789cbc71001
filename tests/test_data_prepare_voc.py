"""prepare-voc on small local archives: extraction, md5 checks and the train_aug construction."""
import hashlib
import io
import tarfile
import urllib.request

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from byol_lite.cli import main
from byol_lite.data import VOCSegmentation, prepare_voc, save_mask
from byol_lite.data.prepare_voc import sbd_mask


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _png(mask) -> bytes:
    buf = io.BytesIO()
    save_mask(mask, buf)
    return buf.getvalue()


@pytest.fixture
def archives(tmp_path):
    """VOC12: a,b train; c val; e only in JPEGImages. SBD: b,d train; c,e val (c overlaps VOC val)."""
    rng = np.random.default_rng(0)
    masks = {i: rng.integers(0, 21, (10, 14)).astype(np.uint8) for i in "abcde"}
    for m in masks.values():
        m[0, 0] = 255
    voc = tmp_path / "VOCtrainval_11-May-2012.tar"
    with tarfile.open(voc, "w") as tar:
        root = "VOCdevkit/VOC2012/"
        for i in "abcde":
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(buf, format="JPEG")
            _add(tar, f"{root}JPEGImages/{i}.jpg", buf.getvalue())
        for i in "abc":
            _add(tar, f"{root}SegmentationClass/{i}.png", _png(masks[i]))
        _add(tar, f"{root}ImageSets/Segmentation/train.txt", b"a\nb\n")
        _add(tar, f"{root}ImageSets/Segmentation/val.txt", b"c\n")
        _add(tar, f"{root}ImageSets/Segmentation/trainval.txt", b"a\nb\nc\n")
        _add(tar, f"{root}Annotations/a.xml", b"<annotation/>")                  # not needed: skipped
    sbd_masks = {i: rng.integers(0, 21, (10, 14)).astype(np.uint8) for i in "bcde"}
    sbd = tmp_path / "benchmark.tgz"
    with tarfile.open(sbd, "w:gz") as tar:
        for i, m in sbd_masks.items():
            buf = io.BytesIO()
            scipy.io.savemat(buf, {"GTcls": {"Segmentation": m, "Boundaries": np.zeros(1),
                                              "CategoriesPresent": np.unique(m)}})
            _add(tar, f"benchmark_RELEASE/dataset/cls/{i}.mat", buf.getvalue())
        _add(tar, "benchmark_RELEASE/dataset/train.txt", b"b\nd\n")
        _add(tar, "benchmark_RELEASE/dataset/val.txt", b"c\ne\n")
        _add(tar, "benchmark_RELEASE/dataset/img/b.jpg", b"not extracted")
    md5 = {p: hashlib.md5(p.read_bytes()).hexdigest() for p in (voc, sbd)}
    return voc, sbd, md5, masks, sbd_masks


def test_extracts_and_builds_train_aug(tmp_path, archives, monkeypatch):
    voc, sbd, md5, masks, sbd_masks = archives

    def no_network(*args, **kwargs):
        raise AssertionError("tests never download")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_network)
    dest = prepare_voc(tmp_path / "out", voc_tar=voc, sbd_tgz=sbd, voc_md5=md5[voc], sbd_md5=md5[sbd])
    base = dest / "VOCdevkit" / "VOC2012"
    # train_aug = (VOC train {a,b} ∪ SBD {b,d,c,e}) − VOC val {c}
    assert (base / "ImageSets/Segmentation/train_aug.txt").read_text().split() == ["a", "b", "d", "e"]
    assert not (base / "Annotations").exists() and not list(dest.glob("**/img"))
    assert list(dest.iterdir()) == [dest / "VOCdevkit"]                          # no temp files left
    ds = VOCSegmentation(dest, "train_aug")
    got = {i: ds[k][1] for k, i in enumerate(ds.ids)}
    # VOC's own annotation wins where it exists (a, b); SBD's class map otherwise (d, e)
    for i, expected in (("a", masks["a"]), ("b", masks["b"]), ("d", sbd_masks["d"]), ("e", sbd_masks["e"])):
        assert torch.equal(got[i], torch.from_numpy(expected.astype(np.int64))), i
    assert [m for _, m in VOCSegmentation(dest, "val")][0].equal(torch.from_numpy(masks["c"].astype(np.int64)))
    assert len(VOCSegmentation(dest, "train")) == 2


def test_checksum_mismatch_names_the_file(tmp_path, archives):
    voc, sbd, md5, *_ = archives
    with pytest.raises(ValueError) as err:
        prepare_voc(tmp_path / "out", voc_tar=voc, sbd_tgz=sbd, voc_md5="0" * 32, sbd_md5=md5[sbd])
    assert str(voc) in str(err.value) and "does not match the expected" in str(err.value)


def test_wrong_archive_is_refused(tmp_path, archives):
    voc, sbd, *_ = archives
    with pytest.raises(ValueError, match="no VOCdevkit/VOC2012/ entries"):
        prepare_voc(tmp_path / "out", voc_tar=sbd, sbd_tgz=sbd, voc_md5=None, sbd_md5=None)


def test_sbd_mask_reader_validates(tmp_path):
    path = tmp_path / "x.mat"
    scipy.io.savemat(path, {"GTcls": {"Segmentation": np.full((3, 3), 40)}})
    with pytest.raises(ValueError, match=r"x\.mat: GTcls\.Segmentation must be a 2-D map of 0\.\.20"):
        sbd_mask(path)
    scipy.io.savemat(path, {"other": np.zeros(3)})
    with pytest.raises(ValueError, match="not an SBD class file"):
        sbd_mask(path)


def test_cli_with_local_archives(tmp_path, archives, capsys):
    voc, sbd, *_ = archives
    out = tmp_path / "cli"
    assert main(["data", "prepare-voc", str(out), "--voc-tar", str(voc), "--sbd-tgz", str(sbd), "--no-verify"]) == 0
    assert "train_aug: 4 ids" in capsys.readouterr().err
    assert main(["data", "check", str(out)]) == 0
    assert main(["data", "prepare-voc", str(out), "--voc-tar", str(tmp_path / "none.tar")]) == 2
    assert "none.tar does not exist" in capsys.readouterr().err
