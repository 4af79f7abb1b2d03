"""The classification task of the training step: the per-step tricks of the paper and after it.

Per batch, in this order: seeded generators -> progressive resize -> (smoothed) targets ->
mixup/CutMix -> Cutout/erasing; then the forward pass (+ the teacher's, §5.3) and the loss.

Determinism: every random draw of step s in epoch e comes from generators seeded with
(seed, e, s, rank): torch's global generator (dropout, drop-path), a generator on the batch's device
(per-image draws) and a CPU generator for the batch's scalars (mix choice, λ, the CutMix box), so
that no draw is read back from an accelerator.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from bagoftricks import tricks
from bagoftricks.engine.derive import planned_epochs
from bagoftricks.recipe import Recipe
from bagoftricks.seeds import derive_seed


def make_targets(r: Recipe, y: torch.Tensor, num_classes: int, soft: bool) -> torch.Tensor | None:
    """Hard labels when nothing needs soft ones; else (smoothed) one-hot targets (§5.2)."""
    if not soft and r.tricks.label_smoothing == 0:
        return None
    return tricks.smoothed_targets(y, num_classes, r.tricks.label_smoothing, form=r.tricks.label_smoothing_form)


def mixing_active(r: Recipe, epoch: int, steps_per_epoch: int = 1) -> bool:
    """Mixup/CutMix are on and this epoch is not one of the last tricks.mix_off_epochs (of the planned length;
    a length in train.steps needs the real steps_per_epoch to count its epochs)."""
    t = r.tricks
    if not (t.mixup_alpha > 0 or t.cutmix_alpha > 0):
        return False
    return epoch < planned_epochs(r, epoch, steps_per_epoch) - t.mix_off_epochs


def prepare_batch(r: Recipe, x: torch.Tensor, y: torch.Tensor, num_classes: int, epoch: int, g: torch.Generator,
                  soft: bool, host_generator: torch.Generator | None = None, steps_per_epoch: int = 1):
    """Progressive resizing, targets, mixing and erasing for one batch: returns (x, targets or None).

    Per-image draws (partners, boxes, erasing) come from `g`, on the batch's device; the batch's
    scalars (mixup or CutMix, λ, the CutMix box) from `host_generator` (default: `g`). Smoothed
    targets are what mixup mixes, so the two compose.
    """
    t = r.tricks
    gh = host_generator if host_generator is not None else g
    x = tricks.resize_batch(x, tricks.epoch_size(r.data.progressive_sizes, epoch, r.data.image_size))
    mixing = mixing_active(r, epoch, steps_per_epoch)
    targets = make_targets(r, y, num_classes, soft or mixing)
    if mixing:
        mode = tricks.choose_mix(t.mixup_alpha, t.cutmix_alpha, generator=gh)
        perm = tricks.batch_permutation(x.shape[0], g)
        if mode == "mixup":
            lam = tricks.sample_lambda(t.mixup_alpha, gh)
            x, targets = tricks.mix(x, targets, lam, perm)
        elif mode == "cutmix":
            lam = tricks.sample_lambda(t.cutmix_alpha, gh)
            x, targets, _ = tricks.cutmix_batch(x, targets, lam, perm, gh)
    if t.cutout > 0:
        x = tricks.cutout_batch(x, t.cutout, g)
    if t.random_erasing > 0:
        x = tricks.random_erasing(x, t.random_erasing, g)
    return x, targets


def compute_loss(r: Recipe, logits: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
                 teacher_logits: torch.Tensor | None) -> torch.Tensor:
    """Distillation (§5.3), soft-target cross-entropy, or plain cross-entropy, in fp32."""
    logits = logits.float()
    if teacher_logits is not None:
        return tricks.distillation_loss(logits, teacher_logits.float(), targets, r.tricks.distill_temperature,
                                        r.tricks.distill_hard_weight)
    if targets is not None:
        return tricks.soft_cross_entropy(logits, targets)
    return F.cross_entropy(logits, y)


class Inputs(NamedTuple):
    x: torch.Tensor                 # the augmented, mixed batch
    y: torch.Tensor                 # its hard labels
    targets: torch.Tensor | None    # soft targets (smoothing, mixing, distillation), or None


class Classify:
    """The `StepTask` of image classification: batches (x, y) of normalised images and labels."""

    def __init__(self, recipe: Recipe, num_classes: int, device: torch.device, steps_per_epoch: int, rank: int = 0,
                 teacher: nn.Module | None = None):
        self.recipe, self.num_classes, self.device, self.rank, self.teacher = recipe, num_classes, device, rank, teacher
        self.steps_per_epoch = steps_per_epoch

    def generators(self, epoch: int, s: int) -> tuple[torch.Generator, torch.Generator]:
        """Seed the global generator and return the device and host generators of step s of epoch `epoch`."""
        seed, rank = self.recipe.train.seed, self.rank
        torch.manual_seed(derive_seed(seed, "step-global", epoch, s, rank))  # dropout, drop-path
        g = torch.Generator(device=self.device).manual_seed(derive_seed(seed, "step-device", epoch, s, rank))
        gh = torch.Generator().manual_seed(derive_seed(seed, "step-host", epoch, s, rank))
        return g, gh

    def inputs(self, batch: tuple[torch.Tensor, torch.Tensor], epoch: int, s: int) -> Inputs:
        r = self.recipe
        x, y = batch
        g, gh = self.generators(epoch, s)
        if r.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x, targets = prepare_batch(r, x, y, self.num_classes, epoch, g, self.teacher is not None, host_generator=gh,
                                   steps_per_epoch=self.steps_per_epoch)
        return Inputs(x, y, targets)

    def forward(self, module: nn.Module, inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = module(inputs.x)
        if self.teacher is None:
            return logits, None
        with torch.no_grad():
            return logits, self.teacher(inputs.x)  # the same augmented and mixed batch as the student (§5.3)

    def loss(self, outputs: tuple[torch.Tensor, torch.Tensor | None], inputs: Inputs) -> torch.Tensor:
        logits, teacher_logits = outputs
        return compute_loss(self.recipe, logits, inputs.y, inputs.targets, teacher_logits)

    def images(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int(batch[1].shape[0])
