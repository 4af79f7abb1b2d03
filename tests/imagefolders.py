"""Small class-per-folder image trees for the tests: ROOT/{train,val}/class{c}/{i}.png of random pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png_folder(root: Path, per_class: int, size: int, *, scale: float = 200, offset: float = 0,
                     seed: int = 0, classes: int = 2) -> Path:
    """`per_class` size x size RGB PNGs per class and split; pixels uniform in [0, scale) + offset x class."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.random((size, size, 3)) * scale + offset * c
                Image.fromarray(pixels.astype(np.uint8)).save(d / f"{i}.png")
    return root
