"""The BYOL pretraining loop, shared by the CLI (``python -m byol_lite pretrain``) and the notebooks.

The step is written out below: two views of a batch, the online and target networks, the symmetric
loss, the guarded update and the EMA of the target; the rest is :class:`~byol_lite.training.loop.Trainer`'s.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

import torch

from byol_lite.config import (AT_LEAST_1, IMAGE_SIDE, NON_NEGATIVE, POSITIVE, UNIT, ParameterError, Range, RunConfig,
                              add_command, option, probability)
from byol_lite.data.fingerprint import dataset_fingerprint
from byol_lite.data.synthetic import DATASETS
from byol_lite.data.unlabeled import in_memory, unlabeled_dataset
from byol_lite.data.voc import resolve_source
from byol_lite.method.augment import BYOLAugment, paper_views
from byol_lite.method.backbones import PRETRAIN_RUN, build_backbone, save_backbone
from byol_lite.method.byol import BYOL, PREDICTOR_SIDES, BYOLOutput, cosine_tau
from byol_lite.method.diagnostics import collapse_std, feature_rank
from byol_lite.method.object_level import ObjectBYOL, region_views, with_regions
from byol_lite.method.view_norm import split_batch_norm_by_view
from byol_lite.method.optim import build_optimizer, scaled_lr, warmup_cosine
from byol_lite.training.distributed import is_main_process
from byol_lite.training.loop import BatchPlan, RunResult, Schedule, Trainer, step_seed


@dataclass
class PretrainConfig(RunConfig):
    """Every setting of a pretraining run. Defaults follow the paper where it makes sense on a laptop."""

    RESUMABLE_CHANGES: ClassVar[tuple[str, ...]] = RunConfig.RESUMABLE_CHANGES + ("rank_every", "snapshot_images",
                                                                                    "stop_after_steps")

    data: str = option("auto", "unlabeled images: the embedded synthetic set, a VOC root, or a folder tree "
                               "(auto: voc when data_root is given, else synthetic)",
                       ["auto", "synthetic", "voc", "folder"])
    data_root: Optional[str] = option(None, "folder containing VOCdevkit/ (voc), the image folder (folder), "
                                            "or where to generate the synthetic set (default data/)")
    embedded: str = option("shapes", "the embedded set data=synthetic reads: shapes, or objects (classes that "
                                     "vary only as BYOL's views do)", list(DATASETS))
    data_split: Optional[str] = option(None, "VOC list to take images from (default trainval; e.g. train_aug)")
    backbone: str = option("resnet18", "torchvision ResNet", ["resnet18", "resnet34", "resnet50"])
    stem: str = option("auto", "small = 3x3 stride-1 stem without max-pool (auto: small for <= 96 px)",
                       ["auto", "small", "imagenet"])
    width: int = option(64, "channels of the first stage (64 = torchvision's ResNet)", valid=AT_LEAST_1)
    image_size: int = option(64, "side of each augmented view in pixels", valid=IMAGE_SIDE)
    proj_hidden: int = option(4096, "projector hidden size (paper: 4096)", valid=AT_LEAST_1)
    proj_dim: int = option(256, "projection size (paper: 256)", valid=AT_LEAST_1)
    pred_hidden: int = option(4096, "predictor hidden size (paper: 4096)", valid=AT_LEAST_1)
    predictor: bool = option(True, "use the online predictor (without it, and with tau=0, BYOL collapses)")
    predictor_side: str = option("online", "where the predictor sits: online (the paper) or target (the seed "
                                 "article's error, an ablation: a frozen random predictor after the target's "
                                 "projector, none online)", list(PREDICTOR_SIDES))
    fuse_views: bool = option(True, "forward both views as one batch, each normalised by its own BatchNorm "
                                    "statistics: the values of separate forwards in fewer, larger kernels "
                                    "(byol_lite.method.view_norm)")
    objective: str = option("global", "global: BYOL on whole images; object: the BYOL loss per unsupervised "
                                      "region, DetCon-B without negatives (byol_lite.method.object_level)",
                            ["global", "object"])
    num_regions: int = option(8, "objective=object: regions per image (Felzenszwalb segments merged to this many)",
                              valid=Range(1, 255))
    fh_scale: float = option(100.0, "objective=object: Felzenszwalb scale (higher: fewer, larger segments)",
                             valid=POSITIVE)
    # 2 at least: the heads' BatchNorm needs two samples to normalise
    batch_size: int = option(64, "images per step (each gives two views)", valid=Range(2))
    epochs: int = option(10, "passes over the unlabeled images", valid=AT_LEAST_1)
    max_steps: int = option(0, "stop after this many steps instead (0: epochs decide)", valid=NON_NEGATIVE)
    optimizer: str = option("lars", "optimizer", ["lars", "sgd", "adamw"])
    base_lr: float = option(0.45, "learning rate per 256 images (LR = base_lr * batch_size / 256)", valid=POSITIVE)
    weight_decay: float = option(1e-6, "weight decay on weights (not biases/BatchNorm)", valid=NON_NEGATIVE)
    warmup_epochs: float = option(1.0, "linear LR warm-up, then cosine decay", valid=NON_NEGATIVE)
    base_tau: float = option(0.99, "EMA coefficient at step 0 (cosine schedule rises to 1)", valid=UNIT)
    tau_schedule: str = option("cosine", "cosine (paper) or constant tau", ["cosine", "constant"])
    crop_min_scale: float = option(0.08, "smallest crop area fraction", valid=Range(0, 1, open_low=True))
    jitter_strength: float = option(1.0, "multiplier of the colour-jitter strengths", valid=NON_NEGATIVE)
    hue: float = option(0.1, "largest hue shift of the colour jitter, fraction of a turn, before jitter_strength "
                                "scales it (paper 0.1; 0.5: any hue)", valid=Range(0, 0.5))
    rotation: float = option(0.0, "largest rotation of each view in degrees, reflected borders (0: none, the paper; "
                                  "180: any angle)", valid=Range(0, 180))
    blur_p1: float = probability(1.0, "blur probability, view 1")
    blur_p2: float = probability(0.1, "blur probability, view 2")
    solarize_p1: float = probability(0.0, "solarize probability, view 1")
    solarize_p2: float = probability(0.2, "solarize probability, view 2")
    out_dir: str = option(PRETRAIN_RUN, "run folder: config, metrics.jsonl, last.pt, backbone.pt, snapshots/")
    rank_every: int = option(100, "measure the features' effective rank every N steps (0: never)", valid=NON_NEGATIVE)
    stop_after_steps: int = option(0, "pause after this many steps (checkpointed; continue with resume): a long "
                                      "run in parts, its schedule unchanged", valid=NON_NEGATIVE)
    snapshot_images: str = option("", "images seen at which the online encoder is also written to "
                                      "snapshots/backbone-<images>.pt, comma-separated (e.g. 38400,153600,614400)")

    def __post_init__(self):
        self.data = resolve_source(self.data, self.data_root, self.embedded)    # run folders record what was read
        super().__post_init__()
        self.snapshot_images = ",".join(map(str, self.snapshots()))

    def snapshots(self) -> tuple[int, ...]:
        """The ``snapshot_images`` counts, ascending, without repeats (a string field: configs hold no tuples)."""
        parts = [v.strip() for v in self.snapshot_images.split(",") if v.strip()]
        if not all(v.isdigit() and int(v) > 0 for v in parts):
            raise ParameterError(f"parameter 'snapshot_images' is {self.snapshot_images!r}; valid values: positive "
                                 "whole numbers of images, comma-separated (e.g. 38400,153600,614400)")
        return tuple(sorted({int(v) for v in parts}))

    def tau(self, step: int, total_steps: int) -> float:
        """The target's EMA rate at ``step`` of ``total_steps``: cosine from base_tau to 1, or base_tau throughout."""
        return cosine_tau(step, total_steps, self.base_tau) if self.tau_schedule == "cosine" else self.base_tau

    def schedule(self, num_images: int) -> Schedule:
        """Steps per epoch (whole batches of the images), total steps, warm-up steps and peak LR of this run."""
        steps_per_epoch = num_images // self.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"only {num_images} images for batch_size={self.batch_size}: lower the batch size")
        return Schedule(steps_per_epoch, self.max_steps or self.epochs * steps_per_epoch,
                        round(self.warmup_epochs * steps_per_epoch), scaled_lr(self.base_lr, self.batch_size))


def build_model(config: PretrainConfig) -> BYOL:
    encoder = build_backbone(config.backbone, stem=config.stem, width=config.width, image_size=config.image_size)
    model_class = ObjectBYOL if config.objective == "object" else BYOL
    return model_class(encoder, config.proj_hidden, config.proj_dim, config.pred_hidden, predictor=config.predictor,
                       predictor_side=config.predictor_side, fuse_views=config.fuse_views)


def build_augment(config: PretrainConfig) -> BYOLAugment:
    v1, v2 = paper_views(config.crop_min_scale, config.jitter_strength, (config.blur_p1, config.blur_p2),
                         (config.solarize_p1, config.solarize_p2), config.hue, config.rotation)
    return BYOLAugment(config.image_size, v1, v2)


def snapshot_path(run_dir, images: int) -> Path:
    """Where a run keeps the online encoder it had once ``images`` images were seen (``snapshot_images``)."""
    return Path(run_dir) / "snapshots" / f"backbone-{images}.pt"


def _warn_unreachable(snapshots, folder, start: int, total: int, batch_size: int) -> None:
    """Warns of ``snapshot_images`` a run will not write: seen before the step it resumes from (and not on
    disk), or past its last step."""
    missed = [n for n in snapshots if n > total * batch_size
              or n <= start * batch_size and not snapshot_path(folder, n).is_file()]
    if missed:
        warnings.warn(f"snapshot_images {missed} will not be written: seen before step {start}, where this run "
                      f"resumes, or past its last step ({total})", RuntimeWarning)


def _write_snapshots(encoder, folder, snapshots, done: int, batch_size: int) -> None:
    """Each snapshot is written by the step whose images first reach its count, at once: that step's weights
    (a reference kept for later would hold the weights of the end of the run)."""
    for seen in snapshots:
        if (done - 1) * batch_size < seen <= done * batch_size:
            save_backbone(encoder, snapshot_path(folder, seen))


def load_size(image_size: int) -> int:
    """Images are stored a little larger than the views, so small crops keep some detail."""
    return round(image_size * 1.25)


def _batches(images, plan: BatchPlan, num_workers: int, pin: bool):
    """The uint8 batches of ``plan``: indexed from the in-memory tensor, or read by DataLoader workers."""
    cached = in_memory(images)
    if cached is not None:
        return (cached[torch.tensor(keys)] for keys in plan)
    return torch.utils.data.DataLoader(images, batch_sampler=plan, num_workers=num_workers, pin_memory=pin)


def loss_terms(out: BYOLOutput) -> dict[str, float | str]:
    """The two directions of the symmetric loss and the network outputs that are not finite:
    what a non-finite loss message needs to say where the NaN came from."""
    p1, p2 = out.online_pred.chunk(2)
    t1, t2 = out.target_proj.chunk(2)
    bad = [name for name, t in (("online prediction of view 1", p1), ("online prediction of view 2", p2),
                                ("target projection of view 1", t1), ("target projection of view 2", t2))
           if not bool(torch.isfinite(t).all())]
    return {"view 1 -> view 2 term (prediction of view 1 vs target of view 2)": out.directions[0].item(),
            "view 2 -> view 1 term (prediction of view 2 vs target of view 1)": out.directions[1].item(),
            "non-finite outputs": ", ".join(bad) or "none"}


def pretrain(config: PretrainConfig | None = None, dataset=None, **params) -> RunResult:
    """Runs (or resumes) BYOL pretraining; ``params`` override ``config`` fields by name. ``dataset``: uint8
    images ``[N, 3, S, S]``, a tensor or a Dataset (default: those ``config.data`` names)."""
    config = PretrainConfig.of(config, **params)
    trainer = Trainer(config)
    model = trainer.prepare(build_model(config))
    if config.fuse_views:       # again: synchronised BatchNorm replaced the per-view layers
        split_batch_norm_by_view(model)
    config = dataclasses.replace(config, stem=model.encoder.stem)   # record the resolved stem
    images = dataset if dataset is not None else unlabeled_dataset(
        config.data, config.data_root, image_size=load_size(config.image_size), split=config.data_split,
        embedded=config.embedded)
    plan = config.schedule(len(images))
    optimizer = build_optimizer(config.optimizer, model.trainable_parameters(), plan.peak_lr, config.weight_decay)
    augment, ctx, total = build_augment(config), trainer.ctx, plan.total_steps
    rows = ctx.rows(config.batch_size)     # this process's share of every batch
    snapshots = config.snapshots()
    with trainer.open(config, model, optimizer, total, dataset_fingerprint(images), desc="BYOL pretraining",
                      advice="Lower base_lr, or check the input images.", stop=config.stop_after_steps,
                      on_save=lambda folder: save_backbone(model.encoder, folder / "backbone.pt")):
        # fixed, un-augmented images for the effective-rank measurement
        probe = torch.stack([images[i] for i in range(min(256, len(images)))]) if config.rank_every else None
        source = images if config.objective == "global" else with_regions(images, config.num_regions, config.fh_scale,
                                                                          config.num_workers, config.progress)
        order = BatchPlan(range(len(images)), config.batch_size, config.seed, trainer.step, trainer.stop, rows,
                          drop_last=True)
        if ctx.is_main:
            _warn_unreachable(snapshots, trainer.folder.path, trainer.step, total, config.batch_size)
        for step, batch in trainer.steps(_batches(source, order, config.num_workers, trainer.device.type == "cuda")):
            batch = batch.to(trainer.device, non_blocking=True)
            gen = torch.Generator().manual_seed(step_seed(config.seed, step))
            view1, view2, *masks = (augment(batch, gen, batch_size=config.batch_size, offset=rows.start)
                                    if config.objective == "global"
                                    else region_views(augment, batch, gen, config.num_regions, config.batch_size,
                                                      rows.start))
            view1, view2 = trainer.memory_format(view1), trainer.memory_format(view2)
            lr = trainer.set_lr(warmup_cosine(step, total, plan.warmup_steps, plan.peak_lr))
            with trainer.forward():
                out = trainer.train_model(view1, view2, *masks)
            loss = ctx.mean(out.loss)   # the global batch's loss: every process takes the same decisions on it
            tau = config.tau(step, total)
            if trainer.update(out.loss, loss, lr, lambda: loss_terms(out)):
                model.update_target(tau)

            done = step + 1
            if ctx.is_main:
                _write_snapshots(model.encoder, trainer.folder.path, snapshots, done, config.batch_size)
            if done % config.log_every == 0 or done in (1, total):
                row = {"step": done, "epoch": done / plan.steps_per_epoch, "loss": loss.item(), "tau": tau, "lr": lr,
                       "collapse_std": collapse_std(ctx.gather(out.online_proj)), "images_per_s": trainer.throughput(done)}
                if ctx.is_main and config.rank_every and (done % config.rank_every == 0 or done == total):
                    row["feature_rank"] = feature_rank(model.encoder, probe, augment.size)
                trainer.log(row, ("loss", "collapse_std"))
        if trainer.step < total:      # paused by stop_after_steps
            return trainer.result()
        trainer.finish(lambda: {"steps": total, "final": trainer.history[-1] if trainer.history else {},
                                "skipped_nonfinite": trainer.guard.skipped})
    return trainer.result()


def add_cli(subparsers) -> None:
    add_command(subparsers, "pretrain", PretrainConfig, _run_cli, help="BYOL pretraining on unlabeled images",
                description="BYOL pretraining (profiles: e.g. book/params/cpu-full.yaml).")


def _run_cli(config: PretrainConfig) -> int:
    result = pretrain(config)
    last = result.history[-1] if result.history else {}
    if is_main_process():
        state = "done" if (result.run_dir / "done.json").is_file() else "paused (continue with --resume)"
        print(f"{state}: {result.run_dir} (step {last.get('step')}, loss {last.get('loss', math.nan):.4f})")
    return 0
