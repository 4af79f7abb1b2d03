"""Cutout (DeVries & Taylor 2017) and Random Erasing (Zhong et al. 2017).

Both hide a random rectangle of each training image, so the network cannot rely on a single
discriminative region and must use the whole object — a regulariser in the same family as
mixup/CutMix, but with no label change. Both are batched: boxes are drawn per sample as tensors and
applied with one mask, without a Python loop over the batch.
"""
from __future__ import annotations

import math

import torch


def _grid(H: int, W: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.arange(H, device=device).view(1, H, 1), torch.arange(W, device=device).view(1, 1, W))


def _box_mask(y0, y1, x0, x1, H, W, device) -> torch.Tensor:
    """[B, 1, H, W] bool mask of the half-open boxes [y0, y1) × [x0, x1) (clipping is implicit)."""
    ys, xs = _grid(H, W, device)
    y0, y1, x0, x1 = (t.to(device).view(-1, 1, 1) for t in (y0, y1, x0, x1))
    return ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).unsqueeze(1)


def cutout_batch(x: torch.Tensor, size: int, generator: torch.Generator, fill: float = 0.0) -> torch.Tensor:
    """Set one size×size square per image of x [B, C, H, W] to `fill` (all channels).

    The centre is uniform over the pixel grid and may lie near the border, in which case the box
    is clipped (DeVries & Taylor: this lets part of the image always survive). size <= 0 returns x.
    The input is not modified.
    """
    if size <= 0:
        return x
    B, _, H, W = x.shape
    cy = torch.randint(0, H, (B,), generator=generator, device=generator.device)
    cx = torch.randint(0, W, (B,), generator=generator, device=generator.device)
    y0, x0 = cy - size // 2, cx - size // 2
    mask = _box_mask(y0, y0 + size, x0, x0 + size, H, W, x.device)
    return x.masked_fill(mask, fill)


def random_erasing(
    x: torch.Tensor,
    prob: float,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
    fill: float = 0.0,
    attempts: int = 10,
) -> torch.Tensor:
    """With probability `prob` per image, erase one rectangle to `fill`.

    The rectangle's area is uniform in area·H·W and its aspect h/w log-uniform in `ratio`; a draw
    whose h >= H or w >= W is rejected and up to `attempts` draws are tried (all drawn at once; the
    first that fits is used; if none fits the image is left as is). Its top-left corner is uniform
    over the positions where it fits entirely. Constant fill (the paper also allows random values).
    """
    if prob <= 0:
        return x
    B, _, H, W = x.shape
    g, dev = generator, generator.device
    apply = torch.rand(B, generator=g, device=dev) < prob
    s = torch.empty(B, attempts, device=dev).uniform_(area[0], area[1], generator=g) * (H * W)
    logr = torch.empty(B, attempts, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    h = torch.sqrt(s * torch.exp(logr)).round().long()
    w = torch.sqrt(s / torch.exp(logr)).round().long()
    ok = (h >= 1) & (w >= 1) & (h < H) & (w < W)
    first = torch.argmax(ok.int(), dim=1)  # index of the first fitting attempt (0 if none fits)
    rows = torch.arange(B, device=dev)
    h, w = h[rows, first], w[rows, first]
    apply = apply & ok.any(dim=1)
    u = torch.rand(B, 2, generator=g, device=dev)
    top = (u[:, 0] * (H - h + 1)).floor().long().clamp(min=0)
    left = (u[:, 1] * (W - w + 1)).floor().long().clamp(min=0)
    # Images that are not erased get an empty box.
    h, w = torch.where(apply, h, torch.zeros_like(h)), torch.where(apply, w, torch.zeros_like(w))
    mask = _box_mask(top, top + h, left, left + w, H, W, x.device)
    return x.masked_fill(mask, fill)
