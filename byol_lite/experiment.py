"""Initialisations compared under one fine-tuning recipe: arms × label fractions × seeds → a table and a plot.

Fair by construction: every arm (random init, a BYOL run, ...) uses the same recipe, the same nested label
subsets and the same held-out images; each arm gets its own learning rate, chosen from ``lr_grid`` by mIoU on
the held-out part of the labeled training split (never on val), separately for every label budget. Every run
lives in its own folder under ``out_dir`` and finished runs are read back instead of retrained, so an
interrupted experiment continues where it stopped. Runs are independent, so ``jobs > 1`` trains several at
once in separate processes (useful on a GPU, where one small run leaves it mostly idle).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from byol_lite.checkpoint import atomic_write_csv
from byol_lite.config import AT_LEAST_1, bounded, load_yaml_params
from byol_lite.data.labeled import resolve_data_root
from byol_lite.finetune import FinetuneConfig, finetune
from byol_lite.segmentation.model import init_path


@dataclass
class ExperimentResult:
    rows: list[dict]        # one per (arm, label fraction, seed): the val metrics of the final runs
    selection: list[dict]   # one per (arm, label fraction, lr): held-out mIoU of the LR search
    summary: list[dict]     # one per (arm, label fraction): mean/std/min/max of val mIoU over seeds
    figure: Figure          # mIoU against label fraction
    out_dir: Path


def _run(config: FinetuneConfig, threads: int = 0) -> dict:
    if threads:
        torch.set_num_threads(threads)
    result = finetune(config)          # config.resume is set: finished runs are read back
    done = json.loads((result.run_dir / "done.json").read_text())
    return {"miou": result.metrics["miou"], "pixel_acc": result.metrics["pixel_acc"],
            "n_train": done["n_train"], "run_dir": str(result.run_dir)}


def pretraining_of(init: str) -> dict:
    """What an arm's backbone was pretrained with: ``objective`` and ``pretrain_steps`` (random: none, 0; a run
    folder: its config and done.json; a weights file or an unfinished run: unknown, NaN) -- the x axis of the
    gain-versus-pretraining curve, recorded in the tables so that the curve needs no run folders."""
    if init == "random":
        return {"objective": "none", "pretrain_steps": 0.0}
    run = init_path(init)
    try:
        steps = float(json.loads((run / "done.json").read_text())["steps"])
        objective = json.loads((run / "config.json").read_text()).get("objective", "global")
    except (OSError, ValueError, KeyError):
        return {"objective": "unknown", "pretrain_steps": math.nan}
    return {"objective": objective, "pretrain_steps": steps}


def _run_all(configs: list[FinetuneConfig], jobs: int, bar) -> list[dict]:
    with contextlib.ExitStack() as stack:
        if jobs <= 1:
            results = map(_run, configs)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(jobs, mp_context=get_context("spawn")))
            results = pool.map(_run, configs, [max(1, (os.cpu_count() or 1) // jobs)] * len(configs))
        out = []
        for r in results:
            out.append(r)
            bar.update(1)
        return out


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean, std (ddof=1), min and max of val mIoU over seeds, per (arm, label fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["label_fraction"]), []).append(r)
    out = []
    for (arm, fraction), rs in groups.items():
        m = np.array([r["miou"] for r in rs])
        pretraining = {k: rs[0][k] for k in ("objective", "pretrain_steps") if k in rs[0]}
        out.append({"arm": arm, "init": rs[0]["init"], **pretraining, "label_fraction": fraction,
                    "n_train": rs[0]["n_train"], "lr": rs[0]["lr"], "seeds": len(rs), "miou_mean": float(m.mean()),
                    "miou_std": float(m.std(ddof=1)) if len(m) > 1 else float("nan"),
                    "miou_min": float(m.min()), "miou_max": float(m.max())})
    return out


def run_experiment(base: FinetuneConfig | dict | None = None, arms: Mapping[str, str] | None = None,
                   label_fractions: Sequence[float] = (0.05, 1.0), seeds: Sequence[int] = (0, 1, 2),
                   lr_grid: Sequence[float] = (0.003, 0.01, 0.03), holdout_fraction: float = 0.2,
                   out_dir: str = "runs/experiment", jobs: int = 1, progress: bool = True,
                   subset_per_seed: bool = False, **params) -> ExperimentResult:
    """Fine-tunes every arm and returns their val mIoU per label fraction and seed; writes ``results.csv``,
    ``selection.csv``, ``summary.csv`` and ``label_efficiency.png`` to ``out_dir``.

    ``base`` (a :class:`FinetuneConfig` or a dict of its fields) and ``params`` set the shared recipe; ``arms``
    maps a name to an ``init`` (default: random vs ``runs/pretrain``). The LR search trains with ``seeds[0]``.
    ``subset_per_seed``: every seed also labels its own subset (``subset_seed = seed``, the held-out part
    with it), so the spread over seeds includes which images were labelled, not only the training noise.
    """
    base_params = dataclasses.asdict(base) if isinstance(base, FinetuneConfig) else dict(base or {})
    config = FinetuneConfig.of(None, **{**base_params, **params, "holdout_fraction": holdout_fraction,
                                        "progress": False, "overwrite": False, "resume": True})
    arms = dict(arms or {"random": "random", "byol": "byol"})
    if not seeds or not lr_grid or not label_fractions or not arms:
        raise ValueError("arms, seeds, lr_grid and label_fractions must each name at least one value")
    if config.data == "synthetic":   # generate it once here, not in every worker at the same time
        resolve_data_root(config.data, config.data_root, config.embedded)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells = [(arm, init, fraction) for arm, init in arms.items() for fraction in label_fractions]
    bar = tqdm(total=len(cells) * (len(lr_grid) + len(seeds)), desc="experiment", unit="run", disable=not progress)

    def run(cell, lr: float, seed: int, eval_on: str, name: str) -> FinetuneConfig:
        arm, init, fraction = cell
        return dataclasses.replace(config, init=init, label_fraction=fraction, lr=lr, seed=seed, eval_on=eval_on,
                                   subset_seed=seed if subset_per_seed else config.subset_seed,
                                   out_dir=str(out / arm / f"labels{fraction:g}" / name))

    trials = [(cell, lr) for cell in cells for lr in lr_grid]
    scores = _run_all([run(cell, lr, seeds[0], "holdout", f"select-lr{lr:g}") for cell, lr in trials], jobs, bar)
    selection = [{"arm": arm, "init": init, "label_fraction": fraction, "n_train": r["n_train"], "lr": lr,
                  "holdout_miou": r["miou"], "run_dir": r["run_dir"]}
                 for ((arm, init, fraction), lr), r in zip(trials, scores)]
    best = {}
    for cell in cells:
        tried = [s for s in selection if (s["arm"], s["label_fraction"]) == (cell[0], cell[2])]
        best[cell] = max(tried, key=lambda s: -math.inf if math.isnan(s["holdout_miou"]) else s["holdout_miou"])["lr"]

    # named by their LR too: a wider lr_grid that chooses another LR adds runs instead of clashing with the old
    finals = [run(cell, best[cell], seed, "val", f"seed{seed}-lr{best[cell]:g}") for cell in cells for seed in seeds]
    results = _run_all(finals, jobs, bar)
    rows = [{"arm": arm, "init": c.init, **pretraining_of(c.init), "label_fraction": c.label_fraction,
             "n_train": r["n_train"], "seed": c.seed, "subset_seed": c.subset_seed, "lr": c.lr, "miou": r["miou"],
             "pixel_acc": r["pixel_acc"], "run_dir": r["run_dir"]}
            for (arm, _, _), c, r in zip((cell for cell in cells for _ in seeds), finals, results)]
    bar.close()
    from byol_lite.segmentation.viz import plot_label_efficiency

    summary = summarize(rows)
    atomic_write_csv(rows, out / "results.csv")
    atomic_write_csv(selection, out / "selection.csv")
    atomic_write_csv(summary, out / "summary.csv")
    figure = plot_label_efficiency(rows)
    figure.savefig(out / "label_efficiency.png", dpi=120)
    return ExperimentResult(rows, selection, summary, figure, out)


_TYPES = {"pretrain_steps": float, "label_fraction": float, "n_train": int, "seed": int, "subset_seed": int,
          "lr": float, "miou": float, "pixel_acc": float, "holdout_miou": float}


def read_results(out_dir: str | Path, table: str = "results") -> list[dict]:
    """A finished experiment's ``results`` (or ``selection``) table from its CSV, typed as
    :func:`run_experiment` returned it: re-plot or summarise an experiment without rerunning it."""
    path = Path(out_dir) / f"{table}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the experiment first (python -m byol_lite experiment)")
    with open(path, newline="") as fh:
        return [{k: _TYPES.get(k, str)(v) for k, v in row.items()} for row in csv.DictReader(fh)]


# --------------------------------------------------------------------------- command line
EXPERIMENT_KEYS = ("arms", "label_fractions", "seeds", "lr_grid", "holdout_fraction", "subset_per_seed", "out_dir",
                   "jobs", "recipe")


def load_experiment_file(path: str | Path) -> dict:
    """An experiment file: the grid (``arms``, ``label_fractions``, ``seeds``, ``lr_grid``, ...) and the shared
    fine-tuning ``recipe`` (FinetuneConfig fields). Unknown keys are errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment file {path} does not exist")
    spec = load_yaml_params(path)
    unknown = sorted(set(spec) - set(EXPERIMENT_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; an experiment file has "
                         f"{', '.join(EXPERIMENT_KEYS)} (fine-tuning settings go under recipe:)")
    return spec


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="compare initialisations: arms x label fractions x seeds",
                              description="Fine-tunes every arm of an experiment file (e.g. "
                                          "book/params/experiment-cpu.yaml) with the LR chosen per arm on "
                                          "held-out training labels; writes results.csv, summary.csv and a plot.")
    p.add_argument("file", metavar="FILE.yaml", help="experiment file")
    p.add_argument("--arm", action="append", default=[], metavar="NAME=INIT",
                   help="add or replace an arm (INIT: random, a pretraining run folder or a backbone file); "
                        "NAME= with nothing after it drops the file's arm NAME")
    p.add_argument("--out-dir", help="override the file's out_dir")
    p.add_argument("--jobs", type=bounded("jobs", int, AT_LEAST_1),
                   help="runs trained at once (default: the file's, else 1)")
    p.add_argument("--device", help="override the recipe's device")
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    spec = load_experiment_file(args.file)
    arms = dict(spec.get("arms") or {})
    for item in args.arm:
        name, sep, init = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--arm {item!r}: write NAME=INIT, e.g. --arm byol=runs/pretrain-cpu-full")
        if init:
            arms[name] = init
        elif arms.pop(name, None) is None:
            raise ValueError(f"--arm {name}=: there is no arm {name!r} to drop (arms: {', '.join(arms) or 'none'})")
    if not arms:
        raise ValueError(f"{args.file}: no arms left to compare; name one with --arm NAME=INIT")
    recipe = dict(spec.get("recipe") or {})
    if args.device:
        recipe["device"] = args.device
    grid = {k: spec[k] for k in ("label_fractions", "seeds", "lr_grid", "holdout_fraction", "subset_per_seed")
            if k in spec}
    result = run_experiment(recipe, arms=arms, out_dir=args.out_dir or spec.get("out_dir", "runs/experiment"),
                            jobs=args.jobs or spec.get("jobs", 1), **grid)
    for s in result.summary:
        print(f"{s['arm']:>16s}  labels {100 * s['label_fraction']:5.1f}% ({s['n_train']:4d} images)  lr {s['lr']:<6g} "
              f"mIoU {s['miou_mean']:.4f} ± {s['miou_std']:.4f} over {s['seeds']} seeds")
    print(f"tables and plot: {result.out_dir}")
    return 0
