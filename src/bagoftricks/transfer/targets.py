"""The in-memory split every detection/segmentation reader returns, and how a batch of it is collated.

A split is a list of images (uint8 [C, H, W]) with one target dict each:

    {"boxes": float32 [K, 4] (x1, y1, x2, y2 in pixels, pixel edges), "labels": int64 [K] (1..C-1),
     "mask": uint8 [H, W] semantic label map (0 = background, IGNORE = not scored)}

Class 0 is the background in both tasks, so one split serves Faster R-CNN (whose labels start at 1)
and the FCN (whose label map uses 0 for the background).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

IGNORE = 255  # label-map value that no loss or metric counts (VOC's object outlines)


@dataclass
class SceneSplit:
    """One split of a detection/segmentation dataset, held in memory."""

    images: list[torch.Tensor]     # uint8 [C, H, W] each
    targets: list[dict]            # {"boxes", "labels", "mask"} each (module docstring)
    classes: list[str]             # classes[0] == "background"
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of skipped samples

    def __len__(self) -> int:
        return len(self.images)

    @property
    def in_channels(self) -> int:
        return int(self.images[0].shape[0]) if self.images else 3

    @property
    def num_classes(self) -> int:
        """Classes with the background."""
        return len(self.classes)
