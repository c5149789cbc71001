"""The shipped checkpoints (chapter 6 fine-tunes from byol-cpu-full, chapter 7 compares object-cpu-full;
byol-cpu-objects is the 1M-image run of the gain-vs-images curve): they load, and each is what its profile
makes, with only its stated differences."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from byol_lite.method.backbones import backbone_from_run
from byol_lite.pretrain import PretrainConfig, load_size
from byol_lite.segmentation.model import build_segmentation_model

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "checkpoints"
PARAMS = ROOT / "book" / "params"
# shipped run -> its profile and the settings it changed on purpose from it
SHIPPED = {"byol-cpu-full": ("cpu-full.yaml", {}),
           "object-cpu-full": ("cpu-full.yaml", {"objective": "object", "precision": "bf16"}),
           "byol-cpu-objects": ("cpu-objects.yaml", {})}


def profile_of(name: str) -> dict:
    file, changes = SHIPPED[name]
    return {**yaml.safe_load((PARAMS / file).read_text()), **changes}
# Where a run was written and how it was watched: not part of the recipe.
NOT_RECIPE = set(PretrainConfig.RESUMABLE_CHANGES) | {"out_dir", "resume", "overwrite", "force_resume"}


@pytest.mark.parametrize("name", SHIPPED)
def test_recorded_config_equals_its_profile(name):
    recorded = json.loads((CHECKPOINTS / name / "config.json").read_text())
    profile = profile_of(name)
    defaults = {k: v for k, v in vars(PretrainConfig()).items()}
    expected = {**defaults, **profile}
    # A field added to PretrainConfig after the run was made did not exist then: the run had its default.
    assert set(recorded) <= set(defaults), "the recorded config names fields PretrainConfig no longer has"
    recorded = {**defaults, **recorded}
    differing = {k: (recorded[k], v) for k, v in expected.items() if k not in NOT_RECIPE and k != "stem" and recorded[k] != v}
    assert differing == {}, f"checkpoint config differs from {SHIPPED[name][0]} (recorded, profile): {differing}"


@pytest.mark.parametrize("name", SHIPPED)
def test_it_finished_the_whole_profile_without_skipped_steps(name):
    profile = profile_of(name)
    done = json.loads((CHECKPOINTS / name / "done.json").read_text())
    rows = [json.loads(line) for line in (CHECKPOINTS / name / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = 4400 // profile["batch_size"]          # train + unlabeled images, labels unused
    steps = profile.get("max_steps") or profile["epochs"] * steps_per_epoch
    assert done["steps"] == rows[-1]["step"] == steps
    assert done["skipped_nonfinite"] == 0
    assert rows[-1]["tau"] == pytest.approx(1.0) and rows[-1]["collapse_std"] > 0.02   # not collapsed


@pytest.mark.parametrize("name", SHIPPED)
def test_it_was_trained_on_the_embedded_set_as_generated_today(name):
    from byol_lite.data import unlabeled_dataset
    from byol_lite.data.fingerprint import dataset_fingerprint

    recorded = json.loads((CHECKPOINTS / name / "dataset.json").read_text())["dataset"]
    profile = profile_of(name)
    images = unlabeled_dataset("synthetic", image_size=load_size(profile["image_size"]),
                               embedded=profile.get("embedded", "shapes"))
    assert dataset_fingerprint(images) == recorded


@pytest.mark.parametrize("name", SHIPPED)
def test_it_loads_as_a_segmentation_backbone_with_its_own_architecture(name):
    run = CHECKPOINTS / name
    encoder = backbone_from_run(run)
    assert encoder.width == 16 and encoder.stem == "small"
    model = build_segmentation_model(str(run), num_classes=6, image_size=64)
    state = torch.load(run / "backbone.pt", weights_only=True)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with torch.no_grad():
        out = model.eval()(torch.zeros(1, 3, 80, 80))["out"]
    assert out.shape == (1, 6, 80, 80)
