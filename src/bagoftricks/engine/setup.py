"""Everything a run builds once from its recipe: device, data, model, teacher, optimizer, scaler, EMA.

The run-level tricks are applied here, in this order (the order fixes every random draw of the
initialisation): model tweaks (the zoo builds them) -> zero γ -> SyncBN -> frozen BN γ -> memory format -> teacher
(distillation) -> param groups (no bias decay, BN lr) -> base lr (linear scaling) -> loss scaler -> EMA ->
lookahead.
`setup_training` returns all of it, with the one training step (`engine.step.TrainStep`) bound to
it; the loop, `bench` and the wiring test all start from it.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from bagoftricks import data as bdata
from bagoftricks import models as bmodels
from bagoftricks import tricks
from bagoftricks.engine import distributed as bdist
from bagoftricks.engine import syncbn
from bagoftricks.engine.checkpoint import ema_weights, load_checkpoint, resolve_checkpoint
from bagoftricks.errors import BadInput, CheckpointError, RecipeError, UsageError
from bagoftricks.recipe import Recipe, from_dict

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # recipe.PRECISIONS; fp32: no autocast


def resolve_device(spec: str, dinfo: bdist.DistInfo | None = None) -> torch.device:
    """train.device as a torch.device; under torchrun, "cuda" is this process's local GPU."""
    dinfo = dinfo or bdist.DistInfo()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"train.device: '{spec}' requested but CUDA is not available")
        if spec == "cuda":
            return torch.device("cuda", dinfo.local_rank % torch.cuda.device_count())
    return torch.device(spec)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to train.precision (fp16/bf16) on `device`; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def precision_note(precision: str, device: torch.device) -> str:
    """A warning when bf16 autocast would be emulated: a CPU without native bf16 (AVX-512 BF16 or AMX)
    runs it several times slower than fp32; '' otherwise."""
    if precision != "bf16" or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return ""
    return (f"train.precision: bf16 is emulated on this CPU ({torch.backends.cpu.get_cpu_capability()}, no "
            "AVX-512 BF16 or AMX) and runs several times slower than fp32; --set train.precision=fp32 trains faster")


def eval_batch_size(r: Recipe) -> int:
    """train.eval_batch_size, or twice the training batch (no activations are kept for backward)."""
    return r.train.eval_batch_size or 2 * r.train.batch_size


# ---------------------------------------------------------------------------------------------- data
@dataclass
class DataBundle:
    train: object               # MemoryBatches | LoaderBatches (None when built for evaluation only)
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
                                 mean=mean, std=std)
    flips = _alternating_flips(r, len(train_ds), device if in_memory else torch.device("cpu")) if alternate else None
    pre = None
    if t.randaugment_ops > 0:
        ops, mag = t.randaugment_ops, t.randaugment_magnitude
        pre = lambda im, g: tricks.randaugment(im, ops, mag, g)  # uint8 -> uint8
    if in_memory:
        transform = _PreAugment(pre, augment) if pre else augment
        return bdata.MemoryBatches(train_ds, r.train.batch_size, transform, device, r.train.seed,
                                   rank=dinfo.rank, world_size=dinfo.world_size, flips=flips), True
    return bdata.LoaderBatches(train_ds, r.train.batch_size, _PerImage(pre, augment), device, r.train.seed,
                               rank=dinfo.rank, world_size=dinfo.world_size, workers=d.workers,
                               timeout=d.timeout, flips=flips), False


def eval_crop_ratio(r: Recipe) -> float:
    """data.crop_ratio with the §2 augmentation; 1.0 (the whole image) with "small" and "none".

    The evaluation must frame an image as training did: the random-resized crop of §2 trains on
    crops that enlarge the object (hence the 0.875 centre crop), while pad-and-crop and "none" train
    on the whole image, so centre-cropping at evaluation would enlarge every test image by 1/0.875
    (measured in benchmarks/README.md: "ResNet-18-D at 32 px").
    """
    return r.data.crop_ratio if r.data.augment == "paper" else 1.0


def normalisation(r: Recipe, in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) the recipe's images are normalised with, on the 0..255 scale."""
    mean, std = bdata.dataset_stats(r.data.name)
    return tuple(mean)[:in_channels], tuple(std)[:in_channels]


def eval_transform(r: Recipe, in_channels: int):
    """The recipe's evaluation transform: uint8 [B, C, H, W] -> resized (and centre-cropped with the §2
    augmentation), normalised float."""
    mean, std = normalisation(r, in_channels)
    return bdata.EvalTransform(r.data.image_size, crop_ratio=eval_crop_ratio(r), mean=mean, std=std)


def build_data(r: Recipe, device: torch.device, dinfo: bdist.DistInfo, *, train: bool = True) -> DataBundle:
    """The recipe's test split with its evaluation transform and, unless train=False, its training batches."""
    d = r.data
    kw = dict(train_limit=d.train_limit, strict=d.strict, download=d.download, image_size=d.image_size,
              num_classes=d.num_classes, synthetic_samples=d.synthetic_samples, seed=r.train.seed)
    test_ds = bdata.load_split(d.name, d.root, "test", **kw)
    # The §2 random-resized crop samples from the whole image: an image folder held in memory keeps it
    # (with its size, which only the batched augmentation reads).
    whole = d.augment == "paper" and d.in_memory != "never"
    train_ds = bdata.load_split(d.name, d.root, "train", whole_images=whole, **kw) if train else None
    if d.class_subset:
        test_ds = bdata.select_classes(test_ds, d.class_subset)
        train_ds = bdata.select_classes(train_ds, d.class_subset) if train_ds is not None else None
    ref = train_ds if train_ds is not None else test_ds
    in_channels = int(ref.images.shape[1]) if isinstance(ref, bdata.TensorDataset) else 3
    mean, std = normalisation(r, in_channels)
    eval_tf = eval_transform(r, in_channels)
    skipped = len(getattr(test_ds, "skipped", []))
    source, in_memory = None, False
    if train_ds is not None:
        skipped += len(getattr(train_ds, "skipped", []))
        source, in_memory = _train_source(r, train_ds, mean, std, device, dinfo)
    classes = list(getattr(ref, "classes", []))
    num_classes = len(classes) if classes else d.num_classes
    return DataBundle(source, test_ds, eval_tf, num_classes, in_channels, classes, skipped, in_memory)


# --------------------------------------------------------------------------------------------- model
def recipe_model(r: Recipe, num_classes: int, in_channels: int) -> nn.Module:
    """The zoo's model for the recipe's model section (weights as the zoo initialises them)."""
    m = r.model
    try:
        return bmodels.build_model(m.arch, num_classes, in_channels, variant=m.variant, width=m.width, init=m.init,
                                   activation=m.activation, se_reduction=m.se_reduction, groups=m.groups,
                                   width_per_group=m.width_per_group, drop_path=m.drop_path,
                                   width_mult=m.width_mult, stem=m.stem)
    except ValueError as e:  # an option the architecture lacks, or widths that do not fit: bad input
        raise RecipeError(f"model: {e}") from None


def setup_model(r: Recipe, num_classes: int, in_channels: int, device: torch.device,
                dinfo: bdist.DistInfo | None = None, pretrained: bool = True,
                classes: list[str] | None = None) -> nn.Module:
    """The seeded model with the run-level tricks applied: zero gamma, pretrained weights (unless
    pretrained=False: a resumed run's checkpoint replaces them; a head trained for other `classes` is
    re-initialised), frozen stages, SyncBN, frozen BN γ, memory format.

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
    return model


WHITEN_IMAGES = 5000  # training images whose patches set a whitening stem (airbench: 5000)


def fit_stem(model: nn.Module, data: DataBundle) -> None:
    """model.stem "whiten": the stem's filters from the patch covariance of the first WHITEN_IMAGES
    training images, unaugmented, framed and normalised as at evaluation."""
    ds = getattr(data.train, "ds", None)
    if not isinstance(ds, bdata.TensorDataset):
        raise UsageError("model.stem: 'whiten' needs a dataset held in memory (fashion_mnist, cifar10/100, "
                         "synthetic); this one is read image by image")
    images = data.eval_transform(ds.images[:WHITEN_IMAGES])
    tricks.fit_whitening(model.stem, images)


def _load_pretrained(model: nn.Module, path: str, classes: list[str] | None) -> str:
    try:
        return bmodels.load_pretrained(model, path, classes)
    except BadInput as e:
        raise RecipeError(f"model.pretrained: {e}") from None


def load_teacher(path: str, num_classes: int, device: torch.device, channels_last: bool) -> nn.Module:
    """A frozen teacher from a run folder or checkpoint; any architecture the zoo builds (§5.3)."""
    try:
        ckpt_path = resolve_checkpoint(path)
        state = load_checkpoint(ckpt_path)
    except CheckpointError as e:
        raise UsageError(f"tricks.distill_teacher: {e}") from None
    tr = from_dict(state["recipe"])
    if state.get("num_classes", num_classes) != num_classes:
        raise UsageError(f"tricks.distill_teacher: {ckpt_path} predicts {state.get('num_classes')} classes, "
                         f"the student's data has {num_classes}")
    teacher = recipe_model(tr, num_classes, state.get("in_channels", 3))
    teacher.load_state_dict(ema_weights(state) or state["model"])
    teacher.to(device).eval().requires_grad_(False)
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    return teacher


# ------------------------------------------------------------------------------------ lr, optimizer
def base_lr(r: Recipe, world_size: int) -> float:
    """optim.lr, or optim.lr per 256 images scaled to the global batch (§3.1)."""
    if r.tricks.linear_scaling:
        return tricks.scaled_lr(r.optim.lr, r.train.batch_size * world_size)
    return r.optim.lr


def planned_epochs(r: Recipe, epoch: int) -> int:
    """The length of the run that epoch `epoch` (0-based) was trained for: train.epochs or, in a run
    extended from shorter ones (schedule.extended_from), the shorter run's length until it ended."""
    return next((e for e in r.schedule.extended_from if epoch < e), r.train.epochs)


def scheduled_lr(r: Recipe, step: int, steps_per_epoch: int, world_size: int = 1) -> float:
    """The learning rate of global step `step`: warmup, then the recipe's schedule over the planned length
    (recomputed where an extended run went on past a shorter one's end)."""
    s = r.schedule
    epochs = planned_epochs(r, step // steps_per_epoch)
    return tricks.lr_at(step, base_lr=base_lr(r, world_size), steps_per_epoch=steps_per_epoch, epochs=epochs,
                        warmup_epochs=r.tricks.warmup_epochs, kind=s.kind, milestones=tuple(s.milestones),
                        gamma=s.gamma, floor=s.floor)


def make_optimizer(r: Recipe, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum over the recipe's param groups, fused where torch has the kernel.

    The fused step updates every tensor in one kernel and takes the skipped-step flag on the
    device, so the loop never waits on the host; where there is no fused kernel for the device
    (or this torch), torch's default (foreach on accelerators) is used and a skip costs one sync.
    """
    kw = dict(lr=lr, momentum=r.optim.momentum, nesterov=r.optim.nesterov, weight_decay=r.optim.weight_decay)
    head = bmodels.classifier_head(model) if r.optim.head_lr_mult != 1.0 else ""
    o = r.optim
    groups = lambda: [dict(g, lr=lr * g.get("lr_mult", 1.0)) for g in
                      tricks.param_groups(model, o.weight_decay, r.tricks.no_bias_decay, head, o.head_lr_mult,
                                          r.tricks.bn_lr_mult)]
    try:
        opt = torch.optim.SGD(groups(), fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # SGD fills in the group dicts it is given: fresh ones
        opt = torch.optim.SGD(groups(), **kw)
    return tricks.prepare_momentum(opt)


# ------------------------------------------------------------------------------------------ together
@dataclass
class Training:
    """What a run trains with. `model` is the plain module (checkpoints, evaluation, EMA); `step`
    calls the compiled and/or DDP-wrapped one."""
    recipe: Recipe
    device: torch.device
    dinfo: bdist.DistInfo
    data: DataBundle
    model: nn.Module
    teacher: nn.Module | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: tricks.ModelEMA | None
    step: object  # engine.step.TrainStep
    lookahead: tricks.Lookahead | None = None

    @property
    def steps_per_epoch(self) -> int:
        return self.data.train.steps_per_epoch


def setup_training(r: Recipe, device: torch.device, dinfo: bdist.DistInfo | None = None,
                   pretrained: bool = True) -> Training:
    """Data, seeded model, teacher, optimizer, scaler and EMA of recipe `r`, and the step bound to them.

    pretrained=False skips loading model.pretrained (a resumed run: its checkpoint holds the weights)."""
    from bagoftricks.engine.step import TrainStep
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
    optimizer = make_optimizer(r, model, scheduled_lr(r, 0, steps, dinfo.world_size))
    scaler = tricks.loss_scaler(tr.precision == "fp16", device.type)
    ema = tricks.ModelEMA(model) if tk.ema_decay > 0 else None
    lookahead = tricks.Lookahead(model) if tk.lookahead_every > 0 else None
    t = Training(r, device, dinfo, data, model, teacher, optimizer, scaler, ema, None, lookahead)
    t.step = TrainStep(t)
    return t


def wrap_for_training(t: Training) -> None:
    """Compile (train.compile) and, under torchrun, wrap the model in DDP for the step to call.

    Done after a checkpoint was loaded into `t.model`: every rank then holds the same weights (the
    same seed, or the checkpoint rank 0 sent); DDP also broadcasts rank 0's at construction and
    averages the gradients of the per-rank mean losses.
    """
    module = t.model
    if t.recipe.train.compile:
        module = torch.compile(module)
    if t.dinfo.enabled:
        module = nn.parallel.DistributedDataParallel(
            t.model, device_ids=[t.device.index] if t.device.type == "cuda" else None)
        if t.recipe.train.compile:
            module = torch.compile(module)
    t.step.module = module
