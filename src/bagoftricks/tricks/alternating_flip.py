"""Derandomised ("alternating") horizontal flips across epochs (airbench; not in the paper).

Random flips with p = 0.5 show a given image unflipped in several epochs running about as often as
they alternate, so over a short run some images are seen only one way round. Alternating flips draw
one bit per image for the first epoch and flip every image the other way each following epoch: any
two consecutive epochs show both orientations of every image, with the same marginal probability
p of a flip in the first epoch. airbench reports it worth about as much as a few percent more epochs
on CIFAR-10 at short budgets.

The bits are drawn once per run from a CPU generator seeded with (seed, "flip"), over the whole
training set, so they do not depend on the epoch order, the rank or a resume.
"""
from __future__ import annotations

import torch

from bagoftricks.seeds import derive_seed


def flip_bits(n: int, p: float, seed: int) -> torch.Tensor:
    """bool [n]: image i is flipped in the first epoch (each with probability p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability must be in [0, 1], got {p}")
    g = torch.Generator().manual_seed(derive_seed(seed, "flip"))
    return torch.rand(n, generator=g) < p


def epoch_flips(bits: torch.Tensor, index: torch.Tensor, epoch: int) -> torch.Tensor:
    """bool [len(index)]: whether images `index` are flipped in epoch `epoch` (0-based): the first
    epoch's bit, inverted in every odd epoch."""
    b = bits[index]
    return ~b if epoch % 2 else b


def flip_where(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images of the [..., H, W] batch `x` left-right where `mask` [B] is true."""
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
