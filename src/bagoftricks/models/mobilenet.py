"""MobileNet v1 (Howard et al. 2017, Table 1), the paper's §5 lightweight model.

A 3×3/2 conv, then 13 depthwise-separable blocks (3×3 depthwise conv + BN + act, 1×1 pointwise
conv + BN + act), global average pooling and one linear layer. ``width_mult`` (the paper's α) scales
every width: int(c·α), at least 1. At 224 px, α = 1: 4.23 M parameters and 569 M multiply-adds.
There are no residual blocks, so zero γ does nothing here.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import make_activation

__all__ = ["MOBILENET_V1_CFG", "MobileNetV1"]

# (output channels, stride) of each depthwise-separable block, Howard et al. 2017 Table 1.
MOBILENET_V1_CFG: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)
STEM_WIDTH = 32


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int, groups: int, activation: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        make_activation(activation),
    )


class DepthwiseSeparable(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int, activation: str) -> None:
        super().__init__()
        self.depthwise = _conv_bn_act(cin, cin, 3, stride, cin, activation)
        self.pointwise = _conv_bn_act(cin, cout, 1, 1, 1, activation)


class MobileNetV1(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        width_mult: float = 1.0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0 (Howard et al. use 0.25, 0.5, 0.75, 1.0), got {width_mult}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        make_activation(activation)
        self.width_mult = width_mult

        def scaled(c: int) -> int:
            return max(1, int(c * width_mult))

        cin = scaled(STEM_WIDTH)
        layers: list[nn.Module] = [_conv_bn_act(in_channels, cin, 3, 2, 1, activation)]
        for cout, stride in MOBILENET_V1_CFG:
            layers.append(DepthwiseSeparable(cin, scaled(cout), stride, activation))
            cin = scaled(cout)
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.fc(torch.flatten(x, 1))
