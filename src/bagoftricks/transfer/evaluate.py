"""A transfer model on its test split: predictions and scores (mAP or mIoU and pixel accuracy)."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from bagoftricks.engine.derive import autocast
from bagoftricks.transfer import data as tdata
from bagoftricks.transfer.augment import augmentation
from bagoftricks.recipe import Recipe
from bagoftricks.transfer.targets import SceneSplit
from bagoftricks.transfer.metrics import DetectionScore, SegmentationScore


class TransferModel(Protocol):
    """What evaluation needs of a transfer run (transfer.job.TransferJob has it)."""
    recipe: Recipe
    device: torch.device
    model: nn.Module
    test: SceneSplit
    mean: tuple[float, ...]
    std: tuple[float, ...]
    detect: bool


@torch.no_grad()
def predict(job: TransferModel, images: list[torch.Tensor], targets: list[dict]) -> list[dict]:
    """Eval-mode predictions on the CPU: {"boxes", "scores", "labels"} (detect) or {"mask"} (segment) per image,
    under the recipe's autocast as training ran (a detector's boxes and scores come out of its fp32 heads)."""
    model, dev, r = job.model, job.device, job.recipe
    was_training = model.training
    model.eval()
    try:
        with autocast(r.train.precision, dev):
            if job.detect:
                x = torch.stack(images).to(dev).float()
                out = model(list(x.unbind(0)))
                return [{k: v.cpu() for k, v in o.items()} for o in out]
            x, _ = tdata.segmentation_batch(images, targets, job.mean, job.std)
            fmt = torch.channels_last if r.train.channels_last else torch.contiguous_format
            pred = model(x.to(dev).contiguous(memory_format=fmt))["out"].argmax(1).cpu()
        return [{"mask": p} for p in pred]
    finally:
        model.train(was_training)


def evaluate_transfer(job: TransferModel) -> dict[str, float]:
    """Scores over the whole test split (images resized to data.image_size, nothing random)."""
    r = job.recipe
    size = r.train.eval_batch_size or 2 * r.train.batch_size
    tf = augmentation(r.data.image_size)
    score = DetectionScore() if job.detect else SegmentationScore(job.test.num_classes)
    for idx in tdata.batch_indices(torch.arange(len(job.test)), size, drop_last=False):
        images, targets = tdata.load_batch(job.test, idx, tf)
        preds = predict(job, images, targets)
        if job.detect:
            score.update(preds, targets)
        else:
            score.update(torch.stack([p["mask"] for p in preds]), torch.stack([t["mask"] for t in targets]).long())
    return score.compute()
