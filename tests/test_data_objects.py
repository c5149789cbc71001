"""The object-prototype set: every class one prototype, varied only by what BYOL's views vary."""
import colorsys

import numpy as np
import pytest

from byol_lite.data import VOCSegmentation, build_synthetic, check_dataset, ensure_synthetic
from byol_lite.data.objects import OBJECT_CLASSES, _draw, _instance_colours, class_prototypes, prototype, render_objects
from byol_lite.data.synthetic import default_sizes

TINY = dict(image_size=40, train=6, val=4, unlabeled=8)


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_synthetic(tmp_path_factory.mktemp("obj") / "ds", seed=2, dataset="objects", **TINY)


def test_voc_layout_classes_and_byte_identical_in_any_number_of_processes(tiny, tmp_path):
    assert (tiny / "classes.txt").read_text().split() == list(OBJECT_CLASSES)
    assert check_dataset(tiny).ok
    values = set()
    for _, mask in VOCSegmentation(tiny, "trainval"):
        values |= set(mask.unique().tolist())
    assert {0, 255} <= values <= set(range(len(OBJECT_CLASSES))) | {255} and len(values) > 3
    assert _files(build_synthetic(tmp_path / "again", seed=2, dataset="objects", workers=2, **TINY)) == _files(tiny)
    shapes = build_synthetic(tmp_path / "shapes", seed=2, **TINY)
    assert (shapes / "classes.txt").read_text() != (tiny / "classes.txt").read_text()


def test_each_dataset_has_its_own_folder_and_sizes(tmp_path):
    assert default_sizes("objects")["unlabeled"] == 2 * default_sizes("shapes")["unlabeled"]
    objects = ensure_synthetic(tmp_path, seed=1, dataset="objects", **TINY)
    shapes = ensure_synthetic(tmp_path, seed=1, **TINY)
    assert objects.name.startswith("objects-v") and shapes.name.startswith("synthetic-v") and objects != shapes
    with pytest.raises(ValueError, match="unknown embedded dataset 'texture'; valid: shapes, objects"):
        ensure_synthetic(tmp_path, dataset="texture")


def test_prototypes_are_fixed_by_the_seed_and_distinct():
    a, b = class_prototypes(0, 6), class_prototypes(0, 6)
    assert a[0] == [] and len(a) == 6
    for pa, pb in zip(a[1:], b[1:]):
        assert all(np.array_equal(x["centre"], y["centre"]) and x["colours"] == y["colours"] for x, y in zip(pa, pb))
    centres = [tuple(np.round(p[0]["radii"], 6)) for p in a[1:]]
    assert len(set(centres)) == 5                                      # five different bodies
    assert class_prototypes(1, 6)[1][0]["colours"] != a[1][0]["colours"]   # another seed, other classes


def test_an_instance_is_its_prototype_turned_scaled_and_recoloured():
    """The silhouette depends only on the pose; the colours only on one hue rotation and two gains for all parts."""
    parts = class_prototypes(0, 6)[3]
    rgb0 = _instance_colours(parts, np.random.default_rng(5))
    rgb1 = _instance_colours(parts, np.random.default_rng(6))
    alpha0, _ = _draw(parts, rgb0, np.array([20.0, 20.0]), 15.0, 0.3, 40)
    alpha1, _ = _draw(parts, rgb1, np.array([20.0, 20.0]), 15.0, 0.3, 40)
    assert np.array_equal(alpha0, alpha1) and alpha0.max() == 1.0
    turned, _ = _draw(parts, rgb0, np.array([20.0, 20.0]), 15.0, 0.3 + np.pi / 2, 40)
    assert np.allclose(np.rot90(alpha0, 1), turned, atol=1e-6) or np.allclose(np.rot90(alpha0, -1), turned, atol=1e-6)
    h0 = [colorsys.rgb_to_hsv(*c)[0] for c in rgb0.reshape(-1, 3)]
    h1 = [colorsys.rgb_to_hsv(*c)[0] for c in rgb1.reshape(-1, 3)]
    turn = np.exp(2j * np.pi * (np.array(h1) - np.array(h0)))       # the same hue rotation for every colour
    assert np.allclose(turn, turn[0], atol=1e-4) and not np.allclose(turn[0], 1, atol=1e-2)


def test_images_hold_objects_with_a_thin_void_band_and_distractors_never_repeat():
    rng = np.random.default_rng(0)
    assert prototype(rng)[0]["colours"] != prototype(rng)[0]["colours"]
    prototypes = class_prototypes(0, 6)
    for i in range(30):
        img, label = render_objects(np.random.default_rng([0, 1, i]), 64, prototypes)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert 0 < (label == 255).mean() < 0.15 and 0.3 < (label == 0).mean() < 1
