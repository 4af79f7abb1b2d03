"""Test-time augmentation: the logits of an image averaged over a few views of it (not in the paper).

    tta_views(x, "flip")                 # [x, x mirrored left-right]
    tta_views(x, "flip_shift", border)   # also both moved by (+1, +1) and (-1, -1) pixels (6 views)
    tta_mean(view_logits, "flip_shift")  # their weighted mean: 1/4 each unshifted view, 1/8 each shifted
    tta_logits(model, x, "flip", border) # the model's logits over the views, so averaged
    tta_border("zeros", mean, std)       # what a shift brings in at the edge: what training's padding did
    shift_view(x, 1, -1, border)         # x moved down 1 and left 1 pixel, the edge filled as border says

The first view is always the image itself, so one pass gives the plain logits too (``evaluate``
reports both). ``flip_shift`` is airbench94's test-time augmentation: the image and its mirror at weight
1/4 each, the four 1-pixel shifts at 1/8. A shift fills the edge it uncovers the way the training crops
padded (``data.pad_mode``): black (the normalised value of 0) for zeros, the image mirrored for reflect.
The views are the ones training saw: a horizontal flip (data.flip) and small translations
(pad-and-crop, random-resized crops).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from bagoftricks.tricks.catalog import TTA_MODES

SHIFT = 1  # pixels of the flip_shift translations
_WEIGHTS = {"none": (1.0,), "flip": (0.5, 0.5), "flip_shift": (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)}
Border = float | Sequence[float] | str  # one value, one per channel, or "reflect"


def _check(mode: str) -> None:
    if mode not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {mode!r}; valid: {', '.join(TTA_MODES)}")


def tta_border(pad_mode: str, mean: Sequence[float], std: Sequence[float]) -> Border:
    """The edge a shift uncovers, as training's pad-and-crop made it: ``"reflect"`` for data.pad_mode reflect,
    else black after normalisation, -mean / std per channel (``mean``, ``std`` on the 0..255 scale)."""
    if pad_mode == "reflect":
        return "reflect"
    return tuple(-m / s for m, s in zip(mean, std))


def shift_view(x: torch.Tensor, dy: int, dx: int, border: Border = 0.0) -> torch.Tensor:
    """``x`` moved down by dy and right by dx pixels (negative: up/left), the same size, the uncovered edge
    filled as ``border`` says."""
    h, w = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    if border == "reflect":
        padded = F.pad(x, (p, p, p, p), mode="reflect")
    else:
        fill = torch.as_tensor(border, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        padded = fill.expand(*x.shape[:-2], h + 2 * p, w + 2 * p).clone()
        padded[..., p:p + h, p:p + w] = x
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_views(x: torch.Tensor, mode: str, border: Border = 0.0) -> list[torch.Tensor]:
    """The views of a normalised batch [B, C, H, W] that ``mode`` averages over; the first is ``x``.
    ``border``: what the shifts of flip_shift bring in at the edge (``tta_border``; 0.0, the mean colour, if not
    given)."""
    _check(mode)
    if mode == "none":
        return [x]
    views = [x, x.flip(-1)]
    if mode == "flip_shift":
        views += [shift_view(v, d, d, border) for d in (SHIFT, -SHIFT) for v in views[:2]]
    return views


def tta_mean(view_logits: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """The weighted mean of the logits of ``mode``'s views, in the order ``tta_views`` gives them."""
    _check(mode)
    weights = _WEIGHTS[mode]
    if len(view_logits) != len(weights):
        raise ValueError(f"{mode}: {len(weights)} views' logits expected, got {len(view_logits)}")
    if len(weights) == 1:
        return view_logits[0]
    return sum(w * z for w, z in zip(weights, view_logits))


def tta_logits(model: torch.nn.Module, x: torch.Tensor, mode: str, border: Border = 0.0) -> torch.Tensor:
    """The model's logits (fp32) averaged over the views of ``x`` (the plain logits for "none")."""
    return tta_mean([model(v).float() for v in tta_views(x, mode, border)], mode)
