"""Fine-tuning for semantic segmentation and its evaluation, shared by the CLI and the notebooks.

The recipe is the usual one for VOC (torchvision's reference, the BYOL paper's appendix): cross-entropy
that ignores label 255, SGD with momentum 0.9 and weight decay 1e-4, a poly learning rate stepped every
iteration, optionally an auxiliary FCN head on layer3. Only the backbone's starting point (``init``)
changes between the arms of the BYOL-vs-random comparison.

Reproducibility: which labeled images a run may use is a prefix of ONE permutation seeded by
``subset_seed`` (so the 5% subset lies inside the 10% one, and the held-out images used for choosing the
learning rate are never among them); the batch of step s is drawn from the permutation of its epoch and
every image's augmentation, like dropout, from seeds derived from (seed, step). A resumed run therefore
takes exactly the path of an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from byol_lite.config import add_arguments, from_args, from_params, load_yaml_params, option
from byol_lite.data.voc import resolve_source
from byol_lite.training.distributed import is_main_process, setup as setup_distributed
from byol_lite.segmentation.metrics import ConfusionMatrix
from byol_lite.method.optim import build_optimizer
from byol_lite.training.runs import (NonFiniteGuard, RunDir, autocast, dataset_fingerprint, format_postfix, pick_device,
                             resolve_channels_last, seed_all)
from byol_lite.segmentation.model import (SegmentationModel, build_segmentation_model, load_segmentation_model, normalize,
                                    predict_masks, save_segmentation_model)

IGNORE_INDEX = 255


@dataclass
class FinetuneConfig:
    """Every setting of a fine-tuning run: the one source of defaults for the CLI, notebooks and profiles."""

    data: str = option("auto", "labeled data: the embedded synthetic set or a VOC root (auto: voc when data_root "
                               "is given, else synthetic)", ["auto", "synthetic", "voc"])
    data_root: Optional[str] = option(None, "folder containing VOCdevkit/ (required for voc; for synthetic, where "
                                        "to generate it, default data/)")
    train_split: str = option("train", "labeled split to train on (e.g. train, train_aug)")
    val_split: str = option("val", "split for the reported evaluation")
    init: str = option("random", "backbone start: random, byol (runs/pretrain), a pretraining run folder, "
                             "or a torchvision-format ResNet state_dict file")
    backbone: str = option("resnet18", "torchvision ResNet (a pretraining run's own backbone wins)",
                       ["resnet18", "resnet34", "resnet50"])
    stem: str = option("auto", "small = 3x3 stride-1 stem (auto: small for crops <= 96 px; a run's own stem wins)",
                   ["auto", "small", "imagenet"])
    width: int = option(64, "channels of the first stage (a pretraining run's own width wins)")
    output_stride: Optional[int] = option(None, "8 or 16 by dilation (resnet50 only); default: the stem's own stride, "
                                            "16 for an ImageNet-stem resnet50")
    head: str = option("fcn", "segmentation head (linear = one 1x1 conv)", ["fcn", "deeplabv3", "linear"])
    freeze_backbone: bool = option(False, "train only the head (with head=linear: the linear probe)")
    aux: bool = option(False, "auxiliary FCN head on layer3 during training")
    aux_weight: float = option(0.5, "weight of the auxiliary loss")
    num_classes: Optional[int] = option(None, "classes incl. background (default: the dataset's, 21 for VOC)")
    label_fraction: float = option(1.0, "fraction of the labeled pool to train on (nested subsets)")
    holdout_fraction: float = option(0.0, "fraction of the labeled split held out from training, for choosing the LR")
    subset_seed: int = option(0, "seed of the permutation that defines the label subsets and the held-out part")
    eval_on: str = option("val", "evaluate on the val split or on the held-out training images (LR selection)",
                      ["val", "holdout"])
    crop_size: int = option(64, "training crop side in pixels (evaluation uses whole images)")
    scale_min: float = option(0.5, "smallest random rescaling factor")
    scale_max: float = option(2.0, "largest random rescaling factor")
    batch_size: int = option(16, "crops per step")
    steps: int = option(1000, "training iterations (the poly schedule spans them)")
    optimizer: str = option("sgd", "optimizer (biases and BatchNorm get no weight decay)", ["sgd", "adamw"])
    lr: float = option(0.01, "peak learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(1e-4, "weight decay")
    poly_power: float = option(0.9, "poly schedule: lr * (1 - step/steps) ** power")
    eval_every: int = option(0, "also evaluate every N steps (0: only at the end)")
    eval_batch_size: int = option(8, "images per evaluation forward pass (same-size images are batched)")
    device: str = option("auto", "cuda, cpu, or auto (CUDA when present)")
    precision: str = option("auto", "auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), "
                                    "fp32 or bf16", ["auto", "fp32", "bf16"])
    channels_last: Optional[bool] = option(None, "channels_last memory format; unset: on (only speed changes)")
    num_workers: int = option(0, "DataLoader worker processes")
    seed: int = option(0, "seed of the head's initialisation, batch order, augmentation and dropout")
    out_dir: str = option("runs/finetune", "run folder: config, metrics.jsonl, last.pt, model.pt, done.json")
    log_every: int = option(10, "log training metrics every N steps")
    checkpoint_every: int = option(100, "write a checkpoint every N steps")
    stop_after_steps: int = option(0, "pause after this many steps (checkpointed; continue with resume)")
    skip_nonfinite: bool = option(False, "skip a batch whose loss or gradients are NaN/inf (counted) instead of "
                                     "stopping the run")
    resume: bool = option(False, "continue the run in out_dir from its last checkpoint")
    overwrite: bool = option(False, "start again in out_dir (the old folder is kept aside)")
    force_resume: bool = option(False, "resume even if settings differ from the run's")
    progress: bool = option(True, "show a progress bar")
    sync_batchnorm: bool = option(True, "under torchrun with several processes: BatchNorm statistics over the "
                                        "global batch (SyncBatchNorm); no effect in one process")

    def __post_init__(self):
        self.data = resolve_source(self.data, self.data_root)    # run folders record what was read


# Settings that may change when a run is resumed: they do not alter the trajectory.
RESUMABLE_CHANGES = ("device", "num_workers", "log_every", "progress", "checkpoint_every", "stop_after_steps",
                     "eval_every", "eval_batch_size", "skip_nonfinite")


# --------------------------------------------------------------------------- label subsets
def _count(fraction: float, n: int, what: str) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"{what} must be in (0, 1], got {fraction}")
    return max(1, round(fraction * n))


def labeled_split(ids: Sequence, fraction: float = 1.0, holdout_fraction: float = 0.0,
                  seed: int = 0) -> tuple[list, list]:
    """``(train, holdout)`` from one permutation of ``ids`` seeded by ``seed``.

    The held-out part is the permutation's tail and the training subset a prefix of the rest, so subsets
    for growing ``fraction`` are nested and never touch the held-out images.
    """
    ids = list(ids)
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    n_holdout = round(holdout_fraction * len(ids))
    pool, holdout = order[: len(ids) - n_holdout], order[len(ids) - n_holdout:]
    if not pool:
        raise ValueError(f"holdout_fraction={holdout_fraction} leaves none of the {len(ids)} labeled images "
                         "to train on")
    train = pool[: _count(fraction, len(pool), "label_fraction")]
    return [ids[i] for i in train], [ids[i] for i in holdout]


def label_subset(ids: Sequence, fraction: float, seed: int = 0) -> list:
    """The first ``round(fraction * len(ids))`` ids (at least one) of the permutation seeded by ``seed``."""
    return labeled_split(ids, fraction, 0.0, seed)[0]


# --------------------------------------------------------------------------- data
class _Transformed(torch.utils.data.Dataset):
    """Items ``(index, seed)`` → ``transform(*base[index])`` with the CPU RNG seeded by ``seed``.

    The augmentation of an item then depends on its seed only, not on the worker process or on what
    ran before, which is what makes resuming exact. The caller's RNG state is left untouched.
    """

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(*self.base[index])


class _BatchPlan:
    """The keys of the batches of steps ``start..total-1``: consecutive slices of an endless stream of
    per-epoch permutations of ``indices`` (epoch e seeded by (seed, e)), each item with its own seed.

    ``rows``: this process's part of every batch under torchrun (disjoint shards of one permutation)."""

    def __init__(self, indices: list[int], batch_size: int, seed: int, start: int, total: int,
                 rows: slice = slice(None)):
        self.indices, self.batch_size, self.seed, self.start, self.total = indices, batch_size, seed, start, total
        self.rows = rows

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        n, epoch, perm = len(self.indices), None, None
        for step in range(self.start, self.total):
            keys = []
            for j in range(self.batch_size):
                e, offset = divmod(step * self.batch_size + j, n)
                if e != epoch:
                    gen = torch.Generator().manual_seed(self.seed * 100_003 + e)
                    epoch, perm = e, torch.randperm(n, generator=gen).tolist()
                keys.append((self.indices[perm[offset]], (self.seed * 1_000_003 + step) * 4096 + j))
            yield keys[self.rows]


def resolve_data_root(data: str, data_root: str | None):
    """The folder containing VOCdevkit/: the embedded synthetic set (generated on first use) or the user's VOC."""
    from byol_lite.data import ensure_synthetic

    if data == "synthetic":
        return ensure_synthetic(data_root)
    if data_root is None:
        raise ValueError("data=voc needs data_root: the folder that contains VOCdevkit/ (--data-root DIR)")
    return data_root


def _load_datasets(config: FinetuneConfig):
    from byol_lite.data import VOCSegmentation

    root = resolve_data_root(config.data, config.data_root)
    return VOCSegmentation(root, config.train_split), VOCSegmentation(root, config.val_split)


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: SegmentationModel, dataset, device: str | torch.device | None = None, precision: str = "auto",
             batch_size: int = 8, channels_last: bool | None = None, num_workers: int = 0,
             progress: bool = False) -> dict:
    """One confusion matrix over the whole of ``dataset`` (items ``(uint8 image, int64 mask)``, any sizes).

    Each image is segmented whole (images larger than the training crop included); same-size images
    share a forward pass. Returns :meth:`ConfusionMatrix.compute`'s dict plus ``confusion_matrix``
    (rows = ground truth) as nested lists.
    """
    labels = getattr(dataset, "num_classes", model.num_classes)
    if labels != model.num_classes:
        raise ValueError(f"the model predicts {model.num_classes} classes but {dataset!r} has {labels}: evaluate "
                         "on data labeled like the data it was fine-tuned on")
    device = next(model.parameters()).device if device is None else pick_device(str(device))
    model.to(device)
    channels_last = resolve_channels_last(device, channels_last)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(model.num_classes, ignore_index=IGNORE_INDEX)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                                         collate_fn=list)
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
    model.train(was_training)
    return {**cm.compute(), "confusion_matrix": cm.matrix.tolist()}


# --------------------------------------------------------------------------- training
def poly_lr(step: int, total: int, peak_lr: float, power: float = 0.9) -> float:
    """torchvision's segmentation schedule: ``peak_lr * (1 - step/total) ** power``, stepped per iteration."""
    return peak_lr * (1 - step / total) ** power


def _loss(logits: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over labeled pixels; 0 (not NaN) for a batch whose crops are all void.

    ``labeled``: the divisor, by default this batch's labeled pixels. Under torchrun the loop passes the
    mean count over processes: DDP's average of the gradients is then that of the global batch's mean,
    even when the processes' crops hold different numbers of void pixels.
    """
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    if labeled is None:
        labeled = (target != IGNORE_INDEX).sum()
    return total / labeled.clamp(min=1)


def finetune(config: FinetuneConfig | None = None, train_dataset=None, val_dataset=None, **params) -> dict:
    """Runs (or resumes) fine-tuning; ``params`` override ``config`` fields by name.

    ``train_dataset``/``val_dataset``: optional labeled datasets of ``(uint8 [3,H,W], int64 [H,W])`` items,
    untransformed (random scale/crop/flip are applied here); by default the splits named by the config.
    Returns ``{"history": rows of metrics.jsonl, "metrics": the final evaluation (None when paused by
    stop_after_steps), "run_dir": Path, "model": the SegmentationModel}``.
    """
    from byol_lite.data import train_transforms

    config = from_params(FinetuneConfig, {**dataclasses.asdict(config or FinetuneConfig()), **params})
    if (train_dataset is None) != (val_dataset is None):
        raise ValueError("pass both train_dataset and val_dataset, or neither (to use config.data)")
    if train_dataset is None:
        train_dataset, val_dataset = _load_datasets(config)
    labels = getattr(train_dataset, "num_classes", None)
    num_classes = config.num_classes or labels or 21
    if labels is not None and num_classes < labels:
        raise ValueError(f"num_classes={num_classes} but {train_dataset!r} has {labels} classes: leave num_classes "
                         "unset to use the dataset's")
    train_ids, holdout_ids = labeled_split(range(len(train_dataset)), config.label_fraction,
                                           config.holdout_fraction, config.subset_seed)
    if config.eval_on == "holdout":
        if not holdout_ids:
            raise ValueError("eval_on=holdout needs holdout_fraction > 0 (e.g. 0.2)")
        eval_dataset = torch.utils.data.Subset(train_dataset, holdout_ids)
    else:
        eval_dataset = val_dataset

    ctx = setup_distributed(config.device)    # one process unless started by torchrun
    device = ctx.device
    rows = ctx.rows(config.batch_size)
    channels_last = resolve_channels_last(device, config.channels_last)
    seed_all(config.seed)
    model = build_segmentation_model(config.init, config.backbone, config.stem, config.width,
                                     image_size=config.crop_size, output_stride=config.output_stride,
                                     num_classes=num_classes, head=config.head, aux=config.aux,
                                     freeze_backbone=config.freeze_backbone)
    model = ctx.sync_batchnorm(model, config.sync_batchnorm)
    spec = model.spec   # record what was resolved (auto stem, a pretraining run's architecture)
    config = dataclasses.replace(config, backbone=spec["backbone"], stem=spec["stem"], width=spec["width"],
                                 output_stride=spec["output_stride"], num_classes=num_classes)
    run = ctx.on_main(lambda: RunDir(
        config.out_dir, dataclasses.asdict(config), resume=config.resume, overwrite=config.overwrite,
        resumable_changes=RESUMABLE_CHANGES, force_resume=config.force_resume,
        defaults=dataclasses.asdict(FinetuneConfig()),
        dataset=f"train {dataset_fingerprint(train_dataset)}; val {dataset_fingerprint(val_dataset)}"))
    finished = ctx.on_main(lambda: run.done and {
        "history": run.read_metrics(), "metrics": json.loads((run.path / "done.json").read_text())["metrics"],
        "run_dir": run.path, "model": load_segmentation_model(run.path)})
    if finished:
        return finished

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config.optimizer, model.trainable_parameters(), config.lr, config.weight_decay,
                                momentum=config.momentum)
    step, history, state = ctx.on_main(lambda: run.restore(model, optimizer) if config.resume else (0, [], {}))
    if state and not ctx.is_main:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    guard = NonFiniteGuard(run, config.skip_nonfinite, skipped=state.get("skipped_nonfinite", 0),
                           advice="Lower lr.")

    def save():
        guard.check_weights(step, model)
        ctx.check_replicas(model, step)
        if ctx.is_main:
            run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                 "spec": model.spec, "config": dataclasses.asdict(config),
                                 "skipped_nonfinite": guard.skipped})

    def run_eval() -> dict:   # on rank 0 (the others wait for its metrics)
        return ctx.on_main(lambda: evaluate(model, eval_dataset, precision=config.precision,
                                            batch_size=config.eval_batch_size, channels_last=channels_last,
                                            num_workers=config.num_workers))

    total = config.steps
    stop = min(total, config.stop_after_steps) if config.stop_after_steps else total
    items = _Transformed(train_dataset, train_transforms(config.crop_size, (config.scale_min, config.scale_max)))
    plan = _BatchPlan(train_ids, config.batch_size, config.seed, step, stop, rows)
    loader = torch.utils.data.DataLoader(items, batch_sampler=plan, num_workers=config.num_workers,
                                         pin_memory=device.type == "cuda")
    train_model = ctx.ddp(model)   # what the step calls: DDP averages the gradients over processes
    model.train()
    bar = tqdm(total=total, initial=step, desc=f"fine-tuning ({config.init})", unit="step",
               disable=not (config.progress and ctx.is_main))
    tick, seen, metrics = time.perf_counter(), 0, None
    for images, masks in loader:
        images = normalize(images.to(device, non_blocking=True))
        masks = masks.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        lr = poly_lr(step, total, config.lr, config.poly_power)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # dropout of this step, whatever came before; its own on every process
        torch.manual_seed(config.seed * 1_000_003 + step + ctx.rank * 2**40)
        guard.before_forward(model)
        with autocast(device, config.precision):
            out = train_model(images)
        labeled = ctx.mean((masks != IGNORE_INDEX).sum().float()) if ctx.distributed else None
        terms = {"main": _loss(out["out"], masks, labeled)}
        if config.aux:
            terms["aux"] = _loss(out["aux"], masks, labeled)
        loss = terms["main"] + config.aux_weight * terms["aux"] if config.aux else terms["main"]
        global_loss = ctx.mean(loss)   # every process takes the same decisions on it
        if guard.loss_ok(step, lr, global_loss, lambda: {f"{k} loss": v for k, v in terms.items()}):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if guard.grads_ok(step, lr, global_loss, model.named_parameters()):
                optimizer.step()
        step += 1
        seen += images.shape[0] * ctx.world_size
        bar.update(1)

        row = None
        if step % config.log_every == 0 or step == total:
            now = time.perf_counter()
            row = {"step": step, "loss": global_loss.item(), "lr": lr, "images_per_s": seen / (now - tick),
                   "skipped_nonfinite": guard.skipped}
            tick, seen = now, 0
        if step == total or (config.eval_every and step % config.eval_every == 0):
            metrics = run_eval()
            row = {**(row or {"step": step, "skipped_nonfinite": guard.skipped}),
                   f"{config.eval_on}_miou": metrics["miou"], f"{config.eval_on}_pixel_acc": metrics["pixel_acc"]}
        if row is not None and ctx.is_main:
            row = run.log(row)
            history.append(row)
            bar.set_postfix(format_postfix(row, ("loss", f"{config.eval_on}_miou")))
        if step % config.checkpoint_every == 0 or step in (stop, total):
            save()
    bar.close()
    if step < total:
        return {"history": history, "metrics": None, "run_dir": run.path, "model": model}
    if metrics is None:   # resumed from the final checkpoint of a run that died before finishing
        metrics = run_eval()
    if ctx.is_main:
        save_segmentation_model(model, run.path / "model.pt")
        run.mark_done({"steps": total, "eval_on": config.eval_on, "n_train": len(train_ids),
                       "n_holdout": len(holdout_ids), "n_eval": len(eval_dataset), "metrics": metrics,
                       "skipped_nonfinite": guard.skipped})
    return {"history": history, "metrics": metrics, "run_dir": run.path, "model": model}


# --------------------------------------------------------------------------- command line
def add_cli(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a segmentation model on labeled images",
                              description="Segmentation fine-tuning. --params FILE.yaml sets values from a "
                                          "profile; options typed on the command line win.")
    p.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters")
    add_arguments(p, FinetuneConfig)
    p.set_defaults(func=_run_finetune)

    defaults = FinetuneConfig()
    e = subparsers.add_parser("evaluate", help="mIoU of a fine-tuned model on a labeled split",
                              description="Whole-image evaluation: per-class IoU, mIoU, pixel accuracy. Data "
                                          "settings default to the fine-tuning run's own when --checkpoint is "
                                          "a run folder.")
    e.add_argument("--checkpoint", required=True, help="fine-tuning run folder, model.pt or last.pt")
    e.add_argument("--data", choices=["auto", "synthetic", "voc"],
                   help="labeled data (default: the run's, else auto: voc when --data-root is given)")
    e.add_argument("--data-root", help="folder containing VOCdevkit/ (default: the run's)")
    e.add_argument("--split", help=f"split to evaluate (default: the run's val_split, else {defaults.val_split})")
    e.add_argument("--device", default="auto", help="cuda, cpu, or auto (default: auto)")
    e.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="default: auto")
    e.add_argument("--batch-size", type=int, default=defaults.eval_batch_size, help="images per forward pass")
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


def _run_finetune(args) -> int:
    profile = load_yaml_params(args.params) if args.params else None
    result = finetune(from_args(FinetuneConfig, args, profile))
    m = result["metrics"]
    if not is_main_process():
        return 0
    if m is None:
        print(f"paused: {result['run_dir']} (continue with --resume)")
    else:
        print(f"done: {result['run_dir']} mIoU {m['miou']:.4f}, pixel accuracy {m['pixel_acc']:.4f}")
    return 0


def _run_evaluate(args) -> int:
    from byol_lite.data import VOCSegmentation

    ckpt = Path(args.checkpoint)
    model = load_segmentation_model(ckpt)
    run_cfg = ckpt / "config.json" if ckpt.is_dir() else ckpt.parent / "config.json"
    cfg = json.loads(run_cfg.read_text()) if run_cfg.is_file() else {}
    data_root = args.data_root or cfg.get("data_root")
    data = resolve_source(args.data or cfg.get("data", "auto"), data_root)
    split = args.split or cfg.get("val_split", "val")
    dataset = VOCSegmentation(resolve_data_root(data, data_root), split)
    metrics = evaluate(model, dataset, device=args.device, precision=args.precision, batch_size=args.batch_size,
                       progress=True)
    names = getattr(dataset, "classes", [str(i) for i in range(len(metrics["iou"]))])
    for name, iou in zip(names, metrics["iou"]):
        print(f"{name:>14s}  {'absent' if math.isnan(iou) else f'{iou:.4f}'}")
    print(f"mIoU {metrics['miou']:.4f}  pixel accuracy {metrics['pixel_acc']:.4f}  ({len(dataset)} images, {split})")
    if args.out:
        from byol_lite.checkpoint import atomic_write_json

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
