"""An airbench-style network for 28–32 px images (Jordan 2024, after Page's DAWNBench ResNet and
hlb-CIFAR10): a 2×2 stem, then three groups of conv–pool–BN–act, conv–BN–act, no residual connections,
a global max-pool and a linear head whose logits are scaled down.

Every 3×3 conv keeps the size (padding 1); the 2×2 max-pool after a group's first conv halves it, so
28 px → 27 (stem, no padding) → 13 → 6 → 3 and 32 px → 31 → 15 → 7 → 3. Widths (w, 4w, 4w) with the
base width w (airbench: 64). The stem has 2·C·4 output channels, the number a patch-whitening layer
of 2×2 patches needs (C·4 eigenvectors and their negatives): `stem="whiten"` freezes it, to be set
from the training images by `tricks.whitening.fit_whitening` before training; `stem_bias` gives it a
bias (airbench trains it for the first 3 epochs, then freezes it: model.stem_bias_epochs). `dirac_init`
starts the 3×3 convolutions as the identity on their first channels, as airbench does.
"""
from __future__ import annotations

import torch
from torch import nn

from .catalog import STEMS
from .layers import make_activation

STEM_KERNEL = 2
LOGIT_SCALE = 1 / 9  # airbench's: the head's logits are scaled down (a softer start for the loss)


class ConvGroup(nn.Module):
    """conv 3×3 → max-pool 2 → BN → act → conv 3×3 → BN → act (no residual)."""

    def __init__(self, c_in: int, c_out: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.pool(self.conv1(x))))
        return self.act2(self.bn2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """stem (2×2, 2·C·4 channels) → act → 3 ConvGroups (w, 4w, 4w) → global max-pool → linear / 9."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, activation: str = "gelu",
                 stem: str = "learned", stem_bias: bool = False) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; valid stem values: {', '.join(repr(s) for s in STEMS)}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        stem_out = 2 * in_channels * STEM_KERNEL * STEM_KERNEL
        self.stem_kind = stem
        self.stem = nn.Conv2d(in_channels, stem_out, STEM_KERNEL, padding=0, bias=stem_bias)
        if stem == "whiten":
            self.stem.weight.requires_grad_(False)  # set from the data, never trained
        self.stem_act = make_activation(activation)
        widths = (width, 4 * width, 4 * width)
        self.layer1 = ConvGroup(stem_out, widths[0], activation)
        self.layer2 = ConvGroup(widths[0], widths[1], activation)
        self.layer3 = ConvGroup(widths[1], widths[2], activation)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1)) * LOGIT_SCALE


def dirac_init(model: AirbenchNet) -> AirbenchNet:
    """airbench's start for the 3×3 convolutions: each conv's first C_in filters are the identity (a Dirac
    delta on their own input channel, torch.nn.init.dirac_), so a group starts by passing its input on;
    the other filters keep the initialisation they had."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
                w = m.weight
                nn.init.dirac_(w[: min(w.shape[0], w.shape[1])])
    return model
