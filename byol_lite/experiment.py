"""The BYOL-vs-random comparison: init ∈ {random, BYOL} × label fractions × seeds → a table and a plot.

Fair by construction: both arms use the same recipe, the same nested label subsets and the same
held-out images; each arm gets its own learning rate, chosen from ``lr_grid`` by mIoU on the held-out
part of the labeled training split (never on val), separately for every label budget. Every run lives
in its own folder under ``out_dir`` and finished runs are read back instead of retrained, so an
interrupted experiment continues where it stopped.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from byol_lite.config import from_params
from byol_lite.finetune import FinetuneConfig, finetune


@dataclass
class ExperimentResult:
    rows: list[dict]        # one per (arm, label fraction, seed): the val metrics of the final runs
    selection: list[dict]   # one per (arm, label fraction, lr): held-out mIoU of the LR search
    summary: list[dict]     # one per (arm, label fraction): mean/std/min/max of val mIoU over seeds
    figure: Figure          # mIoU against label fraction
    out_dir: Path


def _run(config: FinetuneConfig, out_dir: Path, **params) -> dict:
    result = finetune(config, out_dir=str(out_dir), resume=True, **params)
    done = json.loads((result["run_dir"] / "done.json").read_text())
    return {"miou": result["metrics"]["miou"], "pixel_acc": result["metrics"]["pixel_acc"],
            "n_train": done["n_train"], "run_dir": str(result["run_dir"])}


def _write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Mean, std (ddof=1), min and max of val mIoU over seeds, per (arm, label fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["label_fraction"]), []).append(r)
    out = []
    for (arm, fraction), rs in groups.items():
        m = np.array([r["miou"] for r in rs])
        out.append({"arm": arm, "label_fraction": fraction, "n_train": rs[0]["n_train"], "lr": rs[0]["lr"],
                    "seeds": len(rs), "miou_mean": float(m.mean()),
                    "miou_std": float(m.std(ddof=1)) if len(m) > 1 else float("nan"),
                    "miou_min": float(m.min()), "miou_max": float(m.max())})
    return out


def run_experiment(base: FinetuneConfig | dict | None = None, byol_init: str = "byol",
                   label_fractions: Sequence[float] = (0.05, 1.0), seeds: Sequence[int] = (0, 1, 2),
                   lr_grid: Sequence[float] = (0.003, 0.01, 0.03), holdout_fraction: float = 0.2,
                   out_dir: str = "runs/experiment", progress: bool = True, **params) -> ExperimentResult:
    """Fine-tunes both arms and returns their val mIoU per label fraction and seed.

    ``base`` (a :class:`FinetuneConfig` or a dict of its fields) and ``params`` set the shared recipe;
    ``byol_init`` is the BYOL arm's ``init`` (a pretraining run folder, or ``"byol"`` for runs/pretrain).
    The LR search trains with ``seeds[0]``. Writes ``results.csv``, ``selection.csv``, ``summary.csv`` and
    ``label_efficiency.png`` to ``out_dir``.
    """
    base_params = dataclasses.asdict(base) if isinstance(base, FinetuneConfig) else dict(base or {})
    config = from_params(FinetuneConfig, {**base_params, **params, "holdout_fraction": holdout_fraction,
                                          "progress": False, "overwrite": False})
    if not seeds or not lr_grid or not label_fractions:
        raise ValueError("seeds, lr_grid and label_fractions must each name at least one value")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms = {"random": "random", "byol": str(byol_init)}
    n_runs = len(arms) * len(label_fractions) * (len(lr_grid) + len(seeds))
    bar = tqdm(total=n_runs, desc="experiment", unit="run", disable=not progress)
    rows, selection = [], []
    for arm, init in arms.items():
        for fraction in label_fractions:
            arm_config = dataclasses.replace(config, init=init, label_fraction=fraction)
            folder = out / arm / f"labels{fraction:g}"
            scores = []
            for lr in lr_grid:
                r = _run(arm_config, folder / f"select-lr{lr:g}", lr=lr, seed=seeds[0], eval_on="holdout")
                scores.append(r["miou"])
                selection.append({"arm": arm, "init": init, "label_fraction": fraction, "n_train": r["n_train"],
                                  "lr": lr, "holdout_miou": r["miou"], "run_dir": r["run_dir"]})
                bar.update(1)
            best_lr = lr_grid[int(np.nanargmax(scores))]
            for seed in seeds:
                r = _run(arm_config, folder / f"seed{seed}", lr=best_lr, seed=seed, eval_on="val")
                rows.append({"arm": arm, "init": init, "label_fraction": fraction, "n_train": r["n_train"],
                             "seed": seed, "lr": best_lr, "miou": r["miou"], "pixel_acc": r["pixel_acc"],
                             "run_dir": r["run_dir"]})
                bar.update(1)
    bar.close()
    from byol_lite.viz import plot_label_efficiency

    summary = summarize(rows)
    _write_csv(rows, out / "results.csv")
    _write_csv(selection, out / "selection.csv")
    _write_csv(summary, out / "summary.csv")
    figure = plot_label_efficiency(rows)
    figure.savefig(out / "label_efficiency.png", dpi=120)
    return ExperimentResult(rows, selection, summary, figure, out)
