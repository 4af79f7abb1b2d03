"""Progressive resizing (fast.ai's DAWNBench ImageNet entry, FFCV's recipes; not in the paper).

The first epochs train on smaller images, the last ones at the final size: a conv net's cost grows
with the pixel count, so an epoch at 20 px costs about half one at 28 px, while the early epochs,
which learn coarse features, lose little from the lower resolution. Training ends at the size the
model is evaluated at, so the last epochs adapt it (and its BN statistics) to that size.

Here the batch is augmented at the final size and then resized (bilinear, antialiased), so every
augmentation keeps its meaning and the data path is unchanged; only the model's work shrinks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def epoch_size(sizes: tuple[int, ...] | list[int], epoch: int, final: int) -> int:
    """The training image size of epoch `epoch` (0-based): sizes[epoch] for the first len(sizes)
    epochs, then `final`."""
    return int(sizes[epoch]) if epoch < len(sizes) else int(final)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """A [B, C, H, W] float batch resized to size × size (bilinear, antialiased); unchanged if it is already."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
