"""What every detection/segmentation reader shares: reading an image (data.images) or a label map, fitting a sample
to the training size, and the strict rule (a bad sample is an error naming its file, or skipped and counted)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from bagoftricks.data.images import decode_rgb
from bagoftricks.errors import DataError
from bagoftricks.transfer.augment import apply, augmentation
from bagoftricks.transfer.targets import IGNORE, SceneSplit


def read_image(path: str) -> torch.Tensor:
    """An RGB uint8 [3, H, W] image (data.images.decode_rgb); a missing or undecodable file is a DataError naming it."""
    return decode_rgb(path)


def read_label_map(path: str, shape: tuple[int, int]) -> torch.Tensor:
    """A PNG of class indices (palette or gray) as uint8 [H, W]; its size must be the image's."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(f"{path}: a label map must be a palette or gray PNG of class indices, "
                                f"got mode {im.mode}")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: label map not found") from None
    except OSError as e:
        raise DataError(f"{path}: not a readable PNG ({e})") from None
    if arr.shape != shape:
        raise DataError(f"{path}: label map is {arr.shape[1]}x{arr.shape[0]}, its image {shape[1]}x{shape[0]}")
    return torch.from_numpy(arr.copy())


def no_boxes() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)


def ignored_mask(image: torch.Tensor) -> torch.Tensor:
    """The label map of a detection-only sample: nothing scored."""
    return torch.full(tuple(image.shape[-2:]), IGNORE, dtype=torch.uint8)


class Collector:
    """Samples of one split, fitted to size x size on the way in; bad ones raised (strict) or counted."""

    def __init__(self, size: int, strict: bool):
        self.fit, self.strict = augmentation(size), strict
        self.images: list[torch.Tensor] = []
        self.targets: list[dict] = []
        self.skipped: list[tuple[str, str]] = []

    def add(self, path: str, read) -> None:
        """`read()` -> (image, target); a DataError from it is raised (strict) or skipped and counted."""
        try:
            image, target = read()
        except DataError as e:
            if self.strict:
                raise
            self.skipped.append((path, str(e)))
            return
        image, target = apply(self.fit, image, target)
        self.images.append(image)
        self.targets.append(target)

    def split(self, classes: list[str], what: str) -> SceneSplit:
        if not self.images:
            why = f"; skipped {len(self.skipped)}: {self.skipped[0][1]}" if self.skipped else ""
            raise DataError(f"{what}: no usable samples{why}")
        return SceneSplit(self.images, self.targets, classes, self.skipped)
