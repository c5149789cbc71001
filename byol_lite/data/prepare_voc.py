"""``data prepare-voc DEST``: real PASCAL VOC 2012 plus SBD, with ``train_aug`` built from them.

Why: self-supervised segmentation papers fine-tune on train_aug (10,582 images), which is not a
download but a construction: VOC 2012 train + SBD train + SBD val, minus VOC 2012 val, with SBD's
``.mat`` class maps converted to index PNGs. Each archive's md5 is verified before use. Where an
id has VOC 2012's own annotation (with its 255 border band) that mask is used; SBD's otherwise.
"""
from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
from torchvision.datasets.utils import calculate_md5

from byol_lite.data.palette import save_mask

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"
SBD_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
SBD_MD5 = "82b4d87ceb2ed10f6038a1cba92111cb"
TRAIN_AUG_SIZE = 10_582
VOC_PARTS = ("JPEGImages/", "SegmentationClass/", "ImageSets/Segmentation/")


def verify(path: Path, md5: str | None) -> None:
    if md5 is None:
        return
    got = calculate_md5(path)
    if got != md5:
        raise ValueError(f"{path}: md5 {got} does not match the expected {md5}; the file is corrupt or "
                         f"incomplete — delete it and download it again")


def download(url: str, dest: Path, md5: str | None) -> Path:
    """Downloads ``url`` to ``dest`` (via ``.part``) unless a file with the right md5 is there."""
    if dest.is_file():
        try:
            verify(dest, md5)
            return dest
        except ValueError:
            print(f"{dest}: checksum mismatch, downloading again", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last = [-1]

    def hook(blocks, block_size, total):
        if total > 0:
            pct = min(100, blocks * block_size * 100 // total)
            if pct >= last[0] + 5:
                last[0] = pct
                print(f"\r{dest.name}: {pct}%", end="", file=sys.stderr, flush=True)

    print(f"downloading {url}", file=sys.stderr)
    urllib.request.urlretrieve(url, part, reporthook=hook)
    print(file=sys.stderr)
    verify(part, md5)
    part.replace(dest)
    return dest


def _extract(archive, dest, prefix: str, keep, found, expected: str) -> None:
    """Extracts the members of ``archive`` below ``prefix`` (wherever it sits in their paths) whose rest
    ``keep`` accepts, as ``dest/prefix...``, safely (``filter="data"``); refuses an archive where
    ``found(members)`` fails, naming the ``expected`` one."""
    with tarfile.open(archive) as tar:
        members = []
        for m in tar.getmembers():
            at = m.name.find(prefix)
            if at >= 0 and keep(m.name[at + len(prefix):]) and (m.isfile() or m.isdir()):
                m.name = m.name[at:]
                members.append(m)
        if not found(members):
            raise ValueError(f"{archive}: no {expected}")
        tar.extractall(dest, members=members, filter="data")


def extract_voc(tar_path, dest) -> Path:
    """Extracts JPEGImages, SegmentationClass and the segmentation lists into ``dest/VOCdevkit/VOC2012``."""
    _extract(tar_path, dest, "VOCdevkit/VOC2012/", lambda rest: rest.startswith(VOC_PARTS), bool,
             "VOCdevkit/VOC2012/ entries; expected the VOC 2012 trainval tar (VOCtrainval_11-May-2012.tar)")
    return Path(dest) / "VOCdevkit" / "VOC2012"


def extract_sbd(tgz_path, workdir) -> Path:
    """Extracts SBD's ``dataset/cls/*.mat`` and ``dataset/{train,val}.txt``; returns that dataset folder."""
    _extract(tgz_path, workdir, "dataset/",
             lambda rest: rest in ("train.txt", "val.txt") or (rest.startswith("cls/") and rest.endswith(".mat")),
             lambda members: any(m.name.endswith(".mat") for m in members),
             "dataset/cls/*.mat entries; expected SBD's benchmark.tgz")
    return Path(workdir) / "dataset"


def sbd_mask(mat_path) -> np.ndarray:
    """The class map (uint8, 0..20) of one SBD ``cls/<id>.mat`` file (``GTcls.Segmentation``)."""
    from scipy.io import loadmat

    try:
        gt = loadmat(mat_path, squeeze_me=True, struct_as_record=False)["GTcls"]
        seg = np.asarray(gt.Segmentation)
    except Exception as err:
        raise ValueError(f"{mat_path}: not an SBD class file with GTcls.Segmentation ({err})") from None
    if seg.ndim != 2 or seg.min() < 0 or seg.max() > 20:
        raise ValueError(f"{mat_path}: GTcls.Segmentation must be a 2-D map of 0..20, "
                         f"got shape {seg.shape}, values {seg.min()}..{seg.max()}")
    return seg.astype(np.uint8)


def _ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: expected a list of image ids, one per line")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def build_train_aug(root, sbd_dataset) -> list[str]:
    """Writes ``SegmentationClassAug/`` and ``ImageSets/Segmentation/train_aug.txt`` (train_aug =
    (VOC12 train ∪ SBD train ∪ SBD val) − VOC12 val); returns the ids."""
    base = Path(root) / "VOCdevkit" / "VOC2012"
    sbd_dataset = Path(sbd_dataset)
    lists = base / "ImageSets" / "Segmentation"
    voc_train, voc_val = set(_ids(lists / "train.txt")), set(_ids(lists / "val.txt"))
    sbd = set(_ids(sbd_dataset / "train.txt")) | set(_ids(sbd_dataset / "val.txt"))
    ids = sorted((voc_train | sbd) - voc_val)
    out = base / "SegmentationClassAug"
    out.mkdir(exist_ok=True)
    missing = [i for i in ids if not (base / "JPEGImages" / f"{i}.jpg").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} train_aug image(s) missing from {base / 'JPEGImages'}, e.g. "
                                f"{missing[0]}.jpg; extract the full VOC 2012 trainval tar first")
    for i in ids:
        voc_mask = base / "SegmentationClass" / f"{i}.png"
        if voc_mask.is_file():
            shutil.copyfile(voc_mask, out / f"{i}.png")
        else:
            mat = sbd_dataset / "cls" / f"{i}.mat"
            if not mat.is_file():
                raise FileNotFoundError(f"{mat} is missing: id {i} is listed by SBD but has no class file")
            save_mask(sbd_mask(mat), out / f"{i}.png")
    (lists / "train_aug.txt").write_text("".join(f"{i}\n" for i in ids))
    return ids


def prepare_voc(dest, voc_tar=None, sbd_tgz=None, voc_md5: str | None = VOC_MD5, sbd_md5: str | None = SBD_MD5,
                download_missing: bool = True) -> Path:
    """Builds ``dest/VOCdevkit/VOC2012`` with train, val, trainval and train_aug; returns ``dest``. ``voc_tar``/
    ``sbd_tgz``: local archives (an md5 of ``None`` skips its check), else downloaded into ``dest/downloads``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    archives = {}
    for key, given, url, md5 in (("voc", voc_tar, VOC_URL, voc_md5), ("sbd", sbd_tgz, SBD_URL, sbd_md5)):
        if given is not None:
            given = Path(given)
            if not given.is_file():
                raise FileNotFoundError(f"archive {given} does not exist")
            verify(given, md5)
            archives[key] = given
        elif download_missing:
            archives[key] = download(url, dest / "downloads" / url.rsplit("/", 1)[1], md5)
        else:
            raise FileNotFoundError(f"no {key.upper()} archive given and downloading is off; pass "
                                    f"--{'voc-tar' if key == 'voc' else 'sbd-tgz'} PATH")
    print(f"extracting {archives['voc']}", file=sys.stderr)
    extract_voc(archives["voc"], dest)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        print(f"extracting {archives['sbd']}", file=sys.stderr)
        sbd = extract_sbd(archives["sbd"], tmp)
        ids = build_train_aug(dest, sbd)
    if voc_md5 == VOC_MD5 and len(ids) != TRAIN_AUG_SIZE:
        raise ValueError(f"train_aug has {len(ids)} ids, expected {TRAIN_AUG_SIZE}: the archives are incomplete")
    print(f"train_aug: {len(ids)} ids -> {dest / 'VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt'}",
          file=sys.stderr)
    return dest
