"""How good a segmentation model is, and what it predicts: mIoU over a whole split (one confusion matrix,
VOC's protocol, each image segmented whole at its own size), masks for images, and the ``evaluate`` /
``predict`` sub-commands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from byol_lite.checkpoint import atomic_write_json
from byol_lite.config import AT_LEAST_1, bounded
from byol_lite.data.palette import IGNORE_INDEX
from byol_lite.data.transforms import normalize
from byol_lite.device import autocast, eval_mode, pick_device, resolve_channels_last
from byol_lite.segmentation.metrics import ConfusionMatrix
from byol_lite.segmentation.model import SegmentationModel, load_segmentation_model

EVAL_BATCH_SIZE = 8     # images per forward pass (same-size images are batched)


@torch.no_grad()
def evaluate(model: SegmentationModel, dataset, device: str | torch.device | None = None, precision: str = "auto",
             batch_size: int = EVAL_BATCH_SIZE, channels_last: bool | None = None, num_workers: int = 0,
             progress: bool = False) -> dict:
    """One confusion matrix over ``dataset`` (``(uint8 image, int64 mask)`` items of any size, each segmented
    whole; same-size images share a forward pass): :meth:`ConfusionMatrix.compute`'s dict plus
    ``confusion_matrix`` (rows = ground truth) as nested lists."""
    labels = getattr(dataset, "num_classes", model.num_classes)
    if labels != model.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes but {dataset!r} has {labels}: evaluate "
                         "on data labeled like the data it was fine-tuned on")
    device = next(model.parameters()).device if device is None else pick_device(str(device))
    model.to(device)
    channels_last = resolve_channels_last(device, channels_last)
    cm = ConfusionMatrix(model.num_classes, ignore_index=IGNORE_INDEX)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    with eval_mode(model):
        for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress, leave=False):
            groups: dict[tuple, list] = {}
            for image, mask in batch:
                groups.setdefault(tuple(image.shape), []).append((image, mask))
            for items in groups.values():
                images = normalize(torch.stack([im for im, _ in items]).to(device))
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, precision):
                    logits = model(images)["out"]
                cm.update(logits.argmax(1), torch.stack([m for _, m in items]).to(device))
    return {**cm.compute(), "confusion_matrix": cm.matrix.tolist()}


@torch.no_grad()
def predict_masks(model: SegmentationModel, images: torch.Tensor) -> torch.Tensor:
    """uint8 images ``[N, 3, H, W]`` (any size: whole-image inference) → class indices ``[N, H, W]``."""
    with eval_mode(model):
        return model(normalize(images.to(next(model.parameters()).device)))["out"].argmax(1)


def add_cli(subparsers) -> None:
    e = subparsers.add_parser("evaluate", help="mIoU of a fine-tuned model on a labeled split",
                              description="Whole-image evaluation: per-class IoU, mIoU, pixel accuracy. Data "
                                          "settings default to the fine-tuning run's own when --checkpoint is "
                                          "a run folder.")
    e.add_argument("--checkpoint", required=True, help="fine-tuning run folder, model.pt or last.pt")
    e.add_argument("--data", choices=["auto", "synthetic", "voc"],
                   help="labeled data (default: the run's, else auto: voc when --data-root is given)")
    e.add_argument("--data-root", help="folder containing VOCdevkit/ (default: the run's)")
    e.add_argument("--split", help="split to evaluate (default: the run's val_split, else val)")
    e.add_argument("--device", default="auto", help="cuda, cpu, or auto (default: auto)")
    e.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="default: auto")
    e.add_argument("--batch-size", type=bounded("batch_size", int, AT_LEAST_1), default=EVAL_BATCH_SIZE,
                   help="images per forward pass")
    e.add_argument("--out", metavar="FILE.json", help="also write the metrics and confusion matrix here")
    e.set_defaults(func=_run_evaluate)

    r = subparsers.add_parser("predict", help="segment images, writing VOC palette PNGs",
                              description="Writes OUT/<image name>.png: an 8-bit palette PNG of class indices "
                                          "with the VOC colours, as VOC's SegmentationClass stores them.")
    r.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    r.add_argument("--checkpoint", required=True, help="fine-tuning run folder, model.pt or last.pt")
    r.add_argument("--out", required=True, metavar="DIR", help="output folder")
    r.add_argument("--device", default="auto", help="cuda, cpu, or auto (default: auto)")
    r.set_defaults(func=_run_predict)


def _run_evaluate(args) -> int:
    from byol_lite.data.labeled import labeled_splits
    from byol_lite.data.voc import resolve_source

    ckpt = Path(args.checkpoint)
    model = load_segmentation_model(ckpt)
    run_cfg = ckpt / "config.json" if ckpt.is_dir() else ckpt.parent / "config.json"
    cfg = json.loads(run_cfg.read_text()) if run_cfg.is_file() else {}
    data_root = args.data_root or cfg.get("data_root")
    split = args.split or cfg.get("val_split", "val")
    [dataset] = labeled_splits(resolve_source(args.data or cfg.get("data", "auto"), data_root), data_root, split,
                               embedded=cfg.get("embedded", "shapes"))
    metrics = evaluate(model, dataset, device=args.device, precision=args.precision, batch_size=args.batch_size,
                       progress=True)
    names = getattr(dataset, "classes", [str(i) for i in range(len(metrics["iou"]))])
    for name, iou in zip(names, metrics["iou"]):
        print(f"{name:>14s}  {'absent' if math.isnan(iou) else f'{iou:.4f}'}")
    print(f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_acc']:.4f}  ({len(dataset)} images, {split})")
    if args.out:
        atomic_write_json({**metrics, "split": split, "checkpoint": str(ckpt), "classes": list(names)}, args.out)
    return 0


def _run_predict(args) -> int:
    from byol_lite.data.palette import save_mask
    from byol_lite.data.voc import read_image

    paths = [Path(p) for p in args.images]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such image file(s): {', '.join(missing)}")
    stems = [p.stem for p in paths]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise ValueError(f"several input images share the name(s) {', '.join(clashes)}: their outputs would "
                         "overwrite each other in --out; predict them into separate folders")
    model = load_segmentation_model(args.checkpoint).to(pick_device(args.device))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in paths:
        mask = predict_masks(model, read_image(path)[None])[0]
        save_mask(mask.to(torch.uint8).cpu(), out / f"{path.stem}.png")
        print(out / f"{path.stem}.png")
    return 0
