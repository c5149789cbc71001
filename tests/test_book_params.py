"""The book's chapters run through papermill with a parameter file, the way book/params/README.md says."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

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
