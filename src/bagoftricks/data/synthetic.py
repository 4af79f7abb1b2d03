"""A learnable synthetic dataset for tests and smoke runs, deterministic from its seed.

Every class k has a prototype: a random smooth pattern (a 4x4 grid of random colours, bilinearly
upsampled) spread over 40..215. A sample is its class prototype, shifted by a random global brightness
offset (+-20) and Gaussian pixel noise (std 24), clamped to uint8. Class means differ by ~43 grey
levels per pixel on average (within-class std ~26), and every pixel carries evidence, so a linear model
fits it in a few dozen steps, while the noise keeps it from being a lookup table. Train and test share
the prototypes (drawn from ``seed``) and draw their samples from disjoint streams.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bagoftricks.seeds import derive_seed

from .common import TensorDataset


def make_synthetic(split: str, *, samples: int = 512, image_size: int = 32, num_classes: int = 10,
                   in_channels: int = 3, seed: int = 0, train_limit: int = 0) -> TensorDataset:
    if num_classes < 1 or image_size < 1 or in_channels < 1 or samples < 1:
        raise ValueError("synthetic: samples, image_size, num_classes and in_channels must be >= 1")
    n = samples if split == "train" else max(64, samples // 4)
    g = torch.Generator().manual_seed(derive_seed(seed, "synthetic-prototypes"))
    grid = torch.rand(num_classes, in_channels, 4, 4, generator=g)
    protos = 40 + 175 * F.interpolate(grid, size=(image_size, image_size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(derive_seed(seed, "synthetic-samples", split))
    # Balanced classes in a random order.
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    offset = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 40
    noise = torch.randn(n, in_channels, image_size, image_size, generator=g) * 24
    x = (protos[labels] + offset + noise).round_().clamp_(0, 255).to(torch.uint8)
    if split == "train" and train_limit > 0:  # a prefix of the full split, not a different draw
        x, labels = x[:train_limit], labels[:train_limit]
    return TensorDataset(x.contiguous(), labels.to(torch.int64), [f"class_{k}" for k in range(num_classes)])
