"""One ResNet for every variant of §4 and for both input sizes.

The architecture tweaks of He et al. (2019, §4, Figure 2) are *data*: a row of :data:`catalog.VARIANTS`
says where a downsampling bottleneck carries its stride, which stem the network starts with and how
the shortcut of a downsampling block is built. The input-size families (ImageNet 224 px and the
28–32 px ResNets of He et al. 2016, §4.2) are rows of :data:`FAMILIES`. Nothing else differs.

Decisions (see also the comments on :data:`catalog.VARIANTS` and :data:`FAMILIES`):

* **C is built on B.** The paper defines D = B + C + avg-pool shortcut, and Table 5 gives C the same
  cost as D (4.3 G MACs; the avg-pool shortcut adds parameters-free pooling and no MACs), which only
  holds if C also moves the stride to the 3×3 conv. So C = B + deep stem (as in GluonCV's
  ``resnet50_v1c``, the reference code of the paper).
* **Basic blocks (ResNet-18/34 and the small family):** the first 3×3 conv always carries the
  stride; there is no 1×1 conv to move it from, so A and B build the same network, and C/D differ
  from A only by the stem and the shortcut.
* **Small family stems:** the single stem is one 3×3 conv, stride 1, width w (He et al. 2016); the
  deep stem keeps ImageNet's ratio (32, 32, 64 for w = 64): three 3×3 convs with widths
  (w/2, w/2, w) = (8, 8, 16) for the default w = 16, all stride 1, so the stem's output width and
  resolution are unchanged and every later layer is identical to A's. There is no max-pool.
* **Small family shortcuts:** a 1×1-conv projection (+BN) with stride 2 when the shape changes
  (He et al. 2016 option B, not the parameter-free zero-padding option A of their CIFAR runs), so
  that D's avg-pool shortcut has something to replace.
* **ResNeXt:** the inner width of a block is ``int(planes · width_per_group / 64) · groups`` (Xie et
  al. 2017, as torchvision). ``width_per_group = 0`` means ``64 // groups``, which keeps a plain
  ResNet's inner width (= planes). In a bottleneck only the 3×3 conv is grouped. In a basic block
  (no 1×1 convs) *both* 3×3 convs are grouped and the inner width is the output width of the first
  3×3; the block's input and output widths must then be divisible by ``groups``.
* **SE** sits after the last BN of the residual branch, before stochastic depth and the addition.
* **Zero γ (§3):** every block exposes its last BN as ``block.last_bn``; with γ = 0 there the branch
  outputs exactly 0 in eval mode (SE and drop path keep 0 at 0) and the block returns
  act(shortcut(x)), which is x for an identity shortcut, ReLU and x ≥ 0.

Module names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1``… ``fc``; in blocks
``conv1``… ``bn3``, ``downsample``), so a torchvision ``resnet50`` state dict loads into
``build_model("resnet50", variant="B")`` and gives the same outputs. The deep stem is the
``nn.Sequential`` ``conv1`` whose last BN is the top-level ``bn1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from .catalog import ACTIVATIONS, VARIANTS, check_choice
from .layers import DropPath, SqueezeExcite, make_activation

__all__ = [
    "FAMILIES",
    "IMAGENET_DEPTHS",
    "VARIANTS",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet",
    "resnet_small",
]

# The input-size families. `width` is the base width w: the stem outputs w and stage s has
# planes w·2^s (times the block's expansion at its output).
FAMILIES: dict[str, dict] = {
    "imagenet": dict(
        width=64,
        stage_strides=(1, 2, 2, 2),
        stem_kernel=7,
        stem_stride=2,
        deep_stem_strides=(2, 1, 1),
        maxpool=True,
    ),
    "small": dict(
        width=16,
        stage_strides=(1, 2, 2),
        stem_kernel=3,
        stem_stride=1,
        deep_stem_strides=(1, 1, 1),
        maxpool=False,
    ),
}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels)


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


class SubsampledPointwise(nn.Conv2d):
    """A strided 1×1 conv computed as "keep every stride-th pixel, then a 1×1 conv with stride 1".

    The same function, weights and state-dict keys as ``nn.Conv2d(cin, cout, 1, stride)``. It exists
    because torch 2.14's oneDNN kernel for the weight gradient of a strided 1×1 conv corrupts the heap
    (glibc abort) with fewer than 8 input channels in channels-last on one thread on AVX2 CPUs; only
    such narrow convs (test-sized widths) are built this way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return F.conv2d(x[:, :, ::sh, ::sw], self.weight, self.bias)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    if stride > 1 and cin < 8:
        return SubsampledPointwise(cin, cout, 1, stride=stride, bias=False)
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _inner_width(planes: int, groups: int, width_per_group: int) -> int:
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if width_per_group < 0:
        raise ValueError(f"width_per_group must be >= 0 (0 = 64 // groups), got {width_per_group}")
    wpg = width_per_group or 64 // groups
    inner = int(planes * wpg / 64) * groups
    if inner < 1:
        raise ValueError(
            f"groups={groups}, width_per_group={width_per_group} give an inner width of 0 channels "
            f"for a block with {planes} planes; raise width_per_group"
        )
    return inner


def _shortcut(cin: int, cout: int, stride: int, kind: str) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    if kind == "avgpool+conv" and stride != 1:
        # ResNet-D (§4): average, then project, so the shortcut no longer ignores 3/4 of its input.
        return nn.Sequential(
            nn.AvgPool2d(stride, stride=stride, ceil_mode=True, count_include_pad=False),
            _conv1x1(cin, cout, 1),
            _bn(cout),
        )
    return nn.Sequential(_conv1x1(cin, cout, stride), _bn(cout))


class ResidualBlock(nn.Module):
    """A residual block: ``act(drop_path(se(branch(x))) + shortcut(x))``.

    Subclasses set ``expansion`` (output width / ``planes``) and ``last_bn_name`` (the branch's last
    BN, the one zero-γ zeroes), and build their convs in :meth:`_build_branch`; the modules that
    follow the branch are registered after them, so a block prints (and initialises) in forward order.
    """

    expansion: int = 1
    last_bn_name: str = ""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        stride_on: str = "conv3x3",
        groups: int = 1,
        width_per_group: int = 0,
        activation: str = "relu",
        se_reduction: int = 0,
        drop_path: float = 0.0,
    ) -> None:
        inner = _inner_width(planes, groups, width_per_group)
        super().__init__()
        self._build_branch(inplanes, planes, inner, stride, stride_on, groups)
        out_channels = planes * self.expansion
        self.act = make_activation(activation)
        self.se = SqueezeExcite(out_channels, se_reduction, activation) if se_reduction > 0 else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.downsample = downsample

    def _build_branch(self, inplanes: int, planes: int, inner: int, stride: int, stride_on: str, groups: int) -> None:
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return getattr(self, self.last_bn_name)

    def branch(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.drop_path(self.se(self.branch(x)))
        return self.act(out + shortcut)


class BasicBlock(ResidualBlock):
    """Two 3×3 convs (ResNet-18/34, small-input ResNets). The first 3×3 carries the stride."""

    expansion = 1
    last_bn_name = "bn2"

    def _build_branch(self, inplanes: int, planes: int, inner: int, stride: int, stride_on: str, groups: int) -> None:
        for what, ch in (("input", inplanes), ("output", planes)):
            if ch % groups:
                raise ValueError(
                    f"groups={groups} must divide the {what} width ({ch}) of every basic block; "
                    f"choose groups that divide the base width"
                )
        self.conv1 = _conv3x3(inplanes, inner, stride, groups)
        self.bn1 = _bn(inner)
        self.conv2 = _conv3x3(inner, planes, 1, groups)
        self.bn2 = _bn(planes)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1×1 → 3×3 (grouped for ResNeXt) → 1×1 (×4). ``stride_on`` picks the conv with the stride."""

    expansion = 4
    last_bn_name = "bn3"

    def _build_branch(self, inplanes: int, planes: int, inner: int, stride: int, stride_on: str, groups: int) -> None:
        check_choice("stride_on", stride_on, ("conv1x1", "conv3x3"))
        s1, s3 = (stride, 1) if stride_on == "conv1x1" else (1, stride)
        self.conv1 = _conv1x1(inplanes, inner, s1)
        self.bn1 = _bn(inner)
        self.conv2 = _conv3x3(inner, inner, s3, groups)
        self.bn2 = _bn(inner)
        self.conv3 = _conv1x1(inner, planes * self.expansion)
        self.bn3 = _bn(planes * self.expansion)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


def _check_args(family: str, variant: str, activation: str, layers: Sequence[int], width: int, se_reduction: int,
                drop_path: float, num_classes: int, in_channels: int) -> dict:
    """Validate :class:`ResNet`'s arguments before anything is built; return the family's row."""
    check_choice("family", family, tuple(FAMILIES))
    check_choice("variant", variant, tuple(VARIANTS))
    check_choice("activation", activation, ACTIVATIONS)
    fam = FAMILIES[family]
    if len(layers) != len(fam["stage_strides"]):
        raise ValueError(f"family {family!r} has {len(fam['stage_strides'])} stages, got layers={list(layers)}")
    if width < 0:
        raise ValueError(f"width must be >= 0 (0 = the family's default {fam['width']}), got {width}")
    if se_reduction < 0:
        raise ValueError(f"se_reduction must be >= 0 (0 = no SE), got {se_reduction}")
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
    return fam


def _stem(kind: str, fam: dict, in_channels: int, w: int, activation: str) -> nn.Module:
    """The stem's convs (§4, ResNet-C) up to, not including, its last BN (the network's ``bn1``)."""
    if kind == "single":
        k = fam["stem_kernel"]
        return nn.Conv2d(in_channels, w, k, stride=fam["stem_stride"], padding=k // 2, bias=False)
    half = max(w // 2, 1)
    s0, s1, s2 = fam["deep_stem_strides"]
    return nn.Sequential(
        _conv3x3(in_channels, half, s0),
        _bn(half),
        make_activation(activation),
        _conv3x3(half, half, s1),
        _bn(half),
        make_activation(activation),
        _conv3x3(half, w, s2),
    )


class ResNet(nn.Module):
    """ResNet of any depth, variant (:data:`VARIANTS`) and input family (:data:`FAMILIES`)."""

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        family: str = "imagenet",
        variant: str = "A",
        width: int = 0,
        activation: str = "relu",
        se_reduction: int = 0,
        groups: int = 1,
        width_per_group: int = 0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        fam = _check_args(family, variant, activation, layers, width, se_reduction, drop_path, num_classes, in_channels)
        cfg = VARIANTS[variant]
        w = width or fam["width"]
        self.family, self.variant, self.base_width = family, variant, w
        self.conv1 = _stem(cfg["stem"], fam, in_channels, w, activation)
        self.bn1 = _bn(w)
        self.act = make_activation(activation)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if fam["maxpool"] else nn.Identity()
        block_options = dict(stride_on=cfg["stride_on"], groups=groups, width_per_group=width_per_group,
                             activation=activation, se_reduction=se_reduction)
        inplanes = self._add_stages(block, layers, fam["stage_strides"], w, cfg["shortcut"], drop_path, block_options)
        self.num_stages = len(layers)
        self.num_features = inplanes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def _add_stages(self, block: type[ResidualBlock], layers: Sequence[int], strides: Sequence[int], w: int,
                    shortcut: str, drop_path: float, block_options: dict) -> int:
        """Register ``layer1``… and return the width of the last one's output.

        Stochastic depth: block i of L (counted over the whole network) drops with p·i/(L-1).
        """
        total = sum(layers)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]
        inplanes, idx = w, 0
        for s, (n, stride) in enumerate(zip(layers, strides)):
            planes = w * 2**s
            out = planes * block.expansion
            blocks = []
            for b in range(n):
                st = stride if b == 0 else 1
                downsample = _shortcut(inplanes, out, st, shortcut)
                blocks.append(block(inplanes, planes, st, downsample, drop_path=rates[idx], **block_options))
                inplanes, idx = out, idx + 1
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        return inplanes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


# depth -> (block, blocks per stage), He et al. 2016 Table 1.
IMAGENET_DEPTHS: dict[int, tuple[type[ResidualBlock], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def resnet(depth: int, **kwargs: Any) -> ResNet:
    """ImageNet ResNet (224 px) of depth 18/34/50/101/152; kwargs go to :class:`ResNet`."""
    check_choice("depth", depth, tuple(IMAGENET_DEPTHS))
    block, layers = IMAGENET_DEPTHS[depth]
    return ResNet(block, layers, family="imagenet", **kwargs)


def resnet_small(depth: int, **kwargs: Any) -> ResNet:
    """Small-input ResNet (He et al. 2016 §4.2): depth 6n+2, three stages of n basic blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"small-input ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110…), got {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, (n, n, n), family="small", **kwargs)
