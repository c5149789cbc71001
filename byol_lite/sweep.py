"""``python -m byol_lite sweep FILE.yaml``: a chapter executed by papermill over a grid of parameters.

A sweep file (YAML) names a chapter, the parameters every cell shares and the grid::

    notebook: ../05_pretraining.ipynb   # relative to the sweep file
    out_dir: runs/sweep-05              # relative to the current folder (default: runs/sweep-<file name>)
    output_parameter: out_dir           # the chapter parameter that receives each cell's run folder
    profile: cpu-full.yaml              # optional: base parameters (relative to this file); the rest wins
    parameters: {max_steps: 200}        # the same in every cell (papermill -p)
    grid: {base_tau: [0.99, 0.996], seed: [0, 1, 2]}   # every combination is one cell
    plot: {x: base_tau, y: final.collapse_std}          # the summary plot (hue: optional)
    timeout: 3600                       # seconds per notebook cell (papermill's execution_timeout)

How a chapter hands its results over: the sweep gives every cell its own folder through the chapter
parameter named ``output_parameter``; the chapter writes its run(s) there, and the ``done.json`` that
every finished pretraining or fine-tuning run writes is the result. Its numbers become the table's
columns, nested keys joined by dots (``final.loss``, ``metrics.miou``); when a cell holds several runs,
each column is prefixed by the run's subfolder (``byol/final.loss``). Nothing else is asked of a chapter.

Under ``out_dir``: ``cells/<cell>/`` holds each executed notebook and its run folder, ``cell.json`` once
the cell finished; ``results.csv`` one row per finished cell; ``summary.png`` the plot. Running the same
file again skips finished cells (same chapter parameters, same name) and retries failed ones.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byol_lite.checkpoint import atomic_write_csv, atomic_write_json
from byol_lite.config import load_yaml_params

KEYS = ("notebook", "out_dir", "output_parameter", "profile", "parameters", "grid", "plot", "timeout")


@dataclass
class Sweep:
    notebook: Path
    out_dir: Path
    grid: dict[str, list]
    parameters: dict[str, Any] = field(default_factory=dict)
    output_parameter: str = "out_dir"
    plot: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None

    def cells(self) -> list[dict]:
        """Every combination of the grid's values, in the order the file lists them."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*self.grid.values())]

    def cell_name(self, cell: dict) -> str:
        """Readable and unique: the grid values, and a hash of everything the chapter receives."""
        readable = "_".join(f"{k}-{v}" for k, v in cell.items())
        digest = hashlib.sha1(json.dumps([str(self.notebook.name), self.parameters, cell], sort_keys=True,
                                         default=str).encode()).hexdigest()[:8]
        return re.sub(r"[^A-Za-z0-9._-]+", "_", readable)[:80] + "-" + digest


@dataclass
class SweepResult:
    rows: list[dict]      # one per finished cell: grid values, results, executed notebook
    failed: list[dict]    # one per failed cell: grid values, error, executed notebook
    skipped: int          # finished cells found from an earlier run, not executed again
    figure: Any           # the summary plot (None without plot.y or finished cells)
    out_dir: Path


def load_sweep(path: str | Path, out_dir: str | Path | None = None) -> Sweep:
    """Reads and checks a sweep file; every problem names the file and the key."""
    path = Path(path)
    data = load_yaml_params(path)
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; a sweep file has: {', '.join(KEYS)}")
    for key in ("notebook", "grid"):
        if key not in data:
            raise ValueError(f"{path}: '{key}' is missing (see `python -m byol_lite sweep --help`)")
    notebook = (path.parent / data["notebook"]).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"{path}: notebook {data['notebook']} not found (looked for {notebook}; "
                                "it is relative to the sweep file)")
    grid = data["grid"]
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{path}: 'grid' must map each parameter to a non-empty list of values")
    output = data.get("output_parameter", "out_dir")
    both = sorted(set(grid) & set(data.get("parameters") or {}))
    if both:
        raise ValueError(f"{path}: {', '.join(both)} in both 'grid' and 'parameters': keep one")
    # the profile is the base: the file's parameters and the grid win over its values
    profile = load_yaml_params(path.parent / data["profile"]) if data.get("profile") else {}
    parameters = {k: v for k, v in profile.items() if k not in grid}
    parameters.update(data.get("parameters") or {})
    if output in grid:
        raise ValueError(f"{path}: the sweep sets '{output}' (output_parameter) itself; take it out of 'grid'")
    parameters.pop(output, None)   # a profile's own run folder would be shared by every cell
    plot = data.get("plot") or {}
    bad = sorted(set(plot) - {"x", "y", "hue"})
    if bad:
        raise ValueError(f"{path}: 'plot' takes x, y and hue, not {', '.join(bad)}")
    for key in ("x", "hue"):
        if plot.get(key) is not None and plot[key] not in grid:
            raise ValueError(f"{path}: plot {key} '{plot[key]}' is not a grid parameter ({', '.join(grid)})")
    plot.setdefault("x", next(iter(grid)))
    return Sweep(notebook, Path(out_dir or data.get("out_dir") or f"runs/sweep-{path.stem}"), grid, parameters,
                 output, plot, data.get("timeout"))


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested dict, keys joined by dots (lists, e.g. per-class IoU, are left out)."""
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif v is None or isinstance(v, (int, float, str, bool)):
            out[f"{prefix}{k}"] = v
    return out


def cell_results(folder: Path) -> dict[str, Any]:
    """The numbers of every ``done.json`` under ``folder`` (prefixed by subfolder when there are several)."""
    files = sorted(folder.rglob("done.json")) if folder.is_dir() else []
    if not files:
        raise ValueError(f"the chapter finished but left no done.json under {folder}: its runs must be written to "
                         "the folder the sweep passes (output_parameter)")
    results = {}
    for f in files:
        prefix = "" if f.parent == folder else f"{f.parent.relative_to(folder).as_posix()}/"
        results.update(_flatten(json.loads(f.read_text()), prefix))
    return results


class _KnownToChapter(logging.Filter):
    """Drops papermill's "Passed unknown parameter" warning. papermill compares the names with the chapter's
    ``parameters`` cell only, while a chapter accepts every field of its config and stops with the list of
    valid names on any other (``byol_lite.config``): the warning would flag settings that do apply."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


def run_sweep(sweep: Sweep | str | Path, out_dir: str | Path | None = None, progress: bool = True) -> SweepResult:
    """Executes every unfinished cell of ``sweep`` (a :class:`Sweep` or a sweep file), then writes the table
    and the plot. A failing cell does not stop the others; it is reported and retried by the next call."""
    import papermill

    log = logging.getLogger("papermill")
    if not any(isinstance(f, _KnownToChapter) for f in log.filters):
        log.addFilter(_KnownToChapter())
    sweep = sweep if isinstance(sweep, Sweep) else load_sweep(sweep, out_dir)
    out = Path(out_dir or sweep.out_dir)
    rows, failed, skipped = [], [], 0
    cells = sweep.cells()
    for i, cell in enumerate(cells, 1):
        folder = out / "cells" / sweep.cell_name(cell)
        marker = folder / "cell.json"
        if marker.is_file():
            rows.append(json.loads(marker.read_text()))
            skipped += 1
            continue
        folder.mkdir(parents=True, exist_ok=True)
        executed = folder / sweep.notebook.name
        params = {**sweep.parameters, **cell, sweep.output_parameter: str((folder / "run").resolve())}
        if progress:
            print(f"[{i}/{len(cells)}] {', '.join(f'{k}={v}' for k, v in cell.items())}", flush=True)
        try:
            papermill.execute_notebook(sweep.notebook, executed, parameters=params, cwd=str(sweep.notebook.parent),
                                       progress_bar=False, execution_timeout=sweep.timeout,
                                       # the kernel's start-up notices (transport) are not the chapter's output
                                       extra_arguments=["--IPKernelApp.log_level=ERROR"])
            row = {"cell": folder.name, **cell, **cell_results(folder / "run"), "notebook": str(executed)}
        except Exception as err:   # a chapter's failure is reported, the sweep goes on
            last = [line for line in str(err).splitlines() if line.strip()][-1:] or [type(err).__name__]
            failed.append({"cell": folder.name, **cell, "error": last[0], "notebook": str(executed)})
            continue
        atomic_write_json(row, marker)
        rows.append(row)

    out.mkdir(parents=True, exist_ok=True)
    if rows:
        atomic_write_csv(rows, out / "results.csv")
    figure = None
    y = sweep.plot.get("y")
    if y and rows:
        if not all(y in r for r in rows):
            available = sorted({k for r in rows for k in r} - {"cell", "notebook"} - set(sweep.grid))
            raise ValueError(f"plot y '{y}' is not a result of every cell; results are: {', '.join(available)}")
        from byol_lite.segmentation.viz import plot_sweep

        figure = plot_sweep(rows, sweep.plot["x"], y, sweep.plot.get("hue"))
        figure.savefig(out / "summary.png", dpi=120)
    return SweepResult(rows, failed, skipped, figure, out)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("sweep", help="run a chapter over a grid of parameters (papermill)",
                              description=__doc__.split("\n\n", 1)[1].replace("%", "%%"),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE.yaml", help="sweep file (e.g. book/params/sweep-cpu.yaml)")
    p.add_argument("--out-dir", help="where cells, results.csv and summary.png go (default: the file's out_dir)")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    result = run_sweep(args.file, args.out_dir)
    total = len(result.rows) + len(result.failed)
    print(f"{len(result.rows)} of {total} cells finished ({result.skipped} from earlier runs): "
          f"{result.out_dir / 'results.csv'}" + (f", {result.out_dir / 'summary.png'}" if result.figure else ""))
    for f in result.failed:
        print(f"failed: {f['cell']}: {f['error']} (executed notebook: {f['notebook']})")
    if result.failed:
        print(f"{len(result.failed)} cell(s) failed; run the same command again to retry them "
              "(finished cells are skipped)")
        return 1
    return 0
