"""Inception-V3 (Szegedy et al. 2016, "Rethinking the Inception Architecture", Table 1 and Figures
5–7), the paper's §5 second architecture, at 299 px.

Layout (spatial size at 299 px input):

* stem: 3×3/2 (32) → 3×3 (32) → 3×3 pad 1 (64) → max-pool 3/2 → 1×1 (80) → 3×3 (192) → max-pool 3/2
  (35×35×192);
* 3 × module A (Figure 5, 5×5 factorised as in the reference code: 1×1 → 5×5 branch plus a
  1×1 → 3×3 → 3×3 branch), pool projections 32, 64, 64 (35×35×288);
* grid reduction B (17×17×768);
* 4 × module C (Figure 6, 7×7 factorised into 1×7 and 7×1), inner widths 128, 160, 160, 192;
* grid reduction D (8×8×1280);
* 2 × module E (Figure 7, expanded 1×3 / 3×1 filter banks) (8×8×2048);
* global average pool, dropout 0.5 (as GluonCV, the paper's reference code), linear.

Every conv is conv (no bias) + BN (ε = 1e-3, as the TF/GluonCV reference) + activation. The
auxiliary classifier of Szegedy et al. is **omitted**: He et al. (2019) report only the main head and
none of the tricks needs it. With it gone the network has exactly torchvision's
``inception_v3(aux_logits=False)`` parameter shapes: 23.83 M parameters and 5.71 G MACs at 299 px.
The smallest input it accepts is 75 px.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .layers import make_activation

__all__ = ["InceptionV3"]

_BN_EPS = 1e-3


class ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0, *, activation: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(cout, eps=_BN_EPS),
            make_activation(activation),
        )


class _Concat(nn.Module):
    """Runs every child on the same input and concatenates along channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.children()], dim=1)


def _pool_proj(cin: int, cout: int, activation: str) -> nn.Sequential:
    return nn.Sequential(
        nn.AvgPool2d(3, stride=1, padding=1), ConvBN(cin, cout, 1, activation=activation)
    )


class ModuleA(_Concat):
    """35×35 module: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1."""

    def __init__(self, cin: int, pool_features: int, activation: str) -> None:
        super().__init__()
        a = activation
        self.b1x1 = ConvBN(cin, 64, 1, activation=a)
        self.b5x5 = nn.Sequential(ConvBN(cin, 48, 1, activation=a), ConvBN(48, 64, 5, padding=2, activation=a))
        self.b3x3dbl = nn.Sequential(
            ConvBN(cin, 64, 1, activation=a),
            ConvBN(64, 96, 3, padding=1, activation=a),
            ConvBN(96, 96, 3, padding=1, activation=a),
        )
        self.bpool = _pool_proj(cin, pool_features, a)


class ReductionB(_Concat):
    """35×35 → 17×17: 3×3/2 | 1×1→3×3→3×3/2 | max-pool 3/2."""

    def __init__(self, cin: int, activation: str) -> None:
        super().__init__()
        a = activation
        self.b3x3 = ConvBN(cin, 384, 3, stride=2, activation=a)
        self.b3x3dbl = nn.Sequential(
            ConvBN(cin, 64, 1, activation=a),
            ConvBN(64, 96, 3, padding=1, activation=a),
            ConvBN(96, 96, 3, stride=2, activation=a),
        )
        self.bpool = nn.MaxPool2d(3, stride=2)


class ModuleC(_Concat):
    """17×17 module with 7×7 convs factorised into 1×7 and 7×1 (inner width c7)."""

    def __init__(self, cin: int, c7: int, activation: str) -> None:
        super().__init__()
        a = activation
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.b1x1 = ConvBN(cin, 192, 1, activation=a)
        self.b7x7 = nn.Sequential(
            ConvBN(cin, c7, 1, activation=a),
            ConvBN(c7, c7, activation=a, **row),
            ConvBN(c7, 192, activation=a, **col),
        )
        self.b7x7dbl = nn.Sequential(
            ConvBN(cin, c7, 1, activation=a),
            ConvBN(c7, c7, activation=a, **col),
            ConvBN(c7, c7, activation=a, **row),
            ConvBN(c7, c7, activation=a, **col),
            ConvBN(c7, 192, activation=a, **row),
        )
        self.bpool = _pool_proj(cin, 192, a)


class ReductionD(_Concat):
    """17×17 → 8×8: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool 3/2."""

    def __init__(self, cin: int, activation: str) -> None:
        super().__init__()
        a = activation
        self.b3x3 = nn.Sequential(ConvBN(cin, 192, 1, activation=a), ConvBN(192, 320, 3, stride=2, activation=a))
        self.b7x7x3 = nn.Sequential(
            ConvBN(cin, 192, 1, activation=a),
            ConvBN(192, 192, (1, 7), padding=(0, 3), activation=a),
            ConvBN(192, 192, (7, 1), padding=(3, 0), activation=a),
            ConvBN(192, 192, 3, stride=2, activation=a),
        )
        self.bpool = nn.MaxPool2d(3, stride=2)


class _Split(nn.Module):
    """A 1×3 and a 3×1 conv on the same input, concatenated (Figure 7's expanded filter bank)."""

    def __init__(self, cin: int, cout: int, activation: str) -> None:
        super().__init__()
        self.row = ConvBN(cin, cout, (1, 3), padding=(0, 1), activation=activation)
        self.col = ConvBN(cin, cout, (3, 1), padding=(1, 0), activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.row(x), self.col(x)], dim=1)


class ModuleE(_Concat):
    """8×8 module: 1×1 | 1×1→(1×3, 3×1) | 1×1→3×3→(1×3, 3×1) | avg-pool→1×1."""

    def __init__(self, cin: int, activation: str) -> None:
        super().__init__()
        a = activation
        self.b1x1 = ConvBN(cin, 320, 1, activation=a)
        self.b3x3 = nn.Sequential(ConvBN(cin, 384, 1, activation=a), _Split(384, 384, a))
        self.b3x3dbl = nn.Sequential(
            ConvBN(cin, 448, 1, activation=a), ConvBN(448, 384, 3, padding=1, activation=a), _Split(384, 384, a)
        )
        self.bpool = _pool_proj(cin, 192, a)


class InceptionV3(nn.Module):
    def __init__(
        self, num_classes: int = 1000, in_channels: int = 3, *, activation: str = "relu", dropout: float = 0.5
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        a = activation
        make_activation(a)
        self.stem = nn.Sequential(
            OrderedDict(
                conv1a=ConvBN(in_channels, 32, 3, stride=2, activation=a),
                conv2a=ConvBN(32, 32, 3, activation=a),
                conv2b=ConvBN(32, 64, 3, padding=1, activation=a),
                pool1=nn.MaxPool2d(3, stride=2),
                conv3b=ConvBN(64, 80, 1, activation=a),
                conv4a=ConvBN(80, 192, 3, activation=a),
                pool2=nn.MaxPool2d(3, stride=2),
            )
        )
        self.blocks = nn.Sequential(
            OrderedDict(
                mixed5b=ModuleA(192, 32, a),
                mixed5c=ModuleA(256, 64, a),
                mixed5d=ModuleA(288, 64, a),
                mixed6a=ReductionB(288, a),
                mixed6b=ModuleC(768, 128, a),
                mixed6c=ModuleC(768, 160, a),
                mixed6d=ModuleC(768, 160, a),
                mixed6e=ModuleC(768, 192, a),
                mixed7a=ReductionD(768, a),
                mixed7b=ModuleE(1280, a),
                mixed7c=ModuleE(2048, a),
            )
        )
        self.num_features = 2048
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.blocks(self.stem(x)))
        return self.fc(self.dropout(torch.flatten(x, 1)))
