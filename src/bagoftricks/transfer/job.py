"""What a transfer run builds once from its recipe: data, the model with its head, the optimizer; and the loss.

The recipe fields a transfer run reads are the model section with model.pretrained (the backbone, see
backbone.py), data.name/root/image_size/flip, optim.*, the schedule with tricks.warmup_epochs and
tricks.linear_scaling, train.* except the ones in IGNORED, and the transfer section. A field in IGNORED
set away from its default is an error (the backbone's own tricks belong to its `bagoftricks train`
run), so that nothing a recipe says is silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bagoftricks import recipe as brecipe
from bagoftricks.engine.setup import scheduled_lr
from bagoftricks.errors import RecipeError, UsageError
from bagoftricks.recipe import Recipe
from bagoftricks.seeds import derive_seed
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.backbone import backbone_for, input_channels
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
    "train.precision", "train.channels_last", "train.compile", "train.max_bad_steps",
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


@dataclass
class Job:
    recipe: Recipe
    device: torch.device
    train: SceneSplit
    test: SceneSplit
    model: nn.Module
    optimizer: torch.optim.Optimizer
    mean: list[float]
    std: list[float]
    steps_per_epoch: int
    channels: int                  # the model's input channels
    pretrained_note: str = ""      # what model.pretrained loaded (for the run log)

    @property
    def detect(self) -> bool:
        return self.recipe.transfer.task == "detect"

    def set_lr(self, global_step: int) -> float:
        """The schedule's lr at `global_step`, times each group's lr_mult (the backbone's multiplier)."""
        lr = scheduled_lr(self.recipe, global_step, self.steps_per_epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_mult"]
        return lr

    def batch(self, indices: list[int], epoch: int, step: int) -> tuple[list[torch.Tensor], list[dict]]:
        """Training batch of step (epoch, step): torch's generator is seeded from (seed, epoch, step) first,
        so the augmentation and the detector's sampling draw the same after a resume."""
        torch.manual_seed(derive_seed(self.recipe.train.seed, "transfer-step", epoch, step))
        tf = tdata.augmentation(self.recipe.data.image_size, self.recipe.data.flip, self.recipe.transfer.scale_jitter)
        return tdata.load_batch(self.train, indices, tf)

    def loss(self, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """The training loss of a batch (the model in train mode)."""
        dev = self.device
        if self.detect:
            tg = [{"boxes": t["boxes"].to(dev), "labels": t["labels"].to(dev)} for t in targets]
            losses = self.model([im.to(dev).float() for im in images], tg)
            return sum(losses.values())
        x, y = tdata.segmentation_batch(images, targets, self.mean, self.std)
        out = self.model(x.to(dev))
        y = y.to(dev)
        loss = F.cross_entropy(out["out"], y, ignore_index=IGNORE)
        if "aux" in out:
            loss = loss + self.recipe.transfer.aux_weight * F.cross_entropy(out["aux"], y, ignore_index=IGNORE)
        return loss


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
    mean, std = tdata.normalisation(r, input_channels(body))
    if t.task == "detect":
        model = detector(body, num_classes, r.data.image_size, t.fpn_channels, t.anchor_scale, mean, std)
    else:
        model = segmenter(body, num_classes, aux=t.aux_weight > 0)
    return model, body, note


def setup_transfer(r: Recipe, device: torch.device, load_backbone: bool = True, channels: int = 0) -> Job:
    """The data, model and optimizer of transfer recipe `r` (load_backbone=False: a resumed run, whose
    model takes `channels` channels)."""
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
    ch = input_channels(body)
    mean, std = tdata.normalisation(r, ch)
    return Job(r, device, train, test, model, opt, mean, std, steps, ch, note)
