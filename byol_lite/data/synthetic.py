"""The embedded default dataset: shapes on real photographs, written in the VOC layout.

Why: the book must run offline in minutes, yet show a real segmentation effect of self-supervised
pretraining. Five shape classes (VOC indices 1..5, names in ``classes.txt``) are drawn with random
colours and textures (flat, gradient, stripes, checks, noise, photo patches — chosen independently
of the class, so colour never gives the class away), rotation, aspect, scale and occlusion, on
crops of the real photographs bundled in scikit-image's wheel. Objects are large, as in VOC: about
a third of all pixels. Anti-aliased object borders are labelled 255, as VOC's void band.

Every image is rendered from its own ``numpy`` Generator seeded by (seed, split, index), so the
same seed gives byte-identical files whatever the number of worker processes, and the val set does
not change when the train or unlabeled sizes do.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from byol_lite.checkpoint import lock_folder
from byol_lite.config import Range
from byol_lite.data.objects import OBJECT_CLASSES, class_prototypes, render_objects

# Bump when the rendering changes: the folder name and the manifest carry it, so stale files are
# never served after an upgrade.
GENERATOR_VERSION = 1
SHAPE_CLASSES: tuple[str, ...] = ("background", "ellipse", "rectangle", "triangle", "star", "cross")
DEFAULT_SIZES = {"image_size": 80, "train": 400, "val": 300, "unlabeled": 4000}
# The embedded sets by name: their classes and what differs from DEFAULT_SIZES. ``shapes`` (the default) draws
# each class with colours and textures independent of it; ``objects`` (byol_lite.data.objects) makes every class
# one prototype that varies only as BYOL's views do, with twice the unlabeled images.
# ``renderer(seed, size)``: the function drawing one image from its Generator; ``folder``: the folder's prefix.
DATASETS = {"shapes": {"classes": SHAPE_CLASSES, "sizes": {}, "folder": "synthetic",
                       "renderer": lambda seed, size: lambda rng: render(rng, size)},
            "objects": {"classes": OBJECT_CLASSES, "sizes": {"unlabeled": 8000}, "folder": "objects",
                        "renderer": lambda seed, size: _objects_renderer(seed, size)}}
SIZE_RANGES = {"image_size": Range(16, 512), "train": Range(1), "val": Range(1), "unlabeled": Range(0)}
LABELED_SPLITS = ("train", "val")
_SPLIT_CODE = {"train": 1, "val": 2, "unlabeled": 3}
# skimage.data photographs that ship inside the wheel (no download: checked offline); grey ones
# are tinted. Textures (grass, gravel, brick) are photographs too.
BACKGROUNDS_RGB = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                   "retina", "stereo_motorcycle")
BACKGROUNDS_GREY = ("camera", "grass", "gravel", "brick", "moon", "coins", "clock", "cell")
_SUPERSAMPLE = 4
_JPEG_QUALITY = 90


# --------------------------------------------------------------------------- photographs
_PHOTOS: list | None = None


def _photos() -> list:
    """The background photographs as PIL RGB images, loaded once per process (grey ones kept grey)."""
    global _PHOTOS
    if _PHOTOS is None:
        import skimage.data
        from PIL import Image

        photos = []
        for name in BACKGROUNDS_RGB + BACKGROUNDS_GREY:
            arr = getattr(skimage.data, name)()
            if isinstance(arr, tuple):          # stereo_motorcycle -> (left, right, disparity)
                arr = arr[0]
            arr = np.ascontiguousarray(arr, dtype=np.uint8)
            photos.append(Image.fromarray(arr))
        _PHOTOS = photos
    return _PHOTOS


def _photo_crop(rng: np.random.Generator, size: int, min_frac: float, max_frac: float) -> np.ndarray:
    """A random square crop of a random photograph, resized to ``size``: float32 [size, size, 3] in 0..1."""
    from PIL import Image

    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    w, h = photo.size
    side = max(8, int(min(w, h) * rng.uniform(min_frac, max_frac)))
    x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
    crop = photo.resize((size, size), Image.BILINEAR, box=(int(x0), int(y0), int(x0 + side), int(y0 + side)),
                        reducing_gap=2.0)
    a = np.asarray(crop, dtype=np.float32) / 255.0
    if a.ndim == 2:                               # grey photograph: tint it
        tint = rng.uniform(0.55, 1.0, size=3).astype(np.float32)
        a = a[..., None] * tint
    if rng.random() < 0.5:
        a = a[:, ::-1]
    gain, bias = rng.uniform(0.7, 1.2), rng.uniform(-0.1, 0.1)
    return np.clip(a * gain + bias, 0, 1)


# --------------------------------------------------------------------------- shapes
def _shape_polygon(cls: int, rng: np.random.Generator) -> np.ndarray:
    """Outline of class ``cls`` ([N, 2]) scaled to the unit disc's area, so no class is bigger on average."""
    if cls == 1:                                   # ellipse
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        poly = np.stack([np.cos(t), np.sin(t)], 1)
    elif cls == 2:                                 # rectangle
        poly = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * 0.85
    elif cls == 3:                                 # triangle (vertices jittered)
        t = np.deg2rad(np.array([90.0, 210.0, 330.0]) + rng.uniform(-12, 12, 3))
        poly = np.stack([np.cos(t), np.sin(t)], 1) * 1.2
    elif cls == 4:                                 # five-pointed star
        inner = rng.uniform(0.45, 0.6)
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.2, 1.2 * inner)
        poly = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif cls == 5:                                 # cross (plus sign)
        a, b = 1.0, rng.uniform(0.3, 0.45)
        poly = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b],
                         [-a, b], [-a, -b], [-b, -b]])
    else:
        raise ValueError(f"unknown shape class {cls}")
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    return poly * np.sqrt(np.pi / area)


def _coverage(poly: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage in 0..1 of a polygon given in pixel coordinates: float32 [size, size]."""
    from PIL import Image, ImageDraw

    big = size * _SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    pts = [(float(x), float(y)) for x, y in (poly * _SUPERSAMPLE)]
    ImageDraw.Draw(canvas).polygon(pts, fill=255)
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random fill, independent of the class: float32 [size, size, 3] in 0..1."""
    kind = rng.integers(6)
    c1, c2 = rng.random(3).astype(np.float32), rng.random(3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, np.pi)
    proj = np.cos(angle) * xx + np.sin(angle) * yy
    if kind == 0:                                   # flat colour
        t = np.zeros((size, size), np.float32)
    elif kind == 1:                                 # linear gradient
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    elif kind == 2:                                 # stripes
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj * rng.uniform(3, 9) + rng.uniform(0, 2 * np.pi))
    elif kind == 3:                                 # checks
        f = rng.uniform(3, 8)
        t = ((np.floor(xx * f) + np.floor(yy * f)) % 2).astype(np.float32)
    elif kind == 4:                                 # smooth noise
        from PIL import Image

        cells = int(rng.integers(3, 9))
        low = (rng.random((cells, cells)) * 255).astype(np.uint8)
        t = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), np.float32) / 255.0
    else:                                           # a patch of another photograph
        return _photo_crop(rng, size, 0.1, 0.5)
    tex = c1 * (1 - t[..., None]) + c2 * t[..., None]
    shade = 1 + rng.uniform(-0.3, 0.3) * (proj - 0.5)   # gentle illumination gradient
    return np.clip(tex * shade[..., None], 0, 1).astype(np.float32)


def render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label map: (uint8 [size, size, 3], uint8 [size, size] with 255 on borders)."""
    img = _photo_crop(rng, size, 0.2, 0.9)
    n_obj = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    label = np.zeros((size, size), np.uint8)
    alphas, classes = [], []
    for k in range(n_obj):
        cls = int(rng.integers(1, len(SHAPE_CLASSES)))
        # the first object is the large "subject"; later ones are smaller and may occlude it
        radius = size * (rng.uniform(0.26, 0.42) if k == 0 else rng.uniform(0.16, 0.30))
        aspect = rng.uniform(0.6, 1.0)
        theta = rng.uniform(0, 2 * np.pi)
        centre = rng.uniform(0.2, 0.8, 2) * size if k == 0 else rng.uniform(0.1, 0.9, 2) * size
        poly = _shape_polygon(cls, rng) * np.array([1.0, aspect])
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        poly = poly @ rot.T * radius + centre
        alpha = _coverage(poly, size)
        if alpha.max() < 0.5:
            continue
        tex = _texture(rng, size)
        img = img * (1 - alpha[..., None]) + tex * alpha[..., None]
        label[alpha >= 0.5] = cls
        alphas.append(alpha)
        classes.append(cls)
    # Void band: pixels that mix an object's edge with what lies under it, unless hidden by a later object.
    void = np.zeros((size, size), bool)
    hidden = np.zeros((size, size), np.float32)
    for alpha in reversed(alphas):
        void |= (alpha > 0.02) & (alpha < 0.98) & (hidden < 0.98)
        hidden = 1 - (1 - hidden) * (1 - alpha)
    label[void] = 255
    img = img + rng.normal(0, rng.uniform(0.0, 0.03), img.shape).astype(np.float32)   # sensor noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label


def _objects_renderer(seed: int, size: int):
    """The object-prototype set's drawing function: the classes' prototypes made once, for every image."""
    prototypes = class_prototypes(seed, len(OBJECT_CLASSES))
    return lambda rng: render_objects(rng, size, prototypes)


# --------------------------------------------------------------------------- writing
def image_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _render_chunk(args) -> np.ndarray:
    """Renders and writes ids ``start..stop`` of ``split``; returns per-class pixel counts (256 bins)."""
    from PIL import Image

    from byol_lite.data.palette import save_mask

    base, embedded, split, seed, size, start, stop = args
    base = Path(base)
    counts = np.zeros(256, np.int64)
    draw = DATASETS[embedded]["renderer"](seed, size)
    for i in range(start, stop):
        img, label = draw(np.random.default_rng([seed, _SPLIT_CODE[split], i]))
        name = image_id(split, i)
        Image.fromarray(img).save(base / "JPEGImages" / f"{name}.jpg", quality=_JPEG_QUALITY)
        if split in LABELED_SPLITS:
            save_mask(label, base / "SegmentationClass" / f"{name}.png")
            counts += np.bincount(label.ravel(), minlength=256)
    return counts


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_sizes(embedded: str = "shapes") -> dict:
    if embedded not in DATASETS:
        raise ValueError(f"unknown embedded set {embedded!r}; valid: {', '.join(DATASETS)}")
    return {**DEFAULT_SIZES, **DATASETS[embedded]["sizes"]}


def _check_sizes(sizes: dict, embedded: str = "shapes") -> dict:
    unknown = sorted(set(sizes) - set(DEFAULT_SIZES))
    if unknown:
        raise ValueError(f"unknown synthetic size(s) {', '.join(unknown)}; valid: {', '.join(DEFAULT_SIZES)}")
    out = {**default_sizes(embedded), **{k: int(v) for k, v in sizes.items()}}
    for name, valid in SIZE_RANGES.items():
        if out[name] not in valid:
            raise ValueError(f"parameter {name!r} is {out[name]}; valid range: {valid}")
    return out


def manifest_for(seed: int, sizes: dict, embedded: str = "shapes") -> dict:
    """The keys that identify a generated dataset; a stored manifest must match them to be reused."""
    checked = _check_sizes(sizes, embedded)
    classes = DATASETS[embedded]["classes"]
    return {"generator": "byol_lite.data.synthetic", "dataset": embedded, "version": GENERATOR_VERSION,
            "seed": int(seed), "sizes": checked, "classes": list(classes),
            "voc_indices": {name: i for i, name in enumerate(classes)}}


def read_manifest(folder) -> dict | None:
    """A generated folder's manifest; one written before the manifests named their set is the shapes set's."""
    try:
        return {"dataset": "shapes", **json.loads((Path(folder) / "manifest.json").read_text())}
    except (OSError, ValueError):
        return None


def _matches(stored: dict | None, wanted: dict) -> bool:
    return stored is not None and all(stored.get(k) == v for k, v in wanted.items())


def _write(tmp: Path, seed: int, sizes: dict, workers: int | None, embedded: str) -> dict:
    """Writes a complete dataset into ``tmp`` (the folder that will contain VOCdevkit/)."""
    base = tmp / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    counts = {s: np.zeros(256, np.int64) for s in _SPLIT_CODE}
    chunk = 50
    jobs = [(str(base), embedded, split, seed, sizes["image_size"], a, min(a + chunk, sizes[split]))
            for split in _SPLIT_CODE for a in range(0, sizes[split], chunk)]
    total = sum(sizes[s] for s in _SPLIT_CODE)
    if workers is None:                             # forking costs more than rendering a small set
        workers = 1 if total <= 200 else available_cpus()
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        results = [_render_chunk(j) for j in jobs]
    else:
        _photos()                                   # load once, inherited by the forked workers
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            results = list(pool.map(_render_chunk, jobs))
    for job, res in zip(jobs, results):
        counts[job[2]] += res
    lists = base / "ImageSets" / "Segmentation"
    ids = {s: [image_id(s, i) for i in range(sizes[s])] for s in _SPLIT_CODE}
    for name, members in (("train", ids["train"]), ("val", ids["val"]), ("trainval", ids["train"] + ids["val"]),
                          ("unlabeled", ids["unlabeled"])):
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in members))
    classes = DATASETS[embedded]["classes"]
    (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    shares = {}
    for split in LABELED_SPLITS:
        c = counts[split]
        n = int(c.sum())
        shares[split] = {**{name: round(int(c[i]) / n, 4) for i, name in enumerate(classes)},
                         "ignore (255)": round(int(c[255]) / n, 4)}
    # No timings in the manifest: the same seed must give byte-identical files on every machine.
    manifest = {**manifest_for(seed, sizes, embedded), "pixel_shares": shares}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


@contextlib.contextmanager
def _lock(folder: Path):
    """Two processes never generate into ``folder`` at once; locking the folder itself (not a lock file)
    leaves nothing behind in the git-ignored ``data/``."""
    fd = lock_folder(folder)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def is_current(folder, seed: int = 0, embedded: str = "shapes", **sizes) -> bool:
    """Whether ``folder`` holds the embedded set of this name, generator version, seed and sizes."""
    return _matches(read_manifest(folder), manifest_for(seed, sizes, embedded))


def build_synthetic(out, seed: int = 0, workers: int | None = None, force: bool = False, embedded: str = "shapes",
                    **sizes) -> Path:
    """Generates the embedded set ``embedded`` into ``out`` (which will contain VOCdevkit/) unless its manifest
    matches (name, version, seed, sizes): into a temporary sibling renamed into place, so ``out`` is never
    half-written. Refuses to replace a non-empty folder that is not a synthetic dataset."""
    out = Path(out)
    wanted = manifest_for(seed, sizes, embedded)
    if not force and _matches(read_manifest(out), wanted):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out.parent):
        stored = read_manifest(out)
        if not force and _matches(stored, wanted):    # another process made it while we waited
            return out
        if out.exists() and any(out.iterdir()) and stored is None:
            raise FileExistsError(f"{out} exists and is not a generated synthetic dataset (no manifest.json); "
                                  f"choose another --out folder or remove it")
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)               # mkdtemp's 0700 would make a shared data/ private
        try:
            _write(tmp, int(seed), wanted["sizes"], workers, embedded)
            old = None
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return out


def ensure_synthetic(root: str | Path | None = None, seed: int = 0, embedded: str = "shapes", **sizes) -> Path:
    """The embedded set's folder, generated on first use: ``root/synthetic-v<version>-s<seed>`` for shapes,
    ``root/objects-v<version>-s<seed>`` for objects, sizes appended when not the defaults (a small test set
    never replaces the default one). ``root``: where datasets live (default ``$BYOL_LITE_DATA``, else
    ``<repo>/data``, git-ignored)."""
    if root is None:
        root = os.environ.get("BYOL_LITE_DATA") or Path(__file__).resolve().parents[2] / "data"
    full = _check_sizes(sizes, embedded)
    name = f"{DATASETS[embedded]['folder']}-v{GENERATOR_VERSION}-s{int(seed)}"
    if full != default_sizes(embedded):
        name += "-px{image_size}-t{train}-v{val}-u{unlabeled}".format(**full)
    return build_synthetic(Path(root) / name, seed=seed, embedded=embedded, **sizes)
