"""The sweep runs a notebook over a grid with papermill, tabulates what each cell's runs wrote, draws
the summary, skips finished cells on a second call and reports (then retries) failed ones.

The chapter here is a tiny notebook written by the test: it fails for x = 3 until ``fixed`` exists,
and writes a done.json whose numbers the test knows in advance."""
import csv
import subprocess
import sys

import nbformat
import pytest

from byol_lite.sweep import load_sweep, run_sweep

PARAMETERS = 'x = 1\nseed = 0\nout_dir = "unset"\nscale = 1'
BODY = '''import json, pathlib
here = pathlib.Path.cwd()
with open(here / "executions.txt", "a") as fh:
    fh.write(f"{x},{seed}\\n")
if x == 3 and not (here / "fixed").exists():
    raise ValueError("x = 3 is not supported yet")
pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
(pathlib.Path(out_dir) / "done.json").write_text(json.dumps({"final": {"score": scale * (10 * x + seed)},
                                                             "metrics": {"iou": [0.1, 0.2]}}))
'''


@pytest.fixture()
def chapter(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    nbformat.write(nb, book / "chapter.ipynb")
    (book / "sweep.yaml").write_text("notebook: chapter.ipynb\nparameters: {scale: 2}\n"
                                     "grid: {x: [1, 3], seed: [0, 5]}\nplot: {x: x, y: final.score, hue: seed}\n")
    return book


def executions(book):
    return sorted((book / "executions.txt").read_text().split())


def test_sweep_table_resume_and_failures(chapter, tmp_path):
    out = tmp_path / "runs" / "sweep"
    first = run_sweep(chapter / "sweep.yaml", out, progress=False)
    assert sorted((r["x"], r["seed"], r["final.score"]) for r in first.rows) == [(1, 0, 20), (1, 5, 30)]
    assert sorted((f["x"], f["seed"]) for f in first.failed) == [(3, 0), (3, 5)]
    assert all("x = 3 is not supported yet" in f["error"] for f in first.failed)
    with open(out / "results.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [(r["x"], r["seed"], r["final.score"]) for r in table] == [("1", "0", "20"), ("1", "5", "30")]
    assert "metrics.iou" not in table[0]                   # lists are not table columns
    assert (out / "summary.png").stat().st_size > 0 and first.figure is not None
    for r in first.rows:                                   # the executed notebooks are kept
        assert nbformat.read(r["notebook"], 4).cells[1].source.startswith("# Parameters")

    # Second call: finished cells are skipped, failed ones retried (and still failing).
    second = run_sweep(chapter / "sweep.yaml", out, progress=False)
    assert second.skipped == 2 and len(second.failed) == 2
    assert executions(chapter) == sorted(["1,0", "1,5"] + ["3,0", "3,5"] * 2)

    (chapter / "fixed").touch()
    third = run_sweep(chapter / "sweep.yaml", out, progress=False)
    assert third.skipped == 2 and not third.failed
    assert sorted(r["final.score"] for r in third.rows) == [20, 30, 60, 70]
    assert len(executions(chapter)) == 8                    # only the two fixed cells ran again


def test_sweep_output_holds_no_papermill_or_kernel_notices(chapter, tmp_path, capfd, caplog):
    """A name missing from the parameters cell reaches the chapter (the chapters check names themselves),
    so papermill's "Passed unknown parameter" and the kernel's transport notice are not printed."""
    (chapter / "quiet.yaml").write_text("notebook: chapter.ipynb\nparameters: {scale: 2, note: 1}\n"
                                        "grid: {x: [1]}\n")
    result = run_sweep(chapter / "quiet.yaml", tmp_path / "quiet", progress=False)
    assert [r["final.score"] for r in result.rows] == [20]
    executed = nbformat.read(result.rows[0]["notebook"], 4)
    assert "note = 1" in executed.cells[1].source           # papermill did pass it
    printed = capfd.readouterr().err + "".join(r.getMessage() for r in caplog.records)
    assert "Passed unknown parameter" not in printed and "without encryption" not in printed


def test_sweep_file_errors_name_the_key(chapter):
    def error(text):
        (chapter / "bad.yaml").write_text(text)
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            load_sweep(chapter / "bad.yaml")
        return str(err.value)

    assert "unknown key(s) grdi" in error("notebook: chapter.ipynb\ngrdi: {x: [1]}\n")
    assert "'grid' is missing" in error("notebook: chapter.ipynb\n")
    assert "relative to the sweep file" in error("notebook: nowhere.ipynb\ngrid: {x: [1]}\n")
    assert "non-empty list" in error("notebook: chapter.ipynb\ngrid: {x: []}\n")
    assert "x in both 'grid' and 'parameters'" in error("notebook: chapter.ipynb\ngrid: {x: [1]}\nparameters: {x: 2}\n")
    assert "sets 'out_dir' (output_parameter) itself" in error("notebook: chapter.ipynb\ngrid: {out_dir: [a]}\n")
    assert "plot hue 'scale' is not a grid parameter" in error(
        "notebook: chapter.ipynb\ngrid: {x: [1]}\nplot: {y: final.score, hue: scale}\n")


def test_profile_is_the_base_that_parameters_and_grid_override(chapter):
    (chapter / "profile.yaml").write_text("x: 7\nscale: 3\nseed: 9\nout_dir: runs/shared\n")
    (chapter / "p.yaml").write_text("notebook: chapter.ipynb\nprofile: profile.yaml\nparameters: {scale: 4}\n"
                                    "grid: {x: [1, 2]}\n")
    sweep = load_sweep(chapter / "p.yaml")
    assert sweep.parameters == {"scale": 4, "seed": 9}          # x from the grid; out_dir set per cell
    assert [c["x"] for c in sweep.cells()] == [1, 2]
    assert len({sweep.cell_name(c) for c in sweep.cells()}) == 2


def test_sweep_cli_reports_failures_with_exit_code_1(chapter, tmp_path):
    (chapter / "two.yaml").write_text("notebook: chapter.ipynb\ngrid: {x: [1, 3]}\n")
    done = subprocess.run([sys.executable, "-m", "byol_lite", "sweep", str(chapter / "two.yaml"),
                           "--out-dir", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "1 of 2 cells finished" in done.stdout and done.stdout.count("failed: x-3") == 1
    assert "run the same command again to retry them" in done.stdout
