"""Issue 7's kill test: CLI runs SIGKILLed at random steps after their first checkpoint, then resumed
with the same command plus ``--resume``, end bit-identical to an uninterrupted run with the same seed.

The kill points come from ``random.Random(KILL_SEED)``; each is a step after the first checkpoint
(``checkpoint_every``), and the process is killed as soon as metrics.jsonl shows that step, which
lands anywhere in a step: mid-forward, mid-append, mid-checkpoint-write. A fourth, deterministic kill
happens in the middle of writing a checkpoint, leaving a half-written temporary file behind.
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from byol_lite.checkpoint import safe_load
from test_pretrain_cli import image_folder

KILL_SEED = 7
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}   # same arithmetic in every process
CHECKPOINT_EVERY, STEPS = 4, 24

# Runs the CLI with torch.save writing half a checkpoint at step K, then SIGKILLing its own process.
KILL_MID_SAVE = """
import os, signal, sys, torch
real, K = torch.save, int(sys.argv[1])
def save(obj, fh, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("step") == K and "optimizer" in obj:
        fh.write(b"PK\\x03\\x04 half of a checkpoint"); fh.flush(); os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, fh, *args, **kwargs)
torch.save = save
from byol_lite.cli import main
sys.exit(main(sys.argv[2:]))
"""


def pretrain_args(data: Path, out: Path) -> list[str]:
    return ["pretrain", "--data", "folder", "--data-root", str(data), "--out-dir", str(out), "--seed", "3",
            "--image-size", "32", "--width", "8", "--proj-hidden", "64", "--pred-hidden", "64", "--proj-dim", "16",
            "--batch-size", "8", "--max-steps", str(STEPS), "--checkpoint-every", str(CHECKPOINT_EVERY),
            "--log-every", "1", "--rank-every", "6", "--device", "cpu", "--no-progress"]


def finetune_args(data: Path, out: Path) -> list[str]:
    return ["finetune", "--data", "voc", "--data-root", str(data), "--out-dir", str(out), "--seed", "3",
            "--width", "8", "--crop-size", "24", "--batch-size", "4", "--steps", str(STEPS), "--aux",
            "--checkpoint-every", str(CHECKPOINT_EVERY), "--log-every", "1", "--eval-every", "8",
            "--lr", "0.05", "--device", "cpu", "--no-progress"]


def cli(args, prefix=("-m", "byol_lite")):
    return subprocess.run([sys.executable, *prefix, *args], env=ENV, capture_output=True, text=True, timeout=300)


def logged_steps(out: Path) -> list[int]:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    steps = []
    for line in lines:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):   # a line being appended right now
            pass
    return steps


def kill_at(args, out: Path, step: int) -> int:
    """Starts the CLI, SIGKILLs it once ``step`` is logged (after the first checkpoint); the step seen."""
    proc = subprocess.Popen([sys.executable, "-m", "byol_lite", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        steps = logged_steps(out)
        if (out / "last.pt").exists() and steps and steps[-1] >= step:
            proc.send_signal(signal.SIGKILL)
            break
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read().decode()[-2000:]}"
        time.sleep(0.002)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "done.json").exists()
    return logged_steps(out)[-1]


TIMINGS = ("images_per_s", "train_seconds")


def _untimed(x):
    """Drops the timings (measurements, not state) wherever they appear."""
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIMINGS}
    return x


def rows(out: Path) -> list[dict]:
    return [_untimed(json.loads(line)) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_identical(a: Path, b: Path, files: tuple[str, ...]) -> None:
    assert rows(a) == rows(b)
    for name in files:
        x, y = safe_load(a / name), safe_load(b / name)
        flat_x, flat_y = _flatten(x), _flatten(y)
        assert flat_x.keys() == flat_y.keys(), name
        for k in flat_x:
            if isinstance(flat_x[k], torch.Tensor):
                assert torch.equal(flat_x[k], flat_y[k]), f"{name}: {k}"
            elif not k.startswith(("config.out_dir", "config.resume", *TIMINGS)):
                assert flat_x[k] == flat_y[k], f"{name}: {k}"
    if (a / "done.json").exists():
        assert _untimed(json.loads((a / "done.json").read_text())) == _untimed(json.loads((b / "done.json").read_text()))


def _flatten(x, prefix=""):
    if isinstance(x, dict):
        return {k2: v2 for k, v in x.items() for k2, v2 in _flatten(v, f"{prefix}{k}.").items()}
    if isinstance(x, (list, tuple)):
        return {k2: v2 for i, v in enumerate(x) for k2, v2 in _flatten(v, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): x}


@pytest.fixture(scope="module")
def kill_points():
    rng = random.Random(KILL_SEED)
    points = {kind: sorted(rng.sample(range(CHECKPOINT_EVERY + 1, STEPS - 2), 3)) for kind in ("pretrain", "finetune")}
    print(f"\nkill points (seed {KILL_SEED}): {points}")
    return points


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_sigkilled_runs_resume_bit_identically(kind, kill_points, tmp_path):
    if kind == "pretrain":
        data, make_args = image_folder(tmp_path / "images", n=40), pretrain_args
        files = ("last.pt", "backbone.pt")
    else:
        from byol_lite.data import ensure_synthetic

        data = ensure_synthetic(tmp_path / "data", seed=0, image_size=32, train=16, val=2, unlabeled=0)
        make_args, files = finetune_args, ("last.pt", "model.pt")
    straight = tmp_path / "straight"
    done = cli(make_args(data, straight))
    assert done.returncode == 0, done.stderr

    report = []
    for i, step in enumerate(kill_points[kind]):
        out = tmp_path / f"killed{i}"
        seen = kill_at(make_args(data, out), out, step)
        at_checkpoint = safe_load(out / "last.pt")["step"]
        report.append((step, seen, at_checkpoint))
        resumed = cli([*make_args(data, out), "--resume"])
        assert resumed.returncode == 0, resumed.stderr
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
        assert_identical(straight, out, files)

    # Killed in the middle of writing the checkpoint of step 12: the half-written file never
    # replaces last.pt (still step 8), and resuming clears it away.
    out = tmp_path / "killed_mid_save"
    died = cli([str(2 * CHECKPOINT_EVERY + CHECKPOINT_EVERY), *make_args(data, out)], prefix=("-c", KILL_MID_SAVE))
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert safe_load(out / "last.pt")["step"] == 2 * CHECKPOINT_EVERY
    assert [p.name.startswith(".last.pt.") for p in out.iterdir() if p.name.endswith(".tmp")] == [True]
    resumed = cli([*make_args(data, out), "--resume"])
    assert resumed.returncode == 0 and "removed 1 partial file(s)" in resumed.stdout, resumed.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert_identical(straight, out, files)
    print(f"{kind}: (asked kill step, last step logged when killed, checkpoint resumed from) = {report}; "
          f"and killed mid-write of the step-{3 * CHECKPOINT_EVERY} checkpoint")
