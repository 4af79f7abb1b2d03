"""Test-time augmentation: the logits of an image averaged over a few views of it (not in the paper).

    tta_views(x, "flip")           # [x, x mirrored left-right]
    tta_views(x, "flip_shift")     # also both shifted by (+2, +2) and (-2, -2) pixels (6 views)
    tta_logits(model, x, "flip")   # the mean of the model's logits over the views

The first view is always the image itself, so one pass gives the plain logits too (``evaluate``
reports both). Shifts pad with zeros, which after normalisation is the training set's mean colour.
The views are the ones training saw: a horizontal flip (data.flip) and small translations
(pad-and-crop, random-resized crops).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bagoftricks.tricks.catalog import TTA_MODES

SHIFT = 2  # pixels of the flip_shift translations


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` moved down by dy and right by dx pixels (negative: up/left), zero-filled, same size."""
    h, w = x.shape[-2:]
    p = SHIFT
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a normalised batch [B, C, H, W] that ``mode`` averages over; the first is ``x``."""
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")
    if mode == "none":
        return [x]
    views = [x, x.flip(-1)]
    if mode == "flip_shift":
        views += [_shift(v, d, d) for d in (SHIFT, -SHIFT) for v in views[:2]]
    return views


def tta_logits(model: torch.nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The model's logits (fp32) averaged over the views of ``x`` (the plain logits for "none")."""
    return torch.stack([model(v).float() for v in tta_views(x, mode)]).mean(0)
