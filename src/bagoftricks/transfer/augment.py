"""Detection and segmentation augmentation: torchvision.transforms.v2 on tv_tensors, so the boxes and the
label map follow the image through every step: resize to data.image_size square, horizontal flip
(data.flip), scale jitter (transfer.scale_jitter, an affine zoom about the centre; a box that leaves the
picture is dropped by SanitizeBoundingBoxes). Random draws come from torch's global generator.
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


def augmentation(size: int, flip: float = 0.0, scale_jitter: float = 0.0) -> v2.Compose:
    """(image, target) -> (image, target) resized to size x size, then flipped and scale-jittered."""
    ops = [v2.Resize((size, size), antialias=True)]
    if flip > 0:
        ops.append(v2.RandomHorizontalFlip(flip))
    if scale_jitter > 0:
        ops.append(v2.RandomAffine(degrees=0.0, scale=(1 - scale_jitter, 1 + scale_jitter),
                                   fill={tv_tensors.Image: 0, tv_tensors.Mask: 0}))
    ops.append(v2.SanitizeBoundingBoxes(min_size=1.0))
    return v2.Compose(ops)


def apply(tf: v2.Compose, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Run a v2 transform on one sample as tv_tensors; plain tensors come back."""
    h, w = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w))
    t = {"boxes": boxes, "labels": target["labels"], "mask": tv_tensors.Mask(target["mask"])}
    img, out = tf(tv_tensors.Image(image), t)
    return img.as_subclass(torch.Tensor), {"boxes": out["boxes"].as_subclass(torch.Tensor).float(),
                                           "labels": out["labels"], "mask": out["mask"].as_subclass(torch.Tensor)}
