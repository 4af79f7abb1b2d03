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
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from bagoftricks import data as bdata
from bagoftricks import models as bmodels
from bagoftricks import recipe as brecipe
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import runfolder, syncbn
from bagoftricks.errors import (CheckpointError, CheckpointWriteError, NonFiniteLoss, TrainingInterrupted, UsageError)
from bagoftricks.engine.checkpoint import (CKPT_DIR, load_checkpoint,
                                           newest_valid_checkpoint, resolve_checkpoint, save_checkpoint)
from bagoftricks.recipe import Recipe


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
    if not ema.get("params"):
        return None
    return {**ema.get("buffers", {}), **ema["params"]}  # BN running statistics are buffers


def setup_model(r: Recipe, num_classes: int, in_channels: int, device: torch.device,
                dinfo: bdist.DistInfo | None = None) -> nn.Module:
    """The seeded model with the run-level tricks applied: zero gamma, SyncBN, memory format."""
    torch.manual_seed(r.train.seed)
    model = build_model(r, num_classes, in_channels)
    if r.tricks.zero_gamma:
        tricks.zero_last_bn_gamma(model)
    if dinfo is not None and dinfo.enabled and r.model.sync_bn:
        model = syncbn.convert(model, device)  # torch's on CUDA, the portable one on CPU (gloo)
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
    """SGD with Nesterov momentum over the recipe's param groups, fused where torch has the kernel.

    The fused step updates every tensor in one kernel and takes the skipped-step flag on the
    device, so the loop never waits on the host; where there is no fused kernel for the device
    (or this torch), torch's default (foreach on accelerators) is used and a skip costs one sync.
    """
    kw = dict(lr=lr, momentum=r.optim.momentum, nesterov=r.optim.nesterov, weight_decay=r.optim.weight_decay)
    groups = lambda: tricks.param_groups(model, r.optim.weight_decay, r.tricks.no_bias_decay)  # noqa: E731
    try:
        opt = torch.optim.SGD(groups(), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # SGD fills in the group dicts it is given: fresh ones
        opt = torch.optim.SGD(groups(), **kw)
    return tricks.prepare_momentum(opt)


# ----------------------------------------------------------------------------------------- per step
def make_targets(r: Recipe, y: torch.Tensor, num_classes: int, soft: bool):
    """Hard labels when nothing needs soft ones; else (smoothed) one-hot targets (§5.2)."""
    if not soft and r.tricks.label_smoothing == 0:
        return None
    return tricks.smoothed_targets(y, num_classes, r.tricks.label_smoothing, form=r.tricks.label_smoothing_form)


def mixing_active(r: Recipe, epoch: int) -> bool:
    t = r.tricks
    return (t.mixup_alpha > 0 or t.cutmix_alpha > 0) and epoch < r.train.epochs - t.mix_off_epochs


def prepare_batch(r: Recipe, x, y, num_classes: int, epoch: int, g: torch.Generator, soft: bool,
                  host_generator: torch.Generator | None = None):
    """Targets, mixing and erasing for one batch: returns (x, targets or None).

    Per-image draws (partners, boxes, erasing) come from `g`, on the batch's device; the batch's
    scalars (mixup or CutMix, λ, the CutMix box) from `host_generator` (default: `g`), a CPU
    generator in the engine, so that no draw is read back from an accelerator.
    """
    t = r.tricks
    gh = host_generator if host_generator is not None else g
    mixing = mixing_active(r, epoch)
    targets = make_targets(r, y, num_classes, soft or mixing)
    if mixing:
        # smoothed targets are mixed, as the seed notes ask: mixing composes with label smoothing
        mode = tricks.choose_mix(t.mixup_alpha, t.cutmix_alpha, generator=gh)
        perm = tricks.batch_permutation(x.shape[0], g)
        if mode == "mixup":
            lam = tricks.sample_lambda(t.mixup_alpha, gh)
            x, targets = tricks.mix(x, targets, lam, perm)
        elif mode == "cutmix":
            lam = tricks.sample_lambda(t.cutmix_alpha, gh)
            x, targets, _ = tricks.cutmix(x, targets, lam, perm, gh)
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
             channels_last: bool, dinfo: bdist.DistInfo | None = None, want_logits: bool = False,
             workers: int = 2, timeout: float = 0.0) -> dict:
    """Top-1/top-5 over every test image exactly once (summed over ranks).

    Call it with the plain model, not the DDP wrapper: ranks may hold one batch more or less, and
    only the final all-reduce of the sums is a collective (BN, SyncBN included, uses running stats).
    """
    dinfo = dinfo or bdist.DistInfo()
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, n
    all_logits, all_labels = [], []
    for x, y in bdata.eval_batches(ds, batch_size, transform, device, rank=dinfo.rank, world_size=dinfo.world_size,
                                   workers=workers, timeout=timeout):
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
    """SIGINT/SIGTERM set a flag that the loop reads at the end of every step (agreed over ranks).

    A SIGINT after a first signal, before the stop is under way, raises KeyboardInterrupt (stop now,
    no checkpoint: a second Ctrl-C). Repeated SIGTERMs stay graceful: launchers and schedulers may
    send several and follow up with SIGKILL after their own grace period. Once the loop has decided to
    stop and is writing its checkpoint (`stopping`), every further signal is ignored: torchrun sends
    its own SIGTERM to a worker that is already on its way out.
    """

    def __init__(self):
        self.signum = 0
        self.stopping = False
        self._old = {}

    def __enter__(self):
        import threading
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stopping:
            return
        if self.signum and signum == signal.SIGINT:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = self.signum or signum  # repeated SIGTERMs (launchers, schedulers) stay graceful

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


def _warn(msg: str, dinfo: bdist.DistInfo, logfile: Path | None):
    if not dinfo.is_main:
        return
    print(f"warning: {msg}", file=sys.stderr, flush=True)
    if logfile is not None:
        with open(logfile, "a") as f:
            f.write(f"warning: {msg}\n")


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _flat(d: dict) -> dict:
    return {f"{sec}.{k}": v for sec, fields_ in d.items() for k, v in fields_.items()}


def _check_same_recipe(requested: Recipe, state: dict, out: Path) -> None:
    """train.resume: auto continues a folder only if it holds a run of the same recipe."""
    here = _flat(brecipe.to_dict(requested))
    there = _flat(brecipe.to_dict(brecipe.from_dict(state["recipe"])))
    diff = sorted(k for k in set(here) | set(there) if k != "train.resume" and here.get(k) != there.get(k))
    if diff:
        shown = ", ".join(f"{k}: {there.get(k)!r} there, {here.get(k)!r} here" for k in diff[:3])
        raise UsageError(f"train.resume: auto: run folder {out} holds a run of another recipe ({shown}"
                         f"{', ...' if len(diff) > 3 else ''}); continue it with --resume {out} or choose another --out")


def _set_aside(path: Path) -> None:
    """Rename an unreadable checkpoint to *.corrupt: kept for inspection, no longer listed or rotated."""
    try:
        os.replace(path, path.with_name(path.name + ".corrupt"))
    except OSError:
        pass


def prepare_run_folder(out: Path, resume: bool, auto: bool, requested: Recipe | None = None,
                       skipped: list | None = None) -> tuple[Path | None, dict | None]:
    """Decide whether `out` is a fresh run or a continuation; never clobber an existing run.

    resume (--resume DIR) or auto (train.resume: auto, or a torchrun restart) continue from the newest
    checkpoint that loads. Newer unreadable ones are reported (appended to `skipped` as (path,
    message), or warned about when skipped is None) and renamed to *.corrupt. Checkpoints that exist
    but none loads, or a 'latest' pointer without checkpoints, are an error naming the file: never a
    silent start from scratch. auto in a folder without any checkpoint (a first attempt that died
    before its first one) starts afresh there. auto refuses a folder that holds another recipe's run.
    """
    out = Path(out)
    if resume or auto:
        bad: list = []
        found = newest_valid_checkpoint(out, skipped=bad)
        for path, msg in bad:
            if skipped is None:
                warnings.warn(f"{msg}; falling back to an older checkpoint", stacklevel=2)
            else:
                skipped.append((path, msg))
        if found is not None:
            if auto and not resume and requested is not None:
                _check_same_recipe(requested, found[1], out)
            for path, _ in bad:
                _set_aside(path)
            return found
        what = "--resume" if resume else "train.resume: auto"
        if bad:
            more = f" (and {len(bad) - 1} more unreadable)" if len(bad) > 1 else ""
            raise UsageError(f"{what}: no valid checkpoint in {out}: {bad[0][1]}{more}")
        if resume:
            if not (out / "recipe.yaml").is_file():
                raise UsageError(f"--resume: {out} is not a run folder (no recipe.yaml)")
            raise UsageError(f"--resume: no checkpoint in {out / CKPT_DIR}")
        latest = out / CKPT_DIR / "latest"
        if latest.is_file():
            name = latest.read_text().strip()
            raise UsageError(f"{what}: {latest} names {name}, which is missing; refusing to start over in {out}")
        return None, None
    if out.exists() and (out / "recipe.yaml").exists():
        raise UsageError(f"run folder {out} already holds a run; continue it with --resume {out} "
                         f"or choose another --out")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    return None, None


_REMOTE_ERRORS = {"UsageError": UsageError, "CheckpointError": CheckpointError, "RecipeError": brecipe.RecipeError,
                  "CheckpointWriteError": CheckpointWriteError, "DataError": bdata.DataError}


def _plan_run(out: Path, resume: bool, auto: bool, r: Recipe, dinfo: bdist.DistInfo) -> dict:
    """Rank 0 reads the run folder and tells every rank what to do (no other rank touches it).

    Returns {"ckpt": path or None, "state": checkpoint or None, "skipped": [(path, msg)], "final":
    the final record when the run is already complete, else None}. An error on rank 0 is raised on
    every rank (same type for the bad-input kinds), so no rank waits for the others.
    """
    plan, err = None, None
    if dinfo.is_main:
        try:
            skipped: list = []
            ckpt, state = prepare_run_folder(out, resume, auto, requested=r, skipped=skipped)
            final, epochs = None, 0
            if state is not None:
                epochs = brecipe.from_dict(state["recipe"]).train.epochs
                if int(state["epoch"]) >= epochs:  # nothing left to train: no state to send around
                    final, state = runfolder.read_json_or_empty(out / "final.json"), None
            plan = {"ckpt": ckpt, "state": state, "skipped": [(str(p), m) for p, m in skipped], "final": final,
                    "epochs": epochs}
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks are told
            if not dinfo.enabled:
                raise
            err = e
    if dinfo.enabled:
        box = bdist.broadcast_object(("error", type(err).__name__, str(err)) if err is not None else ("ok", plan),
                                     dinfo)
        if err is not None:
            raise err
        if box[0] == "error":
            raise _REMOTE_ERRORS.get(box[1], RuntimeError)(box[2] if box[1] in _REMOTE_ERRORS
                                                          else f"on rank 0: {box[1]}: {box[2]}")
        plan = box[1]
    return plan


def train(r: Recipe, out_dir: str | Path, *, resume: bool = False, progress: bool | None = None,
          stop_after_steps: int = 0) -> dict:
    """Train `r` into run folder `out_dir`; returns the final metrics record.

    resume=True continues from the newest valid checkpoint in out_dir (the folder's recipe is used).
    stop_after_steps (testing aid) stops the process's loop after that many global steps, with a
    checkpoint, as a signal would.

    Under torchrun (RANK/WORLD_SIZE set) the process group is joined first; rank 0 alone reads and
    writes the run folder and sends the checkpoint to the other ranks. A worker group restarted by
    torchrun (TORCHELASTIC_RESTART_COUNT > 0) resumes as with train.resume: auto.
    """
    brecipe.validate(r)
    out = Path(out_dir)
    dinfo = bdist.from_env()
    auto = r.train.resume == "auto" or bdist.elastic_restart_count() > 0
    try:
        if dinfo.enabled:
            bdist.init(dinfo, resolve_device(r.train.device, dinfo))
        plan = _plan_run(out, resume, auto, r, dinfo)
        if plan["final"] is not None:
            if dinfo.is_main:
                print(f"run folder {out} is already complete ({plan['epochs']} epochs)", flush=True)
            return plan["final"]
        state = plan["state"]
        if state is not None:
            r = brecipe.validate(brecipe.from_dict(state["recipe"]))
        if r.train.threads:
            torch.set_num_threads(r.train.threads)
        device = resolve_device(r.train.device, dinfo)
        bdist.init(dinfo, device)
        return _train(r, out, dinfo, device, plan["ckpt"], state, progress, stop_after_steps, plan["skipped"])
    finally:
        bdist.shutdown()


def _nonfinite(model: nn.Module, ema) -> str:
    """The name of the first non-finite floating tensor of the model (or its EMA), or ''."""
    named = list(_unwrap(model).state_dict().items())
    if ema is not None:
        named += [(f"ema.{n}", t) for n, t in {**ema.params, **ema.buffers}.items()]
    for n, t in named:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return n
    return ""


def _train(r: Recipe, out: Path, dinfo, device, ckpt_path, state, progress, stop_after_steps,
           skipped_ckpts=()) -> dict:
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
    start_epoch, start_step = 0, 0
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
        # every rank holds the same weights (the same seed, or the checkpoint rank 0 sent); DDP also
        # broadcasts rank 0's at construction and averages the gradients of the per-rank mean losses
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
            for stale in (metrics_path, logfile, out / "final.json"):
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
    for path, msg in skipped_ckpts:
        _warn(f"{msg}; set aside as {Path(path).name}.corrupt, falling back to an older checkpoint", dinfo, logfile)
    if state is not None:
        _log(f"resumed from {ckpt_path} at epoch {start_epoch + 1}, step {start_step}", dinfo, logfile)
    _log(f"model {r.model.arch}-{r.model.variant} | data {r.data.name} ({data.num_classes} classes, "
         f"{'in-memory batched' if data.in_memory else 'per-image loader'}) | global batch "
         f"{tr.batch_size * dinfo.world_size} ({dinfo.world_size} x {tr.batch_size}) | base lr "
         f"{base_lr(r, dinfo.world_size):.4g} | {tr.precision} on {device}", dinfo, logfile)
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
        """A collective: every rank checks the weights, rank 0 writes, every rank learns the outcome."""
        gstep = epoch * steps + step
        bad = _nonfinite(model, ema)
        if bdist.reduce_max([1.0 if bad else 0.0], dinfo, device)[0] > 0:
            raise NonFiniteLoss(f"weights became non-finite ({bad or 'on another rank'}) by global step {gstep} "
                                f"(epoch {epoch + 1 if step else epoch} step {step or steps}); no checkpoint written")
        path, err = None, None
        if dinfo.is_main:
            try:
                path = save_checkpoint(out, make_state(epoch, step), gstep, tr.keep_checkpoints)
            except CheckpointError as e:
                if not dinfo.enabled:
                    raise
                err = e
        if dinfo.enabled:
            msg = bdist.broadcast_object(str(err) if err is not None else "", dinfo)
            if err is not None:
                raise err
            if msg:
                raise CheckpointWriteError(f"on rank 0: {msg}")
        return path

    def agree_stop(local: int) -> int:
        """The stop signal number agreed by all ranks (0 = go on): every rank stops at the same step."""
        return int(bdist.reduce_max([float(local)], dinfo, device)[0])

    record: dict = {}
    soft = teacher is not None
    meter: _StepMeter | None = None
    reduce_flag = (lambda t: bdist.all_reduce_max_flag(t, dinfo)) if dinfo.enabled else None  # noqa: E731
    global_done = 0
    with _StopFlag() as stop:
        for epoch in range(start_epoch, tr.epochs):
            t_epoch = time.perf_counter()
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                acc = {"loss": 0.0, "images": 0, "seconds": 0.0, "skipped": 0}
            train_model.train()
            bar = _progress(progress if dinfo.is_main else False, steps, first, f"epoch {epoch + 1}/{tr.epochs}")
            meter = _StepMeter(device, meter)
            t_train = time.perf_counter()
            lr = lr0
            for s, (x, y) in enumerate(data.train.epoch(epoch, first), start=first):
                gstep = epoch * steps + s
                lr = lr_at(r, gstep, steps, dinfo.world_size)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(derive_seed(tr.seed, 1, epoch, s, dinfo.rank))  # dropout, drop-path
                g = torch.Generator(device=device).manual_seed(derive_seed(tr.seed, 2, epoch, s, dinfo.rank))
                # scalar draws (mix choice, λ, CutMix box) come from a host generator: no device read-back
                gh = torch.Generator().manual_seed(derive_seed(tr.seed, 3, epoch, s, dinfo.rank))
                if tr.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                x, targets = prepare_batch(r, x, y, data.num_classes, epoch, g, soft, host_generator=gh)
                with autocast(tr.precision, device):
                    logits = train_model(x)
                    tlogits = None
                    if teacher is not None:
                        with torch.no_grad():
                            tlogits = teacher(x)  # same augmented + mixed batch as the student (§5.3)
                loss = compute_loss(r, logits, y, targets, tlogits)
                optimizer.zero_grad(set_to_none=True)
                # every rank skips together (DDP's averaged gradients, plus an all-reduce of the flag)
                skipped = tricks.step_with_scaler(scaler, optimizer, loss, reduce_flag=reduce_flag)
                if ema is not None:
                    ema.update(model, tk.ema_decay, skip=skipped)
                # a bad step: a non-finite loss, or (without fp16's loss scaling, where an overflow is
                # routine) non-finite gradients; max_bad_steps of them in a row stop the run
                bad = skipped
                if scaler.is_enabled():
                    bad = ~torch.isfinite(loss.detach())
                    bad = reduce_flag(bad) if reduce_flag is not None else bad  # every rank counts alike
                meter.add(loss, y.shape[0], skipped, bad, gstep, tr.max_bad_steps)
                global_done += 1
                last = s + 1 == steps
                readback = (s + 1) % tr.log_every_steps == 0 or last
                if readback:  # the only host reads of the step metrics: every log_every_steps steps
                    meter.raise_if_failed(steps)
                if bar is not None:
                    bar.update(1)
                    if readback:
                        el = time.perf_counter() - t_train
                        bar.set_postfix(loss=f"{meter.mean_loss():.4f}", lr=f"{lr:.4g}",
                                        img_s=f"{meter.images * dinfo.world_size / max(el, 1e-9):.0f}", refresh=False)
                test_stop = stop_after_steps and global_done >= stop_after_steps
                local_sig = stop.signum or (signal.SIGTERM if test_stop else 0)
                # ranks agree on a stop (a collective and a host read) every step on CPU, where a host
                # read costs nothing, and at the read-back steps on an accelerator; alone, every step
                agree = readback or test_stop or not dinfo.enabled or device.type == "cpu"
                stop_sig = agree_stop(local_sig) if agree else 0
                periodic = tr.checkpoint_every_steps and (gstep + 1) % tr.checkpoint_every_steps == 0
                if stop_sig:
                    stop.stopping = True  # torchrun's own SIGTERM to a stopping worker is not a second signal
                if (stop_sig or periodic) and not last:
                    meter.raise_if_failed(steps)
                    _fold(acc, meter, t_train, dinfo)
                    meter = _StepMeter(device, meter)
                    t_train = time.perf_counter()
                    path = checkpoint(epoch, s + 1)
                    if stop_sig:
                        if bar is not None:
                            bar.close()
                        _log(f"stopping at epoch {epoch + 1} step {s + 1}; checkpoint {path}", dinfo, logfile)
                        raise TrainingInterrupted(stop_sig, path, epoch * steps + s + 1)
            if bar is not None:
                bar.close()
            meter.raise_if_failed(steps)
            _fold(acc, meter, t_train, dinfo)
            record = {"epoch": epoch + 1, "lr": lr, "train_loss": acc["loss"] / max(acc["images"], 1)}
            if (epoch + 1) % tr.eval_every == 0 or epoch + 1 == tr.epochs:
                ev = evaluate(model, data.test, data.eval_transform, eval_bs, device, tr.precision, tr.channels_last,
                              dinfo, workers=r.data.workers, timeout=r.data.timeout)
                record.update(val_loss=ev["loss"], val_top1=ev["top1"], val_top5=ev["top5"], val_images=ev["images"])
                if ema is not None:
                    ema_model = copy.deepcopy(_unwrap(model))
                    ema.copy_to(ema_model)
                    ev2 = evaluate(ema_model, data.test, data.eval_transform, eval_bs, device, tr.precision,
                                   tr.channels_last, dinfo, workers=r.data.workers, timeout=r.data.timeout)
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
            path = checkpoint(epoch + 1, 0)
            if epoch + 1 < tr.epochs:
                # a signal during the last step or the evaluation: stop here, at the epoch boundary
                test_stop = stop_after_steps and global_done >= stop_after_steps
                stop_sig = agree_stop(stop.signum or (signal.SIGTERM if test_stop else 0))
                if stop_sig:
                    stop.stopping = True
                    _log(f"stopping after epoch {epoch + 1}; checkpoint {path}", dinfo, logfile)
                    raise TrainingInterrupted(stop_sig, path, (epoch + 1) * steps)
    if writer is not None:
        writer.close()
    record = dict(record, wall_seconds=time.perf_counter() - t_start)
    if dinfo.is_main:
        runfolder.write_json(out / "final.json", record)
    return record


class _StepMeter:
    """The training metrics of a stretch of steps, accumulated on the device.

    Nothing here is read back to the host per step: the loop reads the meter every
    train.log_every_steps steps, at the end of the epoch and before a checkpoint. The count of
    consecutive bad steps and the global step at which it reached train.max_bad_steps carry over
    from the `previous` meter (the run stops naming that exact step, read back a little later).
    """

    def __init__(self, device: torch.device, previous: _StepMeter | None = None):
        z = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.loss_sum, self.seen, self.skipped = z(torch.float64), z(torch.float64), z(torch.int64)
        self.images = 0  # images stepped over, host-side (for img/s)
        if previous is None:
            self.bad_run, self.failed_at, self.max_bad = z(torch.int64), z(torch.int64) - 1, 0
        else:
            self.bad_run, self.failed_at, self.max_bad = previous.bad_run, previous.failed_at, previous.max_bad

    def add(self, loss: torch.Tensor, n: int, skipped: torch.Tensor, bad: torch.Tensor, gstep: int,
            max_bad: int) -> None:
        loss = loss.detach()
        finite = torch.isfinite(loss)
        self.loss_sum += torch.where(finite, loss.double() * n, 0.0)
        self.seen += finite.double() * n
        self.skipped += skipped.long()
        self.bad_run = (self.bad_run + 1) * bad.long()
        self.failed_at = torch.where((self.failed_at < 0) & (self.bad_run >= max_bad), gstep, self.failed_at)
        self.images += n
        self.max_bad = max_bad

    def raise_if_failed(self, steps: int) -> None:
        g = int(self.failed_at)
        if g >= 0:
            raise NonFiniteLoss(f"loss was not finite for {self.max_bad} consecutive steps, last at epoch "
                                f"{g // steps + 1} step {g % steps} (global step {g}); the bad steps were "
                                f"skipped and no checkpoint was written after them")

    def mean_loss(self) -> float:
        return float(self.loss_sum) / max(float(self.seen), 1.0)


def _fold(acc: dict, meter: _StepMeter, t_train: float, dinfo) -> None:
    """Add this stretch's (rank-summed) loss, images, skipped steps and time to the epoch accumulators."""
    t = torch.stack([meter.loss_sum, meter.seen])
    bdist.all_reduce_sum(t, dinfo)
    loss, images = t.tolist()
    acc["loss"] += loss
    acc["images"] += int(images)
    acc["skipped"] += int(meter.skipped)
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
