"""torchvision's heads on our stage features: Faster R-CNN with an FPN, and FCN with its auxiliary head.

Detection, sized from the backbone's strides and the input size S (data.image_size):
- FPN levels: every stage of stride >= 2 (a stride-1 map, the first stage of the 28-32 px ResNets, costs
  the most and would carry anchors smaller than any object), plus a max-pooled level at twice the last
  stride (torchvision's LastLevelMaxPool).
- Anchors: one size per level, side = min(transfer.anchor_scale x stride, S), aspect ratios 0.5, 1, 2.
  anchor_scale 8 is torchvision's own choice (32 px at stride 4 ... 512 px at stride 64); on a 96 px
  canvas with the strides 2, 4, 8 of ResNet-20 it gives 16, 32 and 64 px for 16-48 px garments.
- RoI pooling (MultiScaleRoIAlign, 7x7): a box of side b is pooled from level
  k = 4 + log2(b / (anchor_scale x 16)), clamped to the levels there are, i.e. from the level whose
  anchors have its size (torchvision's fixed 224 px canonical size would send every box of a small
  image to the finest level).
- Images are not resized by the detector (min_size = max_size = S; the data pipeline resizes), and
  normalised with the dataset's statistics on the 0..255 scale.

Segmentation: FCN (torchvision) with FCNHead on the last stage and, when transfer.aux_weight > 0, an
auxiliary FCNHead on the second-last; both outputs are upsampled to the input size by FCN itself.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.segmentation import FCN
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from bagoftricks.models.stages import StageFeatures

ROI_SIZE = 7
CANONICAL_LEVEL = 4  # MultiScaleRoIAlign's reference level (stride 16)


class FPNBackbone(nn.Module):
    """Stage features -> FPN maps {"layerN": ..., "pool": ...}, `out_channels` each (what FasterRCNN takes)."""

    def __init__(self, body: StageFeatures, levels: list[str], out_channels: int):
        super().__init__()
        self.body, self.levels, self.out_channels = body, list(levels), out_channels
        channels = {s.name: s.channels for s in body.info}
        self.fpn = FeaturePyramidNetwork([channels[n] for n in levels], out_channels, extra_blocks=LastLevelMaxPool())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        f = self.body(x)
        return self.fpn(OrderedDict((n, f[n]) for n in self.levels))


def fpn_levels(body: StageFeatures) -> list[str]:
    """The stages the FPN reads: every stage of stride >= 2 (the last one always)."""
    levels = [s.name for s in body.info if s.stride >= 2]
    return levels or [body.info[-1].name]


def anchor_sizes(strides: list[int], image_size: int, anchor_scale: float) -> tuple[tuple[int, ...], ...]:
    """One anchor side per FPN level (the extra pooled level included): anchor_scale x stride, at most S."""
    return tuple((int(min(round(anchor_scale * s), image_size)),) for s in strides)


def detector(body: StageFeatures, num_classes: int, image_size: int, fpn_channels: int, anchor_scale: float,
             mean: list[float], std: list[float]) -> FasterRCNN:
    """Faster R-CNN with an FPN on `body`, sized by the rules of the module docstring."""
    levels = fpn_levels(body)
    stride = {s.name: s.stride for s in body.info}
    strides = [stride[n] for n in levels] + [2 * stride[levels[-1]]]
    anchors = AnchorGenerator(anchor_sizes(strides, image_size, anchor_scale), ((0.5, 1.0, 2.0),) * len(strides))
    roi = MultiScaleRoIAlign(levels, output_size=ROI_SIZE, sampling_ratio=2,
                             canonical_scale=int(anchor_scale * 2 ** CANONICAL_LEVEL), canonical_level=CANONICAL_LEVEL)
    rep = 4 * fpn_channels
    return FasterRCNN(FPNBackbone(body, levels, fpn_channels), num_classes=None, min_size=image_size,
                      max_size=image_size, image_mean=mean, image_std=std, rpn_anchor_generator=anchors,
                      box_roi_pool=roi, box_head=TwoMLPHead(fpn_channels * ROI_SIZE ** 2, rep),
                      box_predictor=FastRCNNPredictor(rep, num_classes),
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=150, rpn_batch_size_per_image=128, box_batch_size_per_image=128,
                      box_detections_per_img=50)


class FCNBackbone(nn.Module):
    """Stage features -> {"out": last stage, "aux": second-last stage} (what FCN takes)."""

    def __init__(self, body: StageFeatures, aux: bool):
        super().__init__()
        self.body, self.aux = body, aux

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = list(self.body(x).values())
        return {"out": f[-1], "aux": f[-2]} if self.aux else {"out": f[-1]}


def segmenter(body: StageFeatures, num_classes: int, aux: bool) -> FCN:
    """FCN with FCNHead on the last stage (and the auxiliary FCNHead on the second-last when `aux`)."""
    if aux and len(body.info) < 2:
        raise ValueError("an auxiliary head needs a backbone with at least two stages")
    ch = body.channels
    return FCN(FCNBackbone(body, aux), FCNHead(ch[-1], num_classes),
               FCNHead(ch[-2], num_classes) if aux else None)

