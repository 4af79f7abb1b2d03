"""What a transfer run builds once from its recipe: data, the model with its head, the optimizer, and the
engine's training step with the transfer task (its batches and its loss).

The fields a transfer run reads are listed in READ (an allow-list): the ones set-up reads here, and the
train.* fields the engine's run loop reads. Any other field set away from its default is an error naming
it, so that nothing a recipe says is silently dropped — a field added to the recipe later included, until
transfer reads it and it is added here (tests/transfer/test_transfer_wiring.py holds the two lists to it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from bagoftricks import recipe as brecipe
from bagoftricks import tricks
from bagoftricks.data.batches import epoch_order
from bagoftricks.engine.derive import base_lr, normalisation, precision_note, resolve_precision
from bagoftricks.engine.distributed import DistInfo
from bagoftricks.engine.step import TrainStep
from bagoftricks.errors import RecipeError, UsageError
from bagoftricks.recipe import Recipe
from bagoftricks.seeds import derive_seed
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.augment import augmentation
from bagoftricks.transfer.backbone import backbone_for, input_channels
from bagoftricks.transfer.evaluate import evaluate_transfer
from bagoftricks.transfer.heads import detector, segmenter
from bagoftricks.transfer.targets import IGNORE, SceneSplit

# What transfer's set-up reads (each has a case in the wiring test: two values, two different builds)
READ_HERE = (
    "model.arch", "model.variant", "model.width", "model.init", "model.activation", "model.se_reduction",
    "model.groups", "model.width_per_group", "model.drop_path", "model.pretrained",
    "data.name", "data.root", "data.image_size", "data.flip", "data.strict",
    "optim.lr", "optim.momentum", "optim.nesterov", "optim.weight_decay",
    "schedule.kind", "schedule.milestones", "schedule.gamma", "schedule.floor",
    "tricks.linear_scaling", "tricks.warmup_epochs",
    "train.batch_size", "train.seed", "train.precision", "train.channels_last", "train.eval_batch_size",
    "transfer.task", "transfer.head", "transfer.frozen_bn", "transfer.trainable_layers",
    "transfer.backbone_lr_mult", "transfer.fpn_channels", "transfer.anchor_scale", "transfer.aux_weight",
    "transfer.scale_jitter", "transfer.train_scenes", "transfer.test_scenes",
)
# What the engine's run loop reads for every job (tested with the loop: tests/engine,
# tests/transfer/test_transfer_run.py)
READ_BY_LOOP = (
    "train.epochs", "train.steps", "train.budget", "train.resized_at", "train.resized_from", "train.device",
    "train.threads", "train.checkpoint_every_steps", "train.keep_checkpoints", "train.eval_every",
    "train.log_every_steps", "train.max_bad_steps", "train.resume",
)
READ = READ_HERE + READ_BY_LOOP


def check_transfer(r: Recipe) -> Recipe:
    """`r` validated, with every field that transfer does not read (not in READ) at its default: a RecipeError
    naming the first one otherwise (and the others set, if any)."""
    brecipe.validate(r)
    here, default = brecipe.flat(r), brecipe.flat(Recipe())
    refused = [k for k, v in here.items() if k not in READ and v != default[k]]
    if refused:
        key = refused[0]
        section = key.split(".")[0]
        why = "a backbone's tricks belong to its own `bagoftricks train` run" if section == "tricks" else \
            f"of {section}.* transfer reads {', '.join(k for k in READ if k.startswith(section + '.')) or 'none'}"
        also = f"; also set and not read: {', '.join(refused[1:])}" if refused[1:] else ""
        raise RecipeError(f"{key}: transfer does not read this field (set to {here[key]!r}); leave it at "
                          f"{default[key]!r} ({why}){also}")
    return r


class TransferTask:
    """The `StepTask` of detection and segmentation: a batch is a list of sample indices of the training
    split, loaded and augmented here after torch's generator is seeded from (seed, epoch, step), so that
    the augmentation and the detector's sampling draw the same after a resume."""

    def __init__(self, recipe: Recipe, train: SceneSplit, device: torch.device, mean, std):
        self.recipe, self.train, self.device, self.mean, self.std = recipe, train, device, mean, std
        self.detect = recipe.transfer.task == "detect"
        t = recipe.transfer
        self.augment = augmentation(recipe.data.image_size, recipe.data.flip, t.scale_jitter)

    def inputs(self, indices: list[int], epoch: int, s: int):
        torch.manual_seed(derive_seed(self.recipe.train.seed, "transfer-step", epoch, s))
        images, targets = tdata.load_batch(self.train, indices, self.augment)
        dev = self.device
        if self.detect:  # one copy of the whole batch to the device (every image is image_size square)
            x = torch.stack(images).to(dev, non_blocking=True).float()
            return list(x.unbind(0)), [{"boxes": t["boxes"].to(dev), "labels": t["labels"].to(dev)} for t in targets]
        x, y = tdata.segmentation_batch(images, targets, self.mean, self.std)
        fmt = torch.channels_last if self.recipe.train.channels_last else torch.contiguous_format
        return x.to(dev, non_blocking=True).contiguous(memory_format=fmt), y.to(dev, non_blocking=True)

    def forward(self, module: nn.Module, inputs):
        return module(*inputs) if self.detect else module(inputs[0])

    def loss(self, outputs, inputs) -> torch.Tensor:
        """The detector's own losses (computed in fp32 by its heads), or the label maps' cross-entropy of the
        logits read as fp32 (they come out of autocast in bf16/fp16)."""
        if self.detect:
            return sum(outputs.values())
        y = inputs[1]
        loss = F.cross_entropy(outputs["out"].float(), y, ignore_index=IGNORE)
        if "aux" in outputs:
            aux = F.cross_entropy(outputs["aux"].float(), y, ignore_index=IGNORE)
            loss = loss + self.recipe.transfer.aux_weight * aux
        return loss

    def images(self, indices: list[int]) -> int:
        return len(indices)


@dataclass
class TransferJob:
    """A detection or segmentation model with its data: the run loop's `Job` (engine.loop) when it holds
    the training parts, the model of a finished run (transfer.predict.load_transfer) when it does not."""
    recipe: Recipe
    device: torch.device
    train: SceneSplit
    test: SceneSplit
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int                  # the model's input channels
    pretrained_note: str = ""      # what model.pretrained loaded (for the run log)
    optimizer: torch.optim.Optimizer | None = None
    scaler: torch.amp.GradScaler | None = None
    step: TrainStep | None = None
    steps_per_epoch: int = 0
    dinfo: DistInfo = field(default_factory=DistInfo)
    ema: None = None               # no EMA or lookahead for transfer runs
    lookahead: None = None

    @property
    def detect(self) -> bool:
        return self.recipe.transfer.task == "detect"

    def batches(self, epoch: int, first: int):
        order = epoch_order(len(self.train), self.recipe.train.seed, epoch, purpose="transfer-order")
        return tdata.batch_indices(order, self.recipe.train.batch_size, first)

    def wrap(self) -> None:
        pass  # one process, eager (train.compile is not read by transfer runs)

    def close(self) -> None:
        pass  # its batches are indices into tensors in memory: nothing runs beside it

    def evaluate(self) -> dict:
        return evaluate_transfer(self)

    def eval_seconds(self) -> float:
        """One evaluation's seconds, from the first 4 evaluation batches of the test split."""
        r = self.recipe
        k = min(len(self.test), 4 * (r.train.eval_batch_size or 2 * r.train.batch_size))
        part = replace(self.test, images=self.test.images[:k], targets=self.test.targets[:k])
        t0 = time.perf_counter()
        evaluate_transfer(replace(self, test=part))
        return (time.perf_counter() - t0) * len(self.test) / max(k, 1)

    def describe(self) -> dict:
        return {"task": self.recipe.transfer.task, "classes": list(self.train.classes),
                "num_classes": self.train.num_classes, "in_channels": self.channels}

    def folder_record(self) -> dict:
        r = self.recipe
        return {"task": r.transfer.task, "classes": self.train.classes, "pretrained": r.model.pretrained,
                "skipped_files": len(self.skipped_samples())}

    def skipped_samples(self) -> list[tuple[str, str, str]]:
        """(split, file, reason) of every sample the readers skipped (data.strict: false)."""
        return [(name, f, why) for name, split in (("train", self.train), ("test", self.test))
                for f, why in split.skipped]

    def summary(self) -> list[str]:
        r = self.recipe
        lines = [self.pretrained_note] if self.pretrained_note else []
        head = f"{r.transfer.head} " if not self.detect else ""
        lines.append(f"transfer {r.transfer.task} | {head}backbone {r.model.arch}-{r.model.variant} "
                     f"({r.model.pretrained or 'from scratch'}) | data {r.data.name} ({len(self.train)} train, "
                     f"{len(self.test)} test, {self.train.num_classes} classes with the background) | "
                     f"batch {r.train.batch_size} | lr {base_lr(r, 1):g} (backbone x{r.transfer.backbone_lr_mult:g}) "
                     f"| {r.train.precision}{' channels_last' if r.train.channels_last else ''} on {self.device}")
        slow = precision_note(r.train.precision, self.device)
        if r.transfer.frozen_bn and not r.model.pretrained:
            lines.append("warning: transfer.frozen_bn: true without model.pretrained freezes the backbone's BN at its "
                         "initial values (the identity): a backbone from scratch then trains without normalisation")
        return lines + ([f"warning: {slow}"] if slow else [])

    def scores(self, record: dict) -> str:
        keys = [k for k in ("map_50", "map", "miou", "pixel_acc") if k in record]
        return "".join(f" | {k} {record[k]:.2f}" for k in keys)


def param_groups(model: nn.Module, backbone: nn.Module, lr_mult: float) -> list[dict]:
    """Two SGD groups: the trainable backbone parameters (lr x lr_mult) and the heads' (lr x 1)."""
    ids = {id(p) for p in backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"name": "backbone", "lr_mult": lr_mult, "params": [p for p in trainable if id(p) in ids]},
            {"name": "heads", "lr_mult": 1.0, "params": [p for p in trainable if id(p) not in ids]}]


def build_model(r: Recipe, in_channels: int, num_classes: int,
                load: bool = True) -> tuple[nn.Module, nn.Module, str]:
    """(model with its head, its backbone body, what model.pretrained loaded into the backbone)."""
    body, note = backbone_for(r, in_channels, load)
    torch.manual_seed(derive_seed(r.train.seed, "transfer-heads"))
    t = r.transfer
    mean, std = normalisation(r, input_channels(body))
    if t.task == "detect":
        model = detector(body, num_classes, r.data.image_size, t.fpn_channels, t.anchor_scale, mean, std)
    else:
        model = segmenter(body, num_classes, aux=t.aux_weight > 0, head=t.head, image_size=r.data.image_size)
    return model, body, note


def setup_transfer(r: Recipe, device: torch.device, load_backbone: bool = True, channels: int = 0) -> TransferJob:
    """The data, model, optimizer and training step of transfer recipe `r` (load_backbone=False: a resumed
    run, whose model takes `channels` channels).

    Precision as classification trains: the step's forward under train.precision's autocast, fp16 with a
    dynamic loss scale (bf16 and fp32 without), every step guarded against non-finite losses and gradients;
    train.channels_last puts the weights (and the segmentation batches) in NHWC; train.precision "auto" trains in what
    `device` computes natively."""
    r = resolve_precision(r, device)
    check_transfer(r)
    train, test = tdata.load_transfer_splits(r)
    steps = len(train) // r.train.batch_size
    if steps < 1:
        raise UsageError(f"train.batch_size: {r.train.batch_size} is larger than the {len(train)} training images")
    model, body, note = build_model(r, channels or train.in_channels, train.num_classes, load_backbone)
    model.to(device)
    if r.train.channels_last:
        model.to(memory_format=torch.channels_last)
    o = r.optim
    groups = [g for g in param_groups(model, body, r.transfer.backbone_lr_mult) if g["params"]]
    opt = tricks.build_optimizer("sgd", groups, lr=base_lr(r, 1), weight_decay=o.weight_decay, momentum=o.momentum,
                                 nesterov=o.nesterov)
    scaler = tricks.loss_scaler(r.train.precision == "fp16", device.type)
    ch = input_channels(body)
    mean, std = normalisation(r, ch)
    task = TransferTask(r, train, device, mean, std)
    step = TrainStep(r, task, model, opt, scaler, device=device, steps_per_epoch=steps)
    return TransferJob(r, device, train, test, model, mean, std, ch, note, opt, scaler, step, steps)
