"""Detection and segmentation scores, computed by torchmetrics.

Detection: MeanAveragePrecision with the pycocotools backend — `map_50` is VOC-style mAP at IoU 0.5
(101-point interpolation, as COCO computes it), `map` COCO's mAP averaged over IoU 0.5:0.95.
Segmentation: mean IoU over the classes that occur in the predictions or the targets
(MulticlassJaccardIndex, macro) and pixel accuracy (MulticlassAccuracy, micro), both skipping pixels
labelled IGNORE, as VOC and ADE20K are scored. All values are percentages.
"""
from __future__ import annotations

import torch

from bagoftricks.transfer.targets import IGNORE


class DetectionScore:
    """mAP@0.5 and mAP@[.5:.95] over the images given to `update`."""

    def __init__(self):
        from torchmetrics.detection import MeanAveragePrecision
        self.metric = MeanAveragePrecision(iou_type="bbox", backend="pycocotools")

    def update(self, preds: list[dict], targets: list[dict]) -> None:
        """preds: {"boxes", "scores", "labels"} per image (xyxy); targets: {"boxes", "labels"} per image."""
        self.metric.update([{k: p[k].detach().float() if k != "labels" else p[k] for k in ("boxes", "scores", "labels")}
                            for p in preds],
                           [{"boxes": t["boxes"].float(), "labels": t["labels"]} for t in targets])

    def compute(self) -> dict[str, float]:
        res = self.metric.compute()
        return {"map_50": 100 * float(res["map_50"]), "map": 100 * float(res["map"])}


class SegmentationScore:
    """mIoU and pixel accuracy over the label maps given to `update`."""

    def __init__(self, num_classes: int):
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
        self.iou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=IGNORE)
        self.acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: int64 label maps [B, H, W] (target may hold IGNORE)."""
        self.iou.update(pred, target)
        self.acc.update(pred, target)

    def compute(self) -> dict[str, float]:
        return {"miou": 100 * float(self.iou.compute()), "pixel_acc": 100 * float(self.acc.compute())}
