"""What a transfer run builds once from its recipe: data, the model with its head, the optimizer, and the
engine's training step with the transfer task (its batches and its loss).

The recipe fields a transfer run reads are the model section with model.pretrained (the backbone, see
backbone.py), data.name/root/image_size/flip, optim.*, the schedule with tricks.warmup_epochs and
tricks.linear_scaling, train.* except the ones in IGNORED, and the transfer section. A field in IGNORED
set away from its default is an error (the backbone's own tricks belong to its `bagoftricks train`
run), so that nothing a recipe says is silently dropped.
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
from bagoftricks.engine.derive import normalisation
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

IGNORED = (
    "model.sync_bn", "model.width_mult", "model.freeze", "data.class_subset", "optim.head_lr_mult", "tricks.tta",
    "data.train_limit", "data.crop_ratio", "data.augment", "data.crop_area_min", "data.jitter", "data.lighting",
    "data.pad", "data.download", "data.num_classes", "data.synthetic_samples", "data.in_memory",
    "data.workers", "data.timeout",
    "schedule.extended_from",
    "tricks.zero_gamma", "tricks.no_bias_decay", "tricks.label_smoothing", "tricks.label_smoothing_form",
    "tricks.mixup_alpha", "tricks.cutmix_alpha", "tricks.mix_off_epochs", "tricks.cutout", "tricks.random_erasing",
    "tricks.distill_teacher", "tricks.distill_temperature", "tricks.distill_hard_weight", "tricks.ema_decay",
    "tricks.randaugment_ops", "tricks.randaugment_magnitude",
    "train.precision", "train.channels_last", "train.compile",
)


def check_transfer(r: Recipe) -> Recipe:
    """`r` validated, with every field that transfer does not read at its default (a RecipeError otherwise)."""
    brecipe.validate(r)
    here, default = brecipe.flat(r), brecipe.flat(Recipe())
    for key in IGNORED:
        if here[key] != default[key]:
            raise RecipeError(f"{key}: transfer does not read this field (set to {here[key]!r}); leave it at "
                              f"{default[key]!r} (a backbone's tricks belong to its own `bagoftricks train` run)")
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
        if self.detect:
            return [im.to(dev).float() for im in images], [{"boxes": t["boxes"].to(dev), "labels": t["labels"].to(dev)}
                                                            for t in targets]
        x, y = tdata.segmentation_batch(images, targets, self.mean, self.std)
        return x.to(dev), y.to(dev)

    def forward(self, module: nn.Module, inputs):
        return module(*inputs) if self.detect else module(inputs[0])

    def loss(self, outputs, inputs) -> torch.Tensor:
        if self.detect:  # Faster R-CNN returns its losses (RPN and RoI heads) in training mode
            return sum(outputs.values())
        y = inputs[1]
        loss = F.cross_entropy(outputs["out"], y, ignore_index=IGNORE)
        if "aux" in outputs:
            loss = loss + self.recipe.transfer.aux_weight * F.cross_entropy(outputs["aux"], y, ignore_index=IGNORE)
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
        return {"task": r.transfer.task, "classes": self.train.classes, "pretrained": r.model.pretrained}

    def summary(self) -> list[str]:
        r = self.recipe
        lines = [self.pretrained_note] if self.pretrained_note else []
        lines.append(f"transfer {r.transfer.task} | backbone {r.model.arch}-{r.model.variant} "
                     f"({r.model.pretrained or 'from scratch'}) | data {r.data.name} ({len(self.train)} train, "
                     f"{len(self.test)} test, {self.train.num_classes} classes with the background) | "
                     f"batch {r.train.batch_size} | lr {r.optim.lr:g} (backbone x{r.transfer.backbone_lr_mult:g}) "
                     f"on {self.device}")
        return lines

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
        model = segmenter(body, num_classes, aux=t.aux_weight > 0)
    return model, body, note


def setup_transfer(r: Recipe, device: torch.device, load_backbone: bool = True, channels: int = 0) -> TransferJob:
    """The data, model, optimizer and training step of transfer recipe `r` (load_backbone=False: a resumed
    run, whose model takes `channels` channels)."""
    check_transfer(r)
    train, test = tdata.load_transfer_split(r, "train"), tdata.load_transfer_split(r, "test")
    steps = len(train) // r.train.batch_size
    if steps < 1:
        raise UsageError(f"train.batch_size: {r.train.batch_size} is larger than the {len(train)} training images")
    model, body, note = build_model(r, channels or train.in_channels, train.num_classes, load_backbone)
    model.to(device)
    o = r.optim
    groups = [g for g in param_groups(model, body, r.transfer.backbone_lr_mult) if g["params"]]
    opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    scaler = tricks.loss_scaler(False, device.type)  # fp32: transfer runs refuse train.precision
    ch = input_channels(body)
    mean, std = normalisation(r, ch)
    task = TransferTask(r, train, device, mean, std)
    step = TrainStep(r, task, model, opt, scaler, device=device, steps_per_epoch=steps)
    return TransferJob(r, device, train, test, model, mean, std, ch, note, opt, scaler, step, steps)
