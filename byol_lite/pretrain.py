"""The BYOL pretraining loop, shared by the CLI (``python -m byol_lite pretrain``) and the notebooks.

A run is reproducible from its config: the batch order of every epoch and the augmentation of
every step are drawn from generators seeded by (seed, epoch) and (seed, step), so a run resumed
from a checkpoint takes exactly the path an uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from byol_lite.method.augment import BYOLAugment, paper_views
from byol_lite.method.backbones import build_backbone, save_backbone
from byol_lite.method.byol import BYOL, PREDICTOR_SIDES, BYOLOutput, cosine_tau, regression_loss
from byol_lite.config import add_arguments, from_args, from_params, load_yaml_params, option
from byol_lite.data.voc import resolve_source
from byol_lite.method.diagnostics import collapse_std, effective_rank
from byol_lite.training.distributed import is_main_process, setup as setup_distributed
from byol_lite.method.object_level import ObjectBYOL, region_views, with_regions
from byol_lite.method.optim import build_optimizer, scaled_lr, warmup_cosine
from byol_lite.training.runs import (NonFiniteGuard, RunDir, autocast, dataset_fingerprint, format_postfix,
                             resolve_channels_last, rng_state, seed_all, set_rng_state)


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run. Defaults follow the paper where it makes sense on a laptop."""

    data: str = option("auto", "unlabeled images: the embedded synthetic set, a VOC root, or a folder tree "
                               "(auto: voc when data_root is given, else synthetic)",
                   ["auto", "synthetic", "voc", "folder"])
    data_root: Optional[str] = option(None, "folder containing VOCdevkit/ (voc), the image folder (folder), "
                                        "or where to generate the synthetic set (default data/)")
    data_split: Optional[str] = option(None, "VOC list to take images from (default trainval; e.g. train_aug)")
    backbone: str = option("resnet18", "torchvision ResNet", ["resnet18", "resnet34", "resnet50"])
    stem: str = option("auto", "small = 3x3 stride-1 stem without max-pool (auto: small for <= 96 px)",
                   ["auto", "small", "imagenet"])
    width: int = option(64, "channels of the first stage (64 = torchvision's ResNet)")
    image_size: int = option(64, "side of each augmented view in pixels")
    proj_hidden: int = option(4096, "projector hidden size (paper: 4096)")
    proj_dim: int = option(256, "projection size (paper: 256)")
    pred_hidden: int = option(4096, "predictor hidden size (paper: 4096)")
    predictor: bool = option(True, "use the online predictor (without it, and with tau=0, BYOL collapses)")
    predictor_side: str = option("online", "where the predictor sits: online (the paper) or target (the seed "
                                 "article's error, an ablation: a frozen random predictor after the target's "
                                 "projector, none online)", list(PREDICTOR_SIDES))
    objective: str = option("global", "global: BYOL on whole images; object: DetCon-B, the BYOL loss per "
                                      "unsupervised region (byol_lite.method.object_level)", ["global", "object"])
    num_regions: int = option(8, "objective=object: regions per image (Felzenszwalb segments merged to this many)")
    fh_scale: float = option(100.0, "objective=object: Felzenszwalb scale (higher: fewer, larger segments)")
    batch_size: int = option(64, "images per step (each gives two views)")
    epochs: int = option(10, "passes over the unlabeled images")
    max_steps: int = option(0, "stop after this many steps instead (0: epochs decide)")
    optimizer: str = option("lars", "optimizer", ["lars", "sgd", "adamw"])
    base_lr: float = option(0.45, "learning rate per 256 images (LR = base_lr * batch_size / 256)")
    weight_decay: float = option(1e-6, "weight decay on weights (not biases/BatchNorm)")
    warmup_epochs: float = option(1.0, "linear LR warm-up, then cosine decay")
    base_tau: float = option(0.99, "EMA coefficient at step 0 (cosine schedule rises to 1)")
    tau_schedule: str = option("cosine", "cosine (paper) or constant tau", ["cosine", "constant"])
    crop_min_scale: float = option(0.08, "smallest crop area fraction")
    jitter_strength: float = option(1.0, "multiplier of the colour-jitter strengths")
    blur_p1: float = option(1.0, "blur probability, view 1")
    blur_p2: float = option(0.1, "blur probability, view 2")
    solarize_p1: float = option(0.0, "solarize probability, view 1")
    solarize_p2: float = option(0.2, "solarize probability, view 2")
    device: str = option("auto", "cuda, cpu, or auto (CUDA when present)")
    precision: str = option("auto", "auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), "
                                    "fp32 or bf16", ["auto", "fp32", "bf16"])
    channels_last: Optional[bool] = option(None, "channels_last memory format; unset: on (only speed changes)")
    num_workers: int = option(0, "DataLoader workers for datasets too large to cache in memory")
    seed: int = option(0, "seed of initialisation, batch order and augmentation")
    out_dir: str = option("runs/pretrain", "run folder: config, metrics.jsonl, last.pt, backbone.pt")
    log_every: int = option(10, "log metrics every N steps")
    rank_every: int = option(100, "measure the features' effective rank every N steps (0: never)")
    checkpoint_every: int = option(100, "write a checkpoint every N steps")
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
RESUMABLE_CHANGES = ("device", "num_workers", "log_every", "progress", "checkpoint_every", "rank_every",
                     "skip_nonfinite")


@dataclass
class PretrainResult:
    model: BYOL
    history: list[dict]
    run_dir: Path


def build_model(config: PretrainConfig) -> BYOL:
    encoder = build_backbone(config.backbone, stem=config.stem, width=config.width, image_size=config.image_size)
    model_class = ObjectBYOL if config.objective == "object" else BYOL
    return model_class(encoder, config.proj_hidden, config.proj_dim, config.pred_hidden, predictor=config.predictor,
                       predictor_side=config.predictor_side)


def build_augment(config: PretrainConfig) -> BYOLAugment:
    v1, v2 = paper_views(config.crop_min_scale, config.jitter_strength,
                         (config.blur_p1, config.blur_p2), (config.solarize_p1, config.solarize_p2))
    return BYOLAugment(config.image_size, v1, v2)


def load_size(image_size: int) -> int:
    """Images are stored a little larger than the views, so small crops keep some detail."""
    return round(image_size * 1.25)


def _images_source(config: PretrainConfig, dataset):
    if dataset is not None:
        return dataset
    from byol_lite.data import unlabeled_dataset

    return unlabeled_dataset(config.data, config.data_root, image_size=load_size(config.image_size),
                             split=config.data_split)


def _batches(images, batch_size: int, steps_per_epoch: int, seed: int, start_step: int, num_workers: int, pin: bool,
             rows: slice = slice(None)):
    """Yields uint8 batches from ``start_step`` on; epoch e uses the permutation seeded by (seed, e).

    ``rows``: this process's part of every batch (the same permutation on every process, so the parts
    are disjoint shards, reshuffled every epoch)."""
    cached = images if isinstance(images, torch.Tensor) else getattr(images, "images", None)
    step = start_step
    while True:
        epoch, offset = divmod(step, steps_per_epoch)
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(images), generator=gen)[: steps_per_epoch * batch_size]
        order = order.view(steps_per_epoch, batch_size)[offset:, rows]
        if cached is not None:
            for idx in order:
                yield cached[idx]
        else:
            loader = torch.utils.data.DataLoader(images, batch_sampler=order.tolist(), num_workers=num_workers,
                                                 pin_memory=pin, persistent_workers=False)
            yield from loader
        step += len(order)


def loss_terms(out: BYOLOutput) -> dict[str, float | str]:
    """The two directions of the symmetric loss and the network outputs that are not finite:
    what a non-finite loss message needs to say where the NaN came from."""
    p1, p2 = out.online_pred.chunk(2)
    t1, t2 = out.target_proj.chunk(2)
    bad = [name for name, t in (("online prediction of view 1", p1), ("online prediction of view 2", p2),
                                ("target projection of view 1", t1), ("target projection of view 2", t2))
           if not bool(torch.isfinite(t).all())]
    return {"view 1 -> view 2 term (prediction of view 1 vs target of view 2)": regression_loss(p1, t2).mean().item(),
            "view 2 -> view 1 term (prediction of view 2 vs target of view 1)": regression_loss(p2, t1).mean().item(),
            "non-finite outputs": ", ".join(bad) or "none"}


def _probe_batch(images, n: int = 256) -> torch.Tensor:
    """A fixed batch of un-augmented images for the effective-rank measurement."""
    cached = images if isinstance(images, torch.Tensor) else getattr(images, "images", None)
    if cached is not None:
        return cached[:n]
    return torch.stack([images[i] for i in range(min(n, len(images)))])


@torch.no_grad()
def feature_rank(model: BYOL, probe: torch.Tensor, augment: BYOLAugment, device) -> float:
    encoder = model.encoder
    was_training = encoder.training
    encoder.eval()
    x = torch.nn.functional.interpolate(probe.to(device).float() / 255, size=augment.size, mode="bilinear",
                                        antialias=True, align_corners=False)
    mean = torch.tensor(augment.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(augment.std, device=device).view(1, 3, 1, 1)
    feats = encoder((x - mean) / std)[0]
    encoder.train(was_training)
    return effective_rank(feats)


def pretrain(config: PretrainConfig | None = None, dataset=None, **params) -> PretrainResult:
    """Runs (or resumes) BYOL pretraining; ``params`` override ``config`` fields by name.

    ``dataset``: optional uint8 images ``[N, 3, S, S]`` (a tensor, or a Dataset of such tensors);
    by default the images named by ``config.data``.
    """
    config = from_params(PretrainConfig, {**dataclasses.asdict(config or PretrainConfig()), **params})
    ctx = setup_distributed(config.device)    # one process unless started by torchrun
    device = ctx.device
    channels_last = resolve_channels_last(device, config.channels_last)
    seed_all(config.seed)
    model = ctx.sync_batchnorm(build_model(config), config.sync_batchnorm)
    config = dataclasses.replace(config, stem=model.encoder.stem)   # record the resolved stem
    images = _images_source(config, dataset)
    steps_per_epoch = len(images) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"only {len(images)} images for batch_size={config.batch_size}: lower the batch size")
    rows = ctx.rows(config.batch_size)
    total = config.max_steps or config.epochs * steps_per_epoch
    warmup = round(config.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(config.base_lr, config.batch_size)

    run = ctx.on_main(lambda: RunDir(config.out_dir, dataclasses.asdict(config), resume=config.resume,
                                     overwrite=config.overwrite, resumable_changes=RESUMABLE_CHANGES,
                                     force_resume=config.force_resume, dataset=dataset_fingerprint(images),
                                     defaults=dataclasses.asdict(PretrainConfig())))
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config.optimizer, model.trainable_parameters(), peak_lr, config.weight_decay)
    augment = build_augment(config)
    probe = _probe_batch(images) if config.rank_every else None

    step, history, state = ctx.on_main(lambda: run.restore(model, optimizer) if config.resume else (0, [], {}))
    if state and not ctx.is_main:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    if state:
        set_rng_state(state["rng"])
    guard = NonFiniteGuard(run, config.skip_nonfinite, skipped=state.get("skipped_nonfinite", 0),
                           advice="Lower base_lr, or check the input images.")

    def save():
        guard.check_weights(step, model)
        ctx.check_replicas(model, step)
        if ctx.is_main:
            run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                 "rng": rng_state(), "config": dataclasses.asdict(config),
                                 "skipped_nonfinite": guard.skipped})
            save_backbone(model.encoder, run.path / "backbone.pt")

    source = images if config.objective == "global" else with_regions(images, config.num_regions, config.fh_scale,
                                                                      config.num_workers, config.progress)
    batches = _batches(source, config.batch_size, steps_per_epoch, config.seed, step, config.num_workers,
                       pin=device.type == "cuda", rows=rows)
    train_model = ctx.ddp(model)   # what the step calls: DDP averages the gradients over processes
    model.train()
    bar = tqdm(total=total, initial=step, desc="BYOL pretraining", unit="step",
               disable=not (config.progress and ctx.is_main))
    tick, seen = time.perf_counter(), 0
    while step < total:
        batch = next(batches).to(device, non_blocking=True)
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        view1, view2, *masks = (augment(batch, gen, batch_size=config.batch_size, offset=rows.start)
                                if config.objective == "global"
                                else region_views(augment, batch, gen, config.num_regions, config.batch_size, rows.start))
        if channels_last:
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        lr = warmup_cosine(step, total, warmup, peak_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        guard.before_forward(model)
        with autocast(device, config.precision):
            out = train_model(view1, view2, *masks)
        loss = ctx.mean(out.loss)   # the global batch's loss: every process takes the same decisions on it
        tau = cosine_tau(step, total, config.base_tau) if config.tau_schedule == "cosine" else config.base_tau
        if guard.loss_ok(step, lr, loss, lambda: loss_terms(out)):
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            if guard.grads_ok(step, lr, loss, model.named_parameters()):
                optimizer.step()
                model.update_target(tau)
        step += 1
        seen += batch.shape[0] * ctx.world_size
        bar.update(1)

        if step % config.log_every == 0 or step in (1, total):
            now = time.perf_counter()
            row = {"step": step, "epoch": step / steps_per_epoch, "loss": loss.item(), "tau": tau, "lr": lr,
                   "collapse_std": collapse_std(ctx.gather(out.online_proj)), "images_per_s": seen / (now - tick),
                   "skipped_nonfinite": guard.skipped}
            if ctx.is_main:
                if config.rank_every and (step % config.rank_every == 0 or step == total):
                    row["feature_rank"] = feature_rank(model, probe, augment, device)
                row = run.log(row)
                history.append(row)
                bar.set_postfix(format_postfix(row, ("loss", "collapse_std")))
            tick, seen = time.perf_counter(), 0
        if step % config.checkpoint_every == 0 or step == total:
            save()
    bar.close()
    if ctx.is_main and not run.done:
        run.mark_done({"steps": total, "final": history[-1] if history else {}, "skipped_nonfinite": guard.skipped})
    return PretrainResult(model, history, run.path)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("pretrain", help="BYOL pretraining on unlabeled images",
                              description="BYOL pretraining. --params FILE.yaml sets values from a profile "
                                          "(e.g. book/params/cpu-full.yaml); options typed on the command line win.")
    p.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters")
    add_arguments(p, PretrainConfig)
    p.set_defaults(func=_run_cli)


def _run_cli(args) -> int:
    profile = load_yaml_params(args.params) if args.params else None
    result = pretrain(from_args(PretrainConfig, args, profile))
    last = result.history[-1] if result.history else {}
    if is_main_process():
        print(f"done: {result.run_dir} (step {last.get('step')}, loss {last.get('loss', math.nan):.4f})")
    return 0
