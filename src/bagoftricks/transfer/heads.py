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

- Precision: the backbone and the FPN (the convolutions) run under the caller's autocast (train.precision);
  the proposal and RoI heads — anchor decoding, RoIAlign, NMS, the box regression and its losses, the
  detections' boxes — run in fp32 (`Detector`), so a box is as exact in bf16/fp16 training as in fp32.

Segmentation: FCN (torchvision) with FCNHead on the last stage and, when transfer.aux_weight > 0, an
auxiliary FCNHead on the second-last; both outputs are upsampled to the input size by FCN itself.
transfer.head deeplabv3: torchvision's DeepLabV3 instead, its ASPP (as wide as the last stage) with atrous
rates fitted to the last stage's map (DeepLabV3's 6, 12, 18 on a 33-pixel map, scaled to this one), the
auxiliary head an FCNHead as in torchvision. Under autocast the logits come out in low precision; the
loss and the scores read them as fp32.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.segmentation import FCN, DeepLabV3
from torchvision.models.segmentation.deeplabv3 import ASPP
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


class Detector(FasterRCNN):
    """torchvision's Faster R-CNN whose proposal and RoI heads run in fp32 under any autocast (module docstring).

    The forward pass is GeneralizedRCNN's without its per-image host checks of the targets (the data
    pipeline drops empty boxes: SanitizeBoundingBoxes) and with the heads outside autocast."""

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        with torch.autocast(batch.tensors.device.type, enabled=False):
            features = OrderedDict((k, v.float()) for k, v in features.items())
            batch = ImageList(batch.tensors.float(), batch.image_sizes)
            proposals, proposal_losses = self.rpn(batch, features, targets)
            detections, detector_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return self.transform.postprocess(detections, batch.image_sizes, sizes)


def detector(body: StageFeatures, num_classes: int, image_size: int, fpn_channels: int, anchor_scale: float,
             mean: list[float], std: list[float]) -> FasterRCNN:
    """Faster R-CNN with an FPN on `body`, sized by the rules of the module docstring."""
    levels = fpn_levels(body)
    stride = {s.name: s.stride for s in body.info}
    strides = [stride[n] for n in levels] + [2 * stride[levels[-1]]]
    anchors = AnchorGenerator(anchor_sizes(strides, image_size, anchor_scale), ((0.5, 1.0, 2.0),) * len(strides))
    roi = MultiScaleRoIAlign(levels, output_size=ROI_SIZE, sampling_ratio=0,
                             canonical_scale=int(anchor_scale * 2 ** CANONICAL_LEVEL), canonical_level=CANONICAL_LEVEL)
    rep = 4 * fpn_channels
    return Detector(FPNBackbone(body, levels, fpn_channels), num_classes=None, min_size=image_size,
                      max_size=image_size, image_mean=mean, image_std=std, rpn_anchor_generator=anchors,
                      box_roi_pool=roi, box_head=TwoMLPHead(fpn_channels * ROI_SIZE ** 2, rep),
                      box_predictor=FastRCNNPredictor(rep, num_classes),
                      rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300,
                      rpn_post_nms_top_n_test=150, rpn_batch_size_per_image=128, box_batch_size_per_image=64,
                      box_detections_per_img=50)


class FCNBackbone(nn.Module):
    """Stage features -> {"out": last stage, "aux": second-last stage} (what FCN takes)."""

    def __init__(self, body: StageFeatures, aux: bool):
        super().__init__()
        self.body, self.aux = body, aux

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = list(self.body(x).values())
        return {"out": f[-1], "aux": f[-2]} if self.aux else {"out": f[-1]}


def aspp_rates(stride: int, image_size: int) -> tuple[int, int, int]:
    """DeepLabV3's atrous rates (6, 12, 18 on the 33-pixel map of a 513 px image at stride 16), scaled to the
    last stage's map of an image_size input at `stride` (at least 1, 2, 3)."""
    side = max(1, -(-image_size // stride))  # a map of ceil(S / stride) pixels (513 px at stride 16: 33)
    return tuple(max(k, round(r * side / 33)) for k, r in ((1, 6), (2, 12), (3, 18)))


def deeplab_head(in_channels: int, num_classes: int, rates: tuple[int, ...]) -> nn.Sequential:
    """torchvision's DeepLabHead with its ASPP and 3x3 conv as wide as the stage it reads (torchvision: 256)."""
    return nn.Sequential(ASPP(in_channels, rates, in_channels), nn.Conv2d(in_channels, in_channels, 3, padding=1,
                                                                         bias=False),
                         nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, num_classes, 1))


def segmenter(body: StageFeatures, num_classes: int, aux: bool, head: str = "fcn",
              image_size: int = 0) -> nn.Module:
    """FCN with FCNHead on the last stage (head "fcn"), or DeepLabV3 with its ASPP head (head "deeplabv3",
    rates from the last stride and image_size); the auxiliary FCNHead on the second-last when `aux`."""
    if aux and len(body.info) < 2:
        raise ValueError("an auxiliary head needs a backbone with at least two stages")
    ch = body.channels
    aux_head = FCNHead(ch[-2], num_classes) if aux else None
    if head == "deeplabv3":
        rates = aspp_rates(body.info[-1].stride, image_size)
        return DeepLabV3(FCNBackbone(body, aux), deeplab_head(ch[-1], num_classes, rates), aux_head)
    return FCN(FCNBackbone(body, aux), FCNHead(ch[-1], num_classes), aux_head)
