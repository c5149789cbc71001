"""The pretraining loop: it learns, it does not collapse, and it resumes exactly."""
import json
import math
import time

import pytest
import torch

import byol_lite.pretrain as pretrain_module
from byol_lite.config import from_params, non_defaults
from byol_lite.method.augment import paper_views
from byol_lite.pretrain import PretrainConfig, build_augment, build_model, pretrain, snapshot_path
from conftest import TINY, assert_same_run, interrupt_after_first_checkpoint


def _summary(history, key):
    return [row[key] for row in history]


def test_byol_learns_while_tau0_without_predictor_collapses(blocks, tmp_path):
    common = dict(TINY, max_steps=200, log_every=20, base_lr=0.45)
    byol = pretrain(dataset=blocks, out_dir=tmp_path / "byol", **common).history
    collapse = pretrain(dataset=blocks, out_dir=tmp_path / "collapse", predictor=False, base_tau=0.0,
                        tau_schedule="constant", **common).history
    loss, std = _summary(byol, "loss"), _summary(byol, "collapse_std")
    healthy = 1 / 64 ** 0.5                                   # a spread over the 64-d sphere
    assert byol[0]["step"] == 1 and sum(loss[-3:]) / 3 < loss[0] - 0.5   # the loss falls
    assert min(std) > 0.5 * healthy                           # and the projections stay spread
    c_std = _summary(collapse, "collapse_std")
    assert sum(c_std[-3:]) / 3 < 0.15 * healthy               # the ablation collapses to a point
    assert _summary(collapse, "loss")[-1] < 0.05              # ...with a trivially small loss


def test_resume_is_exact(blocks, tmp_path, monkeypatch):
    params = dict(TINY, max_steps=20, checkpoint_every=10, log_every=5, rank_every=10)
    straight = pretrain(dataset=blocks, out_dir=tmp_path / "straight", **params)

    undo = interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=blocks, out_dir=tmp_path / "split", **params)
    undo()
    assert torch.load(tmp_path / "split" / "last.pt", weights_only=True)["step"] == 10
    resumed = pretrain(dataset=blocks, out_dir=tmp_path / "split", resume=True, **params)

    assert_same_run(straight, resumed)
    logged = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 5, 10, 15, 20]


def test_a_run_paused_by_stop_after_steps_and_resumed_is_the_straight_run(blocks, tmp_path):
    """A long run in parts: the pause keeps the whole run's schedules (LR, tau) and writes no done.json."""
    params = dict(TINY, max_steps=12, checkpoint_every=100, log_every=4, rank_every=0)
    straight = pretrain(dataset=blocks, out_dir=tmp_path / "straight", **params)
    paused = pretrain(dataset=blocks, out_dir=tmp_path / "parts", stop_after_steps=5, **params)
    assert [r["step"] for r in paused.history] == [1, 4]
    assert not (tmp_path / "parts" / "done.json").exists()
    assert torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["step"] == 5
    resumed = pretrain(dataset=blocks, out_dir=tmp_path / "parts", resume=True, **params)
    assert_same_run(straight, resumed)
    assert json.loads((tmp_path / "parts" / "done.json").read_text())["steps"] == 12


def test_training_time_adds_up_over_a_resume_and_is_read_back(blocks, tmp_path, monkeypatch):
    """A chapter that reads a finished run back prints the time the run took, not the read's."""
    params = dict(TINY, max_steps=20, checkpoint_every=10, log_every=5, rank_every=0, out_dir=tmp_path / "run")
    undo = interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=blocks, **params)
    undo()
    # the first segment's time, as its checkpoint recorded it, is set to 1000 s: the total must build on it
    checkpoint = tmp_path / "run" / "last.pt"
    state = torch.load(checkpoint, weights_only=True)
    assert 0 < state["train_seconds"] < 1000
    torch.save({**state, "train_seconds": 1000.0}, checkpoint)
    start = time.perf_counter()
    resumed = pretrain(dataset=blocks, resume=True, **params)
    elapsed = time.perf_counter() - start
    done = tmp_path / "run" / "done.json"
    recorded = json.loads(done.read_text())["train_seconds"]
    # 1000 s before, plus the second segment's time, which is within this call's
    assert 1000 < recorded < 1000 + elapsed and resumed.train_seconds == pytest.approx(recorded, abs=1e-3)
    again = pretrain(dataset=blocks, resume=True, **params)      # finished: read back, not trained
    assert again.train_seconds == recorded and again.history == resumed.history
    # a run finished without a recorded time reads back as not a number, never as 0 s
    done.write_text(json.dumps({k: v for k, v in json.loads(done.read_text()).items() if k != "train_seconds"}))
    assert math.isnan(pretrain(dataset=blocks, resume=True, **params).train_seconds)


def test_run_folder_is_never_clobbered(blocks, tmp_path):
    params = dict(TINY, max_steps=2, out_dir=tmp_path / "run")
    pretrain(dataset=blocks, **params)
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        pretrain(dataset=blocks, **params)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    with pytest.raises(ValueError, match="batch_size: 32 in the run, 16 now"):
        pretrain(dataset=blocks, **{**params, "batch_size": 16}, resume=True)
    pretrain(dataset=blocks, **params, overwrite=True)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(kept) == 1 and (kept[0] / "last.pt").read_bytes() == before


def test_unknown_or_illtyped_parameters_are_rejected():
    with pytest.raises(ValueError, match="unknown parameter.*learning_rate.*valid parameters are: data, "):
        from_params(PretrainConfig, {"learning_rate": 0.1})
    with pytest.raises(TypeError, match="batch_size.*integer"):
        from_params(PretrainConfig, {"batch_size": "many"})
    assert from_params(PretrainConfig, {"batch_size": "16", "predictor": "false"}).predictor is False
    with pytest.raises(ValueError, match="predictor_side.*valid values are: online, target"):
        from_params(PretrainConfig, {"predictor_side": "projector"})


def test_predictor_side_reaches_the_model():
    small = dict(width=8, proj_hidden=32, pred_hidden=32, proj_dim=16, image_size=32)
    seed = build_model(from_params(PretrainConfig, {**small, "predictor_side": "target"}))
    paper = build_model(from_params(PretrainConfig, small))
    assert isinstance(seed.predictor, torch.nn.Identity) and isinstance(seed.target_predictor, torch.nn.Sequential)
    assert isinstance(paper.predictor, torch.nn.Sequential) and isinstance(paper.target_predictor, torch.nn.Identity)


def test_target_runs_in_train_mode_and_checkpoint_loads_safely(blocks, tmp_path):
    result = pretrain(dataset=blocks, out_dir=tmp_path / "r", **dict(TINY, max_steps=3))
    assert result.model.target.training
    state = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "step", "rng", "config"} <= set(state)
    assert state["config"]["stem"] == "small"


def test_non_defaults_lists_exactly_the_fields_a_run_changed():
    assert non_defaults(PretrainConfig()) == {}
    config = from_params(PretrainConfig, {"max_steps": "12", "width": 8, "base_tau": 0.99, "data_root": "/voc"})
    # base_tau equals its default: not a change; data_root alone also resolves data="auto" to voc
    assert non_defaults(config) == {"max_steps": 12, "width": 8, "data_root": "/voc", "data": "voc"}


def test_tau_follows_the_configured_schedule():
    cosine = PretrainConfig(base_tau=0.99)
    assert cosine.tau(0, 100) == 0.99
    assert cosine.tau(50, 100) == pytest.approx(0.995)          # halfway up the cosine from 0.99 to 1
    assert cosine.tau(99, 100) > 0.9999
    constant = PretrainConfig(base_tau=0.99, tau_schedule="constant")
    assert [constant.tau(k, 100) for k in (0, 50, 99)] == [0.99] * 3


def test_hue_and_rotation_reach_both_views_and_default_to_the_paper():
    aug = build_augment(PretrainConfig(hue=0.5, rotation=180, jitter_strength=1.0))
    assert (aug.view1.hue, aug.view2.hue, aug.view1.rotation, aug.view2.rotation) == (0.5, 0.5, 180, 180)
    assert build_augment(PretrainConfig(hue=0.3, jitter_strength=0.5)).view2.hue == pytest.approx(0.15)
    default = build_augment(PretrainConfig())
    assert (default.view1, default.view2) == paper_views() and default.view1.hue == 0.1
    assert default.view1.rotation == default.view2.rotation == 0.0
    with pytest.raises(ValueError, match=r"parameter 'hue' is 0\.6; valid range: \[0, 0\.5\]"):
        PretrainConfig(hue=0.6)
    with pytest.raises(ValueError, match=r"parameter 'rotation' is 190\.0; valid range: \[0, 180\]"):
        PretrainConfig(rotation=190)


def test_snapshot_images_are_positive_counts():
    assert PretrainConfig(snapshot_images=" 38400,153600, 38400").snapshot_images == "38400,153600"
    assert PretrainConfig(snapshot_images="153600,38400").snapshots() == (38400, 153600)
    assert from_params(PretrainConfig, {"snapshot_images": 38400}).snapshots() == (38400,)
    assert PretrainConfig().snapshots() == ()
    for bad in ("0", "-5", "1.5", "38400;153600", "many"):
        with pytest.raises(ValueError, match="parameter 'snapshot_images' is .*positive whole numbers"):
            PretrainConfig(snapshot_images=bad)


# 6 steps of 4 images: snapshots at 10 and 20 images fall after steps 3 (12 images) and 5 (20 images)
SNAPSHOT_RUN = dict(TINY, width=4, image_size=16, proj_hidden=32, pred_hidden=32, proj_dim=16, batch_size=4,
                    max_steps=6, precision="fp32")


def _weights(path):
    return torch.load(path, weights_only=True)


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_snapshots_hold_the_encoder_of_their_step_and_survive_a_resume(blocks, tmp_path, monkeypatch):
    data = blocks[:32]
    run = pretrain(dataset=data, out_dir=tmp_path / "run", snapshot_images="20,10", **SNAPSHOT_RUN)
    assert sorted(p.name for p in (run.run_dir / "snapshots").iterdir()) == ["backbone-10.pt", "backbone-20.pt"]
    snap10, final = _weights(snapshot_path(run.run_dir, 10)), _weights(run.run_dir / "backbone.pt")
    # the same run stopped by its checkpoint after step 3, the first that reached 10 images: the same encoder,
    # not the weights of a later step (a state_dict kept in memory follows the training)
    undo = interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=data, out_dir=tmp_path / "stopped", checkpoint_every=3, **SNAPSHOT_RUN)
    undo()
    assert _same(snap10, _weights(tmp_path / "stopped" / "backbone.pt"))
    snap20 = _weights(snapshot_path(run.run_dir, 20))
    assert not _same(snap10, final) and not _same(snap10, snap20) and not _same(snap20, final)

    # stopped after its checkpoint at step 4, then resumed with two more counts: 8 (passed, never written) and 24
    def stop_at_checkpoint(backbone, path):
        real_save(backbone, path)
        if path.name == "backbone.pt":
            raise KeyboardInterrupt

    real_save = pretrain_module.save_backbone
    monkeypatch.setattr(pretrain_module, "save_backbone", stop_at_checkpoint)
    split = tmp_path / "split"
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=data, out_dir=split, checkpoint_every=4, snapshot_images="10,20", **SNAPSHOT_RUN)
    monkeypatch.setattr(pretrain_module, "save_backbone", real_save)
    written = snapshot_path(split, 10).read_bytes(), snapshot_path(split, 10).stat().st_ino
    assert not snapshot_path(split, 20).exists()
    with pytest.warns(RuntimeWarning, match=r"snapshot_images \[8\] will not be written"):
        resumed = pretrain(dataset=data, out_dir=split, checkpoint_every=4, snapshot_images="8,10,20,24",
                           resume=True, **SNAPSHOT_RUN)
    assert_same_run(run, resumed)
    assert (snapshot_path(split, 10).read_bytes(), snapshot_path(split, 10).stat().st_ino) == written   # untouched
    assert not snapshot_path(split, 8).exists()
    assert _same(_weights(snapshot_path(split, 20)), _weights(snapshot_path(run.run_dir, 20)))
    assert _same(_weights(snapshot_path(split, 24)), final)
