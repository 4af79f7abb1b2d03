"""Stage features for other heads: what a detection or segmentation head needs from a backbone.

    backbone = features(build_model("resnet50", variant="D"))
    backbone.info            # (StageInfo("layer1", 256, 4), …, StageInfo("layer4", 2048, 32))
    backbone(images)         # {"layer1": N×256×H/4×W/4, …, "layer4": N×2048×H/32×W/32}

The wrapper shares its modules with the classifier (no copy): the stem and the residual stages, not
the pooling or the ``fc`` head. Only the ResNet families have stages; any other model is refused.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from bagoftricks.models.resnet import ResNet

__all__ = ["StageFeatures", "StageInfo", "features"]


@dataclass(frozen=True)
class StageInfo:
    """One stage output: its module name, channel count and stride relative to the input."""

    name: str
    channels: int
    stride: int


def _stride_of(module: nn.Module) -> int:
    stride = getattr(module, "stride", 1)
    return int(stride[0] if isinstance(stride, tuple) else stride)


def _path_stride(modules: list[nn.Module]) -> int:
    """Product of the strides of every conv and pooling layer on the main path of ``modules``.

    A residual block's shortcut repeats its branch's stride, so only the branch (``conv*`` and
    ``pool`` children, not ``downsample``) is counted.
    """
    total = 1
    for module in modules:
        for name, sub in module.named_modules():
            if "downsample" in name.split("."):
                continue
            if isinstance(sub, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                total *= _stride_of(sub)
    return total


class StageFeatures(nn.Module):
    """A ResNet's stem and stages returning every stage's output by name (see module docstring)."""

    def __init__(self, model: ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.act, self.maxpool = model.conv1, model.bn1, model.act, model.maxpool
        names = [f"layer{s + 1}" for s in range(model.num_stages)]
        for name in names:
            self.add_module(name, getattr(model, name))
        stride, info = _path_stride([self.conv1, self.maxpool]), []
        for name in names:
            stage = getattr(self, name)
            stride *= _path_stride([stage])
            info.append(StageInfo(name, _stage_channels(stage), stride))
        self.info: tuple[StageInfo, ...] = tuple(info)

    @property
    def channels(self) -> list[int]:
        return [s.channels for s in self.info]

    @property
    def strides(self) -> list[int]:
        return [s.stride for s in self.info]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for stage in self.info:
            x = getattr(self, stage.name)(x)
            out[stage.name] = x
        return out


def _stage_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return int(last.last_bn.num_features)


def features(model: nn.Module) -> StageFeatures:
    """The stage-feature view of ``model`` (shares its weights); a ``ValueError`` for non-ResNets."""
    if not isinstance(model, ResNet):
        raise ValueError(
            f"stage features exist for the ResNet families only (the imagenet and small-input ResNets, "
            f"ResNeXt, SE-ResNet), not for {type(model).__name__}"
        )
    return StageFeatures(model)
