"""The training loop: the ONLY reader of the recipe's trick fields.

Each trick is a pure function in ``bagoftricks.tricks`` that this loop calls at a fixed point:

    per run:   model tweaks (build_model) -> zero gamma -> param groups (no bias decay) -> base lr
               (linear scaling) -> teacher (distillation) -> EMA
    per step:  lr (warmup + step/cosine) -> augmented batch (data) -> smoothed targets -> mixup/CutMix
               -> Cutout/erasing -> forward under autocast (+ teacher) -> loss -> scaled backward/step
               -> EMA update

Determinism: every random draw of step s in epoch e comes from generators seeded with
(seed, e, s, rank), and the data order of epoch e from (seed, e). A checkpoint therefore only needs
the model, optimizer, scaler, EMA and the position (e, s) to continue bit-exactly; RNG states are
saved as well, for inspection.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bagoftricks import data as bdata
from bagoftricks import models as bmodels
from bagoftricks import recipe as brecipe
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import runfolder
from bagoftricks.engine.checkpoint import (CheckpointError, load_checkpoint, newest_valid_checkpoint,
                                           resolve_checkpoint, save_checkpoint)
from bagoftricks.recipe import Recipe


class UsageError(ValueError):
    """Bad input detected by the engine (run folder, teacher, device); exit code 2."""


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written at a step boundary; exit 128 + signal."""

    def __init__(self, signum: int, checkpoint: Path | None):
        super().__init__(f"stopped by signal {signum}; checkpoint {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


class NonFiniteLoss(RuntimeError):
    """The loss was not finite for train.max_bad_steps consecutive steps."""


def derive_seed(*parts: int) -> int:
    """Mix integers into one 63-bit seed (splitmix64 rounds); stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x = z ^ (z >> 31)
    return x & 0x7FFFFFFFFFFFFFFF


def resolve_device(spec: str, dinfo: bdist.DistInfo | None = None) -> torch.device:
    dinfo = dinfo or bdist.DistInfo()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"train.device: '{spec}' requested but CUDA is not available")
        if spec == "cuda":
            return torch.device("cuda", dinfo.local_rank % torch.cuda.device_count())
    return torch.device(spec)


AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DataBundle:
    train: object               # MemoryBatches | LoaderBatches
    test: object                # TensorDataset | ImageFolderDataset
    eval_transform: object
    num_classes: int
    in_channels: int
    classes: list
    skipped: int
    in_memory: bool


class _PreAugment:
    """Runs a uint8 -> uint8 step (RandAugment) before the batched §2 augmentation."""

    def __init__(self, pre: Callable, inner: Callable):
        self.pre, self.inner = pre, inner

    def __call__(self, images, generator):
        return self.inner(self.pre(images, generator), generator)


class _PerImage:
    """Per-image path (DataLoader workers): optional RandAugment, then the §2 reference transform."""

    def __init__(self, pre: Callable | None, augment):
        self.pre, self.augment = pre, augment

    def __call__(self, img, generator=None):
        if self.pre is not None:
            img = self.pre(img[None], generator)[0]
        return self.augment.per_image(img, generator)


def build_data(r: Recipe, device: torch.device, dinfo: bdist.DistInfo, *, train: bool = True) -> DataBundle:
    d = r.data
    kw = dict(train_limit=d.train_limit, strict=d.strict, download=d.download, image_size=d.image_size,
              num_classes=d.num_classes, synthetic_samples=d.synthetic_samples, seed=r.train.seed)
    test_ds = bdata.load_split(d.name, d.root, "test", **kw)
    train_ds = bdata.load_split(d.name, d.root, "train", **kw) if train else None
    mean, std = bdata.dataset_stats(d.name)
    ref = train_ds if train_ds is not None else test_ds
    in_channels = int(ref.images.shape[1]) if isinstance(ref, bdata.TensorDataset) else 3
    mean, std = tuple(mean)[:in_channels], tuple(std)[:in_channels]
    eval_tf = bdata.EvalTransform(d.image_size, crop_ratio=d.crop_ratio, mean=mean, std=std)
    skipped = len(getattr(test_ds, "skipped", []))
    source, in_memory = None, False
    if train_ds is not None:
        skipped += len(getattr(train_ds, "skipped", []))
        if d.in_memory == "always" and not isinstance(train_ds, bdata.TensorDataset):
            raise UsageError(f"data.in_memory: 'always' but {d.name} at {d.root or 'its default root'} does not fit in memory")
        in_memory = isinstance(train_ds, bdata.TensorDataset) and d.in_memory != "never"
        t = r.tricks
        augment = bdata.BatchAugment(d.image_size, d.augment, area=(d.crop_area_min, 1.0), flip=d.flip,
                                     jitter=d.jitter, lighting=d.lighting, pad=d.pad, mean=mean, std=std)
        pre = None
        if t.randaugment_ops > 0:
            ops, mag = t.randaugment_ops, t.randaugment_magnitude
            pre = lambda im, g: tricks.randaugment(im, ops, mag, g)  # noqa: E731 - uint8 -> uint8
        if in_memory:
            source = bdata.MemoryBatches(train_ds, r.train.batch_size, _PreAugment(pre, augment) if pre else augment,
                                         device, r.train.seed, rank=dinfo.rank, world_size=dinfo.world_size)
        else:
            per_image = _PerImage(pre, augment)
            source = bdata.LoaderBatches(train_ds, r.train.batch_size, per_image, device, r.train.seed,
                                         rank=dinfo.rank, world_size=dinfo.world_size, workers=d.workers,
                                         timeout=d.timeout)
    classes = list(getattr(ref, "classes", []))
    num_classes = len(classes) if classes else d.num_classes
    return DataBundle(source, test_ds, eval_tf, num_classes, in_channels, classes, skipped, in_memory)


# --------------------------------------------------------------------------------------------- model
def build_model(r: Recipe, num_classes: int, in_channels: int) -> nn.Module:
    m = r.model
    try:
        return bmodels.build_model(m.arch, num_classes, in_channels, variant=m.variant, width=m.width, init=m.init,
                                   activation=m.activation, se_reduction=m.se_reduction, groups=m.groups,
                                   width_per_group=m.width_per_group, drop_path=m.drop_path,
                                   width_mult=m.width_mult)
    except ValueError as e:  # an option the architecture lacks, or widths that do not fit: bad input
        raise brecipe.RecipeError(f"model: {e}") from None


def ema_weights(state: dict) -> dict | None:
    """The EMA weights of a checkpoint as a model state dict, or None when the run had no EMA."""
    ema = state.get("ema") or {}
    return ema.get("params") or None


def setup_model(r: Recipe, num_classes: int, in_channels: int, device: torch.device,
                dinfo: bdist.DistInfo | None = None) -> nn.Module:
    """The seeded model with the run-level tricks applied: zero gamma, SyncBN, memory format."""
    torch.manual_seed(r.train.seed)
    model = build_model(r, num_classes, in_channels)
    if r.tricks.zero_gamma:
        tricks.zero_last_bn_gamma(model)
    if dinfo is not None and dinfo.enabled and r.model.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if r.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def load_teacher(path: str, num_classes: int, device: torch.device, channels_last: bool) -> nn.Module:
    """A frozen teacher from a run folder or checkpoint; any architecture the zoo builds (§5.3)."""
    try:
        ckpt_path = resolve_checkpoint(path)
        state = load_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise UsageError(f"tricks.distill_teacher: {e}") from None
    tr = brecipe.from_dict(state["recipe"])
    if state.get("num_classes", num_classes) != num_classes:
        raise UsageError(f"tricks.distill_teacher: {ckpt_path} predicts {state.get('num_classes')} classes, "
                         f"the student's data has {num_classes}")
    teacher = build_model(tr, num_classes, state.get("in_channels", 3))
    teacher.load_state_dict(ema_weights(state) or state["model"])
    teacher.to(device).eval().requires_grad_(False)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


def base_lr(r: Recipe, world_size: int) -> float:
    """optim.lr, or optim.lr per 256 images scaled to the global batch (§3.1)."""
    if r.tricks.linear_scaling:
        return tricks.scaled_lr(r.optim.lr, r.train.batch_size * world_size)
    return r.optim.lr


def lr_at(r: Recipe, step: int, steps_per_epoch: int, world_size: int = 1) -> float:
    s = r.schedule
    return tricks.lr_at(step, base_lr=base_lr(r, world_size), steps_per_epoch=steps_per_epoch, epochs=r.train.epochs,
                        warmup_epochs=r.tricks.warmup_epochs, kind=s.kind, milestones=tuple(s.milestones),
                        gamma=s.gamma, floor=s.floor)


def make_optimizer(r: Recipe, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = tricks.param_groups(model, r.optim.weight_decay, r.tricks.no_bias_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=r.optim.momentum, nesterov=r.optim.nesterov,
                           weight_decay=r.optim.weight_decay)


# ----------------------------------------------------------------------------------------- per step
def make_targets(r: Recipe, y: torch.Tensor, num_classes: int, soft: bool):
    """Hard labels when nothing needs soft ones; else (smoothed) one-hot targets (§5.2)."""
    if not soft and r.tricks.label_smoothing == 0:
        return None
    return tricks.smoothed_targets(y, num_classes, r.tricks.label_smoothing, form=r.tricks.label_smoothing_form)


def mixing_active(r: Recipe, epoch: int) -> bool:
    t = r.tricks
    return (t.mixup_alpha > 0 or t.cutmix_alpha > 0) and epoch < r.train.epochs - t.mix_off_epochs


def prepare_batch(r: Recipe, x, y, num_classes: int, epoch: int, g: torch.Generator, soft: bool):
    """Targets, mixing and erasing for one batch: returns (x, targets or None)."""
    t = r.tricks
    mixing = mixing_active(r, epoch)
    targets = make_targets(r, y, num_classes, soft or mixing)
    if mixing:
        # smoothed targets are mixed, as the seed notes ask: mixing composes with label smoothing
        mode = tricks.choose_mix(t.mixup_alpha, t.cutmix_alpha, generator=g)
        perm = tricks.batch_permutation(x.shape[0], g)
        if mode == "mixup":
            lam = tricks.sample_lambda(t.mixup_alpha, g)
            x, targets = tricks.mix(x, targets, lam, perm)
        elif mode == "cutmix":
            lam = tricks.sample_lambda(t.cutmix_alpha, g)
            x, targets, _ = tricks.cutmix(x, targets, lam, perm, g)
    if t.cutout > 0:
        x = tricks.cutout(x, t.cutout, g)
    if t.random_erasing > 0:
        x = tricks.random_erasing(x, t.random_erasing, g)
    return x, targets


def compute_loss(r: Recipe, logits, y, targets, teacher_logits):
    logits = logits.float()
    if teacher_logits is not None:
        return tricks.distillation_loss(logits, teacher_logits.float(), targets, r.tricks.distill_temperature,
                                        r.tricks.distill_hard_weight)
    if targets is not None:
        return tricks.soft_cross_entropy(logits, targets)
    return F.cross_entropy(logits, y)


# ---------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, ds, transform, batch_size: int, device: torch.device, precision: str,
             channels_last: bool, dinfo: bdist.DistInfo | None = None, want_logits: bool = False) -> dict:
    """Top-1/top-5 over every test image exactly once (summed over ranks)."""
    dinfo = dinfo or bdist.DistInfo()
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    all_logits, all_labels = [], []
    for x, y in bdata.eval_batches(ds, batch_size, transform, device, rank=dinfo.rank, world_size=dinfo.world_size):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(precision, device):
            logits = model(x)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(y[:, None])
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        sums[1] += hit[:, :1].sum()
        sums[2] += hit.any(dim=1).sum()
        sums[3] += y.numel()
        if want_logits:
            all_logits.append(logits.cpu())
            all_labels.append(y.cpu())
    bdist.all_reduce_sum(sums, dinfo)
    model.train(was_training)
    n = max(sums[3].item(), 1.0)
    out = {"loss": sums[0].item() / n, "top1": 100.0 * sums[1].item() / n, "top5": 100.0 * sums[2].item() / n,
           "images": int(sums[3].item())}
    if want_logits:
        out["logits"] = torch.cat(all_logits) if all_logits else torch.empty(0)
        out["labels"] = torch.cat(all_labels) if all_labels else torch.empty(0, dtype=torch.long)
    return out


# ------------------------------------------------------------------------------------------- signals
class _StopFlag:
    def __init__(self):
        self.signum = 0
        self._old = {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum:  # a second signal: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


# --------------------------------------------------------------------------------------------- train
def _log(msg: str, dinfo: bdist.DistInfo, logfile: Path | None):
    if not dinfo.is_main:
        return
    print(msg, flush=True)
    if logfile is not None:
        with open(logfile, "a") as f:
            f.write(msg + "\n")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def prepare_run_folder(out: Path, resume: bool, auto: bool) -> tuple[Path | None, dict | None]:
    """Decide whether `out` is a fresh run or a continuation; never clobber an existing run."""
    out = Path(out)
    if resume or auto:
        found = newest_valid_checkpoint(out)
        if found is not None:
            return found
        if resume and not auto:
            if not (out / "recipe.yaml").is_file():
                raise UsageError(f"--resume: {out} is not a run folder (no recipe.yaml)")
            raise UsageError(f"--resume: no valid checkpoint in {out}")
        if (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("step-*.pt")):
            raise UsageError(f"{out}: every checkpoint is unreadable; refusing to start over in it")
        return None, None
    if out.exists() and (out / "recipe.yaml").exists():
        raise UsageError(f"run folder {out} already holds a run; continue it with --resume {out} "
                         f"or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    return None, None


def train(r: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
          stop_after_steps: int = 0) -> dict:
    """Train `r` into run folder `out_dir`; returns the final metrics record.

    resume=True continues from the newest valid checkpoint in out_dir (the folder's recipe is used).
    stop_after_steps (testing aid) stops the process's loop after that many global steps, with a
    checkpoint, as a signal would.
    """
    brecipe.validate(r)
    out = Path(out_dir)
    dinfo = bdist.from_env()
    auto = r.train.resume == "auto"
    ckpt_path, state = prepare_run_folder(out, resume, auto)
    if state is not None:
        r = brecipe.validate(brecipe.from_dict(state["recipe"]))
        if int(state["epoch"]) >= r.train.epochs:
            final = out / "final.json"
            if dinfo.is_main:
                print(f"run folder {out} is already complete ({r.train.epochs} epochs)", flush=True)
            return runfolder.read_json_or_empty(final)
    if r.train.threads:
        torch.set_num_threads(r.train.threads)
    device = resolve_device(r.train.device, dinfo)
    bdist.init(dinfo, device)
    try:
        return _train(r, out, dinfo, device, ckpt_path, state, progress, stop_after_steps)
    finally:
        bdist.shutdown()


def _train(r: Recipe, out: Path, dinfo, device, ckpt_path, state, progress, stop_after_steps) -> dict:
    t_start = time.perf_counter()
    tr, tk = r.train, r.tricks
    data = build_data(r, device, dinfo)
    steps = data.train.steps_per_epoch
    if steps < 1:
        raise UsageError(f"train.batch_size: {tr.batch_size} x {dinfo.world_size} process(es) is larger than the "
                         f"{len(data.train.ds) if hasattr(data.train, 'ds') else 'available'} training images")
    model = setup_model(r, data.num_classes, data.in_channels, device, dinfo)
    teacher = load_teacher(tk.distill_teacher, data.num_classes, device, tr.channels_last) if tk.distill_teacher else None
    lr0 = lr_at(r, 0, steps, dinfo.world_size)
    optimizer = make_optimizer(r, model, lr0)
    scaler = tricks.loss_scaler(tr.precision == "fp16", device.type)
    ema = tricks.ModelEMA(model) if tk.ema_decay > 0 else None
    start_epoch, start_step, bad_run = 0, 0, 0
    acc = {"loss": 0.0, "images": 0, "seconds": 0.0, "skipped": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        start_epoch, start_step = int(state["epoch"]), int(state["step"])
        acc = dict(state.get("epoch_acc", acc))
        torch.set_rng_state(state["rng"]["torch"])
    train_model = model
    if tr.compile:
        train_model = torch.compile(model)
    if dinfo.enabled:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        if tr.compile:
            train_model = torch.compile(train_model)

    logfile = out / "run.log"
    metrics_path = out / "metrics.jsonl"
    eval_bs = tr.eval_batch_size or 2 * tr.batch_size
    if dinfo.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if state is None:
            for stale in (metrics_path, logfile):
                stale.unlink(missing_ok=True)
            (out / "recipe.yaml").write_text(brecipe.dump(r))
            extra = {"base_lr": base_lr(r, dinfo.world_size), "global_batch": tr.batch_size * dinfo.world_size,
                     "steps_per_epoch": steps, "in_memory_data": data.in_memory, "num_classes": data.num_classes,
                     "skipped_files": data.skipped}
            runfolder.write_json(out / "env.json", runfolder.env_record(device, tr.seed, dinfo.world_size, extra))
        else:
            runfolder.truncate_metrics(metrics_path, start_epoch)
    bdist.barrier(dinfo)
    writer = _tensorboard(out / "tb") if dinfo.is_main else None
    _log(f"run folder: {out}", dinfo, logfile)
    if state is not None:
        _log(f"resumed from {ckpt_path} at epoch {start_epoch + 1}, step {start_step}", dinfo, logfile)
    _log(f"model {r.model.arch}-{r.model.variant} | data {r.data.name} ({data.num_classes} classes, "
         f"{'in-memory batched' if data.in_memory else 'per-image loader'}) | global batch "
         f"{tr.batch_size * dinfo.world_size} | base lr {base_lr(r, dinfo.world_size):.4g} | {tr.precision} on {device}",
         dinfo, logfile)
    if data.skipped:
        _log(f"skipped {data.skipped} unreadable image file(s) (data.strict: true makes them errors)", dinfo, logfile)

    def make_state(epoch: int, step: int) -> dict:
        return {"model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "ema": ema.state_dict() if ema is not None else {},
                "epoch": epoch, "step": step, "global_step": epoch * steps + step,
                "epoch_acc": dict(acc), "recipe": brecipe.to_dict(r), "num_classes": data.num_classes,
                "in_channels": data.in_channels, "classes": list(data.classes),
                "rng": {"torch": torch.get_rng_state()}}

    def checkpoint(epoch: int, step: int) -> Path | None:
        if not dinfo.is_main:
            return None
        for p in _unwrap(model).parameters():
            if not torch.isfinite(p).all():
                raise NonFiniteLoss(f"weights became non-finite by epoch {epoch + 1} step {step}; "
                                    f"no checkpoint written")
        return save_checkpoint(out, make_state(epoch, step), epoch * steps + step, tr.keep_checkpoints)

    record: dict = {}
    soft = teacher is not None
    global_done = 0
    with _StopFlag() as stop:
        for epoch in range(start_epoch, tr.epochs):
            t_epoch = time.perf_counter()
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                acc = {"loss": 0.0, "images": 0, "seconds": 0.0, "skipped": 0}
            train_model.train()
            bar = _progress(progress and dinfo.is_main, steps, first, f"epoch {epoch + 1}/{tr.epochs}")
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            t_train = time.perf_counter()
            lr = lr0
            for s, (x, y) in enumerate(data.train.epoch(epoch, first), start=first):
                gstep = epoch * steps + s
                lr = lr_at(r, gstep, steps, dinfo.world_size)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(derive_seed(tr.seed, 1, epoch, s, dinfo.rank))  # dropout, drop-path
                g = torch.Generator(device=device).manual_seed(derive_seed(tr.seed, 2, epoch, s, dinfo.rank))
                if tr.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x, targets = prepare_batch(r, x, y, data.num_classes, epoch, g, soft)
                with autocast(tr.precision, device):
                    logits = train_model(x)
                    tlogits = None
                    if teacher is not None:
                        with torch.no_grad():
                            tlogits = teacher(x)  # same augmented + mixed batch as the student (§5.3)
                loss = compute_loss(r, logits, y, targets, tlogits)
                optimizer.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(loss))
                if finite:
                    skipped = tricks.step_with_scaler(scaler, optimizer, loss)
                    bad_run = 0
                else:
                    skipped = True
                    bad_run += 1
                    if bad_run >= tr.max_bad_steps:
                        raise NonFiniteLoss(f"loss was not finite for {bad_run} consecutive steps, last at "
                                            f"epoch {epoch + 1} step {s} (global step {gstep}); "
                                            f"no checkpoint was written after the weights went bad")
                acc["skipped"] += int(skipped)
                if ema is not None and not skipped:
                    ema.update(model, tk.ema_decay)
                if finite:
                    loss_sum += loss.detach().double() * y.shape[0]
                    seen += y.shape[0]
                global_done += 1
                if bar is not None:
                    bar.update(1)
                    if (s + 1) % tr.log_every_steps == 0 or s + 1 == steps:
                        el = time.perf_counter() - t_train
                        bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.4f}", lr=f"{lr:.4g}",
                                        img_s=f"{seen * dinfo.world_size / max(el, 1e-9):.0f}", refresh=False)
                last = s + 1 == steps
                want_stop = bdist.any_flag(bool(stop.signum) or (stop_after_steps and global_done >= stop_after_steps),
                                           dinfo, device)
                periodic = tr.checkpoint_every_steps and (gstep + 1) % tr.checkpoint_every_steps == 0
                if (want_stop or periodic) and not last:
                    _fold(acc, loss_sum, seen, t_train, dinfo)
                    loss_sum.zero_()
                    seen, t_train = 0, time.perf_counter()
                    path = checkpoint(epoch, s + 1)
                    if want_stop:
                        if bar is not None:
                            bar.close()
                        _log(f"stopping at epoch {epoch + 1} step {s + 1}; checkpoint {path}", dinfo, logfile)
                        raise TrainingInterrupted(stop.signum or signal.SIGTERM, path)
            if bar is not None:
                bar.close()
            _fold(acc, loss_sum, seen, t_train, dinfo)
            record = {"epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / max(acc["images"], 1)}
            if (epoch + 1) % tr.eval_every == 0 or epoch + 1 == tr.epochs:
                ev = evaluate(model, data.test, data.eval_transform, eval_bs, device, tr.precision, tr.channels_last, dinfo)
                record.update(val_loss=ev["loss"], val_top1=ev["top1"], val_top5=ev["top5"])
                if ema is not None:
                    ema_model = copy.deepcopy(_unwrap(model))
                    ema.copy_to(ema_model)
                    ev2 = evaluate(ema_model, data.test, data.eval_transform, eval_bs, device, tr.precision,
                                   tr.channels_last, dinfo)
                    record.update(ema_val_top1=ev2["top1"], ema_val_top5=ev2["top5"])
            record.update(images_per_sec=acc["images"] / max(acc["seconds"], 1e-9), train_seconds=acc["seconds"],
                          seconds=time.perf_counter() - t_epoch, skipped_steps=acc["skipped"])
            if dinfo.is_main:
                runfolder.append_metrics(metrics_path, record)
                if writer is not None:
                    for k, v in record.items():
                        if k != "epoch" and isinstance(v, (int, float)):
                            writer.add_scalar(k, v, epoch + 1)
                    writer.flush()
            top = f" | top-1 {record['val_top1']:.2f} top-5 {record['val_top5']:.2f}" if "val_top1" in record else ""
            _log(f"epoch {epoch + 1}/{tr.epochs} | loss {record['train_loss']:.4f} | lr {lr:.4g}{top} | "
                 f"{record['images_per_sec']:.0f} img/s | {record['seconds']:.1f} s", dinfo, logfile)
            checkpoint(epoch + 1, 0)
            bdist.barrier(dinfo)
            if stop.signum or (stop_after_steps and global_done >= stop_after_steps and epoch + 1 < tr.epochs):
                raise TrainingInterrupted(stop.signum or signal.SIGTERM, None)
    if writer is not None:
        writer.close()
    record = dict(record, wall_seconds=time.perf_counter() - t_start)
    if dinfo.is_main:
        runfolder.write_json(out / "final.json", record)
    return record


def _fold(acc: dict, loss_sum: torch.Tensor, seen: int, t_train: float, dinfo) -> None:
    """Add this stretch's (rank-summed) loss, images and time to the epoch accumulators."""
    t = torch.tensor([loss_sum.item(), float(seen)], dtype=torch.float64, device=loss_sum.device)
    bdist.all_reduce_sum(t, dinfo)
    acc["loss"] += t[0].item()
    acc["images"] += int(t[1].item())
    acc["seconds"] += time.perf_counter() - t_train


def _progress(enabled, total, initial, desc):
    if enabled is False:
        return None
    from tqdm import tqdm
    disable = None if enabled is None else False  # None: only on a terminal
    bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=disable, leave=False,
               dynamic_ncols=True, file=sys.stderr)
    return None if bar.disable else bar


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is a dependency, but a broken install must not kill training
        return None
    return SummaryWriter(str(path))
