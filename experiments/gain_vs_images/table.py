"""The gain-vs-images table from the probe and fine-tuning experiments (experiments/gain_vs_images.sh).

python table.py encoder FINETUNE_RUN OUT.pt   the backbone of a fine-tuned model, as an init= file
python table.py table OUT TABLE_DIR           OUT/{probe,finetune}/results.csv -> TABLE_DIR/results.csv,
                                              summary.csv and gain_vs_images.png; with OUT/labels/results.csv
                                              also label_efficiency.csv and .png
Runs already in TABLE_DIR/results.csv and not in OUT are kept (their run folders, from an earlier session, are
not shipped); a run in OUT replaces its stored row.
Arms are named ``random``, ``oracle`` or ``s<pretraining seed>-<images seen>``.
"""
import math
import sys
from pathlib import Path

import numpy as np

from byol_lite.checkpoint import atomic_write_csv
from byol_lite.experiment import read_results
from byol_lite.method.backbones import save_backbone
from byol_lite.segmentation.model import load_segmentation_model
from byol_lite.segmentation.viz import plot_gain_vs_images, plot_label_efficiency


def arm_fields(arm: str) -> dict:
    if arm in ("random", "oracle"):
        return {"kind": arm, "pretrain_seed": "", "images_seen": 0}
    seed, images = arm[1:].split("-")
    return {"kind": "byol", "pretrain_seed": int(seed), "images_seen": int(images)}


def runs(folder: Path, evaluation: str) -> list[dict]:
    """An experiment folder's runs as table rows."""
    return [{"evaluation": evaluation, "arm": r["arm"], **arm_fields(r["arm"]), "label_fraction": r["label_fraction"],
             "n_train": r["n_train"], "subset_seed": r["subset_seed"], "lr": r["lr"], "miou": round(r["miou"], 4),
             "pixel_acc": round(r["pixel_acc"], 4)} for r in read_results(folder)]


def table(out: Path) -> list[dict]:
    return [row for evaluation in ("probe", "finetune") if (out / evaluation / "results.csv").is_file()
            for row in runs(out / evaluation, evaluation)]


def merged(rows: list[dict], stored: Path) -> list[dict]:
    """The stored table's runs that OUT does not hold and OUT's runs, in the table's order."""
    key = lambda r: (r["evaluation"], r["arm"], r["label_fraction"], r["subset_seed"])
    fresh = {key(r) for r in rows}
    kept = [{**r, **arm_fields(r["arm"])} for r in read_results(stored.parent, stored.stem)] if stored.is_file() else []
    order = lambda r: (r["evaluation"] != "probe", ("random", "oracle", "byol").index(r["kind"]), r["images_seen"],
                       str(r["pretrain_seed"]), r["label_fraction"], r["subset_seed"])
    return sorted([r for r in kept if key(r) not in fresh] + rows, key=order)


def label_efficiency(out: Path, curve: list[dict]) -> list[dict]:
    """The probe at every label budget: OUT/labels' runs and, at 16 labels, the curve's probe runs of the same
    arms."""
    rows = runs(out / "labels", "probe")
    arms = {r["arm"] for r in rows}
    return rows + [r for r in curve if r["evaluation"] == "probe" and r["arm"] in arms]


def summary(rows: list[dict]) -> list[dict]:
    """Per evaluation and length: the mean over every run (pretraining seeds x label subsets), the SD over
    those runs and that of the pretraining seeds' means, the gain over random init, and whether the gain
    exceeds 2 SD of the two arms' run spreads combined."""
    out = []
    for evaluation in dict.fromkeys(r["evaluation"] for r in rows):
        here = [r for r in rows if r["evaluation"] == evaluation]
        random = np.array([r["miou"] for r in here if r["kind"] == "random"])
        for kind, length in dict.fromkeys((r["kind"], r["images_seen"]) for r in here):
            arm = [r for r in here if (r["kind"], r["images_seen"]) == (kind, length)]
            seeds = sorted({r["pretrain_seed"] for r in arm}, key=str)
            means = np.array([np.mean([r["miou"] for r in arm if r["pretrain_seed"] == s]) for s in seeds])
            values = np.array([r["miou"] for r in arm])
            sd = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            spread = math.sqrt(sd ** 2 + random.std(ddof=1) ** 2)
            gain = float(values.mean() - random.mean())
            seed_sd = float(means.std(ddof=1)) if len(means) > 1 else math.nan
            out.append({"evaluation": evaluation, "kind": kind, "images_seen": length, "pretrain_seeds": len(seeds),
                        "runs": len(values), "miou_mean": round(float(values.mean()), 4), "miou_sd": round(sd, 4),
                        "seed_means": " ".join(f"{m:.3f}" for m in means), "seed_sd": round(seed_sd, 4),
                        "gain_over_random": round(gain, 4) if kind != "random" else 0.0,
                        "beyond_2sd": bool(kind != "random" and gain > 2 * spread)})
    return out


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "encoder":
        run, dest = args
        save_backbone(load_segmentation_model(run).backbone, dest)
    elif command == "table":
        out, dest = Path(args[0]), Path(args[1])
        dest.mkdir(parents=True, exist_ok=True)
        rows = merged(table(out), dest / "results.csv")
        summarised = summary(rows)
        atomic_write_csv(rows, dest / "results.csv")
        atomic_write_csv(summarised, dest / "summary.csv")
        plot_gain_vs_images(rows).savefig(dest / "gain_vs_images.png", dpi=120)
        for s in summarised:
            print(s)
        if (out / "labels" / "results.csv").is_file():
            labels = label_efficiency(out, rows)
            atomic_write_csv(labels, dest / "label_efficiency.csv")
            figure = plot_label_efficiency(labels)
            figure.axes[0].set_title("frozen linear probe, by label budget")
            figure.savefig(dest / "label_efficiency.png", dpi=120)
    else:
        sys.exit(__doc__)
