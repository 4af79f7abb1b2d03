"""CutMix (Yun et al. 2019): paste a box of another image, mix labels by its area.

Unlike mixup the pasted pixels stay natural images, and unlike cutout the removed region is used
for learning. The label weight must be the area that was actually pasted, which differs from the
sampled λ when the box is clipped at the border.
"""
from __future__ import annotations

import math

import torch

from .mixup import mix_targets


def cutmix_box(lam: float, H: int, W: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """Box (y0, y1, x0, x1), half-open, of area ≈ (1-λ)·H·W before clipping.

    Side lengths are round(H·√(1-λ)) × round(W·√(1-λ)) (the box keeps the image's aspect ratio);
    the centre is uniform over the pixel grid, then the box is clipped to the image, so near a
    border the pasted area can be much smaller than (1-λ)HW.
    """
    r = math.sqrt(max(0.0, 1.0 - lam))
    ch, cw = int(round(H * r)), int(round(W * r))
    cy = int(torch.randint(0, H, (1,), generator=generator, device=generator.device).item())
    cx = int(torch.randint(0, W, (1,), generator=generator, device=generator.device).item())
    y0, x0 = cy - ch // 2, cx - cw // 2
    y1, x1 = y0 + ch, x0 + cw
    return max(0, y0), min(H, y1), max(0, x0), min(W, x1)


def cutmix_batch(
    x: torch.Tensor, soft_targets: torch.Tensor, lam: float, perm: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Paste the same box of x[perm] into every image of x; returns (x_mixed, targets, λ_eff).

    λ_eff = 1 - box_area / (H·W) is the fraction of each image that is still its own, and the
    targets are λ_eff·y + (1-λ_eff)·y[perm]. One box per batch (as in the reference implementation).
    """
    H, W = x.shape[-2:]
    y0, y1, x0, x1 = cutmix_box(lam, H, W, generator)
    lam_eff = 1.0 - (y1 - y0) * (x1 - x0) / float(H * W)
    perm = perm.to(x.device)
    x_mixed = x.clone()
    x_mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return x_mixed, mix_targets(soft_targets, lam_eff, perm), lam_eff


def choose_mix(
    mixup_alpha: float, cutmix_alpha: float, switch_prob: float = 0.5, generator: torch.Generator | None = None
) -> str | None:
    """Which mixing to apply to this batch: "mixup", "cutmix" or None.

    Each method keeps its own α (never pass mixup's α to CutMix). When both are on, one of them is
    chosen per batch: CutMix with probability `switch_prob`, mixup otherwise (timm's convention);
    only then is a number drawn from `generator`, so turning one method on does not change the
    random stream of the other.
    """
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if use_mixup and use_cutmix:
        if generator is None:
            raise ValueError("choose_mix needs a torch.Generator when both mixup and cutmix are on")
        u = float(torch.rand((), generator=generator, device=generator.device).item())
        return "cutmix" if u < switch_prob else "mixup"
    if use_cutmix:
        return "cutmix"
    if use_mixup:
        return "mixup"
    return None
