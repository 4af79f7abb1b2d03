"""A frozen patch-whitening first layer (airbench, after hlb-CIFAR10; not in the paper).

The first conv's k×k filters are set from the training images instead of being learned: the
eigen-decomposition of the covariance of all k×k patches, Σ = V diag(λ) Vᵀ, gives filters
vᵢ / sqrt(λᵢ + ε) and their negatives, so the layer's outputs are decorrelated, unit-variance
projections of every patch (the negatives keep both signs through the following GELU/ReLU). The
network then starts from features in which every direction of pixel space is equally loud, which
speeds up the first epochs; the layer is frozen, so it costs no optimizer work.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def patch_covariance(images: torch.Tensor, kernel: int) -> torch.Tensor:
    """Covariance (float64 [d, d], d = C·k·k) of every k×k patch (stride 1, no padding) of `images`
    [N, C, H, W], patches flattened in a conv weight's (C, kh, kw) order."""
    patches = F.unfold(images.double(), kernel)          # [N, d, L]
    x = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    x = x - x.mean(0, keepdim=True)
    return x.T @ x / max(x.shape[0] - 1, 1)


# an eigenvalue at most this fraction of the largest is a direction the images do not vary in at all (float rounding
# of an exact 0): three equal channels of a grey image leave 2/3 of an RGB patch's directions so
NULL_RATIO = 1e-6


def whitening_filters(images: torch.Tensor, kernel: int, eps: float = 5e-4) -> torch.Tensor:
    """The [2d, C, k, k] filters: eigenvectors of the patch covariance over sqrt(eigenvalue + eps), then
    their negatives; ordered by decreasing eigenvalue. Computed in float64 on the CPU (deterministic).

    A direction the images do not vary in (eigenvalue <= NULL_RATIO x the largest) would get a gain of
    1/sqrt(eps) (45x): grey images stored as RGB would have the rounding of bf16 and padding of another colour
    amplified into features that training sees and evaluation does not (measured: chance-level test accuracy).
    Its filter repeats a varying direction's instead (the first, second, ... in turn). A zero filter is not
    used: the constant channel it leaves, under the next layer's identity (Dirac) init and batch norm, sends the
    stem bias gradients of size 1/sqrt(BN eps) (measured: no learning in bf16)."""
    C = images.shape[1]
    lam, vec = torch.linalg.eigh(patch_covariance(images.cpu(), kernel))   # ascending
    lam, vec = lam.flip(0).clamp_min(0), vec.flip(1)
    w = vec.T / torch.sqrt(lam + eps).unsqueeze(1)
    live = int((lam > NULL_RATIO * lam[0]).sum())
    if 0 < live < len(lam):
        w[live:] = w[torch.arange(len(lam) - live) % live]
    w = w.reshape(-1, C, kernel, kernel)
    return torch.cat([w, -w]).float()


@torch.no_grad()
def fit_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set `conv`'s weight (shape [2·C·k², C, k, k]) to the whitening filters of `images` (normalised
    float [N, C, H, W]); its bias, if any, to 0. The weight keeps its device, dtype and memory format."""
    k = conv.kernel_size[0]
    w = whitening_filters(images, k, eps)
    if tuple(conv.weight.shape) != tuple(w.shape):
        raise ValueError(f"a whitening layer for {images.shape[1]} channel(s) and {k}x{k} patches needs a conv "
                         f"weight of shape {tuple(w.shape)}, got {tuple(conv.weight.shape)}")
    conv.weight.copy_(w)
    if conv.bias is not None:
        conv.bias.zero_()
