"""Fine-tuning for semantic segmentation, shared by the CLI (``python -m byol_lite finetune``) and the notebooks.

The recipe is the usual one for VOC (torchvision's reference, the BYOL paper's appendix): cross-entropy
that ignores label 255, SGD with momentum 0.9 and weight decay 1e-4, a poly learning rate stepped every
iteration, optionally an auxiliary FCN head on layer3. Only the backbone's starting point (``init``)
changes between the arms of the BYOL-vs-random comparison. The step is written out below; the rest is
:class:`~byol_lite.training.loop.Trainer`'s.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

from byol_lite.config import AT_LEAST_1, IMAGE_SIDE, NON_NEGATIVE, POSITIVE, Range, RunConfig, add_command, option
from byol_lite.data.fingerprint import dataset_fingerprint
from byol_lite.data.labeled import SeededItems, labeled_split, labeled_splits
from byol_lite.data.palette import IGNORE_INDEX
from byol_lite.data.synthetic import DATASETS
from byol_lite.data.transforms import normalize, train_transforms
from byol_lite.data.voc import resolve_source
from byol_lite.method.optim import build_optimizer
from byol_lite.segmentation.evaluation import EVAL_BATCH_SIZE, evaluate
from byol_lite.segmentation.features import estimate_batchnorm_statistics
from byol_lite.segmentation.model import build_segmentation_model, save_segmentation_model
from byol_lite.training.distributed import is_main_process
from byol_lite.training.loop import BatchPlan, RunResult, Schedule, Trainer, step_seed

FRACTION = Range(0, 1, open_low=True)
# training crops whose BatchNorm statistics a frozen random encoder gets (the linear probe of random init)
FROZEN_STATISTICS_CROPS = 64


@dataclass
class FinetuneConfig(RunConfig):
    """Every setting of a fine-tuning run: the one source of defaults for the CLI, notebooks and profiles."""

    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = RunConfig.RESUMABLE_CHANGES + (
        "stop_after_steps", "eval_every", "eval_batch_size")

    data: str = option("auto", "labeled data: the embedded synthetic set or a VOC root (auto: voc when data_root "
                               "is given, else synthetic)", ["auto", "synthetic", "voc"])
    data_root: Optional[str] = option(None, "folder containing VOCdevkit/ (required for voc; for synthetic, where "
                                            "to generate it, default data/)")
    embedded: str = option("shapes", "the embedded set data=synthetic reads: shapes, or objects (classes that "
                                     "vary only as BYOL's views do)", list(DATASETS))
    train_split: str = option("train", "labeled split to train on (e.g. train, train_aug)")
    val_split: str = option("val", "split for the reported evaluation")
    init: str = option("random", "backbone start: random, byol (runs/pretrain), a pretraining run folder, "
                                 "or a torchvision-format ResNet state_dict file")
    backbone: str = option("resnet18", "torchvision ResNet (a pretraining run's own backbone wins)",
                           ["resnet18", "resnet34", "resnet50"])
    stem: str = option("auto", "small = 3x3 stride-1 stem (auto: small for crops <= 96 px; a run's own stem wins)",
                       ["auto", "small", "imagenet"])
    width: int = option(64, "channels of the first stage (a pretraining run's own width wins)", valid=AT_LEAST_1)
    output_stride: Optional[int] = option(None, "8 or 16 by dilation (resnet50 only); default: the stem's own "
                                                "stride, 16 for an ImageNet-stem resnet50", [8, 16, 32])
    head: str = option("fcn", "segmentation head (linear = one 1x1 conv)", ["fcn", "deeplabv3", "linear"])
    freeze_backbone: bool = option(False, "train only the head (with head=linear: the linear probe)")
    aux: bool = option(False, "auxiliary FCN head on layer3 during training")
    aux_weight: float = option(0.5, "weight of the auxiliary loss", valid=NON_NEGATIVE)
    # at most 255: masks are uint8 and 255 is void
    num_classes: Optional[int] = option(None, "classes incl. background (default: the dataset's, 21 for VOC)",
                                        valid=Range(1, 255))
    label_fraction: float = option(1.0, "fraction of the labeled pool to train on (nested subsets)", valid=FRACTION)
    holdout_fraction: float = option(0.0, "fraction of the labeled split held out from training, for choosing the "
                                          "LR", valid=Range(0, 1, open_high=True))
    subset_seed: int = option(0, "seed of the permutation that defines the label subsets and the held-out part",
                              valid=NON_NEGATIVE)
    eval_on: str = option("val", "evaluate on the val split or on the held-out training images (LR selection)",
                          ["val", "holdout"])
    crop_size: int = option(64, "training crop side in pixels (evaluation uses whole images)", valid=IMAGE_SIDE)
    scale_min: float = option(0.5, "smallest random rescaling factor", valid=POSITIVE)
    scale_max: float = option(2.0, "largest random rescaling factor (at least scale_min)", valid=POSITIVE)
    batch_size: int = option(16, "crops per step", valid=AT_LEAST_1)
    steps: int = option(1000, "training iterations (the poly schedule spans them)", valid=AT_LEAST_1)
    optimizer: str = option("sgd", "optimizer (biases and BatchNorm get no weight decay)", ["sgd", "adamw"])
    lr: float = option(0.01, "peak learning rate", valid=POSITIVE)
    momentum: float = option(0.9, "SGD momentum", valid=Range(0, 1, open_high=True))
    weight_decay: float = option(1e-4, "weight decay", valid=NON_NEGATIVE)
    poly_power: float = option(0.9, "poly schedule: lr * (1 - step/steps) ** power", valid=NON_NEGATIVE)
    eval_every: int = option(0, "also evaluate every N steps (0: only at the end)", valid=NON_NEGATIVE)
    eval_batch_size: int = option(EVAL_BATCH_SIZE, "images per evaluation forward pass (same-size images are "
                                                   "batched)", valid=AT_LEAST_1)
    out_dir: str = option("runs/finetune", "run folder: config, metrics.jsonl, last.pt, model.pt, done.json")
    stop_after_steps: int = option(0, "pause after this many steps (checkpointed; continue with resume)",
                                   valid=NON_NEGATIVE)

    def __post_init__(self):
        self.data = resolve_source(self.data, self.data_root, self.embedded)    # run folders record what was read
        super().__post_init__()
        if self.scale_max < self.scale_min:
            raise ValueError(f"parameter 'scale_max' is {self.scale_max}; valid range: >= scale_min ({self.scale_min})")

    def schedule(self, num_images: int) -> Schedule:
        """Steps per epoch over ``num_images`` training images, total steps, warm-up (none) and peak LR."""
        return Schedule(num_images / self.batch_size, self.steps, 0, self.lr)


def poly_lr(step: int, total: int, peak_lr: float, power: float = 0.9) -> float:
    """torchvision's segmentation schedule: ``peak_lr * (1 - step/total) ** power``, stepped per iteration."""
    return peak_lr * (1 - step / total) ** power


def _loss(logits: torch.Tensor, target: torch.Tensor, labeled: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over labeled pixels; 0 (not NaN) for a batch whose crops are all void. ``labeled``:
    the divisor, by default this batch's labeled pixels; under torchrun the mean count over processes, so that
    DDP's average of the gradients is that of the global batch's mean whatever each process's void pixels."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    if labeled is None:
        labeled = (target != IGNORE_INDEX).sum()
    return total / labeled.clamp(min=1)


def _datasets(config: FinetuneConfig, train_dataset, val_dataset):
    """The training and evaluation sets, the ids a run trains on and those held out, and the class count."""
    if (train_dataset is None) != (val_dataset is None):
        raise ValueError("pass both train_dataset and val_dataset, or neither (to use config.data)")
    if train_dataset is None:
        train_dataset, val_dataset = labeled_splits(config.data, config.data_root, config.train_split,
                                                    config.val_split, embedded=config.embedded)
    labels = getattr(train_dataset, "num_classes", None)
    num_classes = config.num_classes or labels or 21
    if labels is not None and num_classes < labels:
        raise ValueError(f"num_classes={num_classes} but {train_dataset!r} has {labels} classes: leave num_classes "
                         "unset to use the dataset's")
    train_ids, holdout_ids = labeled_split(range(len(train_dataset)), config.label_fraction,
                                           config.holdout_fraction, config.subset_seed)
    if config.eval_on == "holdout" and not holdout_ids:
        raise ValueError("eval_on=holdout needs holdout_fraction > 0 (e.g. 0.2)")
    eval_dataset = torch.utils.data.Subset(train_dataset, holdout_ids) if config.eval_on == "holdout" else val_dataset
    fingerprint = f"train {dataset_fingerprint(train_dataset)}; val {dataset_fingerprint(val_dataset)}"
    return train_dataset, eval_dataset, train_ids, holdout_ids, num_classes, fingerprint


def finetune(config: FinetuneConfig | None = None, train_dataset=None, val_dataset=None, **params) -> RunResult:
    """Runs (or resumes) fine-tuning; ``params`` override ``config`` fields by name. ``train_dataset``/
    ``val_dataset``: untransformed ``(uint8 [3,H,W], int64 [H,W])`` items (default: the config's splits)."""
    config = FinetuneConfig.of(config, **params)
    train_dataset, eval_dataset, train_ids, holdout_ids, num_classes, fingerprint = _datasets(
        config, train_dataset, val_dataset)
    trainer = Trainer(config)
    model = trainer.prepare(build_segmentation_model(
        config.init, config.backbone, config.stem, config.width, image_size=config.crop_size,
        output_stride=config.output_stride, num_classes=num_classes, head=config.head, aux=config.aux,
        freeze_backbone=config.freeze_backbone))
    spec = model.spec   # record what was resolved (auto stem, a pretraining run's architecture)
    config = dataclasses.replace(config, backbone=spec["backbone"], stem=spec["stem"], width=spec["width"],
                                 output_stride=spec["output_stride"], num_classes=num_classes)
    plan = config.schedule(len(train_ids))
    optimizer = build_optimizer(config.optimizer, model.trainable_parameters(), plan.peak_lr, config.weight_decay,
                                momentum=config.momentum)
    ctx, device, total = trainer.ctx, trainer.device, plan.total_steps
    with trainer.open(config, model, optimizer, total, fingerprint, desc=f"fine-tuning ({config.init})",
                      advice="Lower lr.", stop=config.stop_after_steps, extra={"spec": spec}):
        def run_eval() -> dict:   # on rank 0 (the others wait for its metrics)
            return ctx.on_main(lambda: evaluate(model, eval_dataset, precision=config.precision,
                                                batch_size=config.eval_batch_size, channels_last=trainer.channels_last,
                                                num_workers=config.num_workers))

        items = SeededItems(train_dataset, train_transforms(config.crop_size, (config.scale_min, config.scale_max)))
        if config.freeze_backbone and config.init == "random" and trainer.step == 0:
            # A frozen random encoder runs in eval mode with BatchNorm statistics 0 and 1, normalising nothing:
            # its probe would compare unnormalised features with a pretrained encoder's normalised ones. It
            # gets the statistics of training crops instead (its weights stay random): FROZEN_STATISTICS_CROPS
            # of them, cycling through the training images when there are fewer, each crop with its own
            # seed (negative: none of training's, and another set per run seed).
            n = FROZEN_STATISTICS_CROPS
            crops = torch.stack([items[(train_ids[k % len(train_ids)], -1 - config.seed * n - k)][0]
                                 for k in range(n)])
            estimate_batchnorm_statistics(model.backbone, crops)
        order = BatchPlan(train_ids, config.batch_size, config.seed, trainer.step, trainer.stop,
                          ctx.rows(config.batch_size), item_seeds=True)
        loader = torch.utils.data.DataLoader(items, batch_sampler=order, num_workers=config.num_workers,
                                             pin_memory=device.type == "cuda")
        metrics = trainer.finished and trainer.finished["metrics"]
        for step, (images, masks) in trainer.steps(loader):
            images = trainer.memory_format(normalize(images.to(device, non_blocking=True)))
            masks = masks.to(device, non_blocking=True)
            lr = trainer.set_lr(poly_lr(step, total, plan.peak_lr, config.poly_power))
            torch.manual_seed(step_seed(config.seed, step) + ctx.rank * 2**40)   # this step's dropout, per process
            with trainer.forward():
                out = trainer.train_model(images)
            labeled = ctx.mean((masks != IGNORE_INDEX).sum().float()) if ctx.distributed else None
            terms = {"main": _loss(out["out"], masks, labeled)}
            if config.aux:
                terms["aux"] = _loss(out["aux"], masks, labeled)
            loss = terms["main"] + config.aux_weight * terms["aux"] if config.aux else terms["main"]
            global_loss = ctx.mean(loss)   # every process takes the same decisions on it
            trainer.update(loss, global_loss, lr, lambda: {f"{k} loss": v for k, v in terms.items()})

            done, row = step + 1, None
            if done % config.log_every == 0 or done == total:
                row = {"step": done, "loss": global_loss.item(), "lr": lr, "images_per_s": trainer.throughput(done)}
            if done == total or (config.eval_every and done % config.eval_every == 0):
                metrics = run_eval()
                row = {**(row or {"step": done}), f"{config.eval_on}_miou": metrics["miou"],
                       f"{config.eval_on}_pixel_acc": metrics["pixel_acc"]}
            if row is not None:
                trainer.log(row, ("loss", f"{config.eval_on}_miou"))
        if trainer.step < total:
            return trainer.result(metrics=None)
        metrics = metrics or run_eval()   # resumed from the final checkpoint of a run that died before finishing
        if ctx.is_main and not trainer.finished:
            save_segmentation_model(model, trainer.folder.path / "model.pt")
        trainer.finish(lambda: {"steps": total, "eval_on": config.eval_on, "n_train": len(train_ids),
                                "n_holdout": len(holdout_ids), "n_eval": len(eval_dataset), "metrics": metrics,
                                "skipped_nonfinite": trainer.guard.skipped})
    return trainer.result(metrics)


def add_cli(subparsers) -> None:
    add_command(subparsers, "finetune", FinetuneConfig, _run_cli, help="fine-tune a segmentation model on labeled "
                "images", description="Segmentation fine-tuning.")


def _run_cli(config: FinetuneConfig) -> int:
    result = finetune(config)
    if is_main_process():
        m = result.metrics
        print(f"paused: {result.run_dir} (continue with --resume)" if m is None else
              f"done: {result.run_dir} mIoU {m['miou']:.4f}, pixel accuracy {m['pixel_acc']:.4f}")
    return 0
