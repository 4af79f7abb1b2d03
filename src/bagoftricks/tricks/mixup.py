"""Mixup (§5.4): train on convex combinations of two examples and of their labels.

x̂ = λ x_i + (1-λ) x_j,  ŷ = λ y_i + (1-λ) y_j,  λ ~ Beta(α, α) (paper: α = 0.2, and 200 epochs
instead of 120 because the harder, regularised task needs longer training).
One λ and one permutation per batch: every example i is mixed with example perm[i] of the same
batch, which is how the paper (and every common implementation) does it without a second loader.
"""
from __future__ import annotations

import numpy as np
import torch


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """λ ~ Beta(α, α); α <= 0 means mixing is off and returns exactly 1.0 (no draw is made).

    torch.distributions cannot take a torch.Generator, and torch's Gamma kernel has no generator
    argument either, so we draw one 63-bit seed from `generator` and let a fresh numpy PCG64
    Generator sample the Beta. The torch generator therefore fully determines λ and advances by
    exactly one draw per call, so saving its state is enough to resume bit-exactly. numpy's Beta
    is exact for small α (α = 0.2 puts most mass near 0 and 1), unlike a naive ratio of Gammas,
    which underflows to 0/0 for tiny shapes.
    """
    if alpha <= 0:
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    return float(np.random.Generator(np.random.PCG64(seed)).beta(alpha, alpha))


def batch_permutation(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Random partner index for each example (a permutation of 0..B-1, on the generator's device)."""
    return torch.randperm(batch_size, generator=generator, device=generator.device)


def mix_targets(soft_targets: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """λ y + (1-λ) y[perm] in fp32: the labels of a mixed batch (mixup and CutMix alike)."""
    t = soft_targets.to(torch.float32)
    return t * lam + t[perm.to(t.device)] * (1.0 - lam)


def mix(
    x: torch.Tensor, soft_targets: torch.Tensor, lam: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(λ x + (1-λ) x[perm],  λ y + (1-λ) y[perm]) with the same λ and perm for inputs and labels.

    Labels must already be soft ([B, K], e.g. from smoothed_targets) so smoothing and mixing compose.
    Returns new tensors; the inputs are not modified.
    """
    if x.shape[0] != soft_targets.shape[0] or perm.shape[0] != x.shape[0]:
        raise ValueError(f"batch sizes differ: x {x.shape[0]}, targets {soft_targets.shape[0]}, perm {perm.shape[0]}")
    perm = perm.to(x.device)
    x_mixed = x * lam + x[perm] * (1.0 - lam)
    return x_mixed, mix_targets(soft_targets, lam, perm)
