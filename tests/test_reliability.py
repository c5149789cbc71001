"""Reliability (issue 7), in process: atomic checkpoints, resume safety, hostile checkpoints,
non-finite losses, no clobbering, strict parameters. The subprocess kill test is in
``test_reliability_kill.py``."""
import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

import byol_lite.finetune as finetune_module
import byol_lite.pretrain as pretrain_module
from byol_lite.checkpoint import atomic_save, safe_load
from byol_lite.cli import main
from byol_lite.config import NotebookParameters, from_params
from byol_lite.data.fingerprint import dataset_fingerprint
from byol_lite.finetune import FinetuneConfig, finetune
from byol_lite.method.backbones import backbone_from_run, build_backbone, load_backbone
from byol_lite.pretrain import PretrainConfig, pretrain
from byol_lite.segmentation.model import build_segmentation_model, load_segmentation_model
from byol_lite.training.runs import RunDir, RunInUse
from conftest import TINY, interrupt_after_first_checkpoint
from test_finetune import shapes
from test_pretrain_cli import image_folder

VENV_BIN = Path(sys.executable).parent
FT = dict(backbone="resnet18", width=8, crop_size=24, num_classes=3, batch_size=4, lr=0.05, progress=False)


@pytest.fixture(scope="module")
def ft_data():
    data = shapes(8, size=32)
    return data, data[:2]


def _finetune(ft_data, **params):
    train, val = ft_data
    return finetune(train_dataset=train, val_dataset=val, **{**FT, **params})


# --------------------------------------------------------------------------- 1. atomic checkpoints
def test_a_crash_inside_a_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def half_then_crash(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 the first bytes of a zip, then the process dies")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert safe_load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]       # no partial file left behind


def test_a_crash_in_the_training_loops_checkpoint_keeps_the_last_good_one(blocks, tmp_path, monkeypatch):
    real_save = torch.save

    def fail_at_step_4(obj, fh, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 4:
            fh.write(b"half")
            raise KeyboardInterrupt
        return real_save(obj, fh, *args, **kwargs)

    monkeypatch.setattr(torch, "save", fail_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=blocks, out_dir=tmp_path / "run", **dict(TINY, max_steps=6, checkpoint_every=2))
    monkeypatch.setattr(torch, "save", real_save)
    assert safe_load(tmp_path / "run" / "last.pt")["step"] == 2
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_resume_removes_partial_files_and_a_torn_metrics_line(blocks, tmp_path, monkeypatch, capsys):
    params = dict(TINY, max_steps=4, checkpoint_every=2, log_every=1)
    straight = pretrain(dataset=blocks, out_dir=tmp_path / "straight", **params)
    undo = interrupt_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=blocks, out_dir=tmp_path / "run", **params)
    undo()
    # What a SIGKILL during step 3 can leave: a partial checkpoint file and a metrics line cut short.
    run = tmp_path / "run"
    (run / ".last.pt.abc123.tmp").write_bytes(b"PK\x03\x04 torn")
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "epoch": 0.18, "lo')
    resumed = pretrain(dataset=blocks, out_dir=run, resume=True, **params)
    assert "removed 1 partial file(s)" in capsys.readouterr().out
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_before_its_first_checkpoint_restarts_without_duplicate_rows(blocks, tmp_path, monkeypatch):
    params = dict(TINY, max_steps=4, checkpoint_every=3, log_every=1)
    straight = pretrain(dataset=blocks, out_dir=tmp_path / "straight", **params)
    real = RunDir.save_checkpoint

    def die(self, state):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(dataset=blocks, out_dir=tmp_path / "run", **params)
    monkeypatch.setattr(RunDir, "save_checkpoint", real)
    assert not (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "metrics.jsonl").is_file()
    resumed = pretrain(dataset=blocks, out_dir=tmp_path / "run", resume=True, **params)
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    drop = lambda h: [{k: v for k, v in r.items() if k != "images_per_s"} for r in h]
    assert drop(resumed.history) == drop(straight.history)


# --------------------------------------------------------------------------- 2. resume safety
@pytest.mark.parametrize("change, named", [
    (dict(width=16), "width: 8 in the run, 16 now"),
    (dict(batch_size=16), "batch_size: 32 in the run, 16 now"),
    (dict(seed=1), "seed: 0 in the run, 1 now"),
    (dict(data="voc"), "data: 'synthetic' in the run, 'voc' now"),
    (dict(dataset="other images"), "dataset: '512 items, sha1 "),
])
def test_pretrain_resume_with_other_settings_is_refused(blocks, tmp_path, change, named):
    params = dict(TINY, max_steps=4, checkpoint_every=2, out_dir=tmp_path / "run")
    pretrain(dataset=blocks, **{**params, "max_steps": 2})
    if "dataset" in change:
        change = {}
        other = blocks.flip(0)
    else:
        other = blocks
    before = (tmp_path / "run" / "last.pt").read_bytes()
    with pytest.raises(ValueError, match="refusing to resume") as err:
        pretrain(dataset=other, resume=True, **{**params, "max_steps": 2, **change})
    assert named in str(err.value) and "--force-resume" in str(err.value)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_a_run_made_before_a_setting_existed_resumes_with_that_settings_default(blocks, tmp_path):
    """Upgrading the package adds config fields; an older run's config.json lacks them. It resumes when
    the new setting keeps its default (what the run did), and is refused when it is changed."""
    params = dict(TINY, max_steps=2, out_dir=tmp_path / "run")
    pretrain(dataset=blocks, **params)
    cfg = tmp_path / "run" / "config.json"
    old = json.loads(cfg.read_text())
    del old["objective"]                          # as written by a version without object-level BYOL
    cfg.write_text(json.dumps(old))
    facts = tmp_path / "run" / "dataset.json"     # ... and without the process count: one process
    facts.write_text(json.dumps({"dataset": json.loads(facts.read_text())["dataset"]}))
    with pytest.raises(ValueError, match="objective: 'global' in the run, 'object' now"):
        pretrain(dataset=blocks, resume=True, **{**params, "objective": "object"})
    assert pretrain(dataset=blocks, resume=True, **params).history[-1]["step"] == 2


def test_force_resume_overrides_but_cannot_change_the_architecture(blocks, tmp_path, capsys):
    params = dict(TINY, max_steps=2, out_dir=tmp_path / "run")
    pretrain(dataset=blocks, **params)
    result = pretrain(dataset=blocks, resume=True, force_resume=True, **{**params, "max_steps": 3})
    assert result.history[-1]["step"] == 3 and "force_resume: continuing" in capsys.readouterr().out
    with pytest.raises(ValueError, match="does not fit the model.*force_resume cannot change the architecture"):
        pretrain(dataset=blocks, resume=True, force_resume=True, **{**params, "max_steps": 4, "width": 16})


@pytest.mark.parametrize("change, named", [
    (dict(width=16), "width: 8 in the run, 16 now"),
    (dict(batch_size=2), "batch_size: 4 in the run, 2 now"),
    (dict(seed=3), "seed: 0 in the run, 3 now"),
    (dict(data_root="elsewhere"), "data_root: None in the run, 'elsewhere' now"),
    (dict(train=True), "dataset: 'train 8 items, sha1 "),
])
def test_finetune_resume_with_other_settings_is_refused(ft_data, tmp_path, change, named):
    _finetune(ft_data, steps=4, stop_after_steps=2, out_dir=str(tmp_path / "run"))
    data = ft_data
    if change.pop("train", False):
        data = (list(reversed(ft_data[0])), ft_data[1])
    with pytest.raises(ValueError, match="refusing to resume") as err:
        _finetune(data, steps=4, resume=True, out_dir=str(tmp_path / "run"), **change)
    assert named in str(err.value)
    # ...and the same settings continue the run.
    assert _finetune(ft_data, steps=4, resume=True, out_dir=str(tmp_path / "run")).metrics is not None


def test_cli_resume_with_another_batch_size_is_refused(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", n=20)
    args = ["pretrain", "--data", "folder", "--data-root", str(folder), "--out-dir", str(tmp_path / "run"),
            "--image-size", "32", "--width", "8", "--proj-hidden", "32", "--pred-hidden", "32", "--proj-dim", "8",
            "--batch-size", "8", "--max-steps", "2", "--rank-every", "0", "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--resume", "--batch-size", "4", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "refusing to resume" in err and "batch_size: 8 in the run, 4 now" in err and "seed: 0 in the run, 5 now" in err


# --------------------------------------------------------------------------- 3. hostile checkpoints
class Payload:
    """Unpickling this runs a shell command: what a booby-trapped checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(path: Path, marker: Path, wrap=lambda p: {"model": {"conv1.weight": p}, "spec": {}}) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Payload(marker)), path)
    return path


def test_the_payload_is_live_when_loaded_unsafely(tmp_path):
    """The control: the crafted file does run code with weights_only=False, so the tests below can fail."""
    marker = tmp_path / "MARKER"
    torch.load(_hostile(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def _refused(marker: Path, path: Path, call):
    with pytest.raises(ValueError, match=f"{path.name}: refused to load"):
        call()
    assert not marker.exists(), "the checkpoint's code ran"


def test_hostile_checkpoints_are_refused_without_running_them(tmp_path, blocks):
    marker = tmp_path / "MARKER"
    evil = _hostile(tmp_path / "evil.pt", marker)
    _refused(marker, evil, lambda: safe_load(evil))
    legacy = tmp_path / "legacy.pt"
    torch.save({"x": Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    _refused(marker, legacy, lambda: safe_load(legacy))
    backbone = _hostile(tmp_path / "backbone.pt", marker, wrap=lambda p: {"conv1.weight": p})
    _refused(marker, backbone, lambda: load_backbone(build_backbone("resnet18", width=8), backbone))
    _refused(marker, backbone, lambda: build_segmentation_model(str(backbone), width=8, num_classes=3))
    run = tmp_path / "pretrain_run"
    _hostile(run / "backbone.pt", marker, wrap=lambda p: {"conv1.weight": p})
    (run / "config.json").write_text(json.dumps({"backbone": "resnet18", "stem": "small", "width": 8}))
    _refused(marker, run / "backbone.pt", lambda: backbone_from_run(run))
    _refused(marker, evil, lambda: load_segmentation_model(evil))
    # resuming a run whose last.pt was replaced
    params = dict(TINY, max_steps=2, out_dir=tmp_path / "run")
    pretrain(dataset=blocks, **params)
    (tmp_path / "run" / "done.json").unlink()
    _hostile(tmp_path / "run" / "last.pt", marker, wrap=lambda p: {"model": p, "step": 1})
    _refused(marker, tmp_path / "run" / "last.pt", lambda: pretrain(dataset=blocks, resume=True, **params))


def test_predict_and_evaluate_refuse_a_hostile_checkpoint(tmp_path, capsys):
    from PIL import Image

    marker = tmp_path / "MARKER"
    evil = _hostile(tmp_path / "model.pt", marker)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(evil), "--out", str(tmp_path / "p")]) == 2
    assert main(["evaluate", "--checkpoint", str(evil)]) == 2
    err = capsys.readouterr().err
    assert err.count("model.pt: refused to load") == 2 and not marker.exists()
    assert not (tmp_path / "p").exists()


def test_every_load_in_the_package_goes_through_safe_load():
    package = Path(pretrain_module.__file__).parent
    loads = [f"{p.name}:{i}" for p in package.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
             if "torch.load(" in line or "pickle.load" in line or "allow_pickle" in line]
    assert loads == ["checkpoint.py:" + str(next(i for i, line in enumerate(
        (package / "checkpoint.py").read_text().splitlines(), 1) if "torch.load(" in line))]
    assert "weights_only=True" in (package / "checkpoint.py").read_text()


# --------------------------------------------------------------------------- 4. non-finite losses
class NaNAtCall:
    """Wraps the pretraining augmentation: the ``k``-th batch's first view-1 image becomes NaN."""

    def __init__(self, augment, k):
        self.augment, self.k, self.calls = augment, k, 0

    def __getattr__(self, name):
        return getattr(self.augment, name)

    def __call__(self, batch, gen, **shard):
        v1, v2 = self.augment(batch, gen, **shard)
        if self.calls == self.k:
            v1 = v1.clone()
            v1[0] = float("nan")
        self.calls += 1
        return v1, v2


@pytest.fixture
def nan_at_step_6(monkeypatch):
    real = pretrain_module.build_augment
    monkeypatch.setattr(pretrain_module, "build_augment", lambda config: NaNAtCall(real(config), 6))


def test_pretrain_stops_at_the_nan_step_naming_it_and_keeps_the_last_checkpoint(blocks, tmp_path, nan_at_step_6):
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError) as err:
        pretrain(dataset=blocks, out_dir=run, **dict(TINY, max_steps=10, checkpoint_every=5, log_every=1))
    msg = str(err.value)
    assert "non-finite loss (nan) at step 7 with lr=" in msg
    assert "view 1 -> view 2 term" in msg
    assert "non-finite outputs = online prediction of view 1, target projection of view 1" in msg
    assert f"last good checkpoint (step 5) is kept in {run / 'last.pt'}" in msg and "--skip-nonfinite" in msg
    state = safe_load(run / "last.pt")
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (run / "done.json").exists()
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_pretrain_skip_nonfinite_skips_the_batch_without_touching_weights_or_statistics(
        blocks, tmp_path, monkeypatch, nan_at_step_6):
    saved = {}
    real = RunDir.save_checkpoint

    def record(self, state):
        saved[state["step"]] = copy.deepcopy({"model": state["model"], "optimizer": state["optimizer"]})
        real(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", record)
    run = tmp_path / "run"
    result = pretrain(dataset=blocks, out_dir=run, skip_nonfinite=True,
                      **dict(TINY, max_steps=9, checkpoint_every=1, log_every=1))
    before, after = saved[6], saved[7]      # the state before and after the step that saw the NaN batch
    for k, v in before["model"].items():     # online, target (no EMA update) and BatchNorm statistics
        assert torch.equal(v, after["model"][k]), k
    assert before["optimizer"]["state"].keys() == after["optimizer"]["state"].keys()
    for i, s in before["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], after["optimizer"]["state"][i]["momentum_buffer"])
    assert not torch.equal(saved[8]["model"]["online.encoder.conv1.weight"], after["model"]["online.encoder.conv1.weight"])
    rows = result.history
    assert [r["skipped_nonfinite"] for r in rows] == [0] * 6 + [1] * 3
    assert rows[6]["loss"] is None and all(r["loss"] is not None for r in rows[7:])
    assert json.loads((run / "done.json").read_text())["skipped_nonfinite"] == 1
    assert safe_load(run / "last.pt")["skipped_nonfinite"] == 1


class NaNHead(torch.nn.Module):
    """A head whose output turns NaN at its ``k``-th training call."""

    def __init__(self, head, k):
        super().__init__()
        self.head, self.k, self.calls = head, k, 0

    def forward(self, x):
        out = self.head(x)
        if self.training:
            if self.calls == self.k:
                out = out * float("nan")
            self.calls += 1
        return out


@pytest.fixture
def poison(monkeypatch):
    """``poison("aux")``: fine-tuning's aux head (or main classifier) outputs NaN at step 3."""
    def install(which):
        real = finetune_module.build_segmentation_model

        def build(*args, **kwargs):
            model = real(*args, **kwargs)
            name = "aux_classifier" if which == "aux" else "classifier"
            setattr(model, name, NaNHead(getattr(model, name), 3))
            return model

        monkeypatch.setattr(finetune_module, "build_segmentation_model", build)
    return install


@pytest.mark.parametrize("which, other", [("main", "aux"), ("aux", "main")])
def test_finetune_stops_naming_the_main_or_aux_loss(ft_data, tmp_path, poison, which, other):
    poison(which)
    with pytest.raises(FloatingPointError) as err:
        _finetune(ft_data, steps=6, aux=True, checkpoint_every=2, out_dir=str(tmp_path / "run"))
    msg = str(err.value)
    assert "non-finite loss (nan) at step 4 with lr=" in msg
    assert f"{which} loss = nan" in msg and f"{other} loss = nan" not in msg and "step 2" in msg
    assert safe_load(tmp_path / "run" / "last.pt")["step"] == 2 and not (tmp_path / "run" / "done.json").exists()


def test_finetune_skip_nonfinite_counts_the_skipped_batch(ft_data, tmp_path, poison):
    poison("aux")
    result = _finetune(ft_data, steps=6, aux=True, log_every=1, skip_nonfinite=True, out_dir=str(tmp_path / "run"))
    assert [r["skipped_nonfinite"] for r in result.history] == [0, 0, 0, 1, 1, 1]
    assert result.history[3]["loss"] is None and result.metrics["miou"] >= 0
    assert json.loads((tmp_path / "run" / "done.json").read_text())["skipped_nonfinite"] == 1


def test_cli_huge_learning_rate_exits_2_with_the_step_and_keeps_a_finite_checkpoint(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", n=16)
    args = ["pretrain", "--data", "folder", "--data-root", str(folder), "--out-dir", str(tmp_path / "run"),
            "--image-size", "32", "--width", "8", "--proj-hidden", "32", "--pred-hidden", "32", "--proj-dim", "8",
            "--batch-size", "8", "--max-steps", "8", "--checkpoint-every", "1", "--rank-every", "0",
            "--optimizer", "sgd", "--base-lr", "1e30", "--warmup-epochs", "0", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: non-finite loss (nan) at step 2 with lr=3.006e+28" in err
    assert f"last good checkpoint (step 1) is kept in {tmp_path / 'run' / 'last.pt'}" in err
    state = safe_load(tmp_path / "run" / "last.pt")
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# --------------------------------------------------------------------------- 5. no clobbering
def test_finetune_never_clobbers_a_finished_run_and_overwrite_keeps_it_aside(ft_data, tmp_path):
    out = tmp_path / "run"
    _finetune(ft_data, steps=2, out_dir=str(out))
    model = (out / "model.pt").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a finished run.*--resume.*--overwrite"):
        _finetune(ft_data, steps=2, out_dir=str(out))
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        _finetune(ft_data, steps=2, lr=0.1, out_dir=str(out))          # other settings: refused all the same
    assert (out / "model.pt").read_bytes() == model
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        _finetune(ft_data, steps=2, out_dir=str(out), resume=True, overwrite=True)
    for _ in range(2):                                             # twice within a second: two kept folders
        _finetune(ft_data, steps=2, lr=0.1, out_dir=str(out), overwrite=True)
    kept = sorted(p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-"))
    assert len(kept) == 2 and (kept[0] / "model.pt").read_bytes() == model
    assert json.loads((out / "config.json").read_text())["lr"] == 0.1


def test_a_folder_that_holds_other_files_is_not_used_as_a_run_folder(blocks, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty.*notes.txt.*holds no byol_lite run"):
        pretrain(dataset=blocks, out_dir=tmp_path, **dict(TINY, max_steps=1))
    assert main(["finetune", "--out-dir", str(tmp_path), "--steps", "1"]) == 2
    assert "holds no byol_lite run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------- 6. one writer per run folder
HOLD = """
import json, sys, time
from byol_lite.pretrain import PretrainConfig
from byol_lite.training.runs import RunDir
RunDir(PretrainConfig(**json.loads(sys.argv[1])), dataset=sys.argv[2])
print("holding", flush=True)
time.sleep(300)
"""


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(
        blocks, tmp_path, capsys):
    params = dict(TINY, max_steps=2, out_dir=str(tmp_path / "run"))
    resolved = dataclasses.asdict(PretrainConfig(**params, stem="small"))     # what pretrain() records
    holder = subprocess.Popen([sys.executable, "-c", HOLD, json.dumps(resolved), dataset_fingerprint(blocks)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline() == "holding\n"
        with pytest.raises(RunInUse, match=f"in use: process {holder.pid} is writing this run"):
            pretrain(dataset=blocks, resume=True, **params)
        assert main(["finetune", "--out-dir", params["out_dir"], "--resume", "--steps", "1"]) == 2
        assert f"error: {params['out_dir']} is in use: process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "run" / ".lock").read_text().strip() == str(holder.pid)    # SIGKILL: the pid stays behind
    result = pretrain(dataset=blocks, resume=True, **params)
    assert f"took over the lock of process {holder.pid}, which has stopped" in capsys.readouterr().out
    assert result.history[-1]["step"] == 2 and not (tmp_path / "run" / ".lock").exists()   # released at the end


# --------------------------------------------------------------------------- 7. parameters
def test_cli_rejects_unknown_and_illtyped_options_listing_the_valid_ones(tmp_path, capsys):
    for command, args, expected in [
        ("pretrain", ["--max-step", "3"], ["unrecognized arguments: --max-step 3", "did you mean --max-steps?",
                                          "valid options are: --backbone, --base-lr,", "--skip-nonfinite"]),
        ("finetune", ["--learning-rate", "0.1"], ["unrecognized arguments: --learning-rate", "--lr,"]),
        ("pretrain", ["--batch-size", "many"], ["argument --batch-size: parameter 'batch_size' expects an integer"]),
        ("finetune", ["--aux-weight", "half"], ["parameter 'aux_weight' expects a number, got 'half'"]),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main([command, *args])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and all(e in err for e in expected), err
    profile = tmp_path / "p.yaml"
    profile.write_text("batch_size: lots\noptimizer: lamb\n")
    assert main(["pretrain", "--params", str(profile), "--out-dir", str(tmp_path / "r")]) == 2
    assert "parameter 'batch_size' expects an integer, got 'lots'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'optimizer' is 'lamb'; valid values are: lars, sgd, adamw"):
        from_params(PretrainConfig, {"optimizer": "lamb"})


def test_notebook_parameters_reject_stray_names_and_coerce_types():
    ns = {"np": object(), "helper": 3}
    params = NotebookParameters(FinetuneConfig, ns, extra=["seeds"])
    ns.update(steps=200, lr=0.01)                 # the parameters cell
    ns.update(lr="0.05", seeds=[0, 1], _i7="x")   # papermill's injected cell (+ IPython's history variables)
    config = params.config()
    assert (config.steps, config.lr, ns["lr"]) == (200, 0.05, 0.05)
    ns["helper"] = 4                              # an existing variable re-bound by -p helper 4
    ns["label_fractoin"] = 0.1
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) helper, label_fractoin for FinetuneConfig "
                                         r"-- label_fractoin \(did you mean label_fraction\?\); valid parameters "
                                         r"are: data, data_root,.*, seeds"):
        params.config()
    del ns["helper"], ns["label_fractoin"]
    ns["steps"] = "many"
    with pytest.raises(TypeError, match="'steps' expects an integer, got 'many'"):
        params.config()


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("from byol_lite.config import NotebookParameters\n"
                                  "from byol_lite.pretrain import PretrainConfig\n"
                                  "params = NotebookParameters(PretrainConfig, globals())"),
        nbformat.v4.new_code_cell("max_steps = 200\nbase_lr = 0.45", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("config = params.config()\n"
                                  "print('RESULT', config.max_steps, config.base_lr, config.batch_size, max_steps)"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_papermill_typo_fails_with_the_valid_names_and_good_parameters_are_used(tmp_path):
    notebook = _notebook(tmp_path / "in.ipynb")
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}

    def papermill(*args):
        return subprocess.run([str(VENV_BIN / "papermill"), str(notebook), str(tmp_path / "out.ipynb"),
                               "--no-progress-bar", *args], capture_output=True, text=True, env=env, timeout=300)

    bad = papermill("-p", "max_step", "10")
    assert bad.returncode != 0
    assert "unknown notebook parameter(s) max_step for PretrainConfig -- max_step (did you mean max_steps?)" \
        in bad.stderr and "valid parameters are: data, data_root, embedded, data_split, backbone" in bad.stderr
    good = papermill("-p", "max_steps", "10", "-r", "base_lr", "0.1", "-p", "batch_size", "16")
    assert good.returncode == 0, good.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "RESULT 10 0.1 16 10" in "".join(o.get("text", "") for o in out.cells[-1].outputs)
