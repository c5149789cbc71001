"""The book's chapters run through papermill with a parameter file, the way book/params/README.md says."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
import yaml
from PIL import Image

from conftest import blocks_dataset
from test_finetune import shapes, write_voc

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_chapter_5_runs_with_a_parameter_file_and_uses_its_values(tmp_path):
    out = tmp_path / "05_pretraining-smoke.ipynb"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(VENV_BIN / "papermill"), str(ROOT / "book" / "05_pretraining.ipynb"), str(out),
                           "--cwd", str(ROOT / "book"), "-f", str(ROOT / "book" / "params" / "smoke.yaml"),
                           "-p", "out_dir", str(tmp_path / "run"), "--no-progress-bar"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "width = 8" in injected[0].source
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["width"], config["image_size"], config["max_steps"], config["seed"]) == (8, 32, 12, 1)
    assert json.loads((tmp_path / "run" / "done.json").read_text())["steps"] == 12


def test_gpu_profile_runs_as_its_command_says_on_a_voc_tree(tmp_path):
    """gpu.yaml's whole path short of CUDA: VOC train_aug ids, ResNet-50 with the ImageNet stem at 224 px,
    images too large to cache streamed through 4 DataLoader workers. Only the size of the run is overridden."""
    voc = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    ids = [f"2008_{i:06d}" for i in range(24)]
    for name, img in zip(ids, blocks_dataset(len(ids), 120)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(voc / "JPEGImages" / f"{name}.jpg")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(ids[:16]) + "\n")
    profile = ROOT / "book" / "params" / "gpu.yaml"
    overrides = {"data_root": str(tmp_path / "voc"), "device": "cpu", "max_steps": 2, "batch_size": 8,
                 "out_dir": str(tmp_path / "run"), "progress": False}
    proc = subprocess.run([sys.executable, "-m", "byol_lite", "pretrain", "--params", str(profile),
                           "--data-root", overrides["data_root"], "--device", "cpu", "--max-steps", "2",
                           "--batch-size", "8", "--out-dir", overrides["out_dir"], "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    expected = {**yaml.safe_load(profile.read_text()), **overrides, "stem": "imagenet"}   # auto at 224 px
    assert {k: config[k] for k in expected} == expected
    assert json.loads((tmp_path / "run" / "done.json").read_text())["steps"] == 2
    assert json.loads((tmp_path / "run" / "dataset.json").read_text())["dataset"].startswith("16 items")  # train_aug
    backbone = torch.load(tmp_path / "run" / "backbone.pt", weights_only=True)
    assert backbone["conv1.weight"].shape == (64, 3, 7, 7)                        # the ImageNet stem
    assert backbone["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)          # torchvision's ResNet-50


def test_chapter_6_switches_to_a_voc_folder_with_data_root_alone(tmp_path):
    """The chapter's promise: `-p data_root /path/to/folder-with-VOCdevkit` is all it takes (data is auto)."""
    write_voc(tmp_path / "voc", {"train": shapes(20, size=48), "val": shapes(4, size=48, seed=1)})
    out = tmp_path / "06_finetuning-voc.ipynb"
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(VENV_BIN / "papermill"), str(ROOT / "book" / "06_finetuning.ipynb"), str(out),
                           "--cwd", str(ROOT / "book"), "-p", "data_root", str(tmp_path / "voc"),
                           "-p", "steps", "8", "-p", "log_every", "1", "-p", "batch_size", "4", "-p", "crop_size", "48",
                           "-p", "out_dir", str(tmp_path / "run"), "--no-progress-bar"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for arm in ("random", "byol"):
        config = json.loads((tmp_path / "run" / arm / "config.json").read_text())
        assert (config["data"], config["data_root"]) == ("voc", str(tmp_path / "voc"))
        done = json.loads((tmp_path / "run" / arm / "done.json").read_text())
        assert done["n_train"] == 1 and len(done["metrics"]["iou"]) == 3     # 5 % of 16; the folder's 3 classes
    assert not (tmp_path / "voc" / "synthetic-v1-s0").exists()                # nothing generated in the user's folder


def _chapters_with_parameters():
    return sorted(p.name for p in (ROOT / "book").glob("*.ipynb")
                  if any("parameters" in c.metadata.get("tags", []) for c in nbformat.read(p, as_version=4).cells))


@pytest.mark.parametrize("chapter", _chapters_with_parameters())
def test_every_training_chapter_refuses_an_unknown_parameter_before_it_trains(chapter, tmp_path):
    """A misspelt `-p` name would otherwise be a new variable nothing reads: a silent run with defaults."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(VENV_BIN / "papermill"), str(ROOT / "book" / chapter), str(tmp_path / "out.ipynb"),
                           "--cwd", str(tmp_path), "-p", "colour_jitter", "0.5", "--no-progress-bar"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    assert "unknown notebook parameter(s) colour_jitter" in proc.stderr and "valid parameters are:" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.ipynb"]      # refused before any run folder was made
