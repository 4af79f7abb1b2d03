"""Shared by every dataset reader: the in-memory split and reading a file."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bagoftricks.errors import DataError


@dataclass
class TensorDataset:
    """One split held in memory as a single uint8 tensor (the fast path: augmented in whole batches)."""

    images: torch.Tensor  # uint8 [N, C, H, W], contiguous
    labels: torch.Tensor  # int64 [N]
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable files
    sizes: torch.Tensor | None = None  # int64 [N, 2]: each image's own (h, w) in the top-left of its
    #                                    H x W canvas (an image folder of mixed sizes); None: the whole canvas

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(
                f"labels must be [N] with N={self.images.shape[0]}, got shape {tuple(self.labels.shape)}"
            )
        if self.sizes is not None and tuple(self.sizes.shape) != (self.images.shape[0], 2):
            raise ValueError(f"sizes must be [N, 2] with N={self.images.shape[0]}, got {tuple(self.sizes.shape)}")
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # Lets a TensorDataset also go through the per-image DataLoader path.
        return self.images[i], int(self.labels[i])


def read_bytes(path: str) -> bytes:
    """The whole content of a file; one that cannot be read is a DataError naming it."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
