"""The object-prototype images: classes whose only within-class variation is what BYOL's views also vary.

Why: BYOL learns what two views of an image share. Each class here is one fixed prototype (a silhouette
of 3-5 parts, each with its own colours and stripes drawn in the object's own frame); an instance
differs from its prototype only by rotation (any angle), scale, a hue rotation of its whole palette (any
hue) and saturation/brightness, all of which the views (rotation, crops, colour jitter with any hue)
change too. So the class is exactly what the views share, and a random network's filters, which read
colour and texture, cannot read it. Distractors are prototypes drawn afresh for every object, never
repeated, labelled background: only the recurring classes are things.

Every image is rendered from its own ``numpy`` Generator; the prototypes from the dataset seed alone.
"""
from __future__ import annotations

import colorsys

import numpy as np

OBJECT_CLASSES: tuple[str, ...] = ("background", "alpha", "beta", "gamma", "delta", "epsilon")
_SUPERSAMPLE = 4
_PROTOTYPE_CODE = 97          # the prototypes' stream: (seed, code, class), apart from the images'


def prototype(rng: np.random.Generator) -> list[dict]:
    """A silhouette of 3-5 parts in a unit-radius frame: each a superellipse (diamond, ellipse or rounded
    box) with two colours (hue, saturation, value) and stripes of its own frequency and direction."""
    parts = []
    for k in range(int(rng.integers(3, 6))):
        dist = 0.0 if k == 0 else rng.uniform(0.35, 0.7)
        where = rng.uniform(0, 2 * np.pi)
        size = (rng.uniform(0.45, 0.7, 2) if k == 0 else rng.uniform(0.18, 0.4, 2))
        colours = [(rng.random(), rng.uniform(0.45, 1.0), rng.uniform(0.45, 1.0)) for _ in range(2)]
        parts.append({"centre": dist * np.array([np.cos(where), np.sin(where)]), "radii": size,
                      "angle": rng.uniform(0, np.pi), "power": float(rng.choice([1.0, 2.0, 4.0])),
                      "colours": colours, "stripes": float(rng.choice([0.0, 2.0, 3.0, 4.5])),
                      "stripe_angle": rng.uniform(0, np.pi)})
    reach = max(np.linalg.norm(p["centre"]) + p["radii"].max() for p in parts)
    for p in parts:                                # the whole silhouette fits the unit disc
        p["centre"], p["radii"] = p["centre"] / reach, p["radii"] / reach
    return parts


def class_prototypes(seed: int, n_classes: int) -> list[list[dict]]:
    """The fixed prototype of every class (index 0 is background and has none)."""
    return [[]] + [prototype(np.random.default_rng([seed, _PROTOTYPE_CODE, c])) for c in range(1, n_classes)]


def _instance_colours(parts: list[dict], rng: np.random.Generator) -> np.ndarray:
    """The parts' colours [parts, 2, 3] in RGB after one hue rotation, saturation and value gain for all."""
    shift, sat, val = rng.random(), rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2)
    return np.array([[colorsys.hsv_to_rgb((h + shift) % 1.0, min(1.0, s * sat), min(1.0, v * val))
                      for h, s, v in p["colours"]] for p in parts], np.float32)


def _draw(parts: list[dict], rgb: np.ndarray, centre: np.ndarray, radius: float, theta: float,
          size: int) -> tuple[np.ndarray, np.ndarray]:
    """Renders one object: (alpha [size, size], colour [size, size, 3]), anti-aliased by supersampling
    the pixels of its bounding square only."""
    lo = np.clip(np.floor(centre - radius).astype(int), 0, size)
    hi = np.clip(np.ceil(centre + radius).astype(int), 0, size)
    alpha = np.zeros((size, size), np.float32)
    mean = np.zeros((size, size, 3), np.float32)
    (w, h), n = hi - lo, _SUPERSAMPLE
    if w <= 0 or h <= 0:
        return alpha, mean
    x = (np.arange(lo[0] * n, hi[0] * n, dtype=np.float32)[None, :] + 0.5) / n - centre[0]
    y = (np.arange(lo[1] * n, hi[1] * n, dtype=np.float32)[:, None] + 0.5) / n - centre[1]
    c, s = np.cos(theta), np.sin(theta)
    u, v = (c * x + s * y) / radius, (-s * x + c * y) / radius      # the object's own frame
    cover = np.zeros((h * n, w * n), bool)
    colour = np.zeros((h * n, w * n, 3), np.float32)
    for p, pair in zip(parts, rgb):
        pc, ps = np.cos(p["angle"]), np.sin(p["angle"])
        du, dv = u - p["centre"][0], v - p["centre"][1]
        a, b = (pc * du + ps * dv) / p["radii"][0], (-ps * du + pc * dv) / p["radii"][1]
        inside = np.abs(a) ** p["power"] + np.abs(b) ** p["power"] <= 1.0
        if p["stripes"]:
            phase = np.cos(p["stripe_angle"]) * u + np.sin(p["stripe_angle"]) * v
            second = np.sin(2 * np.pi * p["stripes"] * phase) > 0
        else:
            second = np.zeros_like(inside)
        colour[inside] = np.where(second[inside, None], pair[1], pair[0])
        cover |= inside

    def pool(a):
        return a.reshape(h, n, w, n, *a.shape[2:]).mean((1, 3))

    box = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    alpha[box] = pool(cover.astype(np.float32))
    mean[box] = pool(colour * cover[..., None]) / np.maximum(alpha[box], 1e-6)[..., None]
    return alpha, mean


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour field: a 3x3 grid of random colours, bicubic-upsampled."""
    from PIL import Image

    low = (rng.uniform(0.15, 0.85, (3, 3, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), np.float32) / 255.0


def render_objects(rng: np.random.Generator, size: int, prototypes: list[list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """One image and its label map: (uint8 [size, size, 3], uint8 [size, size] with 255 on object borders).
    0-1 distractors first, then 1-2 class objects (the second may occlude the first)."""
    img = _background(rng, size)
    label = np.zeros((size, size), np.uint8)
    layers = [(0, prototype(rng)) for _ in range(int(rng.integers(0, 2)))]
    layers += [(c, prototypes[c]) for c in rng.integers(1, len(prototypes), int(rng.integers(1, 3)))]
    alphas = []
    for cls, parts in layers:
        radius = size * rng.uniform(0.22, 0.42)
        centre = rng.uniform(0.25, 0.75, 2) * size
        alpha, colour = _draw(parts, _instance_colours(parts, rng), centre, radius, rng.uniform(0, 2 * np.pi), size)
        img = img * (1 - alpha[..., None]) + colour * alpha[..., None]
        label[alpha >= 0.5] = cls
        alphas.append((cls, alpha))
    # Void band: a class object's edge mixed with what lies under it, unless a later object hides it.
    void = np.zeros((size, size), bool)
    hidden = np.zeros((size, size), np.float32)
    for cls, alpha in reversed(alphas):
        if cls:
            void |= (alpha > 0.02) & (alpha < 0.98) & (hidden < 0.98)
        hidden = 1 - (1 - hidden) * (1 - alpha)
    label[void] = 255
    img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)     # sensor noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), label
