"""ADE20K scene parsing: data.root holds images/{training,validation}/*.jpg and
annotations/{training,validation}/*.png label maps (the same stem; 0 = not labelled, 1-150 the classes).

Label 0 becomes IGNORE (not scored); classes keep their numbers, so class 0 (our background) never
occurs. The model predicts the classes up to the largest label the folder's maps hold (`used_classes`):
ADE20K's own 150, or fewer in a folder of one's own in this layout (a head of 7 outputs, not 151, for
labels 1-6). A missing or unreadable image or label map, a label map of another size, or a label above
150: an error naming the file (data.strict), or skipped and counted.
"""
from __future__ import annotations

import os

import torch

from bagoftricks.errors import DataError
from bagoftricks.transfer.files import Collector, no_boxes, read_image, read_label_map
from bagoftricks.transfer.targets import IGNORE, SceneSplit

NUM_CLASSES = 150
FOLDERS = {"train": "training", "test": "validation"}
CLASSES = ["unlabelled", *(f"class {k}" for k in range(1, NUM_CLASSES + 1))]


def _pairs(root: str, split: str) -> list[tuple[str, str]]:
    images = os.path.join(root, "images", FOLDERS[split])
    labels = os.path.join(root, "annotations", FOLDERS[split])
    if not os.path.isdir(images):
        raise DataError(f"data.root: {images} not found; expected ROOT/images/{{training,validation}} and "
                        f"ROOT/annotations/{{training,validation}}")
    stems = sorted(f for f in os.listdir(images) if not f.startswith("."))
    return [(os.path.join(images, f), os.path.join(labels, os.path.splitext(f)[0] + ".png")) for f in stems]


def _read(img_path: str, mask_path: str):
    image = read_image(img_path)
    mask = read_label_map(mask_path, tuple(image.shape[-2:]))
    if int(mask.max()) > NUM_CLASSES:
        raise DataError(f"{mask_path}: label {int(mask.max())} is above ADE20K's {NUM_CLASSES} classes")
    mask = torch.where(mask == 0, torch.tensor(IGNORE, dtype=torch.uint8), mask)
    boxes, labels = no_boxes()
    return image, {"boxes": boxes, "labels": labels, "mask": mask}


def load_ade20k(root: str, split: str, size: int, strict: bool) -> SceneSplit:
    """One split of an ADE20K folder, every sample resized to size x size (label maps: nearest)."""
    root = os.path.expanduser(root)
    out = Collector(size, strict)
    for img_path, mask_path in _pairs(root, split):
        out.add(mask_path, lambda a=img_path, b=mask_path: _read(a, b))
    return out.split(list(CLASSES), f"ADE20K {split} split at {root}")


def used_classes(*splits: SceneSplit) -> list[str]:
    """CLASSES up to the largest label (IGNORE aside) that any map of `splits` holds."""
    top = 0
    for split in splits:
        for t in split.targets:
            m = t["mask"]
            scored = m[m != IGNORE]
            top = max(top, int(scored.max()) if scored.numel() else 0)
    return CLASSES[:top + 1]
