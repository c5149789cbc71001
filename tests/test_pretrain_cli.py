"""``python -m byol_lite pretrain`` as a user runs it: help, a tiny run, a YAML profile, bad options."""
import json
import os
import subprocess
import sys

import torch
from PIL import Image

from conftest import blocks_dataset

TINY_ARGS = ["--image-size", "32", "--width", "8", "--proj-hidden", "64", "--pred-hidden", "64",
             "--proj-dim", "16", "--batch-size", "16", "--no-progress", "--rank-every", "2", "--log-every", "1"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "byol_lite", "pretrain", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def image_folder(path, n=40):
    path.mkdir()
    for i, img in enumerate(blocks_dataset(n, 40)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(path / f"{i:03d}.png")
    return path


def test_help_lists_every_option_with_its_default():
    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for option, default in [("--base-tau", "0.99"), ("--optimizer", "lars"), ("--batch-size", "64"),
                            ("--proj-hidden", "4096"), ("--proj-dim", "256"), ("--image-size", "64")]:
        assert option in text and f"(default: {default})" in text, option


def test_tiny_run_writes_metrics_checkpoint_and_backbone(tmp_path):
    folder = image_folder(tmp_path / "images")
    out = run_cli("--data", "folder", "--data-root", folder, "--max-steps", 3, "--out-dir", tmp_path / "run",
                  *TINY_ARGS)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "tau", "lr", "collapse_std", "images_per_s"} <= set(rows[0]) and "feature_rank" in rows[1]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 3
    backbone = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    assert "conv1.weight" in backbone and not any(k.startswith(("fc.", "online", "target")) for k in backbone)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["width"] == 8 and config["stem"] == "small"
    # A second identical command refuses to overwrite the finished run, with an actionable message.
    again = run_cli("--data", "folder", "--data-root", folder, "--max-steps", 3, "--out-dir", tmp_path / "run",
                    *TINY_ARGS)
    assert again.returncode == 2 and "already holds a finished run" in again.stderr and "--resume" in again.stderr


def test_yaml_profile_and_typed_options(tmp_path):
    folder = image_folder(tmp_path / "images")
    profile = tmp_path / "profile.yaml"
    profile.write_text("max_steps: 2\nbase_tau: 0.97\nwidth: 16\nchannels_last: true\n")
    out = run_cli("--params", profile, "--data", "folder", "--data-root", folder, "--out-dir", tmp_path / "run",
                  "--no-channels-last", *TINY_ARGS)   # TINY_ARGS sets --width 8, which wins over the profile
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["max_steps"], config["base_tau"], config["width"], config["channels_last"]) == (2, 0.97, 8, False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 2\n")
    out = run_cli("--params", bad, "--out-dir", tmp_path / "run2")
    assert out.returncode == 2 and "unknown parameter(s) max_step" in out.stderr and "max_steps" in out.stderr


def test_data_root_alone_means_voc_and_a_plain_folder_is_told_to_say_so(tmp_path):
    from byol_lite.finetune import FinetuneConfig
    from byol_lite.pretrain import PretrainConfig

    for config in (PretrainConfig, FinetuneConfig):     # auto is resolved, so run folders record what was read
        assert config().data == "synthetic" and config(data_root="/data/voc").data == "voc"
        assert config(data="synthetic", data_root="/data/generated").data == "synthetic"
    folder = image_folder(tmp_path / "images")
    out = run_cli("--data-root", folder, "--max-steps", 1, "--out-dir", tmp_path / "run", *TINY_ARGS)
    assert out.returncode != 0 and "has no VOCdevkit" in out.stderr and "--data folder" in out.stderr
    assert not any(p.is_dir() for p in folder.iterdir())        # no embedded set generated among the user's images
