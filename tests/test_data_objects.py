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
    return build_synthetic(tmp_path_factory.mktemp("obj") / "ds", seed=2, embedded="objects", **TINY)


def test_voc_layout_classes_and_byte_identical_in_any_number_of_processes(tiny, tmp_path):
    assert (tiny / "classes.txt").read_text().split() == list(OBJECT_CLASSES)
    assert check_dataset(tiny).ok
    values = set()
    for _, mask in VOCSegmentation(tiny, "trainval"):
        values |= set(mask.unique().tolist())
    assert {0, 255} <= values <= set(range(len(OBJECT_CLASSES))) | {255} and len(values) > 3
    assert _files(build_synthetic(tmp_path / "again", seed=2, embedded="objects", workers=2, **TINY)) == _files(tiny)
    shapes = build_synthetic(tmp_path / "shapes", seed=2, **TINY)
    assert (shapes / "classes.txt").read_text() != (tiny / "classes.txt").read_text()


def test_each_dataset_has_its_own_folder_and_sizes(tmp_path):
    assert default_sizes("objects")["unlabeled"] == 2 * default_sizes("shapes")["unlabeled"]
    objects = ensure_synthetic(tmp_path, seed=1, embedded="objects", **TINY)
    shapes = ensure_synthetic(tmp_path, seed=1, **TINY)
    assert objects.name.startswith("objects-v") and shapes.name.startswith("synthetic-v") and objects != shapes
    with pytest.raises(ValueError, match="unknown embedded set 'texture'; valid: shapes, objects"):
        ensure_synthetic(tmp_path, embedded="texture")


def test_prototypes_are_fixed_by_the_seed_and_distinct():
    a, b = class_prototypes(0, 6), class_prototypes(0, 6)
    assert a[0] == [] and len(a) == 6
    for pa, pb in zip(a[1:], b[1:]):
        assert all(np.array_equal(x["centre"], y["centre"]) and x["colours"] == y["colours"] for x, y in zip(pa, pb))
    bodies = [tuple(np.round(p[0]["radii"], 6)) for p in a[1:]]
    assert len(set(bodies)) == 5                                       # five different bodies
    assert class_prototypes(1, 6)[1][0]["colours"] != a[1][0]["colours"]   # another seed, other classes


def test_an_instance_is_its_prototype_turned_scaled_and_recoloured():
    """A quarter turn of the pose is a quarter turn of the drawing, colours included; the colours change only by
    one hue rotation and two gains shared by all parts."""
    parts = class_prototypes(0, 6)[3]
    rgb0 = _instance_colours(parts, np.random.default_rng(5))
    rgb1 = _instance_colours(parts, np.random.default_rng(6))
    alpha0, colour0 = _draw(parts, rgb0, np.array([20.0, 20.0]), 15.0, 0.3, 40)
    turned, colour1 = _draw(parts, rgb0, np.array([20.0, 20.0]), 15.0, 0.3 + np.pi / 2, 40)
    assert alpha0.max() == 1.0 and 0.1 < (alpha0 > 0.5).mean() < 0.6
    quarter = [k for k in (1, -1) if np.allclose(np.rot90(alpha0, k), turned, atol=1e-6)]
    assert len(quarter) == 1
    assert np.allclose(np.rot90(colour0, quarter[0]), colour1, atol=1e-5)
    h0 = [colorsys.rgb_to_hsv(*c)[0] for c in rgb0.reshape(-1, 3)]
    h1 = [colorsys.rgb_to_hsv(*c)[0] for c in rgb1.reshape(-1, 3)]
    turn = np.exp(2j * np.pi * (np.array(h1) - np.array(h0)))       # the same hue rotation for every colour
    assert np.allclose(turn, turn[0], atol=1e-4) and not np.allclose(turn[0], 1, atol=1e-2)


def test_distractors_are_drawn_first_from_new_prototypes_and_stay_background(monkeypatch):
    """Every distractor is a fresh prototype (never a class's), drawn under the objects, its pixels labelled 0."""
    import byol_lite.data.objects as objects

    fresh, drawn = [], []
    real_prototype, real_draw = objects.prototype, objects._draw
    monkeypatch.setattr(objects, "prototype", lambda rng: fresh.append(real_prototype(rng)) or fresh[-1])
    monkeypatch.setattr(objects, "_draw", lambda parts, *a: drawn.append((parts, real_draw(parts, *a)[0])) or
                        real_draw(parts, *a))
    prototypes = class_prototypes(0, 6)
    checked = 0
    for i in range(40):
        fresh.clear(), drawn.clear()
        _, label = render_objects(np.random.default_rng([0, 3, i]), 64, prototypes)
        n = len(fresh)
        assert [parts for parts, _ in drawn[:n]] == fresh                       # distractors first ...
        assert all(not any(parts is p for p in prototypes) for parts in fresh)   # ... never a class prototype
        assert all(any(parts is p for p in prototypes[1:]) for parts, _ in drawn[n:])
        on_top = np.zeros(label.shape, bool)
        for _, alpha in drawn[n:]:
            on_top |= alpha > 0.02
        for _, alpha in drawn[:n]:
            visible = (alpha >= 0.5) & ~on_top
            assert (label[visible] == 0).all()
            checked += int(visible.sum())
    assert checked > 500


def test_images_hold_objects_with_a_thin_void_band():
    prototypes = class_prototypes(0, 6)
    for i in range(30):
        img, label = render_objects(np.random.default_rng([0, 1, i]), 64, prototypes)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert 0 < (label == 255).mean() < 0.15 and 0.3 < (label == 0).mean() < 1


def test_a_run_reads_the_embedded_set_its_dataset_names(monkeypatch):
    """``embedded`` reaches the data of pretraining, fine-tuning and experiments, and is refused where it would be
    ignored (another source than the embedded set)."""
    import byol_lite.data.synthetic as synthetic
    from byol_lite.config import ParameterError
    from byol_lite.experiment import run_experiment
    from byol_lite.finetune import finetune
    from byol_lite.pretrain import PretrainConfig, pretrain

    asked = []

    def stop(root=None, seed=0, embedded="shapes", **sizes):
        asked.append(embedded)
        raise InterruptedError

    monkeypatch.setattr(synthetic, "ensure_synthetic", stop)
    for run in (lambda: pretrain(embedded="objects", progress=False),
                lambda: finetune(embedded="objects", progress=False),
                lambda: run_experiment({"embedded": "objects"}, arms={"random": "random"}, progress=False)):
        with pytest.raises(InterruptedError):
            run()
    assert asked == ["objects"] * 3
    with pytest.raises(ParameterError, match="'embedded' is 'objects', an embedded set, but data is 'voc'"):
        PretrainConfig(embedded="objects", data_root="somewhere")


def test_the_curves_profile_and_experiment_files_load_and_name_the_objects_set():
    """The gain-vs-images files are valid configs (a typo would only surface an hour into the run) and read the
    object-prototype set with the views that vary what varies within its classes."""
    from pathlib import Path

    from byol_lite.config import from_params, load_yaml_params
    from byol_lite.experiment import load_experiment_file
    from byol_lite.finetune import FinetuneConfig
    from byol_lite.pretrain import PretrainConfig

    root = Path(__file__).resolve().parents[1]
    profile = from_params(PretrainConfig, load_yaml_params(root / "book/params/cpu-objects.yaml"))
    assert (profile.embedded, profile.data, profile.rotation, profile.hue) == ("objects", "synthetic", 180, 0.5)
    assert profile.max_steps * profile.batch_size >= 1_000_000
    total = profile.max_steps * profile.batch_size
    assert max(profile.snapshots()) < total and total >= 30 * min(profile.snapshots())   # lengths span >= 30x
    oracle = from_params(FinetuneConfig, load_yaml_params(root / "experiments/gain_vs_images/oracle.yaml"))
    assert (oracle.embedded, oracle.init, oracle.label_fraction) == ("objects", "random", 1.0)
    specs = {name: load_experiment_file(root / f"experiments/gain_vs_images/{name}.yaml")
             for name in ("probe", "finetune", "labels")}
    for name, spec in specs.items():
        recipe = from_params(FinetuneConfig, spec["recipe"])
        assert recipe.embedded == "objects" and recipe.width == profile.width and spec["subset_per_seed"]
        assert recipe.freeze_backbone == (name != "finetune")
    # the label-efficiency runs are the curve's probe at 4, 64 and 320 of the 320 pool images
    assert specs["labels"]["recipe"] == specs["probe"]["recipe"]
    assert [round(f * 320) for f in specs["labels"]["label_fractions"]] == [4, 64, 320]


def test_the_curves_table_keeps_stored_runs_and_replaces_rerun_ones(tmp_path):
    """table.py merges an earlier session's stored rows (their run folders are not shipped) with the runs in
    OUT: a rerun replaces its stored row instead of counting twice, other stored rows are kept, in order."""
    import importlib.util
    from pathlib import Path

    from byol_lite.checkpoint import atomic_write_csv

    path = Path(__file__).resolve().parents[1] / "experiments/gain_vs_images/table.py"
    spec = importlib.util.spec_from_file_location("gain_table", path)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)

    def row(arm, subset, miou, evaluation="probe"):
        return {"evaluation": evaluation, "arm": arm, **table.arm_fields(arm), "label_fraction": 0.05,
                "n_train": 16, "subset_seed": subset, "lr": 0.01, "miou": miou, "pixel_acc": 0.8}

    stored = [row("s0-25600", 0, 0.17), row("s0-25600", 1, 0.16), row("random", 0, 0.15),
              row("random", 0, 0.25, "finetune")]
    atomic_write_csv(stored, tmp_path / "results.csv")
    fresh = [row("s0-25600", 1, 0.19), row("s2-51200", 0, 0.18)]
    merged = table.merged(fresh, tmp_path / "results.csv")
    assert [(r["evaluation"], r["arm"], r["subset_seed"], r["miou"]) for r in merged] == [
        ("probe", "random", 0, 0.15), ("probe", "s0-25600", 0, 0.17), ("probe", "s0-25600", 1, 0.19),
        ("probe", "s2-51200", 0, 0.18), ("finetune", "random", 0, 0.25)]
    assert merged[1]["pretrain_seed"] == 0 and merged[1]["images_seen"] == 25600
    assert table.merged(fresh, tmp_path / "absent.csv") == fresh
