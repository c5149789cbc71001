"""benchmarks/gpu.sh runs end to end: on the CPU, in its tiny configuration (every part but the
2-core CPU comparison and the torchrun smoke test, which other tests cover), so that the one run
a GPU machine gets does not fail on a typo."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_on_the_cpu_in_a_tiny_configuration(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "TINY": "1", "CPU": "0", "DDP": "0", "OUT": str(tmp_path),
           "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    bench = json.loads((tmp_path / "gpu.json").read_text())
    for name in ("byol_lite", "byol_lite:sep", "byol_lite:fp32+cl"):
        assert bench["median"][f"{name} e2e"] > 0 and bench["median"][f"{name} model"] > 0
        assert 0 < bench["mfu"][name] < 1
    flops = bench["flops_per_image"]
    # one forward of both views computes what two forwards do
    assert flops["byol_lite:sep"] == flops["byol_lite"] > 0
    loader = json.loads((tmp_path / "loader.json").read_text())
    assert set(loader["images_per_s"]) == {"0", "1"} and min(loader["images_per_s"].values()) > 0
    assert "done:" in (tmp_path / "log.txt").read_text()
