"""Boxes and label maps drawn onto images, so that a person can look at what a model sees and does.

    draw(image, boxes=..., labels=..., scores=..., mask=..., classes=...) -> uint8 [3, H, W]
    save_png(path, drawn)                                                   (written atomically)

Drawing is torchvision's (`draw_bounding_boxes`, `draw_segmentation_masks`); each class keeps one
colour in every picture (PALETTE), the background none.
"""
from __future__ import annotations

import io
from pathlib import Path

import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from bagoftricks.files import atomic_write_bytes
from bagoftricks.transfer.targets import IGNORE

# One colour per class index (cycled past 20); index 0 is the background and is never drawn.
PALETTE = ["#000000", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000",
           "#ffd8b1", "#000075", "#808080"]


def colour(k: int) -> str:
    return PALETTE[1 + (k - 1) % (len(PALETTE) - 1)] if k > 0 else PALETTE[0]


def _rgb(image: torch.Tensor) -> torch.Tensor:
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be uint8 [1 or 3, H, W], got {image.dtype} {tuple(image.shape)}")
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image.contiguous()


def draw(image: torch.Tensor, *, boxes: torch.Tensor | None = None, labels: torch.Tensor | None = None,
         scores: torch.Tensor | None = None, mask: torch.Tensor | None = None, classes: list[str] | None = None,
         alpha: float = 0.45) -> torch.Tensor:
    """`image` (uint8 [1|3, H, W]) with the label map `mask` ([H, W] class indices, 0 and IGNORE not
    drawn) blended in and the `boxes` (xyxy) outlined, each named by its class (and score)."""
    out = _rgb(image)
    if mask is not None:
        present = [int(k) for k in torch.unique(mask) if 0 < int(k) != IGNORE]
        if present:
            masks = torch.stack([mask == k for k in present])
            out = draw_segmentation_masks(out, masks, alpha=alpha, colors=[colour(k) for k in present])
    if boxes is not None and len(boxes):
        labels = torch.zeros(len(boxes), dtype=torch.int64) if labels is None else labels
        names = [_name(int(k), classes) + ("" if scores is None else f" {float(s):.2f}")
                 for k, s in zip(labels, scores if scores is not None else labels)]
        out = draw_bounding_boxes(out, boxes.float(), labels=names, colors=[colour(int(k)) for k in labels],
                                  width=1)
    return out


def _name(k: int, classes: list[str] | None) -> str:
    return classes[k] if classes and 0 <= k < len(classes) else str(k)


def save_png(path: str | Path, drawn: torch.Tensor) -> Path:
    """Write a uint8 [3, H, W] picture as a PNG, atomically; returns the path."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(drawn.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
