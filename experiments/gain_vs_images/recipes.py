"""Does another fine-tuning recipe widen the fine-tuned gain? Each variant of finetune.yaml's recipe, for random
init and the shipped 1,024,000-image encoder, on label subset 0 (16 images), evaluated on val.

python experiments/gain_vs_images/recipes.py OUT TABLE_DIR    runs in OUT/<variant>-<arm>, the table in
                                                              TABLE_DIR/finetune_recipes.csv
One label subset: a screen for a recipe worth the full protocol (3 subsets, LR chosen on held-out images), not
a result; the subsets' SD under the base recipe is about 0.02. Finished runs are read back.
"""
import sys
from pathlib import Path

from byol_lite.checkpoint import atomic_write_csv
from byol_lite.experiment import load_experiment_file
from byol_lite.finetune import finetune

HERE = Path(__file__).parent
BYOL = "checkpoints/byol-cpu-objects"
# variant -> (changes to the recipe, LR of random init, LR of BYOL init); the base LRs are those chosen on the
# held-out images by finetune.yaml, AdamW's the usual 1e-3
VARIANTS = {
    "base": ({}, 0.03, 0.01),
    "adamw": ({"optimizer": "adamw", "weight_decay": 0.01}, 1e-3, 1e-3),
    "1000 steps": ({"steps": 1000}, 0.03, 0.01),
    "frozen encoder, FCN head": ({"freeze_backbone": True}, 0.03, 0.03),
}


def main(out: Path, table_dir: Path) -> None:
    recipe = load_experiment_file(HERE / "finetune.yaml")["recipe"]
    rows = []
    for variant, (changes, *lrs) in VARIANTS.items():
        for arm, init, lr in zip(("random", "byol"), ("random", BYOL), lrs):
            folder = out / f"{variant.replace(' ', '-').replace(',', '')}-{arm}"
            result = finetune(**{**recipe, **changes, "init": init, "lr": lr, "label_fraction": 0.05,
                                 "holdout_fraction": 0.2, "subset_seed": 0, "seed": 0, "out_dir": str(folder),
                                 "resume": True})
            rows.append({"variant": variant, "arm": arm, "lr": lr, "subset_seed": 0,
                         "val_miou": round(result.metrics["miou"], 4)})
            print(rows[-1], flush=True)
    atomic_write_csv(rows, table_dir / "finetune_recipes.csv")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
