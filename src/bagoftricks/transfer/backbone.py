"""The backbone: a classifier of the zoo (trained or not) seen through its stage features.

    classifier, note = backbone_classifier(r, in_channels)   # the one place weights come in
    body = prepare_backbone(features(classifier), frozen_bn=True, trainable_layers=3)

Weights: the model section builds the classifier (the zoo's initialisation, seeded by train.seed) and
model.pretrained loads its weights through models.load_pretrained (a `bagoftricks train` run folder or
checkpoint, or a torchvision/timm state dict); the model section must describe that network.

Options, as torchvision's detection backbones have them: BN layers replaced by FrozenBatchNorm2d
(statistics and affine parameters fixed; small detection batches estimate statistics badly), and only
the last `trainable_layers` layers trained, counted from the last stage back to the stem.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from bagoftricks.engine.derive import recipe_model
from bagoftricks.errors import BadInput, RecipeError, UsageError
from bagoftricks.models.stages import StageFeatures, features
from bagoftricks.recipe import Recipe

STEM = ("conv1", "bn1")  # the stem's modules with parameters (StageFeatures names)


def backbone_classifier(r: Recipe, in_channels: int, load: bool = True) -> tuple[nn.Module, str]:
    """The classifier whose stages are the backbone, and what model.pretrained loaded into it ('' for none).

    The model section builds it (seeded with train.seed); model.pretrained — a `bagoftricks train` run
    folder or checkpoint, or a torchvision/timm state dict — goes through models.load_pretrained, whose
    error names the file and the tensor when the architecture does not match. load=False builds the
    architecture only (a resumed transfer run takes every weight from its own checkpoint)."""
    torch.manual_seed(r.train.seed)
    model = recipe_model(r, 10, in_channels)
    note = ""
    if r.model.pretrained and load:
        from bagoftricks.models import load_pretrained
        try:
            note = load_pretrained(model, r.model.pretrained)
        except (BadInput, ValueError) as e:
            raise RecipeError(f"model.pretrained: {e}") from None
    return model.train(), note


def input_channels(model: nn.Module) -> int:
    """The channels a model takes: its first convolution's input channels."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels


def freeze_bn(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d under `module` replaced, in place, by a FrozenBatchNorm2d with its values."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_bn(child)
    return module


def layer_names(body: StageFeatures) -> list[str]:
    """The backbone's layers from the last stage to the stem: the order `trainable_layers` counts in."""
    return [s.name for s in reversed(body.info)] + ["stem"]


def prepare_backbone(body: StageFeatures, frozen_bn: bool, trainable_layers: int) -> StageFeatures:
    """Freeze BN (optionally) and every layer but the last `trainable_layers` (see layer_names)."""
    names = layer_names(body)
    if trainable_layers > len(names):
        raise UsageError(f"transfer.trainable_layers: the backbone has {len(names)} layers "
                         f"({', '.join(names)}), got {trainable_layers}")
    if frozen_bn:
        freeze_bn(body)
    train = set(names[:trainable_layers])
    for name, module in body.named_children():
        layer = "stem" if name in STEM else name
        module.requires_grad_(layer in train)
    return body


def backbone_for(r: Recipe, in_channels: int, load: bool = True) -> tuple[StageFeatures, str]:
    """The prepared stage features of the recipe's backbone, and what model.pretrained loaded."""
    classifier, note = backbone_classifier(r, in_channels, load)
    body = prepare_backbone(features(classifier), r.transfer.frozen_bn, r.transfer.trainable_layers)
    return body, note
