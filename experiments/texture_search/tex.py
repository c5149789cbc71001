"""Prototype: texture-family segmentation set (class = texture structure, nuisances random per region)."""
from __future__ import annotations

import numpy as np

CLASSES = ("background", "stripes", "checks", "dots", "rings", "noise")


def _sharpen(s, k):
    # s in [-1, 1] -> [0, 1], k controls sharpness (1: sinusoid, large: square wave)
    return 0.5 + 0.5 * np.tanh(k * s) / np.tanh(k)


_GEOM = None     # (orientation, period) shared by the two renders of a pair (shared_geometry=True)


def pattern(cls, rng, size, period_range=(5.0, 12.0), centre=None):
    """Float [size, size] pattern in [0, 1] of family ``cls`` with random orientation/period/phase."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    th = rng.uniform(0, np.pi)
    p = rng.uniform(*period_range) * size / 80
    if _GEOM is not None:
        th, p = _GEOM[0], _GEOM[1] * size / 80
    u = np.cos(th) * xx + np.sin(th) * yy
    v = -np.sin(th) * xx + np.cos(th) * yy
    k = rng.uniform(1.0, 4.0)
    if cls == 1:      # stripes
        return _sharpen(np.sin(2 * np.pi * u / p + rng.uniform(0, 2 * np.pi)), k)
    if cls == 2:      # checks
        a, b = rng.uniform(0, 2 * np.pi, 2)
        return _sharpen(np.sin(np.pi * u / p + a) * np.sin(np.pi * v / p + b), k)
    if cls == 3:      # dots on a lattice
        q = p * 1.2
        du = (u / q + rng.uniform()) % 1 - 0.5
        dv = (v / q + rng.uniform()) % 1 - 0.5
        d = np.sqrt(du ** 2 + dv ** 2)
        r = rng.uniform(0.18, 0.32)
        return 1 / (1 + np.exp((d - r) * q * k))
    if cls == 4:      # concentric rings around a random centre
        c = (np.asarray(centre) if centre is not None else rng.uniform(0, 1, 2) * size) + rng.normal(0, 0.05 * size, 2)
        d = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2)
        return _sharpen(np.sin(2 * np.pi * d / p + rng.uniform(0, 2 * np.pi)), k)
    if cls == 5:      # band-pass noise
        f = np.fft.fftfreq(size)
        fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
        f0 = 1 / p
        filt = np.exp(-0.5 * ((fr - f0) / (0.3 * f0)) ** 2)
        n = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) * filt))
        n = n / (n.std() + 1e-8)
        return _sharpen(np.clip(n / 1.5, -1, 1), k)
    raise ValueError(cls)


def smooth_field(rng, size, cells=None):
    """Background: a smooth random colour field, float [size, size, 3]."""
    from PIL import Image

    cells = cells or int(rng.integers(2, 5))
    low = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), np.float64) / 255


def colours(rng, min_dist=0.35):
    while True:
        c1, c2 = rng.random(3), rng.random(3)
        if np.linalg.norm(c1 - c2) >= min_dist:
            return c1, c2


def texture(cls, rng, size, centre=None):
    if cls == 0:
        return smooth_field(rng, size)
    t = pattern(cls, rng, size, centre=centre)
    c1, c2 = colours(rng)
    img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    # illumination gradient
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = rng.uniform(0, 2 * np.pi)
    shade = 1 + rng.uniform(-0.3, 0.3) * (np.cos(a) * xx + np.sin(a) * yy - 0.5)
    return np.clip(img * shade[..., None], 0, 1)


def blob(rng, size, radius, centre, supersample=4):
    """Anti-aliased coverage of a random smooth blob (class-independent silhouette)."""
    from PIL import Image, ImageDraw

    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    r = np.ones_like(t)
    for h in (2, 3, 4):
        r += rng.uniform(0, 0.25 / h * 2) * np.cos(h * t + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.65, 1.0)
    th = rng.uniform(0, 2 * np.pi)
    pts = np.stack([r * np.cos(t), aspect * r * np.sin(t)], 1)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    pts = pts @ rot.T * radius + centre
    big = size * supersample
    canvas = Image.new("L", (big, big), 0)
    ImageDraw.Draw(canvas).polygon([(float(x) * supersample, float(y) * supersample) for x, y in pts], fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float64) / 255


def layout(rng, size=80, n_objects=(1, 2, 3), p_objects=(0.4, 0.35, 0.25)):
    """Regions: list of (alpha, class, centre) and the label map (255 on mixed borders)."""
    label = np.zeros((size, size), np.uint8)
    regions = []
    n = int(rng.choice(n_objects, p=p_objects))
    for k in range(n):
        cls = int(rng.integers(1, len(CLASSES)))
        radius = size * (rng.uniform(0.28, 0.42) if k == 0 else rng.uniform(0.16, 0.28))
        centre = rng.uniform(0.25, 0.75, 2) * size if k == 0 else rng.uniform(0.1, 0.9, 2) * size
        alpha = blob(rng, size, radius, centre)
        if alpha.max() < 0.5:
            continue
        label[alpha >= 0.5] = cls
        regions.append((alpha, cls, centre))
    void = np.zeros((size, size), bool)
    hidden = np.zeros((size, size))
    for alpha, _, _ in reversed(regions):
        void |= (alpha > 0.02) & (alpha < 0.98) & (hidden < 0.98)
        hidden = 1 - (1 - hidden) * (1 - alpha)
    label[void] = 255
    return regions, label


def paint(regions, rng, size=80, blur_max=0.8):
    img = texture(0, rng, size)
    for alpha, cls, centre in regions:
        tex = texture(cls, rng, size, centre)
        img = img * (1 - alpha[..., None]) + tex * alpha[..., None]
    if blur_max > 0:
        from scipy.ndimage import gaussian_filter
        s = rng.uniform(0, blur_max)
        if s > 0.2:
            img = gaussian_filter(img, (s, s, 0))
    img = img + rng.normal(0, rng.uniform(0, 0.03), img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def render(rng, size=80, pairs=False, single=False, shared_geometry=False, **kw):
    global _GEOM
    _GEOM = (rng.uniform(0, np.pi), rng.uniform(5.0, 12.0)) if shared_geometry else None
    if single:      # one family fills the image
        cls = int(rng.integers(0, len(CLASSES)))
        regions = [(np.ones((size, size)), cls, rng.uniform(0.2, 0.8, 2) * size)]
        label = np.full((size, size), cls, np.uint8)
    else:
        regions, label = layout(rng, size, **{k: v for k, v in kw.items() if k in ("n_objects", "p_objects")})
    pk = {k: v for k, v in kw.items() if k == "blur_max"}
    img = paint(regions, rng, size, **pk)
    if pairs:
        return np.concatenate([img, paint(regions, rng, size, **pk)], 2), label
    return img, label


def _chunk(args):
    seed, code, start, stop, size, kw = args
    imgs, labels = [], []
    for i in range(start, stop):
        im, lab = render(np.random.default_rng([seed, code, i]), size, **kw)
        imgs.append(im)
        labels.append(lab)
    return np.stack(imgs), np.stack(labels)


def generate(n, seed=0, code=0, size=80, workers=2, **kw):
    """uint8 images [n, 3, size, size] (torch) and int64 masks [n, size, size]."""
    import torch
    from concurrent.futures import ProcessPoolExecutor

    chunk = 100
    jobs = [(seed, code, a, min(a + chunk, n), size, kw) for a in range(0, n, chunk)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            res = list(pool.map(_chunk, jobs))
    else:
        res = [_chunk(j) for j in jobs]
    imgs = np.concatenate([r[0] for r in res])
    labels = np.concatenate([r[1] for r in res])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels.astype(np.int64))
