"""Everything a run builds once from its recipe: device, data, model, teacher, optimizer, scaler, EMA.

The run-level tricks are applied here, in this order (the order fixes every random draw of the
initialisation): model tweaks (the zoo builds them) -> zero γ -> SyncBN -> frozen BN γ -> memory format -> teacher
(distillation) -> param groups (no bias decay, BN lr) -> base lr (linear scaling) -> loss scaler -> EMA ->
lookahead.
`setup_training` returns all of it as a `Training` (the run loop's job), with the one training step
(`engine.step.TrainStep`, classification's `engine.classify.Classify` task) bound to it; the loop,
`bench` and the wiring test all start from it.
"""
from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from bagoftricks import data as bdata
from bagoftricks import models as bmodels
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import compiled, syncbn
from bagoftricks.engine.classify import Classify
from bagoftricks.engine.derive import (base_lr, eval_batch_size, eval_transform, model_from_checkpoint, normalisation,
                                       precision_note, recipe_model, resolve_precision, scheduled_lr, tta_border)
from bagoftricks.engine.evaluate import evaluate
from bagoftricks.engine.step import TrainStep
from bagoftricks.errors import BadInput, CheckpointError, RecipeError, UsageError
from bagoftricks.recipe import Recipe

# ---------------------------------------------------------------------------------------------- data
@dataclass
class DataBundle:
    train: object               # MemoryBatches | LoaderBatches (None when built for evaluation only)
    test: object                # TensorDataset | ImageFolderDataset
    eval_transform: object
    num_classes: int
    in_channels: int
    classes: list
    skipped: list               # (split, file, reason) of every file the readers skipped
    in_memory: bool


class _PreAugment:
    """Runs a uint8 -> uint8 step (RandAugment) before the batched §2 augmentation."""

    def __init__(self, pre: Callable, inner: Callable):
        self.pre, self.inner = pre, inner

    def __call__(self, images, generator, **kw):
        return self.inner(self.pre(images, generator), generator, **kw)


class _PerImage:
    """Per-image path (DataLoader workers): optional RandAugment, then the §2 reference transform."""

    def __init__(self, pre: Callable | None, augment):
        self.pre, self.augment = pre, augment

    def __call__(self, img, generator=None):
        if self.pre is not None:
            img = self.pre(img[None], generator)[0]
        return self.augment.per_image(img, generator)


def _alternating_flips(r: Recipe, n: int, device: torch.device) -> Callable:
    """data.flip_mode "alternate": flips(index, epoch), one bit per image drawn once (the same on every
    rank), inverted every epoch."""
    bits = tricks.flip_bits(n, r.data.flip, r.train.seed).to(device)
    return functools.partial(tricks.epoch_flips, bits)


def _train_source(r: Recipe, train_ds, mean, std, device: torch.device, dinfo: bdist.DistInfo):
    """The training batches: in memory and augmented in whole batches when the split fits, else per image."""
    d, t = r.data, r.tricks
    if d.in_memory == "always" and not isinstance(train_ds, bdata.TensorDataset):
        raise UsageError(f"data.in_memory: 'always' but {d.name} at {d.root or 'its default root'} "
                         f"does not fit in memory")
    in_memory = isinstance(train_ds, bdata.TensorDataset) and d.in_memory != "never"
    alternate = d.flip_mode == "alternate"
    augment = bdata.BatchAugment(d.image_size, d.augment, area=(d.crop_area_min, 1.0),
                                 flip=0.0 if alternate else d.flip, jitter=d.jitter, lighting=d.lighting, pad=d.pad,
                                 mean=mean, std=std, pad_mode=d.pad_mode)
    flips = _alternating_flips(r, len(train_ds), device if in_memory else torch.device("cpu")) if alternate else None
    pre = None
    if t.randaugment_ops > 0:
        ops, mag = t.randaugment_ops, t.randaugment_magnitude
        pre = lambda im, g: tricks.randaugment_batch(im, ops, mag, g)  # uint8 -> uint8
    if in_memory:
        transform = _PreAugment(pre, augment) if pre else augment
        return bdata.MemoryBatches(train_ds, r.train.batch_size, transform, device, r.train.seed,
                                   rank=dinfo.rank, world_size=dinfo.world_size, flips=flips), True
    if decode_on_device(r, device):
        return bdata.DeviceDecodeBatches(train_ds, r.train.batch_size, augment, device, r.train.seed, rank=dinfo.rank,
                                         world_size=dinfo.world_size, flips=flips, threads=d.workers), False
    return bdata.LoaderBatches(train_ds, r.train.batch_size, _PerImage(pre, augment), device, r.train.seed,
                               rank=dinfo.rank, world_size=dinfo.world_size, workers=d.workers,
                               timeout=d.timeout, flips=flips), False


def decode_on_device(r: Recipe, device: torch.device) -> bool:
    """data.decode for a training split read per image: "device" (bagoftricks.data.device_decode), or "auto" on a
    GPU when the augmentation can run there (§2's, no RandAugment: its per-image op choice is made on the host)."""
    d = r.data  # data.decode "device" with RandAugment is refused by recipe.validate
    auto = device.type == "cuda" and d.augment == "paper" and r.tricks.randaugment_ops == 0
    return d.decode == "device" or (d.decode == "auto" and auto and d.name == "imagefolder")


def _splits(r: Recipe, train: bool):
    """(training split or None, evaluation split): the dataset's test split or, with data.holdout N, the last N
    images of its training split (taken before data.train_limit keeps the first images of the rest)."""
    d = r.data
    kw = dict(train_limit=d.train_limit, strict=d.strict, download=d.download, image_size=d.image_size,
              num_classes=d.num_classes, synthetic_samples=d.synthetic_samples, seed=r.train.seed)
    # The §2 random-resized crop samples from the whole image: an image folder held in memory keeps it
    # (with its size, which only the batched augmentation reads).
    whole = d.augment == "paper" and d.in_memory != "never"
    if not d.holdout:
        test_ds = bdata.load_split(d.name, d.root, "test", **kw)
        if train and d.decode == "device":  # read per image, decoded on the device: never decoded into memory here
            return bdata.load_split(d.name, d.root, "train", memory_limit_bytes=0, **kw), test_ds
        return (bdata.load_split(d.name, d.root, "train", whole_images=whole, **kw) if train else None), test_ds
    full = bdata.load_split(d.name, d.root, "train", whole_images=whole, **dict(kw, train_limit=0))
    if not isinstance(full, bdata.TensorDataset) or full.sizes is not None:
        raise UsageError(f"data.holdout: needs a dataset held in memory as evaluated (fashion_mnist, cifar10/100, "
                         f"synthetic); {d.name} at {d.root or 'its default root'} is not")
    rest, held = bdata.split_holdout(full, d.holdout)
    if d.train_limit:
        rest = bdata.TensorDataset(rest.images[:d.train_limit], rest.labels[:d.train_limit], rest.classes)
    return (rest if train else None), held


def build_data(r: Recipe, device: torch.device, dinfo: bdist.DistInfo, *, train: bool = True) -> DataBundle:
    """The recipe's test split with its evaluation transform and, unless train=False, its training batches."""
    d = r.data
    train_ds, test_ds = _splits(r, train)
    if d.class_subset:
        test_ds = bdata.select_classes(test_ds, d.class_subset)
        train_ds = bdata.select_classes(train_ds, d.class_subset) if train_ds is not None else None
    ref = train_ds if train_ds is not None else test_ds
    in_channels = int(ref.images.shape[1]) if isinstance(ref, bdata.TensorDataset) else 3
    mean, std = normalisation(r, in_channels)
    eval_tf = eval_transform(r, in_channels)
    skipped = [("test", f, why) for f, why in getattr(test_ds, "skipped", [])]
    source, in_memory = None, False
    if train_ds is not None:
        skipped = [("train", f, why) for f, why in getattr(train_ds, "skipped", [])] + skipped
        source, in_memory = _train_source(r, train_ds, mean, std, device, dinfo)
    classes = list(getattr(ref, "classes", []))
    num_classes = len(classes) if classes else d.num_classes
    return DataBundle(source, test_ds, eval_tf, num_classes, in_channels, classes, skipped, in_memory)


# --------------------------------------------------------------------------------------------- model
def setup_model(r: Recipe, num_classes: int, in_channels: int, device: torch.device,
                dinfo: bdist.DistInfo | None = None, pretrained: bool = True,
                classes: list[str] | None = None) -> nn.Module:
    """The seeded model with the run-level tricks applied: zero gamma, pretrained weights (unless
    pretrained=False: a resumed run's checkpoint replaces them; a head trained for other `classes` is
    re-initialised), frozen stages, SyncBN, frozen BN γ, memory format, on a CPU the small convolutions'
    matrix-product path (train.small_convs).

    The line saying what model.pretrained loaded is kept as ``model.pretrained_note`` for the run log.
    """
    torch.manual_seed(r.train.seed)
    model = recipe_model(r, num_classes, in_channels)
    if r.tricks.zero_gamma:
        tricks.zero_last_bn_gamma(model)
    if r.model.pretrained and pretrained:
        model.pretrained_note = _load_pretrained(model, r.model.pretrained, classes)
    if r.model.freeze:
        bmodels.freeze(model, r.model.freeze)
    if dinfo is not None and dinfo.enabled and r.model.sync_bn:
        model = syncbn.convert(model, device)  # torch's on CUDA, the portable one on CPU (gloo)
    if r.tricks.bn_freeze_gamma:
        tricks.freeze_bn_gamma(model)
    model.to(device)
    if r.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cpu" and r.train.small_convs == "matmul" and r.train.compile == "none":
        bmodels.use_small_convs(model)  # tiny-output convolutions as matrix products (models/small_conv.py)
    return model


WHITEN_IMAGES = 5000  # training images whose patches set a whitening stem (airbench: 5000)


def fit_stem(model: nn.Module, data: DataBundle) -> None:
    """model.stem "whiten": the stem's filters from the patch covariance of the first WHITEN_IMAGES
    training images, unaugmented, framed and normalised as at evaluation."""
    ds = getattr(data.train, "ds", None)
    if not isinstance(ds, bdata.TensorDataset):
        raise UsageError("model.stem: 'whiten' needs a dataset held in memory (fashion_mnist, cifar10/100, synthetic, "
                         f"an image folder of up to {bdata.MEMORY_LIMIT_BYTES >> 30} GiB decoded); this one is read "
                         "image by image")
    images = data.eval_transform(ds.images[:WHITEN_IMAGES])
    tricks.fit_whitening(model.stem, images)


def _load_pretrained(model: nn.Module, path: str, classes: list[str] | None) -> str:
    try:
        return bmodels.load_pretrained(model, path, classes)
    except BadInput as e:
        raise RecipeError(f"model.pretrained: {e}") from None


def load_teacher(path: str, num_classes: int, device: torch.device, channels_last: bool) -> nn.Module:
    """A frozen teacher from a run folder or checkpoint, its EMA weights when the run kept them; any
    architecture the zoo builds (§5.3)."""
    try:
        ck = model_from_checkpoint(path, ema=None)
    except CheckpointError as e:
        raise UsageError(f"tricks.distill_teacher: {e}") from None
    if int(ck.state.get("num_classes", num_classes)) != num_classes:
        raise UsageError(f"tricks.distill_teacher: {ck.path} predicts {ck.state.get('num_classes')} classes, "
                         f"the student's data has {num_classes}")
    teacher = ck.model
    teacher.to(device).eval().requires_grad_(False)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


# ------------------------------------------------------------------------------------ lr, optimizer
def _stem_bias_group(r: Recipe, model: nn.Module, groups: list[dict], steps_per_epoch: int) -> list[dict]:
    """model.stem_bias_epochs: the stem's bias in a group of its own whose lr is 0 from that epoch on (the
    training step reads "until_step"), so it trains for the first epochs and then stays as it is."""
    bias = getattr(getattr(model, "stem", None), "bias", None)
    if not r.model.stem_bias_epochs or bias is None:
        return groups
    out = [dict(g, params=[p for p in g["params"] if p is not bias]) for g in groups]
    home = next(g for g in groups if any(p is bias for p in g["params"]))
    until = round(r.model.stem_bias_epochs * steps_per_epoch)
    return [g for g in out if g["params"]] + [dict(home, name="stem_bias", params=[bias], until_step=until)]


def make_optimizer(r: Recipe, model: nn.Module, lr: float, steps_per_epoch: int = 1):
    """The recipe's optimizer (optim.name) over its param groups (no bias decay, BN lr, head lr; the step sets
    each group's lr from the schedule and the group's lr_mult), fused where torch has the kernel.

    A fused optimizer takes the skipped-step flag on the device, so the loop never waits on the host; the
    others read it on the host (free on a CPU) or undo a bad step on the device (tricks.guarded_step)."""
    o = r.optim
    head = bmodels.classifier_head(model) if o.head_lr_mult != 1.0 else ""
    groups = [dict(g, lr=lr * g.get("lr_mult", 1.0)) for g in
              tricks.param_groups(model, o.weight_decay, r.tricks.no_bias_decay, head, o.head_lr_mult,
                                  r.tricks.bn_lr_mult)]
    groups = _stem_bias_group(r, model, groups, steps_per_epoch)
    try:
        return tricks.build_optimizer(o.name, groups, lr=lr, weight_decay=o.weight_decay, momentum=o.momentum,
                                      nesterov=o.nesterov, betas=tuple(o.betas), eps=o.eps,
                                      trust_coefficient=o.trust_coefficient, model=model,
                                      muon_momentum=o.muon_momentum, ns_steps=o.ns_steps, muon_takes=o.muon_takes,
                                      fallback=o.fallback, fallback_lr_mult=o.fallback_lr_mult)
    except ImportError as e:
        raise UsageError(str(e)) from None
    except ValueError as e:
        raise RecipeError(f"optim: {e}") from None


# ------------------------------------------------------------------------------------------ together
EVAL_SAMPLE_BATCHES = 4  # evaluation batches that train.budget times to estimate a whole evaluation

@dataclass
class Training:
    """What a classification run trains with: the loop's `Job` (engine.loop). `model` is the plain module
    (checkpoints, evaluation, EMA); `step.module` the compiled and/or DDP-wrapped one it calls."""
    recipe: Recipe
    device: torch.device
    dinfo: bdist.DistInfo
    data: DataBundle
    model: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: tricks.ModelEMA | None
    step: TrainStep
    lookahead: tricks.Lookahead | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self.data.train.steps_per_epoch

    def batches(self, epoch: int, first: int):
        return self.data.train.epoch(epoch, first)

    def wrap(self) -> None:
        wrap_for_training(self)

    def close(self) -> None:
        self.data.train.close()  # setup_training builds the training batches always (build_data's train=True)

    def evaluate(self, test=None) -> dict:
        """Top-1/top-5 of the test split (or of `test`; and of the EMA weights, and with TTA, when the recipe asks)."""
        r = self.recipe
        kw = dict(dinfo=self.dinfo, workers=r.data.workers, timeout=r.data.timeout, tta=r.tricks.tta,
                  border=tta_border(r, self.data.eval_transform))
        args = (self.data.test if test is None else test, self.data.eval_transform, eval_batch_size(r), self.device,
                r.train.precision, r.train.channels_last)
        ev = evaluate(self.model, *args, **kw)
        out = dict(val_loss=ev["loss"], val_top1=ev["top1"], val_top5=ev["top5"], val_images=ev["images"])
        if "tta_top1" in ev:  # tricks.tta: beside the plain numbers
            out.update(val_tta_top1=ev["tta_top1"], val_tta_top5=ev["tta_top5"])
        if self.ema is not None:
            ema_model = copy.deepcopy(self.model)
            self.ema.copy_to(ema_model)
            ev2 = evaluate(ema_model, *args, **kw)
            out.update(ema_val_top1=ev2["top1"], ema_val_top5=ev2["top5"])
            if "tta_top1" in ev2:
                out.update(ema_val_tta_top1=ev2["tta_top1"])
        if self.step.core is not None:  # train.compile "step": the seconds its graphs took to compile and capture
            out["compile_seconds"] = self.step.core.compile_seconds
        return out

    def eval_seconds(self) -> float:
        """One evaluation's seconds, from the first EVAL_SAMPLE_BATCHES batches of the test split (one more untimed)."""
        test, bs = self.data.test, eval_batch_size(self.recipe)
        k = min(len(test), EVAL_SAMPLE_BATCHES * bs)
        self.evaluate(_head(test, bs))  # warm-up: the first evaluation batches pay for allocations
        t0 = time.perf_counter()
        self.evaluate(_head(test, k))
        return (time.perf_counter() - t0) * len(test) / max(k, 1)

    def describe(self) -> dict:
        d = self.data
        return {"num_classes": d.num_classes, "in_channels": d.in_channels, "classes": list(d.classes)}

    def folder_record(self) -> dict:
        r, ws, d = self.recipe, self.dinfo.world_size, self.data
        return {"base_lr": base_lr(r, ws), "global_batch": r.train.batch_size * ws, "in_memory_data": d.in_memory,
                "num_classes": d.num_classes, "skipped_files": len(d.skipped)}

    def skipped_samples(self) -> list[tuple[str, str, str]]:
        return list(self.data.skipped)

    def summary(self) -> list[str]:
        r, data, ws = self.recipe, self.data, self.dinfo.world_size
        lines = [f"model {r.model.arch}-{r.model.variant} | data {r.data.name} ({data.num_classes} classes, "
                 f"{'in-memory batched' if data.in_memory else _per_image_kind(data.train)}) | global batch "
                 f"{r.train.batch_size * ws} ({ws} x {r.train.batch_size}) | base lr "
                 f"{base_lr(r, ws):.4g} | {r.train.precision} on {self.device}",
                 f"optimizer: {r.optim.name}: {tricks.describe_optimizer(self.optimizer)}"]
        note = getattr(self.model, "pretrained_note", "")
        if note:
            lines.append(note)
        slow = precision_note(r.train.precision, self.device)
        if slow:
            lines.append(f"warning: {slow}")
        if r.train.compile == "step":
            lines.append(compiled.describe(self.device))
        return lines

    def scores(self, record: dict) -> str:
        if "val_top1" not in record:
            return ""
        top = f" | top-1 {record['val_top1']:.2f} top-5 {record['val_top5']:.2f}"
        if "val_tta_top1" in record:
            top += f" (TTA {self.recipe.tricks.tta}: top-1 {record['val_tta_top1']:.2f})"
        return top


def _per_image_kind(source) -> str:
    return "per-image files decoded on the device" if isinstance(source, bdata.DeviceDecodeBatches) else \
        "per-image loader"


def _head(ds, k: int):
    """The first k samples of a test split."""
    if isinstance(ds, bdata.TensorDataset):
        return bdata.TensorDataset(ds.images[:k], ds.labels[:k], ds.classes)
    return torch.utils.data.Subset(ds, range(min(k, len(ds))))


def setup_training(r: Recipe, device: torch.device, dinfo: bdist.DistInfo | None = None,
                   pretrained: bool = True) -> Training:
    """Data, seeded model, teacher, optimizer, scaler and EMA of recipe `r`, and the step bound to them.

    pretrained=False skips loading model.pretrained (a resumed run: its checkpoint holds the weights); train.precision
    "auto" trains in what `device` computes natively (the Training's recipe says which)."""
    r = resolve_precision(r, device)
    dinfo = dinfo or bdist.DistInfo()
    tr, tk = r.train, r.tricks
    data = build_data(r, device, dinfo)
    steps = data.train.steps_per_epoch
    if steps < 1:
        raise UsageError(f"train.batch_size: {tr.batch_size} x {dinfo.world_size} process(es) is larger than the "
                         f"{len(data.train.ds) if hasattr(data.train, 'ds') else 'available'} training images")
    model = setup_model(r, data.num_classes, data.in_channels, device, dinfo, pretrained, data.classes or None)
    if r.model.stem == "whiten" and not (r.model.pretrained and pretrained):  # pretrained weights hold a stem
        fit_stem(model, data)
    teacher = load_teacher(tk.distill_teacher, data.num_classes, device, tr.channels_last) if tk.distill_teacher \
        else None
    optimizer = make_optimizer(r, model, scheduled_lr(r, 0, steps, dinfo.world_size), steps)
    scaler = tricks.loss_scaler(tr.precision == "fp16", device.type)
    ema = tricks.ModelEMA(model, warmup=tk.ema_warmup) if tk.ema_decay > 0 else None
    lookahead = tricks.Lookahead(model) if tk.lookahead_every > 0 else None
    task = Classify(r, data.num_classes, device, steps, dinfo.rank, teacher)
    step = TrainStep(r, task, model, optimizer, scaler, device=device, steps_per_epoch=steps, dinfo=dinfo, ema=ema,
                     lookahead=lookahead)
    return Training(r, device, dinfo, data, model, teacher, optimizer, scaler, ema, step, lookahead)


def wrap_for_training(t: Training) -> None:
    """Compile (train.compile) and, under torchrun, wrap the model in DDP for the step to call.

    Done after a checkpoint was loaded into `t.model`: every rank then holds the same weights (the
    same seed, or the checkpoint rank 0 sent); DDP also broadcasts rank 0's at construction and
    averages the gradients of the per-rank mean losses.
    """
    mode = t.recipe.train.compile  # none | model | step (engine.compiled: forward + loss, captured on a GPU)
    module = t.model
    if mode == "model":
        module = torch.compile(module)
    if t.dinfo.enabled:
        module = nn.parallel.DistributedDataParallel(
            t.model, device_ids=[t.device.index] if t.device.type == "cuda" else None)
        if mode == "model":
            module = torch.compile(module)
    t.step.module = module
    if mode == "step":
        compiled.compile_step(t.step)
